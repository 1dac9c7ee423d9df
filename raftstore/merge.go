package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// Merge. A source region S is merged into an adjacent target T whose
// replicas are on the same stores (PD aligns them first). All regions of a
// store share one pebble, so no data moves: T widens over S's keys.
//
//  1. PrepareMerge, an entry in S's log: every replica of S enters Merging
//     (S's version and conf_ver go up, so nothing proposed before it can
//     apply after it) and takes no more writes or reads. The entry's index
//     is the merge's commit index P.
//  2. The driver (storenode) waits until every replica of S has applied P
//     and made that durable (ReplicaStatus with a WAL sync).
//  3. CommitMerge, an entry in T's log, names S as of P. Each replica of T
//     applies it by widening T (version = max(S, T) + 1) and turning its
//     store's S into a tombstone in the same batch. Step 2 is why S's data
//     is complete on every store by then; finding otherwise is a broken
//     invariant.
//  4. If T cannot take S (its epoch changed since PrepareMerge, so the
//     CommitMerge entry, wherever it is, can never apply), RollbackMerge in
//     S's log returns S to Normal with a new version.
//
// Invariants: CommitMerge is only proposed after step 2; RollbackMerge only
// once CommitMerge certainly cannot apply (T's epoch moved past the one it
// names and T does not cover S). The two never both apply.

// ErrBadMerge rejects merge requests that cannot apply.
var ErrBadMerge = errors.New("raftstore: bad merge request")

// PreparedMerge describes a source region in Merging state.
type PreparedMerge struct {
	// Source is the source's descriptor as of the PrepareMerge entry.
	Source *metapb.Region
	// Target is the target's descriptor as PrepareMerge saw it; the
	// CommitMerge must carry its epoch.
	Target *metapb.Region
	// Commit is the PrepareMerge entry's index.
	Commit uint64
}

// ErrMergeNotAligned is the ErrBadMerge of two regions whose voters are
// not on the same stores (PD moves replicas to fix it).
var ErrMergeNotAligned = fmt.Errorf("%w: the regions' voters are not on the same stores", ErrBadMerge)

// ErrMergeReplicaBehind is the ErrBadMerge of a source with a replica that
// has not caught up with its leader: not heard from lately, waiting for a
// snapshot, or more than MergeMaxLogGap entries behind the commit index.
// Frozen, the source would take no writes until that replica applied the
// PrepareMerge. It passes once the replica catches up; the merge driver
// retries for a while.
var ErrMergeReplicaBehind = fmt.Errorf("%w: a replica of the source is not caught up", ErrBadMerge)

// CheckMergePair: source and target are distinct and adjacent, and their
// replicas are voters on the same stores, neither in a joint
// configuration.
func CheckMergePair(source, target *metapb.Region) error {
	if source.GetId() == target.GetId() {
		return fmt.Errorf("%w: a region cannot merge into itself", ErrBadMerge)
	}
	adjacent := (len(source.GetEndKey()) > 0 && bytes.Equal(source.GetEndKey(), target.GetStartKey())) ||
		(len(target.GetEndKey()) > 0 && bytes.Equal(target.GetEndKey(), source.GetStartKey()))
	if !adjacent {
		return fmt.Errorf("%w: regions %d [%q, %q) and %d [%q, %q) are not adjacent", ErrBadMerge,
			source.GetId(), source.GetStartKey(), source.GetEndKey(), target.GetId(), target.GetStartKey(), target.GetEndKey())
	}
	if len(source.GetPeers()) != len(target.GetPeers()) {
		return fmt.Errorf("%w (regions %d and %d have %d and %d replicas)", ErrMergeNotAligned,
			source.GetId(), target.GetId(), len(source.GetPeers()), len(target.GetPeers()))
	}
	for _, r := range []*metapb.Region{source, target} {
		for _, m := range r.GetPeers() {
			if m.GetRole() != metapb.PeerRole_Voter {
				return fmt.Errorf("%w (region %d has a %v replica; merges need voters only)", ErrMergeNotAligned, r.GetId(), m.GetRole())
			}
		}
	}
	for _, m := range source.GetPeers() {
		if region.FindPeer(target, m.GetStoreId()) == nil {
			return fmt.Errorf("%w (region %d has a replica on store %d, region %d does not)", ErrMergeNotAligned,
				source.GetId(), m.GetStoreId(), target.GetId())
		}
	}
	return nil
}

// mergedRange is the range and epoch of target after absorbing source.
func mergedRange(source, target *metapb.Region) *metapb.Region {
	m := proto.Clone(target).(*metapb.Region)
	if len(source.GetEndKey()) > 0 && bytes.Equal(source.GetEndKey(), target.GetStartKey()) {
		m.StartKey = source.GetStartKey()
	} else {
		m.EndKey = source.GetEndKey()
	}
	m.RegionEpoch = &metapb.RegionEpoch{ConfVer: target.GetRegionEpoch().GetConfVer(),
		Version: max(source.GetRegionEpoch().GetVersion(), target.GetRegionEpoch().GetVersion()) + 1}
	return m
}

// PrepareMerge freezes sourceID (this store leads it) for a merge into
// target. It returns once PrepareMerge applied here.
func (s *Store) PrepareMerge(ctx context.Context, sourceID uint64, epoch *metapb.RegionEpoch, target *metapb.Region) (*PreparedMerge, error) {
	res, err := s.proposeAdmin(ctx, sourceID, epoch, &raftcmdpb.AdminRequest{Request: &raftcmdpb.AdminRequest_PrepareMerge{
		PrepareMerge: &raftcmdpb.PrepareMergeRequest{Target: target}}})
	if err != nil {
		return nil, err
	}
	return res.(*PreparedMerge), nil
}

// CommitMerge makes targetID (this store leads it) absorb a source prepared
// at commit. targetEpoch must be the target's epoch PrepareMerge recorded.
// It returns the widened target.
func (s *Store) CommitMerge(ctx context.Context, targetID uint64, targetEpoch *metapb.RegionEpoch, source *metapb.Region, commit uint64) (*metapb.Region, error) {
	res, err := s.proposeAdmin(ctx, targetID, targetEpoch, &raftcmdpb.AdminRequest{Request: &raftcmdpb.AdminRequest_CommitMerge{
		CommitMerge: &raftcmdpb.CommitMergeRequest{Source: source, Commit: commit}}})
	if err != nil {
		return nil, err
	}
	return res.(*metapb.Region), nil
}

// RollbackMerge returns a source in Merging state (this store leads it) to
// Normal. Only for a merge whose CommitMerge can no longer apply.
func (s *Store) RollbackMerge(ctx context.Context, sourceID uint64, epoch *metapb.RegionEpoch, commit uint64) (*metapb.Region, error) {
	res, err := s.proposeAdmin(ctx, sourceID, epoch, &raftcmdpb.AdminRequest{Request: &raftcmdpb.AdminRequest_RollbackMerge{
		RollbackMerge: &raftcmdpb.RollbackMergeRequest{Commit: commit}}})
	if err != nil {
		return nil, err
	}
	return res.(*metapb.Region), nil
}

// RequestLeadership asks regionID's leader to hand leadership to this
// store's replica (raft forwards the request from a follower). It returns
// at once; watch RegionStatus for the outcome.
func (s *Store) RequestLeadership(regionID uint64) error {
	p := s.getPeer(regionID)
	if p == nil {
		return region.RegionNotFound(regionID)
	}
	if !p.pushOp(func(p *peer) {
		if p.isLeader() || !p.isInitialized() {
			return
		}
		p.activity()
		p.rn.TransferLeader(p.peerID)
	}) {
		return region.RegionNotFound(regionID)
	}
	return nil
}

// SyncApplied makes everything this store applied so far durable.
func (s *Store) SyncApplied() error {
	return s.eng.DB.LogData([]byte("sync"), pebble.Sync)
}

func (p *peer) isMerging() bool { return p.peerState == rspb.PeerState_Merging }

func (p *peer) checkPrepareMerge(req *raftcmdpb.PrepareMergeRequest) error {
	if p.isMerging() {
		return fmt.Errorf("%w: region %d is already being merged", ErrBadMerge, p.regionID)
	}
	return CheckMergePair(p.region, req.GetTarget())
}

// checkSourceCaughtUp is the leader's check, when a PrepareMerge is
// proposed, that every other replica of the source keeps up. It reads the
// leader's progress, so it runs at propose time only, never at apply time,
// where every replica must decide the same from the log alone.
func (p *peer) checkSourceCaughtUp() error {
	st := p.rn.Status()
	first, _ := p.storage.FirstIndex()
	maxGap := p.store.cfg.MergeMaxLogGap
	for _, m := range p.region.GetPeers() {
		id := m.GetId()
		if id == p.peerID {
			continue
		}
		pr, ok := st.Progress[id]
		heardAt, heard := p.hib.lastHeard[id]
		var why string
		switch {
		case !ok:
			why = "has no progress at the leader"
		case !heard || p.hib.ticks-heardAt >= uint64(p.store.cfg.ElectionTicks):
			why = "has not been heard from for an election timeout"
		case pr.State == tracker.StateSnapshot || pr.Match+1 < first:
			why = fmt.Sprintf("needs a snapshot (matched %d, the log starts at %d)", pr.Match, first)
		case pr.Match+maxGap < st.GetCommit():
			why = fmt.Sprintf("is %d entries behind (matched %d, committed %d; at most %d allowed)", st.GetCommit()-pr.Match, pr.Match, st.GetCommit(), maxGap)
		default:
			continue
		}
		return fmt.Errorf("%w: region %d's replica %d on store %d %s", ErrMergeReplicaBehind, p.regionID, id, m.GetStoreId(), why)
	}
	return nil
}

func (p *peer) checkCommitMerge(req *raftcmdpb.CommitMergeRequest) error {
	if p.isMerging() {
		return fmt.Errorf("%w: target %d is itself being merged", ErrBadMerge, p.regionID)
	}
	if req.GetCommit() == 0 {
		return fmt.Errorf("%w: no commit index", ErrBadMerge)
	}
	return CheckMergePair(req.GetSource(), p.region)
}

func (p *peer) checkRollbackMerge(req *raftcmdpb.RollbackMergeRequest) error {
	ms := p.storage.regionState.GetMergeState()
	if !p.isMerging() || ms.GetCommit() != req.GetCommit() {
		return fmt.Errorf("%w: region %d has no merge prepared at %d to roll back", ErrBadMerge, p.regionID, req.GetCommit())
	}
	return nil
}

// setRegionState installs a descriptor with the peer state that goes with
// it and writes the region state into ab.
func (p *peer) setRegionState(ab *ApplyBatch, reg *metapb.Region, state rspb.PeerState, ms *rspb.MergeState) {
	p.peerState = state
	p.region = reg
	p.storage.regionState = &rspb.RegionLocalState{State: state, Region: reg,
		ConfState: p.storage.regionState.GetConfState(), MergeState: ms}
	mustSetProto(ab.Batch, regionStateKey(p.regionID), p.storage.regionState)
	p.store.indexRegion(p)
	p.regionChanged = true
}

func (p *peer) applyPrepareMerge(ab *ApplyBatch, idx uint64, env envelope, req *raftcmdpb.PrepareMergeRequest) any {
	if !region.CheckEpoch(region.CmdPrepareMerge, env.epoch(), p.region.GetRegionEpoch()) {
		return region.EpochNotMatch(p.region)
	}
	if err := p.checkPrepareMerge(req); err != nil {
		return err
	}
	src := proto.Clone(p.region).(*metapb.Region)
	src.RegionEpoch = &metapb.RegionEpoch{ConfVer: src.GetRegionEpoch().GetConfVer() + 1, Version: src.GetRegionEpoch().GetVersion() + 1}
	p.setRegionState(ab, src, rspb.PeerState_Merging, &rspb.MergeState{Target: req.GetTarget(), Commit: idx, MinIndex: req.GetMinIndex()})
	// No more lease reads: the fast path sees the lease, not the state.
	p.revokeLease()
	p.store.stats.MergesPrepared.Add(1)
	return &PreparedMerge{Source: src, Target: req.GetTarget(), Commit: idx}
}

func (p *peer) applyRollbackMerge(ab *ApplyBatch, env envelope, req *raftcmdpb.RollbackMergeRequest) any {
	if !region.CheckEpoch(region.CmdRollbackMerge, env.epoch(), p.region.GetRegionEpoch()) {
		return region.EpochNotMatch(p.region)
	}
	if err := p.checkRollbackMerge(req); err != nil {
		return err
	}
	r := proto.Clone(p.region).(*metapb.Region)
	r.RegionEpoch.Version++
	p.setRegionState(ab, r, rspb.PeerState_Normal, nil)
	p.store.stats.MergesRolledBack.Add(1)
	return r
}

// applyCommitMerge widens the target over its source. The source's
// replica on this store applied the PrepareMerge (the driver saw to it
// before proposing): its data and state-machine state are final, and it
// becomes a tombstone in this batch.
func (p *peer) applyCommitMerge(ab *ApplyBatch, env envelope, req *raftcmdpb.CommitMergeRequest) any {
	if !region.CheckEpoch(region.CmdCommitMerge, env.epoch(), p.region.GetRegionEpoch()) {
		return region.EpochNotMatch(p.region)
	}
	if err := p.checkCommitMerge(req); err != nil {
		return err
	}
	src := req.GetSource()
	self := region.FindPeer(src, p.store.cfg.StoreID)
	var srs rspb.RegionLocalState
	var sas rspb.RaftApplyState
	okState, err := getProto(ab, regionStateKey(src.GetId()), &srs)
	if err != nil {
		panic(err)
	}
	okApply, err := getProto(ab, applyStateKey(src.GetId()), &sas)
	if err != nil {
		panic(err)
	}
	if self == nil || !okState || !okApply || srs.GetState() != rspb.PeerState_Merging ||
		srs.GetMergeState().GetCommit() != req.GetCommit() || sas.GetAppliedIndex() < req.GetCommit() ||
		!region.EpochEqual(srs.GetRegion().GetRegionEpoch(), src.GetRegionEpoch()) {
		panic(fmt.Sprintf("raftstore: invariant: store %d: region %d commits the merge of region %d prepared at %d, "+
			"but the source here is not prepared (state %v, merge state %v, applied %d): a merge was committed before "+
			"every source replica applied its PrepareMerge", p.store.cfg.StoreID, p.regionID, src.GetId(), req.GetCommit(),
			srs.GetState(), srs.GetMergeState(), sas.GetAppliedIndex()))
	}
	merged := mergedRange(src, p.region)
	p.storage.smState = p.store.sm.MergeState(p.storage.smState, sas.GetStateMachine())
	// The source's raft state goes and a tombstone stays; its data is now
	// the target's.
	mustDeleteRange(ab.Batch, raftLocalSpan(src.GetId()))
	mustSetProto(ab.Batch, regionStateKey(src.GetId()), &rspb.RegionLocalState{
		State: rspb.PeerState_Tombstone, Region: srs.GetRegion(), TombstonePeerId: self.GetId()})
	// Not setRegionState: the range index changes after the batch commits,
	// together with the source's removal (absorbMerged).
	p.region = merged
	p.storage.regionState = &rspb.RegionLocalState{State: rspb.PeerState_Normal, Region: merged,
		ConfState: p.storage.regionState.GetConfState()}
	mustSetProto(ab.Batch, regionStateKey(p.regionID), p.storage.regionState)
	p.regionChanged = true
	p.mergedSources = append(p.mergedSources, srs.GetRegion())
	p.store.stats.MergesCommitted.Add(1)
	return merged
}

// absorbMerged runs on the target's worker once the batch holding a
// CommitMerge committed: the source's replica leaves the store and the
// target takes its place in the range index, in one step under Store.mu
// (the index holds exactly the initialized replicas).
func (p *peer) absorbMerged() {
	s := p.store
	sources := p.mergedSources
	p.mergedSources = nil
	for _, src := range sources {
		self := region.FindPeer(src, s.cfg.StoreID)
		s.mu.Lock()
		old := s.peers[src.GetId()]
		if old != nil && old.peerID == self.GetId() {
			delete(s.peers, src.GetId())
		} else {
			old = nil
		}
		s.tombstones[src.GetId()] = tombstone{peerID: self.GetId(), region: src}
		if s.peers[p.regionID] == p {
			if _, err := s.ranges.Update(p.region); err != nil {
				s.mu.Unlock()
				panic(fmt.Sprintf("raftstore: merged region %d: %v", p.regionID, err))
			}
		}
		s.mu.Unlock()
		if old != nil {
			old.mergedAway.Store(true)
			old.pushOp(func(o *peer) { o.destroyMerged() })
		}
	}
}

// destroyMerged ends a source replica whose target absorbed it: like
// destroy, but its data stays (it is the target's now) and its tombstone
// was written with the merge.
func (p *peer) destroyMerged() {
	p.destroyWith("merged into its target", true)
}
