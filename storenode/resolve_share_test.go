package storenode

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/raftstore"
)

// Reads that arrive while a resolve is in flight share the next one, never
// the one in flight (its timestamp may predate them), and that next one
// starts only once the first ended.
func TestReadsShareTheNextResolve(t *testing.T) {
	var started atomic.Int64
	release := make(chan struct{})
	began := make(chan int64, 10)
	rs := newResolveShares(context.Background())
	resolve := func(context.Context) (int64, *raftstore.ReadGuard, error) {
		n := started.Add(1)
		began <- n
		<-release
		return n * 100, nil, nil
	}
	epoch := &metapb.RegionEpoch{Version: 1, ConfVer: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first := make(chan int64, 1)
	go func() {
		got, _, err := rs.join(ctx, 7, epoch, resolve)
		if err != nil {
			t.Error(err)
		}
		first <- got
	}()
	if n := <-began; n != 1 {
		t.Fatalf("resolve %d began first", n)
	}
	// Resolve 1 is in flight: five reads arrive now.
	var wg sync.WaitGroup
	later := make(chan int64, 5)
	for range 5 {
		wg.Go(func() {
			got, _, err := rs.join(ctx, 7, epoch, resolve)
			if err != nil {
				t.Error(err)
			}
			later <- got
		})
	}
	// All five queue behind resolve 1 until it ends (polled: they are
	// goroutines starting).
	deadline := time.Now().Add(10 * time.Second)
	for {
		rs.mu.Lock()
		w := rs.waiting[resolveKey{7, 1, 1}]
		queued := w != nil && w.readers == 5
		rs.mu.Unlock()
		if queued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the later reads never queued")
		}
		time.Sleep(time.Millisecond)
	}
	if n := started.Load(); n != 1 {
		t.Fatalf("%d resolves started while the first was in flight", n)
	}
	release <- struct{}{} // resolve 1 ends
	if got := <-first; got != 100 {
		t.Fatalf("the first read got %d, want resolve 1's 100", got)
	}
	if n := <-began; n != 2 {
		t.Fatalf("resolve %d began second", n)
	}
	// Another region is independent of region 7's flights.
	other := make(chan int64, 1)
	go func() {
		got, _, _ := rs.join(ctx, 8, epoch, resolve)
		other <- got
	}()
	if n := <-began; n != 3 {
		t.Fatalf("region 8's resolve is %d, want 3", n)
	}
	close(release)
	wg.Wait()
	close(later)
	for got := range later {
		if got != 200 {
			t.Fatalf("a read that arrived during resolve 1 got %d, want resolve 2's 200", got)
		}
	}
	if got := <-other; got != 300 {
		t.Fatalf("region 8's read got %d", got)
	}
	if n := started.Load(); n != 3 {
		t.Fatalf("%d resolves for seven reads over two regions, want 3", n)
	}
}
