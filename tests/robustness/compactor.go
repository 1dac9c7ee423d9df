package robustness

import (
	"context"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// compact compacts every 300–800 ms, through the clients in turn, until
// ctx ends, so lists and reads of old revisions meet compacted revisions
// (and say so with ErrCompacted) while everything else goes on.
//
// It never compacts above the last event any watch delivered: each
// watch resumes (clientv3 after its store restarts, resumingWatch on
// purpose, Basalt's client per region behind them) from after what it
// delivered, and a watch resumed at a compacted revision is cancelled,
// which this suite counts as a failure. A Kubernetes API server compacts
// well behind its watch caches for the same reason. Mostly it compacts at
// the previous tick's candidate, so what it removes is 300–800 ms old and a
// list of a few pages finishes before its revision goes; one time in three
// at the current one, so lists in flight meet ErrCompacted too.
func compact(ctx context.Context, clis []*clientv3.Client, watches []*recordedWatch, rng *rand.Rand, h *history) {
	var candidate, done int64
	for i := 0; ctx.Err() == nil; i++ {
		sleep(ctx, time.Duration(300+rng.IntN(500))*time.Millisecond)
		next := int64(-1)
		for _, w := range watches {
			if r := w.lastEventRevision(); next < 0 || r < next {
				next = r
			}
		}
		rev := candidate
		if rng.IntN(3) == 0 {
			rev = next
		}
		candidate = next
		if rev <= done || ctx.Err() != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := clis[i%len(clis)].Compact(cctx, rev)
		cancel()
		switch {
		case err == nil:
			h.count("compact ok")
			done = rev
		case ctx.Err() == nil:
			h.count("compact failed")
		}
	}
}

// lastEventRevision is the revision of the last event the watch delivered
// (0: none yet).
func (w *recordedWatch) lastEventRevision() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.resps) - 1; i >= 0; i-- {
		if evs := w.resps[i].Events; len(evs) > 0 {
			return evs[len(evs)-1].GetKv().GetModRevision()
		}
	}
	return 0
}
