package storenode

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// Leases, owner side (docs/leases.md). A lease's record lives in the
// region holding region.LeaseKey(id); that region's leader runs the lease's
// clock in memory, as etcd's leader does: keep-alives are not replicated,
// and a new leader gives every lease a full TTL again.
//
// The attach protocol keeps revokes complete. A data region's leader asks
// the owner to register its key span with the lease (LeaseAttach) before
// proposing a put that attaches it; the owner answers with a revision V
// and apply accepts the put only at a revision ≤ V. A revoke first marks
// the lease revoking (in memory, so no new V is handed out, then in the
// record), waits until PD's clock passed every V handed out, and only then
// deletes the keys in every region overlapping a registered span. Those
// deletes get revisions above every V, and a region applies its writes in
// revision order, so every put that carried a check is applied before the
// delete (and deleted by it) or refused.

const (
	// tsoLogicalBits is PD's split of a timestamp (pd.LogicalBits).
	tsoLogicalBits = 18
	// leaseCheckWindow is how long, in timestamp units, an attach check
	// stays valid: 1 s. It bounds how long a revoke waits for puts still
	// on their way to the log, so it is also the longest an expiry can be
	// delayed by a put just before it; a put slower than this from check
	// to revision is refused and retried with a fresh check.
	leaseCheckWindow = int64(1000) << tsoLogicalBits
	// leaseCheckMargin: a data leader asks again when less than this is
	// left of a check (300 ms).
	leaseCheckMargin = int64(300) << tsoLogicalBits
	// minLeaseTTL is the smallest TTL granted (etcd: 1.5 election
	// timeouts, rounded up).
	minLeaseTTL = 2
	// leaseTick is how often expired leases are looked for.
	leaseTick = 50 * time.Millisecond
	// maxRevokes bounds the revokes one store runs at once.
	maxRevokes = 256
)

// leaseOwner runs the clocks of the leases held by regions this store
// leads. Its state is kept per load of a region (one ownedRegion per term
// and range version): a lease is only ever reached through the load that
// read it, and every write the owner proposes is bound to that load's term,
// so a load can never act on state a later one read.
//
// Lock order: leaseOwner.mu before the raftstore's locks (RegionStatus);
// nothing else is called under it.
type leaseOwner struct {
	s *Server

	mu      sync.Mutex
	regions map[uint64]*ownedRegion
	expiry  expiryHeap
	revokes chan struct{} // semaphore of running expiry revokes

	// bgMu guards closed and wg.Add: the store waits for the loads and
	// revokes running in the background before closing pebble.
	bgMu   sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// ownedRegion is one load of a led region's leases, for one term and one
// range.
type ownedRegion struct {
	id      uint64
	term    uint64
	version uint64
	loaded  chan struct{}
	err     error
	// loadValidUntil covers the checks earlier leaders handed out.
	loadValidUntil int64
	// leases is guarded by leaseOwner.mu.
	leases map[int64]*ownedLease
}

type ownedLease struct {
	id, ttl int64
	or      *ownedRegion
	expiry  time.Time
	// revoking is set before the revoking mark is proposed: no check is
	// handed out after it.
	revoking bool
	// maxValidUntil is the highest check handed out for the lease.
	maxValidUntil int64
	spans         []*kvpb.KeySpan
	// heapIdx is the lease's place in leaseOwner.expiry, -1 when out of it
	// (an expiry revoke is running).
	heapIdx int
}

func newLeaseOwner(s *Server) *leaseOwner {
	return &leaseOwner{s: s, regions: map[uint64]*ownedRegion{}, revokes: make(chan struct{}, maxRevokes)}
}

var errNotLeaseOwner = errors.New("storenode: this store no longer runs the region's leases; retry")

// goBackground runs fn unless the store is stopping; it reports whether it
// did.
func (o *leaseOwner) goBackground(fn func()) bool {
	o.bgMu.Lock()
	defer o.bgMu.Unlock()
	if o.closed {
		return false
	}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		fn()
	}()
	return true
}

// stop waits for the background loads and revokes; none starts after it.
func (o *leaseOwner) stop() {
	o.bgMu.Lock()
	o.closed = true
	o.bgMu.Unlock()
	o.wg.Wait()
}

// currentLocked reports whether or is still the region's load.
func (o *leaseOwner) currentLocked(or *ownedRegion) bool { return o.regions[or.id] == or }

// owned returns the region's lease state, loading it first when this store
// has just become its leader (or its range changed).
func (o *leaseOwner) owned(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch) (*ownedRegion, error) {
	st := o.s.store.RegionStatus(regionID)
	if st == nil {
		return nil, region.RegionNotFound(regionID)
	}
	if !st.IsLeader() {
		return nil, region.NotLeader(regionID, st.Leader)
	}
	if epoch != nil && !region.CheckEpoch(region.CmdRead, epoch, st.Region.GetRegionEpoch()) {
		return nil, region.EpochNotMatch(st.Region)
	}
	version := st.Region.GetRegionEpoch().GetVersion()
	o.mu.Lock()
	or := o.regions[regionID]
	if or == nil || or.term < st.Term || (or.term == st.Term && or.version < version) {
		if or != nil {
			o.dropRegionLocked(regionID)
		}
		or = &ownedRegion{id: regionID, term: st.Term, version: version, loaded: make(chan struct{}), leases: map[int64]*ownedLease{}}
		o.regions[regionID] = or
		nor, repoch := or, st.Region.GetRegionEpoch()
		if !o.goBackground(func() { o.load(nor, repoch) }) {
			delete(o.regions, regionID)
			or.err = errStopping
			close(or.loaded)
		}
	} else if or.term != st.Term || or.version != version {
		o.mu.Unlock()
		return nil, errNotLeaseOwner // the status read above is older than the load
	}
	o.mu.Unlock()
	select {
	case <-or.loaded:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if or.err != nil {
		return nil, or.err
	}
	return or, nil
}

// load reads the region's lease records once every earlier leader's
// writes are applied, and starts each lease's clock with a full TTL.
func (o *leaseOwner) load(or *ownedRegion, epoch *metapb.RegionEpoch) {
	defer close(or.loaded)
	fail := func(err error) {
		or.err = err
		o.mu.Lock()
		if o.currentLocked(or) {
			o.dropRegionLocked(or.id)
		}
		o.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(o.s.ctx, 10*time.Second)
	defer cancel()
	guard, err := o.s.store.ReadIndex(ctx, or.id, epoch)
	if err != nil {
		fail(err)
		return
	}
	// Checks handed out by an earlier leader were drawn before this term
	// began, so before now: a revoke here waits until PD's clock passes
	// now + the window.
	ts, err := o.s.pd.GetTS(ctx)
	if err != nil {
		fail(err)
		return
	}
	r := o.s.mvcc.Region(or.id)
	if r == nil {
		fail(region.RegionNotFound(or.id))
		return
	}
	recs, err := o.s.mvcc.LeaseRecords(r)
	if err == nil {
		err = guard.Check()
	}
	if err != nil {
		fail(err)
		return
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.currentLocked(or) {
		or.err = errNotLeaseOwner
		return
	}
	or.loadValidUntil = int64(ts) + leaseCheckWindow
	for _, rec := range recs {
		l := &ownedLease{id: rec.GetId(), ttl: rec.GetTtl(), or: or, revoking: rec.GetRevoking(),
			maxValidUntil: or.loadValidUntil, spans: rec.GetSpans(), heapIdx: -1}
		at := now.Add(time.Duration(rec.GetTtl()) * time.Second)
		if rec.GetRevoking() {
			at = now // finish the revoke an earlier leader started
		}
		or.leases[l.id] = l
		o.setExpiryLocked(l, at)
	}
}

// dropRegionLocked forgets a region's load (leadership or range changed):
// its clocks stop here and start again wherever it is led.
func (o *leaseOwner) dropRegionLocked(regionID uint64) {
	or := o.regions[regionID]
	if or == nil {
		return
	}
	delete(o.regions, regionID)
	for _, l := range or.leases {
		if l.heapIdx >= 0 {
			heap.Remove(&o.expiry, l.heapIdx)
		}
	}
	or.leases = map[int64]*ownedLease{}
}

// setExpiryLocked (re)starts a lease's clock.
func (o *leaseOwner) setExpiryLocked(l *ownedLease, at time.Time) {
	l.expiry = at
	if l.heapIdx >= 0 {
		heap.Fix(&o.expiry, l.heapIdx)
	} else {
		heap.Push(&o.expiry, l)
	}
}

// removeLocked forgets a lease, if it is still the one its load holds.
func (o *leaseOwner) removeLocked(l *ownedLease) {
	if l.or.leases[l.id] != l {
		return
	}
	delete(l.or.leases, l.id)
	if l.heapIdx >= 0 {
		heap.Remove(&o.expiry, l.heapIdx)
	}
}

// leaseLocked returns the lease of a current load; errNotLeaseOwner when
// the load is no longer current (the caller retries against the new one).
func (o *leaseOwner) leaseLocked(or *ownedRegion, id int64) (*ownedLease, error) {
	if !o.currentLocked(or) {
		return nil, errNotLeaseOwner
	}
	return or.leases[id], nil
}

func normalizeTTL(ttl int64) (int64, error) {
	if ttl > mvcc.MaxLeaseTTL {
		return 0, mvcc.ErrLeaseTTLTooLarge
	}
	return max(ttl, minLeaseTTL), nil
}

var errBadLeaseID = errors.New("basalt: lease ID must be positive")

// grant creates a lease in the region holding its record.
func (o *leaseOwner) grant(ctx context.Context, c *kvpb.Context, id, ttl int64) (*kvpb.LeaseGrantResponse, error) {
	ttl, err := normalizeTTL(ttl)
	if err != nil {
		return nil, err
	}
	if id <= 0 {
		return nil, errBadLeaseID
	}
	or, err := o.owned(ctx, c.GetRegionId(), c.GetRegionEpoch())
	if err != nil {
		return nil, err
	}
	res, err := o.s.seq.submitInTerm(ctx, c.GetRegionId(), c.GetRegionEpoch(), or.term, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseGrant{
		LeaseGrant: &kvpb.LeaseGrantRequest{Id: id, Ttl: ttl}}})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	// Applied in this load's term: a load that is no longer current was
	// replaced by one that read the record after it applied.
	if o.currentLocked(or) {
		if old := or.leases[id]; old != nil {
			o.removeLocked(old)
		}
		l := &ownedLease{id: id, ttl: ttl, or: or, heapIdx: -1}
		or.leases[id] = l
		o.setExpiryLocked(l, time.Now().Add(time.Duration(ttl)*time.Second))
	}
	o.mu.Unlock()
	return res.Response.(*kvpb.LeaseGrantResponse), nil
}

// keepAlive renews the region's listed leases; 0 for one it does not have
// (or that expired and is being revoked).
func (o *leaseOwner) keepAlive(ctx context.Context, c *kvpb.Context, ids []int64) ([]int64, error) {
	or, err := o.owned(ctx, c.GetRegionId(), c.GetRegionEpoch())
	if err != nil {
		return nil, err
	}
	// A deposed leader must not renew: the new one would let the lease
	// expire while its holder believes it renewed.
	guard, err := o.s.store.ReadIndex(ctx, or.id, c.GetRegionEpoch())
	if err != nil {
		return nil, err
	}
	if err := guard.Check(); err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]int64, len(ids))
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.currentLocked(or) {
		return nil, errNotLeaseOwner
	}
	for i, id := range ids {
		l := or.leases[id]
		if l == nil || l.revoking || l.heapIdx < 0 || !l.expiry.After(now) {
			continue
		}
		o.setExpiryLocked(l, now.Add(time.Duration(l.ttl)*time.Second))
		out[i] = l.ttl
	}
	return out, nil
}

// readOwned runs read against the records of a region this store leads,
// linearizably (a ReadIndex before, its guard checked after).
func (o *leaseOwner) readOwned(ctx context.Context, c *kvpb.Context, read func(r *mvcc.Region) error) (*ownedRegion, *mvcc.Region, error) {
	or, err := o.owned(ctx, c.GetRegionId(), c.GetRegionEpoch())
	if err != nil {
		return nil, nil, err
	}
	guard, err := o.s.store.ReadIndex(ctx, or.id, c.GetRegionEpoch())
	if err != nil {
		return nil, nil, err
	}
	r := o.s.mvcc.Region(or.id)
	if r == nil {
		return nil, nil, region.RegionNotFound(or.id)
	}
	if err := read(r); err != nil {
		return nil, nil, err
	}
	return or, r, guard.Check()
}

// timeToLive describes a lease (ttl -1: none).
func (o *leaseOwner) timeToLive(ctx context.Context, c *kvpb.Context, id int64) (*kvpb.LeaseTimeToLiveResponse, error) {
	var rec *kvpb.LeaseRecord
	or, r, err := o.readOwned(ctx, c, func(r *mvcc.Region) (err error) {
		rec, err = o.s.mvcc.LeaseRecord(r, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &kvpb.LeaseTimeToLiveResponse{Header: &kvpb.ResponseHeader{Revision: r.Revision()}, Id: id, Ttl: -1}
	if rec == nil || rec.GetRevoking() {
		return resp, nil
	}
	resp.GrantedTtl, resp.Spans = rec.GetTtl(), rec.GetSpans()
	o.mu.Lock()
	defer o.mu.Unlock()
	l, err := o.leaseLocked(or, id)
	if err != nil {
		return nil, err
	}
	if l != nil {
		resp.Ttl = max(0, int64(time.Until(l.expiry).Round(time.Second)/time.Second))
	}
	return resp, nil
}

// list returns the leases the region holds.
func (o *leaseOwner) list(ctx context.Context, c *kvpb.Context) ([]int64, error) {
	var recs []*kvpb.LeaseRecord
	_, _, err := o.readOwned(ctx, c, func(r *mvcc.Region) (err error) {
		recs, err = o.s.mvcc.LeaseRecords(r)
		return err
	})
	if err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(recs))
	for _, rec := range recs {
		if !rec.GetRevoking() {
			ids = append(ids, rec.GetId())
		}
	}
	return ids, nil
}

// attach registers span with the lease and returns the revision up to
// which puts in span may attach it.
func (o *leaseOwner) attach(ctx context.Context, c *kvpb.Context, id int64, span *kvpb.KeySpan) (int64, error) {
	or, err := o.owned(ctx, c.GetRegionId(), c.GetRegionEpoch())
	if err != nil {
		return 0, err
	}
	ts, err := o.s.pd.GetTS(ctx)
	if err != nil {
		return 0, err
	}
	until := int64(ts) + leaseCheckWindow
	o.mu.Lock()
	l, err := o.leaseLocked(or, id)
	if err != nil {
		o.mu.Unlock()
		return 0, err
	}
	if l == nil || l.revoking || !l.expiry.After(time.Now()) {
		o.mu.Unlock()
		return 0, mvcc.ErrLeaseNotFound
	}
	if _, uncovered := mvcc.AddSpan(l.spans, span); !uncovered {
		// Recorded before leadership is confirmed: a revoke that starts
		// meanwhile waits for it.
		l.maxValidUntil = max(l.maxValidUntil, until)
		o.mu.Unlock()
		guard, err := o.s.store.ReadIndex(ctx, or.id, c.GetRegionEpoch())
		if err == nil {
			err = guard.Check()
		}
		if err != nil {
			return 0, err
		}
		return until, nil
	}
	o.mu.Unlock()
	res, err := o.s.seq.submitInTerm(ctx, or.id, c.GetRegionEpoch(), or.term, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseAttach{
		LeaseAttach: &kvpb.LeaseAttachRequest{Id: id, Span: span}}})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return 0, err
	}
	rec := res.Response.(*kvpb.LeaseRecord)
	o.mu.Lock()
	defer o.mu.Unlock()
	if cur, err := o.leaseLocked(or, id); err != nil {
		return 0, err
	} else if cur != l || l.revoking {
		// A revoke began while the span was registered; it may already
		// have read the checks handed out.
		return 0, mvcc.ErrLeaseNotFound
	}
	if len(rec.GetSpans()) >= len(l.spans) {
		l.spans = rec.GetSpans()
	}
	l.maxValidUntil = max(l.maxValidUntil, until)
	return until, nil
}

// revoke deletes every key attached to the lease, then its record.
func (o *leaseOwner) revoke(ctx context.Context, c *kvpb.Context, id int64) error {
	or, err := o.owned(ctx, c.GetRegionId(), c.GetRegionEpoch())
	if err != nil {
		return err
	}
	o.mu.Lock()
	l, err := o.leaseLocked(or, id)
	o.mu.Unlock()
	if err != nil {
		return err
	}
	return o.revokeOwned(ctx, or, c.GetRegionEpoch(), id, l)
}

// revokeOwned runs a revoke through a load (l: the lease it holds, if
// any). Every step can be run again: once the record is marked, a failure
// puts the lease back on the clock to be revoked again soon, and a new
// leader finds the mark when it loads.
func (o *leaseOwner) revokeOwned(ctx context.Context, or *ownedRegion, epoch *metapb.RegionEpoch, id int64, l *ownedLease) (err error) {
	o.mu.Lock()
	if l != nil && or.leases[id] == l {
		l.revoking = true
	}
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		if l == nil || !o.currentLocked(or) || or.leases[id] != l {
			return
		}
		switch {
		case err == nil, errors.Is(err, mvcc.ErrLeaseNotFound):
			o.removeLocked(l)
		default:
			// Finish it soon: once revoking, the lease takes no keep-alive
			// and no key.
			o.setExpiryLocked(l, time.Now().Add(revokeRetry))
		}
	}()
	res, err := o.s.seq.submitInTerm(ctx, or.id, epoch, or.term, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseRevoking{LeaseRevoking: id}})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return err
	}
	rec := res.Response.(*kvpb.LeaseRecord)
	o.mu.Lock()
	if !o.currentLocked(or) {
		o.mu.Unlock()
		return errNotLeaseOwner // the load that replaced this one finishes it
	}
	until := or.loadValidUntil
	if cur := or.leases[id]; cur != nil {
		cur.revoking = true
		until = max(until, cur.maxValidUntil)
		l = cur
	}
	o.mu.Unlock()
	return o.finishRevoke(ctx, or, epoch, id, rec, until)
}

// revokeRetry is how soon a revoke that failed part-way runs again.
const revokeRetry = 500 * time.Millisecond

// finishRevoke deletes the keys of a lease marked revoking, then its
// record.
func (o *leaseOwner) finishRevoke(ctx context.Context, or *ownedRegion, epoch *metapb.RegionEpoch, id int64, rec *kvpb.LeaseRecord, until int64) error {
	if err := o.waitPast(ctx, until); err != nil {
		return err
	}
	for _, sp := range rec.GetSpans() {
		if _, err := o.s.router.LeaseRevokeKeys(ctx, id, sp); err != nil {
			return err
		}
	}
	res, err := o.s.seq.submitInTerm(ctx, or.id, epoch, or.term, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseDelete{LeaseDelete: id}})
	if err == nil {
		err = res.Err
	}
	return err
}

// waitPast returns once PD's clock is above ts.
func (o *leaseOwner) waitPast(ctx context.Context, ts int64) error {
	for {
		now, err := o.s.pd.GetTS(ctx)
		if err != nil {
			return err
		}
		if int64(now) > ts {
			return nil
		}
		ms := (ts-int64(now))>>tsoLogicalBits + 1
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(ms) * time.Millisecond):
		}
	}
}

// run expires leases: one loop for every lease this store owns, woken by
// the earliest expiry, not a timer per lease or region.
func (o *leaseOwner) run() {
	t := time.NewTicker(leaseTick)
	defer t.Stop()
	for tick := 1; ; tick++ {
		select {
		case <-o.s.ctx.Done():
			return
		case <-t.C:
		}
		o.loadLedRegions()
		o.expire(time.Now())
		if tick%100 == 0 {
			o.s.leaseChecks.prune()
		}
	}
}

// loadLedRegions starts the clocks of lease regions this store now leads
// (keep-alives may never arrive for a lease whose holder died), and drops
// the loads of regions it no longer leads or whose range changed.
func (o *leaseOwner) loadLedRegions() {
	for _, st := range o.s.store.Regions() {
		if st == nil || !st.Initialized || !overlapsLeaseSpan(st.Region) {
			continue
		}
		id := st.Region.GetId()
		o.mu.Lock()
		or := o.regions[id]
		current := or != nil && or.term == st.Term && or.version == st.Region.GetRegionEpoch().GetVersion()
		o.mu.Unlock()
		if st.IsLeader() && !current {
			o.goBackground(func() {
				ctx, cancel := context.WithTimeout(o.s.ctx, 10*time.Second)
				defer cancel()
				_, _ = o.owned(ctx, id, nil)
			})
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, or := range o.regions {
		// A fresh status: the list above may predate the load.
		st := o.s.store.RegionStatus(id)
		if st == nil || !st.IsLeader() || st.Term > or.term ||
			(st.Term == or.term && st.Region.GetRegionEpoch().GetVersion() > or.version) {
			o.dropRegionLocked(id)
		}
	}
}

func overlapsLeaseSpan(r *metapb.Region) bool {
	return region.CompareEnd(region.LeasePrefix, r.GetEndKey()) < 0 && string(r.GetStartKey()) < string(region.LeaseSpanEnd)
}

// expire starts a revoke for every lease whose time ran out.
func (o *leaseOwner) expire(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.expiry.Len() > 0 && !o.expiry[0].expiry.After(now) {
		select {
		case o.revokes <- struct{}{}:
		default:
			return // too many revokes running: the rest wait a tick
		}
		l := heap.Pop(&o.expiry).(*ownedLease) // out of the heap while its revoke runs
		if !o.goBackground(func() { o.expireOne(l) }) {
			<-o.revokes
			return
		}
	}
}

func (o *leaseOwner) expireOne(l *ownedLease) {
	defer func() { <-o.revokes }()
	ctx, cancel := context.WithTimeout(o.s.ctx, 30*time.Second)
	defer cancel()
	or := l.or
	st := o.s.store.RegionStatus(or.id)
	if st == nil || st.Term != or.term || st.Region.GetRegionEpoch().GetVersion() != or.version {
		return // the load is stale; the region's current leader runs the clock
	}
	// A failure puts the lease back on the clock (revokeOwned).
	if err := o.revokeOwned(ctx, or, st.Region.GetRegionEpoch(), l.id, l); err != nil && o.s.ctx.Err() == nil {
		o.s.log.Debug("lease revoke failed; retrying", "lease", l.id, "err", err)
	}
}

// expiryHeap orders the owned leases by expiry (container/heap), each
// lease knowing its index so a renewal is one heap.Fix: renewals of a
// million leases never grow it.
type expiryHeap []*ownedLease

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiry.Before(h[j].expiry) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *expiryHeap) Push(x any) {
	l := x.(*ownedLease)
	l.heapIdx = len(*h)
	*h = append(*h, l)
}
func (h *expiryHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.heapIdx = -1
	return l
}

// ownedCount is how many leases the store's led regions own (metrics).
func (o *leaseOwner) ownedCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, or := range o.regions {
		n += len(or.leases)
	}
	return n
}
