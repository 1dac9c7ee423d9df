package storenode

import (
	"context"
	"sync"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/raftstore"
)

// Latest linearizable reads of one region share resolves. A read needs a
// resolved revision drawn after it arrived (so that it is above every write
// acknowledged before); a resolve is a timestamp, a wait for the region's
// writes below it and a ReadIndex round, the same for every read waiting.
// So a read joins the next resolve to start: never the one in flight,
// which may have drawn its timestamp before the read arrived. Under load
// a region then resolves about once per resolve's duration instead of
// once per read.

// resolveKey is a region at one epoch: reads naming another epoch do not
// share (the ReadIndex checks the epoch it is given).
type resolveKey struct {
	regionID, version, confVer uint64
}

// resolveFlight is one shared resolve.
type resolveFlight struct {
	fn resolveFunc
	// readers counts the reads that joined (guarded by resolveShares.mu).
	readers int
	done    chan struct{}
	t       int64
	guard   *raftstore.ReadGuard
	err     error
}

// resolveShares holds, per region and epoch, the resolve in flight and the
// one readers wait to start after it.
type resolveShares struct {
	// ctx bounds every shared resolve (the server's lifetime).
	ctx context.Context

	mu       sync.Mutex // guards the maps
	inflight map[resolveKey]*resolveFlight
	waiting  map[resolveKey]*resolveFlight
}

// resolveFunc resolves one region for every read that joined: on the
// leader Server.resolve, on a follower a ResolveRevision to the leader.
type resolveFunc func(ctx context.Context) (int64, *raftstore.ReadGuard, error)

func newResolveShares(ctx context.Context) *resolveShares {
	return &resolveShares{ctx: ctx, inflight: map[resolveKey]*resolveFlight{}, waiting: map[resolveKey]*resolveFlight{}}
}

// sharedResolve is resolve for a latest read: it returns a resolved
// revision drawn after the call, and a guard to read under, shared with
// the reads that joined the same resolve.
func (s *Server) sharedResolve(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch) (int64, *raftstore.ReadGuard, error) {
	return s.resolves.join(ctx, regionID, epoch, func(ctx context.Context) (int64, *raftstore.ReadGuard, error) {
		return s.resolve(ctx, regionID, epoch)
	})
}

// join waits for the next resolve of the region at epoch to start and end.
// fn is how to resolve when this call is the one that makes that resolve:
// the reads sharing it are all of one region at one epoch, so any of their
// fns would do.
func (rs *resolveShares) join(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch, fn resolveFunc) (int64, *raftstore.ReadGuard, error) {
	k := resolveKey{regionID, epoch.GetVersion(), epoch.GetConfVer()}
	rs.mu.Lock()
	f := rs.waiting[k]
	if f == nil {
		f = &resolveFlight{done: make(chan struct{}), fn: fn}
		rs.waiting[k] = f
		if rs.inflight[k] == nil {
			rs.startLocked(k)
		}
	}
	f.readers++
	rs.mu.Unlock()
	select {
	case <-f.done:
		return f.t, f.guard, f.err
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

// startLocked moves the waiting resolve of k in flight. Requires rs.mu.
// The resolve runs on its own goroutine with the server's context, bounded
// by resolve's own timeout: no reader's cancellation ends it for the
// others.
func (rs *resolveShares) startLocked(k resolveKey) {
	f := rs.waiting[k]
	delete(rs.waiting, k)
	rs.inflight[k] = f
	go func() {
		f.t, f.guard, f.err = f.fn(rs.ctx)
		rs.mu.Lock()
		delete(rs.inflight, k)
		if rs.waiting[k] != nil {
			rs.startLocked(k)
		}
		rs.mu.Unlock()
		close(f.done)
	}()
}
