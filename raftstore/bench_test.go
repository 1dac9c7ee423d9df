package raftstore

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/metapb"
)

// Benchmarks run three stores in one process on the real disk (fsync on),
// talking gRPC over loopback, with a blind-write state machine (the payload
// is written under its key; nothing is read). Run them with a fixed
// iteration count so each cluster is built once, e.g.
//
//	go test -run '^$' -bench 'Proposals' -benchtime 150000x -cpu 2,5 ./raftstore/
//	go test -run '^$' -bench 'IdleRegions' -benchtime 1x ./raftstore/
//
// -cpu 5 gives the Go scheduler one P per pebble WAL writer (three stores
// in one process) on top of the two cores; see docs/raftstore.md.
//
// and record the results in docs/benchmarks.md.

var idleWindow = flag.Duration("idle.window", 30*time.Second, "how long BenchmarkIdleRegions measures")

// bootstrapSpread creates n regions over the key space on every store and
// spreads their leaders over the stores.
func bootstrapSpread(c *testCluster, n int) []uint64 {
	var descs []*metapb.Region
	var ids []uint64
	for i := 0; i < n; i++ {
		id := uint64(i + 1)
		var start, end []byte
		if i > 0 {
			start = []byte(fmt.Sprintf("r%06d", i))
		}
		if i < n-1 {
			end = []byte(fmt.Sprintf("r%06d", i+1))
		}
		d := &metapb.Region{Id: id, StartKey: start, EndKey: end, RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1}}
		for _, s := range c.ids {
			d.Peers = append(d.Peers, &metapb.Peer{Id: id*10 + s, StoreId: s})
		}
		descs = append(descs, d)
		ids = append(ids, id)
	}
	// Stores bootstrap one after another, and with thousands of regions a
	// region on the first can time out its election before the last has
	// bootstrapped: its vote would create an empty replica there, and the
	// bootstrap would then find the region already present. No message
	// crosses until every store holds every region.
	for _, s := range c.ids {
		c.net.isolate(s, c.ids)
	}
	for _, s := range c.ids {
		if err := c.store(s).st.BootstrapRegions(descs); err != nil {
			c.t.Fatal(err)
		}
	}
	c.net.heal()
	for i, id := range ids {
		_ = c.store(c.ids[i%len(c.ids)]).st.Campaign(id)
	}
	for _, id := range ids {
		c.leader(id)
	}
	return ids
}

func regionKey(i int) string {
	if i == 0 {
		return ""
	}
	return fmt.Sprintf("r%06d", i)
}

func BenchmarkProposals(b *testing.B) {
	for _, n := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("regions=%d", n), func(b *testing.B) { benchProposals(b, n) })
	}
}

func benchProposals(b *testing.B, nRegions int) {
	cfg := DefaultConfig()
	c := newDiskCluster(b, 3, cfg, b.TempDir())
	regions := bootstrapSpread(c, nRegions)
	type route struct {
		st    *Store
		epoch *metapb.RegionEpoch
	}
	routes := make([]route, len(regions))
	for i, id := range regions {
		l := c.leader(id)
		routes[i] = route{l.st, l.st.RegionStatus(id).Region.GetRegionEpoch()}
	}
	value := make([]byte, 256-16)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	inflight := 1024
	if nRegions == 1 {
		inflight = 256
	}
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	cpu0 := cpuTime()
	for w := 0; w < inflight; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ri := w % len(routes)
			key := []byte(regionKey(ri) + "/" + strconv.Itoa(w))
			cmd := encodePut(key, value)
			for next.Add(1) <= int64(b.N) {
				r := routes[ri]
				if _, err := r.st.Propose(context.Background(), regions[ri], r.epoch, cmd); err != nil {
					failed.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := cpuTime() - cpu0
	if f := failed.Load(); f > int64(b.N)/100 {
		b.Fatalf("%d of %d proposals failed", f, b.N)
	}
	var syncs uint64
	for _, id := range c.ids {
		syncs += c.store(id).st.Stats().Syncs.Load()
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "proposals/s")
	b.ReportMetric(float64(b.N)/float64(max(syncs, 1)), "proposals/sync")
	b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "cpu%")
}

// BenchmarkIdleRegions measures what 10,000 idle regions × 3 replicas cost
// once they hibernate: CPU% of one core over -idle.window, and RSS.
func BenchmarkIdleRegions(b *testing.B) {
	const n = 10000
	cfg := DefaultConfig()
	c := newDiskCluster(b, 3, cfg, b.TempDir())
	t0 := time.Now()
	regions := bootstrapSpread(c, n)
	b.Logf("%d regions elected in %v", n, time.Since(t0).Round(time.Millisecond))
	waitFor(b, "every replica to hibernate", 10*time.Minute, func() bool {
		return c.allAsleep(regions, c.ids)
	})
	b.Logf("all hibernating after %v", time.Since(t0).Round(time.Millisecond))
	runtime.GC()
	b.ResetTimer()
	cpu0, wall0 := cpuTime(), time.Now()
	ticks0 := totalTicks(c, c.ids)
	time.Sleep(*idleWindow) // measuring an interval, not waiting for state
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	b.StopTimer()
	awake := 0
	for _, id := range c.ids {
		for _, r := range regions {
			if !c.store(id).st.RegionStatus(r).Hibernating {
				awake++
			}
		}
	}
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu%")
	b.ReportMetric(float64(rssBytes())/(1<<20), "rss-MiB")
	b.ReportMetric(float64(totalTicks(c, c.ids)-ticks0), "ticks")
	b.ReportMetric(float64(awake), "awake-replicas")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
