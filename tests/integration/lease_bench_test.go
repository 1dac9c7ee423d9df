package integration

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/tests/procs"
)

// storesRSS sums the resident memory of the cluster's stores, in bytes.
func storesRSS(b *testing.B, c *procs.Cluster) int64 {
	var total int64
	for _, p := range c.Stores {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID()))
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				total += kb << 10
			}
		}
	}
	return total
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
		rssBefore := storesRSS(b, c)
		b.StartTimer()

		ids := make([]int64, leases)
		var next atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for g := 0; g < 200; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1) - 1; i < leases; i = next.Add(1) - 1 {
					r, err := cl.LeaseGrant(ctx, 120, 0)
					if err != nil {
						b.Error(err)
						return
					}
					ids[i] = r.GetId()
				}
			}()
		}
		wg.Wait()
		grantSecs := time.Since(start).Seconds()
		if b.Failed() {
			b.FailNow()
		}

		var renewed atomic.Int64
		start = time.Now()
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
		rssAfter := storesRSS(b, c)

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
