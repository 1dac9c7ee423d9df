package pd

import (
	"context"
	"flag"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/pd/sim"
)

// Benchmarks of PD on this machine, PD and its callers in one process:
//
//	go test -run '^$' -bench 'TSO' -benchtime 10s ./pd/
//	go test -run '^$' -bench 'RegionHeartbeats' -benchtime 1x ./pd/
//	go test -run '^$' -bench 'Rebalance' -benchtime 1x -timeout 30m ./pd/

var (
	simStores  = flag.Int("sim.stores", 100, "stores in the simulated cluster")
	simRegions = flag.Int("sim.regions", 100000, "regions in the simulated cluster")
	simAdd     = flag.Int("sim.add", 10, "stores added in BenchmarkRebalance")
)

// BenchmarkTSO: timestamps per second through the real client (batched,
// one RPC in flight per client), from many goroutines.
func BenchmarkTSO(b *testing.B) {
	p := newTestPD(b, 1)
	var clients []*pdclient.Client
	for i := 0; i < 4; i++ {
		clients = append(clients, p.client())
	}
	const workers = 1024
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(cl *pdclient.Client) {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, err := cl.GetTS(context.Background()); err != nil {
					b.Error(err)
					return
				}
			}
		}(clients[w%len(clients)])
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tso/s")
}

func newSimCluster(b *testing.B, sc ScheduleConfig, interval time.Duration) (*testPD, *sim.Cluster) {
	p := newTestPDWithSchedule(b, 1, sc)
	p.leader()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := sim.New(ctx, p.endpoints(), sim.Options{HeartbeatInterval: interval, RegionSize: 8 << 20, RegionKeys: 80000})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	if err := c.BootstrapSpread(ctx, *simStores, *simRegions, 3); err != nil {
		b.Fatal(err)
	}
	return p, c
}

// BenchmarkRegionHeartbeats: region heartbeats per second PD handles, from
// 100 simulated stores streaming heartbeats for 100,000 regions (no change
// in the regions: the steady state).
func BenchmarkRegionHeartbeats(b *testing.B) {
	sc := DefaultScheduleConfig()
	sc.Schedulers = nil
	p, c := newSimCluster(b, sc, time.Hour)
	c.Round() // PD learns every region
	s := p.server(p.leader())
	waitFor(b, "PD to know every region", time.Minute, func() bool { return s.cluster.regionCount() == *simRegions })
	b.ResetTimer()
	start := time.Now()
	before := s.cluster.heartbeatCount()
	rounds := 0
	for time.Since(start) < 10*time.Second {
		c.Round()
		rounds++
	}
	waitFor(b, "PD to handle every heartbeat sent", time.Minute, func() bool {
		return s.cluster.heartbeatCount()-before >= uint64(rounds**simRegions)
	})
	elapsed := time.Since(start)
	b.ReportMetric(float64(s.cluster.heartbeatCount()-before)/elapsed.Seconds(), "heartbeats/s")
}

// BenchmarkRebalance: how long PD takes to even out replicas after stores
// join a 100-store, 100,000-region cluster (3 replicas each). Stores send
// every region's heartbeat every 10 s and report a region at once after
// changing it, as real stores do.
func BenchmarkRebalance(b *testing.B) {
	sc := DefaultScheduleConfig()
	p, c := newSimCluster(b, sc, 10*time.Second)
	c.Round()
	s := p.server(p.leader())
	waitFor(b, "PD to know every region", time.Minute, func() bool { return s.cluster.regionCount() == *simRegions })
	ctx := context.Background()
	for i := 0; i < *simAdd; i++ {
		if _, err := c.AddStore(ctx); err != nil {
			b.Fatal(err)
		}
	}
	total := *simRegions * 3
	stores := *simStores + *simAdd
	mean := total / stores
	tolerance := max(3, mean/20)
	b.ResetTimer()
	start := time.Now()
	c.Start()
	var cs []sim.StoreCount
	for {
		time.Sleep(time.Second) // sampling the simulated cluster
		cs = c.Counts()
		lo, hi := cs[0].Regions, cs[0].Regions
		for _, x := range cs {
			lo, hi = min(lo, x.Regions), max(hi, x.Regions)
		}
		if hi-lo <= 2*tolerance && lo >= mean-tolerance {
			break
		}
		if time.Since(start) > 20*time.Minute {
			b.Fatalf("not balanced after 20 minutes: replicas per store from %d to %d (mean %d)", lo, hi, mean)
		}
	}
	b.ReportMetric(time.Since(start).Seconds(), "seconds-to-balance")
	b.ReportMetric(float64(c.Steps.Load()), "steps")
}
