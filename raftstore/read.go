package raftstore

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// Linearizable reads. A read is safe on this replica once its applied index
// reaches an index that was the leader's commit index at some moment after
// the read arrived. Two ways to learn such an index:
//
//   - ReadIndex: raft confirms leadership with a heartbeat round and returns
//     its commit index (followers ask the leader).
//   - Leader lease: with CheckQuorum and PreVote, a follower that heard from
//     the leader neither campaigns nor votes for another candidate for an
//     election timeout. So after a quorum acknowledged the leader in response
//     to a message sent at time t, no other leader can exist before
//     t + election timeout; the lease is that minus a margin (LeaseRatio).
//     The lease starts from events whose acknowledgement we observe: a
//     ReadIndex round (once applied), the commit of an entry this leader
//     proposed, and the first entry of its term. It is revoked before a
//     leader transfer (the transferee campaigns at once) and on hibernation.
//
// During the lease the leader's applied state holds every acknowledged write
// (writes are acknowledged only after they apply on the leader), so a read
// needs no round trip once applied has caught up with commit.

type readRequest struct {
	epoch *metapb.RegionEpoch
	// force skips the lease: the read goes through a ReadIndex round (and so
	// renews the lease).
	force bool
	// known: index came with the request (ReadAtIndex), from the leader.
	known  bool
	index  uint64 // the index applied must reach; 0 until known
	done   chan struct{}
	region *metapb.Region
	err    error
}

func (r *readRequest) finish(reg *metapb.Region, err error) {
	r.region, r.err = reg, err
	close(r.done)
}

type readIndexBatch struct {
	reads       []*readRequest
	requestTime int64 // monotonic time of the ReadIndex call
	term        uint64
	tick        uint64 // p.hib.ticks when issued, for retries
	leaseIndex  uint64 // set when the ReadState arrives
}

type readState struct {
	// queued reads not yet sent as a ReadIndex.
	queued []*readRequest
	// inflight ReadIndex batches by request context.
	inflight map[uint64]*readIndexBatch
	// waiting reads with a known index, until applied reaches it.
	waiting []*readRequest
	// leaseCandidates: ReadIndex batches answered while leader, renewing the
	// lease once applied reaches their index.
	leaseCandidates []*readIndexBatch
	nextID          uint64
}

func (rs *readState) empty() bool {
	return len(rs.queued) == 0 && len(rs.inflight) == 0 && len(rs.waiting) == 0
}

// ReadGuard is permission to read a region's data from this store's pebble,
// linearizably, as of the moment it was granted. The data may change under
// the reader (a split, a snapshot replacing it, the replica's removal), so a
// reader calls Check after reading and discards what it read if Check fails.
type ReadGuard struct {
	// Region is the descriptor to read under.
	Region *metapb.Region
	// Index is the read's index: the leader's commit index at a moment
	// after the read arrived, which this replica has applied. Handed to
	// another replica of the region, it lets that one read linearizably
	// once it applied Index too (ReadAtIndex).
	Index uint64
	p     *peer
	gen   uint64
}

// Check reports whether what was read under the guard is still valid: the
// replica exists, its data was not replaced, and its range did not change.
func (g *ReadGuard) Check() error {
	st := g.p.status.Load()
	if g.p.dataGen.Load() != g.gen || st == nil || !st.Initialized {
		return region.RegionNotFound(g.Region.GetId())
	}
	if !region.CheckEpoch(region.CmdRead, g.Region.GetRegionEpoch(), st.Region.GetRegionEpoch()) {
		return region.EpochNotMatch(st.Region)
	}
	return nil
}

// ReadIndex waits until this store's replica of regionID can serve a
// linearizable read and returns the guard to read under. The caller reads
// from pebble, then calls guard.Check.
func (s *Store) ReadIndex(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch) (*ReadGuard, error) {
	p := s.getPeer(regionID)
	if p == nil {
		return nil, region.RegionNotFound(regionID)
	}
	// The generation is taken first: a change after this point fails Check.
	gen := p.dataGen.Load()
	if st := p.status.Load(); st != nil && st.Initialized {
		if !region.CheckEpoch(region.CmdRead, epoch, st.Region.GetRegionEpoch()) {
			return nil, region.EpochNotMatch(st.Region)
		}
		if st.Merge != nil {
			return nil, region.ProposalInMergingMode(regionID)
		}
		// Fast path: a valid lease and nothing committed left to apply.
		if commit := p.commitIdx.Load(); monoNow() < p.leaseExpiry.Load() && p.appliedIdx.Load() >= commit {
			s.stats.LeaseReads.Add(1)
			return &ReadGuard{Region: st.Region, Index: commit, p: p, gen: gen}, nil
		}
	}
	return p.read(ctx, &readRequest{epoch: epoch, done: make(chan struct{})}, gen)
}

// ReadAtIndex is ReadIndex with the read's index already known: index is a
// ReadGuard.Index another replica of the region (its leader) handed over,
// so this replica only waits to apply it. Committed entries are the same
// on every replica, so having applied index, it holds every write the
// leader had acknowledged when the read arrived there.
func (s *Store) ReadAtIndex(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch, index uint64) (*ReadGuard, error) {
	if index == 0 {
		panic("raftstore: ReadAtIndex without an index")
	}
	p := s.getPeer(regionID)
	if p == nil {
		return nil, region.RegionNotFound(regionID)
	}
	gen := p.dataGen.Load()
	return p.read(ctx, &readRequest{epoch: epoch, index: index, known: true, done: make(chan struct{})}, gen)
}

// read hands r to the peer's worker and waits for it to be granted.
func (p *peer) read(ctx context.Context, r *readRequest, gen uint64) (*ReadGuard, error) {
	if !p.push(func(mb *mailbox) { mb.reads = append(mb.reads, r) }) {
		return nil, region.RegionNotFound(p.regionID)
	}
	select {
	case <-r.done:
		if r.err != nil {
			return nil, r.err
		}
		return &ReadGuard{Region: r.region, Index: r.index, p: p, gen: gen}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// LeaseRemaining reports how long this store's replica of regionID may
// still act as the only leader (0 when it is not leader or has no lease).
func (s *Store) LeaseRemaining(regionID uint64) time.Duration {
	p := s.getPeer(regionID)
	if p == nil {
		return 0
	}
	if d := p.leaseExpiry.Load() - monoNow(); d > 0 {
		return time.Duration(d)
	}
	return 0
}

// RenewLease confirms leadership of regionID with a quorum (a ReadIndex
// round) and so extends the leader lease; it returns once the lease is
// renewed, or an error (NotLeader, ...) when it cannot be.
func (s *Store) RenewLease(ctx context.Context, regionID uint64) error {
	p := s.getPeer(regionID)
	if p == nil {
		return region.RegionNotFound(regionID)
	}
	st := p.status.Load()
	if st == nil || !st.IsLeader() {
		var l *metapb.Peer
		if st != nil {
			l = st.Leader
		}
		return region.NotLeader(regionID, l)
	}
	r := &readRequest{epoch: st.Region.GetRegionEpoch(), force: true, done: make(chan struct{})}
	if !p.push(func(mb *mailbox) { mb.reads = append(mb.reads, r) }) {
		return region.RegionNotFound(regionID)
	}
	select {
	case <-r.done:
		if r.err != nil {
			return r.err
		}
		if s.LeaseRemaining(regionID) == 0 {
			return region.NotLeader(regionID, nil)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handleRead starts serving one read. Runs on the worker.
func (p *peer) handleRead(r *readRequest) {
	p.activity()
	if !p.isInitialized() {
		r.finish(nil, region.RegionNotInitialized(p.regionID))
		return
	}
	if !region.CheckEpoch(region.CmdRead, r.epoch, p.region.GetRegionEpoch()) {
		r.finish(nil, region.EpochNotMatch(p.region))
		return
	}
	if p.isMerging() {
		r.finish(nil, region.ProposalInMergingMode(p.regionID))
		return
	}
	if r.known {
		p.waitApplied(r)
		return
	}
	if !r.force && p.isLeader() && monoNow() < p.leaseExpiry.Load() {
		// Lease valid: wait only for what is committed to apply.
		r.index = p.rn.BasicStatus().GetCommit()
		p.store.stats.LeaseReads.Add(1)
		p.waitApplied(r)
		return
	}
	if !p.isLeader() && p.leader == 0 {
		r.finish(nil, region.NotLeader(p.regionID, nil))
		return
	}
	p.reads.queued = append(p.reads.queued, r)
}

// finishRead grants a read whose index applied. A replica that became a
// merge source meanwhile refuses it: once the target absorbs the source,
// the source's replicas hold stale data, and one of them could still be
// elected and believe itself leader.
func (p *peer) finishRead(r *readRequest) {
	if p.isMerging() {
		r.finish(nil, region.ProposalInMergingMode(p.regionID))
		return
	}
	r.finish(p.region, nil)
}

func (p *peer) waitApplied(r *readRequest) {
	if p.storage.appliedIndex >= r.index {
		p.finishRead(r)
		return
	}
	p.reads.waiting = append(p.reads.waiting, r)
}

// issueReadIndex sends one ReadIndex for every read queued this round.
func (p *peer) issueReadIndex() {
	if len(p.reads.queued) == 0 {
		return
	}
	if p.reads.inflight == nil {
		p.reads.inflight = make(map[uint64]*readIndexBatch)
	}
	p.reads.nextID++
	id := p.reads.nextID
	b := &readIndexBatch{reads: p.reads.queued, requestTime: monoNow(), term: p.term, tick: p.hib.ticks}
	p.reads.queued = nil
	p.reads.inflight[id] = b
	var ctx [8]byte
	binary.BigEndian.PutUint64(ctx[:], id)
	p.store.stats.ReadIndexes.Add(1)
	p.rn.ReadIndex(ctx[:])
}

// onReadStates handles raft's answers to ReadIndex.
func (p *peer) onReadStates() {
	for _, rs := range p.rd.ReadStates {
		if len(rs.RequestCtx) != 8 {
			continue
		}
		id := binary.BigEndian.Uint64(rs.RequestCtx)
		b := p.reads.inflight[id]
		if b == nil {
			continue
		}
		delete(p.reads.inflight, id)
		// The lease first, so a reader that asked for a renewal finds it.
		if p.isLeader() && b.term == p.term {
			if rs.Index <= p.storage.appliedIndex {
				p.renewLease(b.requestTime)
			} else {
				b.leaseIndex = rs.Index
				p.reads.leaseCandidates = append(p.reads.leaseCandidates, b)
			}
		}
		for _, r := range b.reads {
			r.index = rs.Index
			p.waitApplied(r)
		}
	}
}

// serveApplied completes reads whose index has been applied and renews the
// lease from ReadIndex rounds whose index has been applied.
func (p *peer) serveApplied() {
	applied := p.storage.appliedIndex
	if len(p.reads.leaseCandidates) > 0 {
		keep := p.reads.leaseCandidates[:0]
		for _, b := range p.reads.leaseCandidates {
			if b.leaseIndex <= applied {
				if b.term == p.term {
					p.renewLease(b.requestTime)
				}
			} else {
				keep = append(keep, b)
			}
		}
		clear(p.reads.leaseCandidates[len(keep):])
		p.reads.leaseCandidates = keep
	}
	if len(p.reads.waiting) > 0 {
		keep := p.reads.waiting[:0]
		for _, r := range p.reads.waiting {
			if r.index <= applied {
				p.finishRead(r)
			} else {
				keep = append(keep, r)
			}
		}
		clear(p.reads.waiting[len(keep):])
		p.reads.waiting = keep
	}
}

// retryReads re-issues ReadIndex batches that raft may have dropped (no
// leader, a leader change) after an election timeout, or at once when
// leadership changed.
func (p *peer) retryReads(leaderChanged bool) {
	if len(p.reads.inflight) == 0 {
		return
	}
	for id, b := range p.reads.inflight {
		if leaderChanged || p.hib.ticks-b.tick >= uint64(p.store.cfg.ElectionTicks) {
			delete(p.reads.inflight, id)
			for _, r := range b.reads {
				p.handleRead(r)
			}
		}
	}
	if leaderChanged {
		p.reads.leaseCandidates = nil
	}
}

func (p *peer) failAllReads(err error) {
	for _, r := range p.reads.queued {
		r.finish(nil, err)
	}
	for _, b := range p.reads.inflight {
		for _, r := range b.reads {
			r.finish(nil, err)
		}
	}
	for _, r := range p.reads.waiting {
		r.finish(nil, err)
	}
	p.reads = readState{}
}

// renewLease extends the lease to start+lease duration, where start is a
// time before a message that a quorum has since acknowledged was sent.
func (p *peer) renewLease(start int64) {
	if !p.isLeader() || p.hib.asleep || p.isMerging() || p.rn.BasicStatus().LeadTransferee != 0 {
		return
	}
	exp := start + int64(p.store.cfg.leaseDuration())
	if exp > p.leaseExpiry.Load() {
		p.leaseExpiry.Store(exp)
	}
}

func (p *peer) revokeLease() { p.leaseExpiry.Store(0) }

// LocalGuard returns a guard for reading this store's replica of regionID
// as it has applied it, without asking the leader: a serializable read,
// which may trail the region. nil when no initialized replica is here.
func (s *Store) LocalGuard(regionID uint64) *ReadGuard {
	p := s.getPeer(regionID)
	if p == nil {
		return nil
	}
	// The generation is read before the status: a replica destroyed or
	// replaced in between fails Check.
	gen := p.dataGen.Load()
	st := p.status.Load()
	if st == nil || !st.Initialized {
		return nil
	}
	return &ReadGuard{Region: st.Region, p: p, gen: gen}
}
