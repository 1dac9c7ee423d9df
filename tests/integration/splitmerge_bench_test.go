package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/procs"
)

// BenchmarkManualSplits: 1,000 manual splits of a 3-store cluster, one
// `region split KEY` call each, in key order (each splits the region the
// previous one made).
func BenchmarkManualSplits(b *testing.B) {
	for range b.N {
		b.StopTimer()
		c := procs.Start(b, procs.Options{PDs: 1, Stores: 3})
		cl := c.Client(b)
		waitReplicated(b, c)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		b.StartTimer()
		start := time.Now()
		for i := 0; i < 1000; i++ {
			if _, err := cl.SplitRegions(ctx, [][]byte{[]byte(fmt.Sprintf("s%05d", i))}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds())/1000, "ms/split")
		b.StopTimer()
		cancel()
		c.Stop()
	}
}

// BenchmarkWritesDuringSplitMerge: write throughput of 32 concurrent
// writers over 64 regions, alone and while a background loop keeps
// splitting regions and merging neighbours back; reported as the ratio.
// Phases alternate (quiet, busy, quiet) so drift of this shared machine
// shows.
func BenchmarkWritesDuringSplitMerge(b *testing.B) {
	for range b.N {
		b.StopTimer()
		c := procs.Start(b, procs.Options{PDs: 1, Stores: 3})
		cl := c.Client(b)
		waitReplicated(b, c)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		splitNumbered(b, cl, 64, 10000)
		b.StartTimer()
		const phase = 10 * time.Second
		quiet1 := writeFor(b, ctx, cl, phase, nil)
		var churn atomic.Int64
		busy := writeFor(b, ctx, cl, phase, func(stop <-chan struct{}) { splitMergeLoop(ctx, cl, stop, &churn) })
		quiet2 := writeFor(b, ctx, cl, phase, nil)
		b.StopTimer()
		b.ReportMetric(quiet1, "quiet1-puts/s")
		b.ReportMetric(busy, "busy-puts/s")
		b.ReportMetric(quiet2, "quiet2-puts/s")
		b.ReportMetric(busy/((quiet1+quiet2)/2), "busy/quiet")
		b.ReportMetric(float64(churn.Load())/phase.Seconds(), "splits+merges/s")
		cancel()
		c.Stop()
	}
}

// writeFor runs 32 writers for d (and bg alongside, until they stop) and
// returns the puts per second.
func writeFor(b *testing.B, ctx context.Context, cl *client.Client, d time.Duration, bg func(stop <-chan struct{})) float64 {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if bg != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bg(stop)
		}()
	}
	var puts atomic.Int64
	var failed atomic.Value
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			val := make([]byte, 256)
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("k%04d", r.IntN(10000))
				if _, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte(k), Value: val}); err != nil {
					failed.Store(err)
					return
				}
				puts.Add(1)
			}
		}()
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("a write failed: %v", err)
	}
	return float64(puts.Load()) / d.Seconds()
}

// splitMergeLoop splits a random region at a fresh key and merges it back
// into its neighbour, over and over.
func splitMergeLoop(ctx context.Context, cl *client.Client, stop <-chan struct{}, done *atomic.Int64) {
	r := rand.New(rand.NewPCG(7, 7))
	for {
		select {
		case <-stop:
			return
		default:
		}
		k := []byte(fmt.Sprintf("k%04d-%d", r.IntN(10000), r.IntN(1000)))
		made, err := cl.SplitRegions(ctx, [][]byte{k})
		if err != nil || len(made) != 2 {
			continue
		}
		done.Add(1)
		if _, err := cl.MergeRegions(ctx, made[1].GetId(), made[0].GetId()); err == nil {
			done.Add(1)
		}
	}
}
