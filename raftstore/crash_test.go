package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/basaltdb/basalt/region"
)

// Every store loses power at once, mid-traffic, keeping only what it synced
// (pebble's crashable in-memory FS). No acknowledged write may be lost.
func TestCrashLosesNoAcknowledgedWrite(t *testing.T) {
	for _, mode := range []string{"all stores", "leader only"} {
		t.Run(mode, func(t *testing.T) {
			c := newTestCluster(t, 3, testConfig())
			const regions = 4
			for r := uint64(1); r <= regions; r++ {
				c.bootstrap(r, fmt.Sprintf("r%d", r), fmt.Sprintf("r%d", r+1), 1, 2, 3)
				_ = c.store(1 + r%3).st.Campaign(r)
				c.leader(r)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var mu sync.Mutex
			acked := map[string]uint64{}
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; ctx.Err() == nil; i++ {
						r := uint64(1 + (w+i)%regions)
						key := fmt.Sprintf("r%d/w%d-%d", r, w, i)
						if err := tryPut(ctx, c, r, key); err == nil {
							mu.Lock()
							acked[key] = r
							mu.Unlock()
						}
					}
				}(w)
			}
			waitFor(t, "some acknowledged writes", 20*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(acked) >= 300
			})
			crashed := map[uint64]*vfs.MemFS{}
			if mode == "all stores" {
				for _, id := range c.ids {
					crashed[id] = c.crashStore(id)
				}
			} else {
				l := c.leader(1)
				crashed[l.id] = c.crashStore(l.id)
			}
			cancel()
			wg.Wait()
			for id, fs := range crashed {
				c.restartStore(id, fs)
			}
			mu.Lock()
			defer mu.Unlock()
			for r := uint64(1); r <= regions; r++ {
				_ = c.store(1).st.Campaign(r)
				c.put(r, fmt.Sprintf("r%d/after-crash", r), "x")
			}
			for key, r := range acked {
				// After a write acknowledged after the crash commits, every
				// replica applied everything committed before it.
				c.waitReplicated(fmt.Sprintf("r%d/after-crash", r), "x", c.ids...)
				for _, id := range c.ids {
					if _, ok := c.store(id).localGet(key); !ok {
						t.Fatalf("acknowledged write %q lost on store %d (%d acknowledged)", key, id, len(acked))
					}
				}
			}
		})
	}
}

// tryPut proposes once through whichever store leads r; any error means
// not acknowledged.
func tryPut(ctx context.Context, c *testCluster, r uint64, key string) error {
	for _, id := range c.running() {
		c.mu.Lock()
		ts := c.stores[id]
		c.mu.Unlock()
		if ts == nil {
			continue
		}
		st := ts.st.RegionStatus(r)
		if st == nil || !st.IsLeader() {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := ts.st.Propose(pctx, r, st.Region.GetRegionEpoch(), encodePut([]byte(key), []byte("v")))
		cancel()
		if err != nil {
			return err
		}
		if e, ok := res.(error); ok {
			return e
		}
		return nil
	}
	time.Sleep(time.Millisecond)
	return region.NotLeader(r, nil)
}

var _ = errors.New
