package integration

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/tests/procs"
)

// storesRSS sums the resident memory of the cluster's stores, in bytes.
func storesRSS(c *procs.Cluster) int64 {
	var total int64
	for _, p := range c.Stores {
		total += procs.RSS(p.PID())
	}
	return total
}

// grantMany grants n leases of ttl seconds from the given number of
// goroutines and returns their IDs and how long it took, in seconds.
func grantMany(ctx context.Context, b *testing.B, cl *client.Client, n, goroutines int, ttl int64) ([]int64, float64) {
	ids := make([]int64, n)
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				r, err := cl.LeaseGrant(ctx, ttl, 0)
				if err != nil {
					b.Error(err)
					return
				}
				ids[i] = r.GetId()
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return ids, time.Since(start).Seconds()
}

// BenchmarkLeases: 3 stores, the lease records spread over 4 regions.
// Grants 20,000 leases from 200 goroutines (grants/s), renews all of them
// in batches for 5 s (keep-alives/s), reports the stores' RSS growth per
// lease, then lets 2,000 leases of the minimum TTL expire, each holding one
// key in one of 4 data regions, and reports how long after its TTL ran out
// each key's delete event reached a watcher (p50/p99).
func BenchmarkLeases(b *testing.B) {
	const leases, expiring = 20000, 2000
	for range b.N {
		b.StopTimer()
		c := procs.Start(b, procs.Options{PDs: 1, Stores: 3})
		cl := c.Client(b)
		waitReplicated(b, c)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		splitAt(b, cl, 4, func(i int) string { return string(append(append([]byte(nil), region.LeasePrefix...), byte(i*64))) })
		splitPrefix(b, cl, "e/", 4)
		rssBefore := storesRSS(c)
		b.StartTimer()

		ids, grantSecs := grantMany(ctx, b, cl, leases, 200, 120)
		var next atomic.Int64
		var wg sync.WaitGroup

		var renewed atomic.Int64
		start := time.Now()
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := g * 1000; time.Since(start) < 5*time.Second; i = (i + 8000) % leases {
					batch := ids[i:min(i+1000, leases)]
					ttls, err := cl.LeaseKeepAliveMany(ctx, batch)
					if err != nil {
						b.Error(err)
						return
					}
					for _, t := range ttls {
						if t <= 0 {
							b.Error("a granted lease was not found")
							return
						}
					}
					renewed.Add(int64(len(batch)))
				}
			}(g)
		}
		wg.Wait()
		kaSecs := time.Since(start).Seconds()
		rssAfter := storesRSS(c)

		// Expiry: one key per lease, the keys over 4 data regions.
		kv := cl.KV()
		w := kv.Watch(ctx, "e/", client.WithPrefix())
		expiresAt := make(map[string]time.Time, expiring)
		var mu sync.Mutex
		next.Store(0)
		for g := 0; g < 100; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1) - 1; i < expiring; i = next.Add(1) - 1 {
					r, err := cl.LeaseGrant(ctx, 2, 0)
					if err != nil {
						b.Error(err)
						return
					}
					granted := time.Now()
					key := fmt.Sprintf("e/%c%05d", 'a'+rune(i%26), i)
					if _, err := kv.Put(ctx, key, "v", client.WithLease(r.GetId())); err != nil {
						b.Error(err)
						return
					}
					mu.Lock()
					expiresAt[key] = granted.Add(2 * time.Second)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		var lags []time.Duration
		for len(lags) < expiring {
			select {
			case r := <-w.C:
				now := time.Now()
				for _, e := range r.Events {
					if e.GetType().String() == "DELETE" {
						lags = append(lags, now.Sub(expiresAt[string(e.GetKv().GetKey())]))
					}
				}
			case <-ctx.Done():
				b.Fatalf("%d of %d expired keys seen", len(lags), expiring)
			}
		}
		w.Close()
		b.StopTimer()
		sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
		b.ReportMetric(float64(leases)/grantSecs, "grants/s")
		b.ReportMetric(float64(renewed.Load())/kaSecs, "keepalives/s")
		b.ReportMetric(float64(rssAfter-rssBefore)/leases, "rss-bytes/lease")
		b.ReportMetric(float64(lags[len(lags)/2].Milliseconds()), "expiry-p50-ms")
		b.ReportMetric(float64(lags[len(lags)*99/100].Milliseconds()), "expiry-p99-ms")
		cancel()
		c.Stop()
	}
}

// BenchmarkMillionLeases: 1,000,000 leases (BASALT_BENCH_LEASES to change)
// granted from 1,000 goroutines with their records spread over 8 regions,
// then kept alive in sweeps of 1,000-lease batches from 8 goroutines while
// the leader of one lease region is moved to another store. Reports
// grants/s, keep-alives/s, RSS per lease, and the slowest keep-alive batch
// before and after the leader move (a new leader loads its leases; nothing
// may stall the others, and no lease may be lost).
func BenchmarkMillionLeases(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("BASALT_BENCH_LEASES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	for range b.N {
		b.StopTimer()
		c := procs.Start(b, procs.Options{PDs: 1, Stores: 3})
		cl := c.Client(b)
		pd := waitReplicated(b, c)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		splitAt(b, cl, 8, func(i int) string { return string(append(append([]byte(nil), region.LeasePrefix...), byte(i*32))) })
		rssBefore := storesRSS(c)
		b.StartTimer()

		ids, grantSecs := grantMany(ctx, b, cl, n, 1000, 1800)
		var wg sync.WaitGroup
		b.Logf("granted %d leases in %.0f s", n, grantSecs)

		sweep := func() (time.Duration, float64) {
			var slowest atomic.Int64
			var cursor atomic.Int64
			start := time.Now()
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := cursor.Add(1000) - 1000; i < int64(n); i = cursor.Add(1000) - 1000 {
						t0 := time.Now()
						ttls, err := cl.LeaseKeepAliveMany(ctx, ids[i:min(i+1000, int64(n))])
						if err != nil {
							b.Error(err)
							return
						}
						if d := int64(time.Since(t0)); d > slowest.Load() {
							slowest.Store(d)
						}
						for _, t := range ttls {
							if t <= 0 {
								b.Error("a kept-alive lease was lost")
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			return time.Duration(slowest.Load()), float64(n) / time.Since(start).Seconds()
		}
		slowBefore, rate := sweep()
		rssAfter := storesRSS(c)
		// Move the leader of the region holding the first lease's record.
		key := region.LeaseKey(ids[0])
		r, err := pd.GetRegion(ctx, key)
		if err != nil {
			b.Fatal(err)
		}
		var to uint64
		for _, p := range r.GetRegion().GetPeers() {
			if p.GetStoreId() != r.GetLeader().GetStoreId() {
				to = p.GetStoreId()
				break
			}
		}
		if err := tryOperator(c, fmt.Sprintf(`{"name": "transfer-leader", "region_id": %d, "to_store_id": %d}`, r.GetRegion().GetId(), to)); err != nil {
			b.Fatal(err)
		}
		// Sweep until PD names the new leader, then once more: the sweeps
		// run through the move and the new leader's load.
		var slowDuring time.Duration
		for sweeps := 0; ; sweeps++ {
			slow, _ := sweep()
			slowDuring = max(slowDuring, slow)
			cur, err := pd.GetRegion(ctx, key)
			if err != nil {
				b.Fatal(err)
			}
			if cur.GetLeader().GetStoreId() == to {
				break
			}
			if ctx.Err() != nil || sweeps > 100 {
				b.Fatal("the leader never moved")
			}
		}
		slowAfter, _ := sweep()
		b.StopTimer()
		b.ReportMetric(float64(n)/grantSecs, "grants/s")
		b.ReportMetric(rate, "keepalives/s")
		b.ReportMetric(float64(rssAfter-rssBefore)/float64(n), "rss-bytes/lease")
		b.ReportMetric(float64(slowBefore.Milliseconds()), "slowest-batch-before-ms")
		b.ReportMetric(float64(max(slowDuring, slowAfter).Milliseconds()), "slowest-batch-leader-move-ms")
		cancel()
		c.Stop()
	}
}
