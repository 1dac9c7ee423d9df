package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/procs"
)

// tsoRequests reads how many TSO requests (batches) the PD served.
func tsoRequests(b *testing.B, c *procs.Cluster) int64 {
	resp, err := http.Get("http://" + c.PDs[0].Addr + "/pd/api/v1/tso/stats")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct{ Requests int64 }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		b.Fatal(err)
	}
	return st.Requests
}

// BenchmarkTSOPerWrite: 1,000 concurrent writers over 16 regions for 10 s;
// reports the TSO requests PD served per acknowledged write (each store's
// sequencer asks for all its queued writes in one request).
func BenchmarkTSOPerWrite(b *testing.B) {
	for range b.N {
		b.StopTimer()
		c := procs.Start(b, procs.Options{PDs: 1, Stores: 3})
		cl := c.Client(b)
		waitReplicated(b, c)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		splitNumbered(b, cl, 16, 1000)
		before := tsoRequests(b, c)
		b.StartTimer()
		var puts atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 1000; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := []byte(fmt.Sprintf("k%04d", w))
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := cl.Put(ctx, &kvpb.PutRequest{Key: key, Value: make([]byte, 256)}); err == nil {
						puts.Add(1)
					}
				}
			}()
		}
		time.Sleep(10 * time.Second)
		close(stop)
		wg.Wait()
		b.StopTimer()
		if puts.Load() == 0 {
			b.Fatal("no put was acknowledged")
		}
		reqs := tsoRequests(b, c) - before
		b.ReportMetric(float64(puts.Load())/10, "puts/s")
		b.ReportMetric(float64(reqs)/float64(puts.Load()), "tso-requests/put")
		cancel()
		c.Stop()
	}
}

// BenchmarkWatchLatency: one writer puts to a prefix one key at a time;
// a client watch on the prefix reports each event's delay from the put's
// acknowledgement to its delivery, for a prefix in one region and one
// split into 16.
func BenchmarkWatchLatency(b *testing.B) {
	for _, regions := range []int{1, 16} {
		b.Run(fmt.Sprintf("regions=%d", regions), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				c := procs.Start(b, procs.Options{PDs: 1, Stores: 3})
				cl := c.Client(b)
				waitReplicated(b, c)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				splitPrefix(b, cl, "l/", regions)
				p50, p99 := watchLatency(b, ctx, cl, 1000)
				b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
				cancel()
				c.Stop()
			}
		})
	}
}

func watchLatency(b *testing.B, ctx context.Context, cl *client.Client, n int) (time.Duration, time.Duration) {
	w := cl.Watch(ctx, &kvpb.WatchCreateRequest{Key: []byte("l/"), RangeEnd: []byte("l0")}, client.WatchOptions{CreatedNotify: true})
	defer w.Close()
	if r := <-w.C; r == nil || !r.Created {
		b.Fatalf("watch not created: %v", r)
	}
	var mu sync.Mutex
	acked := map[string]time.Time{}
	delivered := map[string]time.Time{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range w.C {
			now := time.Now()
			mu.Lock()
			for _, e := range r.Events {
				delivered[string(e.GetKv().GetKey())] = now
			}
			got := len(delivered)
			mu.Unlock()
			if got == n {
				return
			}
		}
	}()
	b.StartTimer()
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("l/%c%04d", 'a'+rune(i%26), i)
		if _, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte("v")}); err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		acked[key] = time.Now()
		mu.Unlock()
		time.Sleep(2 * time.Millisecond) // a paced writer, not a saturated one
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatal("not every event was delivered")
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	if len(delivered) != n {
		b.Fatalf("the watch ended after delivering %d of %d events", len(delivered), n)
	}
	var lat []time.Duration
	for k, t := range acked {
		lat = append(lat, max(delivered[k].Sub(t), 0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], lat[len(lat)*99/100]
}
