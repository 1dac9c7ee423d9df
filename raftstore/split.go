package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// Split. A BatchSplit entry in a region's log cuts it at one or more keys.
// Every replica applies it the same way:
//
//   - With split keys k1 < ... < kn, the parent keeps [start, k1) and new
//     regions take [k1, k2), ..., [kn, end): the new right-hand regions
//     are created from the entry (DESIGN.md). The parent keeps its ID, its
//     leader and its log.
//   - Every resulting region's version becomes the parent's plus n, so a
//     request carrying the parent's old epoch fails with EpochNotMatch.
//   - A new region has the parent's peers (same stores and roles) under new
//     peer IDs allocated by PD before the proposal, a fresh log at
//     initLogIndex, and the parent's state-machine state. Its state is
//     written in the same apply batch as the parent's new descriptor: a
//     crash leaves both or neither.
//   - After the batch commits, each store creates its replicas of the new
//     regions. A replica created earlier by a vote message from a faster
//     store (uninitialized, same peer ID) is initialized in place, never
//     duplicated. The store that led the parent campaigns for the new
//     regions at once; the others wait an election timeout, which also
//     keeps the parent leader's lease sound (it only covers the parent's
//     remaining range once it applied the split).
//
// The epoch-check row for splits (region.CmdSplit) is frozen.

// testHookSplitNarrowed, set by tests only, runs on the parent's worker
// right after a split narrowed the parent's indexed range, before the
// children exist.
var testHookSplitNarrowed func(s *Store, children []*metapb.Region)

// ErrBadSplit rejects split requests that cannot apply.
var ErrBadSplit = errors.New("raftstore: bad split request")

// Split cuts regionID at the given keys (sorted, strictly inside the
// region, one SplitRequest per key with IDs from PD). It returns the
// resulting regions in key order, the parent first.
func (s *Store) Split(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch, splits []*raftcmdpb.SplitRequest) ([]*metapb.Region, error) {
	if len(splits) == 0 {
		return nil, fmt.Errorf("%w: no split keys", ErrBadSplit)
	}
	res, err := s.proposeAdmin(ctx, regionID, epoch, &raftcmdpb.AdminRequest{Request: &raftcmdpb.AdminRequest_BatchSplit{
		BatchSplit: &raftcmdpb.BatchSplitRequest{Requests: splits}}})
	if err != nil {
		return nil, err
	}
	return res.([]*metapb.Region), nil
}

// splitRegions computes what a split makes of parent, or an error when the
// request cannot apply to it (deterministic on every replica). The parent
// keeps the leftmost range; the new regions follow it in key order.
func splitRegions(parent *metapb.Region, splits []*raftcmdpb.SplitRequest) ([]*metapb.Region, error) {
	n := uint64(len(splits))
	epoch := &metapb.RegionEpoch{ConfVer: parent.GetRegionEpoch().GetConfVer(), Version: parent.GetRegionEpoch().GetVersion() + n}
	prev := parent.GetStartKey()
	for i, sp := range splits {
		k := sp.GetSplitKey()
		if len(k) == 0 || bytes.Compare(k, prev) <= 0 || !region.ContainsKey(parent, k) {
			return nil, fmt.Errorf("%w: split key %q is not inside region %d after %q", ErrBadSplit, k, parent.GetId(), prev)
		}
		if sp.GetNewRegionId() == 0 || len(sp.GetNewPeerIds()) != len(parent.GetPeers()) {
			return nil, fmt.Errorf("%w: split %d needs a region ID and one peer ID per peer", ErrBadSplit, i)
		}
		prev = k
	}
	p := proto.Clone(parent).(*metapb.Region)
	p.EndKey = splits[0].GetSplitKey()
	p.RegionEpoch = epoch
	out := []*metapb.Region{p}
	for i, sp := range splits {
		end := parent.GetEndKey()
		if i+1 < len(splits) {
			end = splits[i+1].GetSplitKey()
		}
		r := &metapb.Region{Id: sp.GetNewRegionId(), StartKey: sp.GetSplitKey(), EndKey: end,
			RegionEpoch: proto.Clone(epoch).(*metapb.RegionEpoch)}
		for j, pp := range parent.GetPeers() {
			r.Peers = append(r.Peers, &metapb.Peer{Id: sp.GetNewPeerIds()[j], StoreId: pp.GetStoreId(), Role: pp.GetRole()})
		}
		out = append(out, r)
	}
	return out, nil
}

// confStateOf builds a region's raft configuration from its descriptor.
func confStateOf(r *metapb.Region) *pb.ConfState {
	cs := &pb.ConfState{}
	for _, m := range r.GetPeers() {
		switch m.GetRole() {
		case metapb.PeerRole_Voter:
			cs.Voters = append(cs.Voters, m.GetId())
		case metapb.PeerRole_Learner:
			cs.Learners = append(cs.Learners, m.GetId())
		case metapb.PeerRole_IncomingVoter:
			cs.Voters = append(cs.Voters, m.GetId())
		case metapb.PeerRole_DemotingVoter:
			cs.Voters = append(cs.Voters, m.GetId())
		}
	}
	return cs
}

// applySplit applies a BatchSplit entry: the parent's new descriptor and the
// new regions' initial state go in the apply batch. The new regions'
// replicas on this store are created after the batch commits.
func (p *peer) applySplit(ab *ApplyBatch, env envelope, req *raftcmdpb.BatchSplitRequest) (any, bool) {
	if !region.CheckEpoch(region.CmdSplit, env.epoch(), p.region.GetRegionEpoch()) {
		return region.EpochNotMatch(p.region), false
	}
	for _, m := range p.region.GetPeers() {
		if m.GetRole() == metapb.PeerRole_IncomingVoter || m.GetRole() == metapb.PeerRole_DemotingVoter {
			return fmt.Errorf("%w: region %d is in a joint configuration", ErrBadSplit, p.regionID), false
		}
	}
	regions, err := splitRegions(p.region, req.GetRequests())
	if err != nil {
		return err, false
	}
	parent := regions[0]
	// Before the parent's range narrows (setRegion below), so no snapshot
	// can initialize a child in between (see Store.splitting).
	p.store.mu.Lock()
	for _, nr := range regions[1:] {
		p.store.splitting[nr.GetId()] = true
	}
	p.store.mu.Unlock()
	for _, nr := range regions[1:] {
		rs := &rspb.RegionLocalState{State: rspb.PeerState_Normal, Region: nr, ConfState: confStateOf(nr)}
		mustSetProto(ab.Batch, regionStateKey(nr.GetId()), rs)
		// An uninitialized replica of the new region (created by a message
		// from a faster store) persisted its term in versions before
		// 2026-12-02 (now it persists nothing); never go back below a term
		// found here. It never voted (uninitialized replicas do not).
		term := uint64(initLogTerm)
		var old pb.HardState
		if ok, _ := getProto(ab, hardStateKey(nr.GetId()), &old); ok {
			term = max(term, old.GetTerm())
		}
		mustSetProto(ab.Batch, hardStateKey(nr.GetId()), &pb.HardState{Term: new(term), Commit: new(uint64(initLogIndex))})
		mustSetProto(ab.Batch, truncatedStateKey(nr.GetId()), &rspb.RaftTruncatedState{Index: initLogIndex, Term: initLogTerm})
		mustSetProto(ab.Batch, applyStateKey(nr.GetId()), &rspb.RaftApplyState{AppliedIndex: initLogIndex, AppliedTerm: initLogTerm,
			StateMachine: p.storage.smState})
	}
	p.setRegion(parent, p.storage.regionState.GetConfState())
	if testHookSplitNarrowed != nil {
		testHookSplitNarrowed(p.store, regions[1:])
	}
	// The parent's narrowed descriptor goes in the same batch as its
	// children's state: after a crash the store must never load both the
	// old wide parent and a child overlapping it.
	mustSetProto(ab.Batch, regionStateKey(p.regionID), p.storage.regionState)
	p.splitChildren = append(p.splitChildren, regions[1:]...)
	p.splitWasLeader = p.isLeader()
	p.store.stats.Splits.Add(1)
	return regions, true
}

// createSplitChildren creates this store's replicas of the regions a split
// made, after the apply batch holding their state committed. Runs on the
// parent's worker.
func (p *peer) createSplitChildren() {
	s := p.store
	children := p.splitChildren
	p.splitChildren = nil
	for _, nr := range children {
		self := region.FindPeer(nr, s.cfg.StoreID)
		if self != nil {
			if err := s.createSplitPeer(nr, self, p.storage.smState, p.splitWasLeader); err != nil {
				s.log.Error("creating a region from a split", "region", nr.GetId(), "err", err)
			}
		}
		s.mu.Lock()
		delete(s.splitting, nr.GetId())
		s.mu.Unlock()
	}
}

// createSplitPeer makes the replica of a new region whose state the split
// already wrote. An uninitialized replica created earlier by a message from
// a faster store is replaced by the initialized one.
func (s *Store) createSplitPeer(nr *metapb.Region, self *metapb.Peer, smState []byte, campaign bool) error {
	rs := &rspb.RegionLocalState{State: rspb.PeerState_Normal, Region: nr, ConfState: confStateOf(nr)}
	var termFloor uint64
	var replay []*rspb.RaftMessage
	s.mu.Lock()
	if old := s.peers[nr.GetId()]; old != nil {
		if old.peerID != self.GetId() || old.isInitializedFromStatus() {
			// A newer replica of the region lives here already (it moved
			// on while this one lagged): leave it alone.
			s.mu.Unlock()
			return nil
		}
		// The uninitialized replica a message created: it holds no data
		// and never voted. It stops taking messages; the new replica
		// starts at least at its term.
		termFloor = old.status.Load().Term
		delete(s.peers, nr.GetId())
		old.mu.Lock()
		// Vote requests it got, or has not handled yet, go to the new
		// replica (keepEarlyVote).
		replay = append(replay, old.earlyVotes...)
		for _, rm := range old.mb.msgs {
			if t := rm.GetMessage().GetType(); t == pb.MsgVote || t == pb.MsgPreVote {
				replay = append(replay, rm)
			}
		}
		old.earlyVotes = nil
		old.mb = mailbox{destroyed: true}
		old.mu.Unlock()
		// Its mailbox takes nothing more, so no op could end it: it
		// stops writing from its next round (replacedBySplit), and
		// whoever waits on it learns it is gone now.
		old.replacedBySplit.Store(true)
		old.close()
	}
	if t, ok := s.tombstones[nr.GetId()]; ok && t.peerID >= self.GetId() {
		s.mu.Unlock()
		return nil
	}
	p, err := s.newPeerAtTerm(nr.GetId(), self.GetId(), rs, termFloor)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.peers[nr.GetId()] = p
	if _, err := s.ranges.Update(nr); err != nil {
		s.mu.Unlock()
		panic(fmt.Sprintf("raftstore: split region %d overlaps a region on this store: %v", nr.GetId(), err))
	}
	delete(s.tombstones, nr.GetId())
	s.mu.Unlock()
	s.setAwake(p, true)
	s.sm.RegionChanged(nr.GetId(), nr, smState)
	if campaign {
		p.pushOp(func(p *peer) { _ = p.rn.Campaign() })
	}
	if len(replay) > 0 {
		p.push(func(mb *mailbox) { mb.msgs = append(mb.msgs, replay...) })
	}
	s.sched.enqueue(p)
	return nil
}

func (p *peer) isInitializedFromStatus() bool {
	st := p.status.Load()
	return st != nil && st.Initialized
}
