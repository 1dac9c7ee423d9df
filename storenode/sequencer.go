package storenode

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// The sequencer gives writes their revisions and proposes them in that
// order. One goroutine takes everything queued, asks PD for that many
// consecutive timestamps in one call, and hands the writes to their regions
// in timestamp order (raftstore.ProposeAsync keeps call order), so a
// region's log holds its writes in revision order. It also tracks, per
// region, which revisions are in flight: a resolved revision T is published
// only when no write below T can still apply.
type sequencer struct {
	s      *Server
	mu     sync.Mutex
	queue  []*seqItem
	signal chan struct{}
	stopc  chan struct{}
	once   sync.Once

	fmu      sync.Mutex
	fcond    *sync.Cond
	inflight map[uint64]map[int64]struct{} // region → revisions proposed, not finished
}

type seqItem struct {
	regionID uint64
	epoch    *metapb.RegionEpoch
	cmd      *kvpb.WriteCommand // nil: a resolve marker, only a revision
	// term is the term in which this store led the region when the item
	// was sequenced, read before its revision was drawn.
	term uint64
	// inTerm, when set, is the only term the write may be proposed in.
	inTerm  uint64
	rev     int64
	pending *raftstore.Pending
	err     error
	ready   chan struct{}
}

func newSequencer(s *Server) *sequencer {
	q := &sequencer{s: s, signal: make(chan struct{}, 1), stopc: make(chan struct{}), inflight: map[uint64]map[int64]struct{}{}}
	q.fcond = sync.NewCond(&q.fmu)
	return q
}

func (q *sequencer) stop() {
	q.once.Do(func() {
		close(q.stopc)
		q.fmu.Lock()
		q.fcond.Broadcast()
		q.fmu.Unlock()
	})
}

var errStopping = errors.New("storenode: store is stopping")

func (q *sequencer) enqueue(it *seqItem) error {
	select {
	case <-q.stopc:
		return errStopping
	default:
	}
	q.mu.Lock()
	q.queue = append(q.queue, it)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
	return nil
}

// maxRevisionRetries: a write whose revision crossed another's on the way
// to the log is retried with a new revision this many times.
const maxRevisionRetries = 5

// submit gives cmd a revision, proposes it to the region, and returns what
// applying it produced.
func (q *sequencer) submit(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch, cmd *kvpb.WriteCommand) (*mvcc.WriteResult, error) {
	return q.submitInTerm(ctx, regionID, epoch, 0, cmd)
}

// submitInTerm is submit for a write that is only valid while this store
// leads the region in term (0: any term): state kept in memory for one
// term, as the lease owner's, must not be acted on in another.
func (q *sequencer) submitInTerm(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch, term uint64, cmd *kvpb.WriteCommand) (*mvcc.WriteResult, error) {
	for attempt := 0; ; attempt++ {
		it := &seqItem{regionID: regionID, epoch: epoch, cmd: cmd, inTerm: term, ready: make(chan struct{})}
		if err := q.enqueue(it); err != nil {
			return nil, err
		}
		select {
		case <-it.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if it.err != nil {
			return nil, it.err
		}
		res, err := it.pending.Wait(ctx)
		if err != nil {
			return nil, err
		}
		wr := res.(*mvcc.WriteResult)
		if errors.Is(wr.Err, mvcc.ErrRevisionOrder) && attempt < maxRevisionRetries {
			continue
		}
		return wr, nil
	}
}

// marker returns a revision for regionID ordered after every write queued
// for it so far.
func (q *sequencer) marker(ctx context.Context, regionID uint64) (int64, error) {
	it := &seqItem{regionID: regionID, ready: make(chan struct{})}
	if err := q.enqueue(it); err != nil {
		return 0, err
	}
	select {
	case <-it.ready:
		return it.rev, it.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (q *sequencer) run() {
	var batch []*seqItem
	for {
		select {
		case <-q.stopc:
			q.failQueued(errStopping)
			return
		case <-q.signal:
		}
		for {
			q.mu.Lock()
			batch, q.queue = q.queue, batch[:0]
			q.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for len(batch) > 0 {
				n := min(len(batch), 4096)
				q.sequence(batch[:n])
				batch = batch[n:]
			}
		}
	}
}

// sequence assigns revisions to items and proposes them in order.
//
// Why the leader's term is read before the timestamps are drawn and checked
// again when the write reaches the log: a resolved revision T published by
// one leader promises that no write at or below T appears later. Its
// sequencer only knows its own writes; another store that becomes leader
// must therefore never propose a revision drawn before its leadership
// began. A term that began before the draw was won with votes cast after
// the old leader's last quorum acknowledgement, hence after the old
// leader drew T, so every revision drawn after it is above T.
func (q *sequencer) sequence(items []*seqItem) {
	live := items[:0:0]
	for _, it := range items {
		st := q.s.store.RegionStatus(it.regionID)
		switch {
		case st == nil:
			it.err = region.RegionNotFound(it.regionID)
		case !st.IsLeader(), it.inTerm != 0 && st.Term != it.inTerm:
			it.err = region.NotLeader(it.regionID, st.Leader)
		default:
			it.term = st.Term
			live = append(live, it)
			continue
		}
		close(it.ready)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(q.s.ctx, 10*time.Second)
	first, err := q.s.pd.GetTSRange(ctx, uint32(len(live)))
	cancel()
	for i, it := range live {
		if err != nil {
			it.err = err
			close(it.ready)
			continue
		}
		it.rev = int64(first) + int64(i)
		if it.cmd != nil {
			it.cmd.Revision = it.rev
			data, merr := proto.Marshal(it.cmd)
			if merr != nil {
				it.err = merr
			} else if it.pending, it.err = q.s.store.ProposeAsyncInTerm(it.regionID, it.epoch, it.term, data); it.err == nil {
				q.track(it.regionID, it.rev, it.pending)
			}
		}
		close(it.ready)
	}
}

func (q *sequencer) failQueued(err error) {
	q.mu.Lock()
	queue := q.queue
	q.queue = nil
	q.mu.Unlock()
	for _, it := range queue {
		it.err = err
		close(it.ready)
	}
}

// track records an in-flight write until its proposal finished (applied or
// certainly not), whatever its caller's context does.
func (q *sequencer) track(regionID uint64, rev int64, p *raftstore.Pending) {
	q.fmu.Lock()
	m := q.inflight[regionID]
	if m == nil {
		m = map[int64]struct{}{}
		q.inflight[regionID] = m
	}
	m[rev] = struct{}{}
	q.fmu.Unlock()
	go func() {
		select {
		case <-p.Done():
		case <-q.stopc:
		}
		q.fmu.Lock()
		delete(q.inflight[regionID], rev)
		if len(q.inflight[regionID]) == 0 {
			delete(q.inflight, regionID)
		}
		q.fcond.Broadcast()
		q.fmu.Unlock()
	}()
}

// waitBelow waits until no write of regionID below rev is in flight, or
// ctx ends (a leader cut off from its quorum keeps its writes pending).
func (q *sequencer) waitBelow(ctx context.Context, regionID uint64, rev int64) error {
	stop := context.AfterFunc(ctx, func() {
		q.fmu.Lock()
		q.fcond.Broadcast()
		q.fmu.Unlock()
	})
	defer stop()
	q.fmu.Lock()
	defer q.fmu.Unlock()
	for {
		select {
		case <-q.stopc:
			return errStopping
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		blocked := false
		for r := range q.inflight[regionID] {
			if r < rev {
				blocked = true
				break
			}
		}
		if !blocked {
			return nil
		}
		q.fcond.Wait()
	}
}

// resolveLoop publishes, for every region this store leads that has
// watchers, a resolved revision every ResolveInterval: a revision T such
// that no write at or below T can appear in the region any more. Regions a
// client asked to resolve now (resolveDemands) are resolved between ticks.
func (s *Server) resolveLoop() {
	t := time.NewTicker(s.cfg.ResolveInterval)
	defer t.Stop()
	// Regions are resolved concurrently and a region still resolving is
	// skipped: one whose writes hang (its leader lost its quorum) holds up
	// no other region and no later tick. A demanded region that is busy
	// stays demanded, and is served when its resolve in flight ends: that
	// one may have drawn its revision before the writes the demand is
	// about.
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	busy := map[uint64]bool{}
	sem := make(chan struct{}, resolveConcurrency)
	// A region resolves on demand at most once per demandedResolveGap;
	// later serves the demands held back by it.
	lastDemanded := map[uint64]time.Time{}
	var later <-chan time.Time
	for {
		var ids []uint64
		demanded := false
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			ids = s.watches.watchedRegions()
			for id, at := range lastDemanded {
				if time.Since(at) >= demandedResolveGap {
					delete(lastDemanded, id)
				}
			}
		case <-s.demands.wake:
			ids, demanded = s.demands.take(), true
		case <-later:
			later = nil
			ids, demanded = s.demands.take(), true
		}
		now := time.Now()
		for _, id := range ids {
			st := s.store.RegionStatus(id)
			// A merge source resolves nothing: it takes no reads until its
			// merge ends, and then its watchers move to the target.
			if st == nil || !st.IsLeader() || st.Merge != nil {
				continue
			}
			if demanded && now.Sub(lastDemanded[id]) < demandedResolveGap {
				s.demands.keep(id)
				if later == nil {
					later = time.After(demandedResolveGap - now.Sub(lastDemanded[id]))
				}
				continue
			}
			mu.Lock()
			skip := busy[id]
			busy[id] = true
			mu.Unlock()
			if skip {
				if demanded {
					s.demands.keep(id)
				}
				continue
			}
			if demanded {
				lastDemanded[id] = now
			}
			select {
			case sem <- struct{}{}:
			case <-s.ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer func() {
					mu.Lock()
					delete(busy, id)
					mu.Unlock()
					s.demands.wakeIfPending(id)
					<-sem
					wg.Done()
				}()
				if rev, _, err := s.resolve(s.ctx, id, st.Region.GetRegionEpoch()); err == nil {
					s.watches.progress(id, rev)
				}
			}()
		}
	}
}

// demandedResolveGap bounds how often one region resolves because a watch
// asked: a watch across regions asks whenever it holds an event, and under
// a stream of writes every resolve (a timestamp, a wait for the writes
// before it, a ReadIndex round) would otherwise follow the last at once.
const demandedResolveGap = 25 * time.Millisecond

// resolveConcurrency bounds the regions resolved at once.
const resolveConcurrency = 64

// resolve computes a resolved revision for one region: a marker revision
// T ordered after every queued write, then every write below T finished,
// then a ReadIndex round (everything committed, earlier leaders' entries
// included, is applied).
//
// The ReadIndex round's guard is returned: a read served right after the
// resolve uses it instead of a second round.
func (s *Server) resolve(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch) (int64, *raftstore.ReadGuard, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t, err := s.seq.marker(ctx, regionID)
	if err != nil {
		return 0, nil, err
	}
	if err := s.seq.waitBelow(ctx, regionID, t); err != nil {
		return 0, nil, err
	}
	guard, err := s.store.ReadIndex(ctx, regionID, epoch)
	if err != nil {
		return 0, nil, err
	}
	return t, guard, nil
}
