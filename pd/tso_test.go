package pd

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client/pdclient"
)

type tsCall struct {
	start, end time.Time
	ts         uint64
}

// checkTSOrder checks what TSO promises: every timestamp is unique, and a
// call that started after another returned got a larger timestamp.
func checkTSOrder(t *testing.T, calls []tsCall) {
	t.Helper()
	seen := make(map[uint64]bool, len(calls))
	for _, c := range calls {
		if seen[c.ts] {
			t.Fatalf("timestamp %d handed out twice", c.ts)
		}
		seen[c.ts] = true
	}
	byEnd := append([]tsCall(nil), calls...)
	sort.Slice(byEnd, func(i, j int) bool { return byEnd[i].end.Before(byEnd[j].end) })
	byStart := append([]tsCall(nil), calls...)
	sort.Slice(byStart, func(i, j int) bool { return byStart[i].start.Before(byStart[j].start) })
	var maxBefore uint64
	j := 0
	for _, c := range byStart {
		for j < len(byEnd) && byEnd[j].end.Before(c.start) {
			maxBefore = max(maxBefore, byEnd[j].ts)
			j++
		}
		if c.ts <= maxBefore {
			t.Fatalf("timestamp %d was handed out after %d had already been returned", c.ts, maxBefore)
		}
	}
}

func hammerTSO(ctx context.Context, cl *pdclient.Client, workers int, mu *sync.Mutex, calls *[]tsCall, errs *int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				start := time.Now()
				ts, err := cl.GetTS(ctx)
				end := time.Now()
				mu.Lock()
				if err != nil {
					*errs++
				} else {
					*calls = append(*calls, tsCall{start, end, ts})
				}
				mu.Unlock()
			}
		}()
	}
	return &wg
}

func TestTSOConcurrentClients(t *testing.T) {
	p := newTestPD(t, 1)
	clients := []*pdclient.Client{p.client(), p.client(), p.client()}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var calls []tsCall
	var errs int
	var wgs []*sync.WaitGroup
	for _, cl := range clients {
		wgs = append(wgs, hammerTSO(ctx, cl, 16, &mu, &calls, &errs))
	}
	waitFor(t, "20,000 timestamps", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) >= 20000
	})
	cancel()
	for _, wg := range wgs {
		wg.Wait()
	}
	checkTSOrder(t, calls)
	// Timestamps follow the wall clock.
	phys, _ := ParseTS(calls[len(calls)-1].ts)
	if d := time.Since(time.UnixMilli(phys)); d > 5*time.Second || d < -5*time.Second {
		t.Fatalf("timestamp physical part is %v away from now", d)
	}
}

// Kill the PD leader while clients take timestamps: they move to the new
// leader, and no timestamp goes backwards or repeats.
func TestTSOAcrossLeaderKill(t *testing.T) {
	p := newTestPD(t, 3)
	cl := p.client()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var calls []tsCall
	var errs int
	wg := hammerTSO(ctx, cl, 8, &mu, &calls, &errs)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(calls) }
	waitFor(t, "timestamps before the kill", 20*time.Second, func() bool { return count() >= 2000 })
	old := p.leader()
	// Every other member's clock an hour behind the killed leader's: only
	// the persisted window keeps the next leader's timestamps above the
	// ones already handed out.
	for _, n := range p.names {
		if n != old {
			p.setClock(n, -time.Hour)
		}
	}
	p.stop(old)
	before := count()
	waitFor(t, "timestamps from the new leader", 30*time.Second, func() bool { return count() >= before+2000 })
	if nl := p.leader(); nl == old {
		t.Fatal("the killed member still leads")
	}
	cancel()
	wg.Wait()
	checkTSOrder(t, calls)
}

// A PD restarted on its data never hands out a timestamp it handed out
// before, even when its clock went back behind them.
func TestTSONoDuplicateAcrossRestart(t *testing.T) {
	p := newTestPD(t, 1)
	var last uint64
	for round := 0; round < 3; round++ {
		cl := p.client()
		for i := 0; i < 100; i++ {
			ts, err := cl.GetTS(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if ts <= last {
				t.Fatalf("round %d: timestamp %d not above %d from before the restart", round, ts, last)
			}
			last = ts
		}
		cl.Close()
		p.stop("pd1")
		// Restart with the clock an hour further behind each time: only
		// the persisted window keeps the timestamps going up.
		p.setClock("pd1", -time.Duration(round+1)*time.Hour)
		p.start("pd1")
	}
	// The new leader started above the persisted window, which is ahead of
	// the clock: its first timestamp is above the window of the last run.
	win, _ := p.server("pd1").fsm.windows()
	phys, _ := ParseTS(last)
	if uint64(phys) >= win {
		t.Fatalf("last timestamp %d ms is not below the persisted window %d", phys, win)
	}
}

func TestTSOBatchAndBadCount(t *testing.T) {
	p := newTestPD(t, 1)
	s := p.server(p.leader())
	ts, err := s.tso.alloc(1000)
	if err != nil {
		t.Fatal(err)
	}
	next, err := s.tso.alloc(1)
	if err != nil || next <= ts {
		t.Fatalf("next %d after batch ending %d: %v", next, ts, err)
	}
	if _, err := s.tso.alloc(0); err == nil {
		t.Fatal("count 0 accepted")
	}
	if _, err := s.tso.alloc(1<<18 + 1); err == nil {
		t.Fatal("count above 2^18 accepted")
	}
	// A batch never spans two physical milliseconds.
	for i := 0; i < 200; i++ {
		last, err := s.tso.alloc(100000)
		if err != nil {
			t.Fatal(err)
		}
		p1, l1 := ParseTS(last)
		p0, _ := ParseTS(last - 99999)
		if p0 != p1 || l1 < 99999 {
			t.Fatalf("batch crosses a millisecond: last %d/%d", p1, l1)
		}
	}
}
