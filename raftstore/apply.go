package raftstore

import (
	"fmt"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// applyResult is a completed proposal, finished after the apply batch is
// committed (so a proposer never sees a result pebble does not hold yet).
type applyResult struct {
	pr     *proposal
	result any
	err    error
}

// applyEntries applies this round's committed entries into ab. Runs on the
// worker between persisting the raft batch and Advance.
func (p *peer) applyEntries(ab *ApplyBatch, ents []*pb.Entry, results []applyResult) []applyResult {
	if len(ents) == 0 {
		return results
	}
	regionChanged := false
	p.applying = true
	for _, e := range ents {
		idx, term := e.GetIndex(), e.GetTerm()
		if idx != p.storage.appliedIndex+1 {
			panic(fmt.Sprintf("raftstore: region %d: applying entry %d after %d", p.regionID, idx, p.storage.appliedIndex))
		}
		switch e.GetType() {
		case pb.EntryNormal:
			results = p.applyNormal(ab, e, results)
		case pb.EntryConfChangeV2:
			var changed bool
			results, changed = p.applyConfChange(e, results)
			regionChanged = regionChanged || changed
		default:
			panic(fmt.Sprintf("raftstore: region %d: unexpected entry type %v at %d", p.regionID, e.GetType(), idx))
		}
		p.storage.appliedIndex, p.storage.appliedTerm = idx, term
		if p.destroyAfterApply {
			// Removed from the region: later entries are not ours to apply.
			break
		}
		if p.isLeader() && term == p.term && !p.termLeaseStarted {
			// The first entry of our term committed: a quorum acknowledged
			// us after we became leader.
			p.termLeaseStarted = true
			p.renewLease(p.leaderT)
		}
	}
	if p.destroyAfterApply {
		// The tombstone and the removal of everything this replica held go
		// in the same batch as the change that removed it: a crash can
		// leave the store with the replica whole or gone, never a live
		// replica whose descriptor lacks it.
		p.writeTombstone(ab.Batch)
	} else {
		mustSetProto(ab.Batch, applyStateKey(p.regionID), &rspb.RaftApplyState{
			AppliedIndex: p.storage.appliedIndex, AppliedTerm: p.storage.appliedTerm, StateMachine: p.storage.smState})
		if regionChanged {
			mustSetProto(ab.Batch, regionStateKey(p.regionID), p.storage.regionState)
		}
	}
	p.store.stats.Applied.Add(uint64(len(ents)))
	return results
}

func (p *peer) applyNormal(ab *ApplyBatch, e *pb.Entry, results []applyResult) []applyResult {
	data := e.GetData()
	if len(data) == 0 {
		return results // a new leader's empty entry
	}
	env, err := decodeEnvelope(data)
	if err != nil {
		panic(fmt.Sprintf("raftstore: region %d: entry %d: %v", p.regionID, e.GetIndex(), err))
	}
	pr := p.takeProposal(e.GetIndex(), e.GetTerm(), env.proposalID)
	if p.isMerging() && (env.kind == cmdUser || env.kind == cmdUserBatch) {
		// Unreachable through the epoch check (PrepareMerge bumped the
		// version), kept so a merge source can never change its data.
		if pr != nil {
			results = append(results, applyResult{pr: pr, err: region.ProposalInMergingMode(p.regionID)})
		}
		return results
	}
	switch env.kind {
	case cmdUser:
		if !region.CheckEpoch(region.CmdWrite, env.epoch(), p.region.GetRegionEpoch()) {
			if pr != nil {
				results = append(results, applyResult{pr: pr, err: region.EpochNotMatch(p.region)})
			}
			return results
		}
		res := p.store.sm.Apply(ab, Command{
			RegionID: p.regionID, Region: p.region, Index: e.GetIndex(), Term: e.GetTerm(), Data: env.payload,
			State: &p.storage.smState,
		})
		if pr != nil {
			results = append(results, applyResult{pr: pr, result: res})
			if p.isLeader() && e.GetTerm() == p.term {
				p.renewLease(pr.proposeTime)
			}
		}
	case cmdUserBatch:
		if !region.CheckEpoch(region.CmdWrite, env.epoch(), p.region.GetRegionEpoch()) {
			if pr != nil {
				results = append(results, applyResult{pr: pr, err: region.EpochNotMatch(p.region)})
			}
			return results
		}
		err := forEachBatchItem(env.payload, func(i int, cmd []byte) {
			res := p.store.sm.Apply(ab, Command{
				RegionID: p.regionID, Region: p.region, Index: e.GetIndex(), Term: e.GetTerm(), Data: cmd,
				State: &p.storage.smState,
			})
			if pr != nil && i < len(pr.subs) {
				results = append(results, applyResult{pr: pr.subs[i], result: res})
			}
		})
		if err != nil {
			panic(fmt.Sprintf("raftstore: region %d: entry %d: %v", p.regionID, e.GetIndex(), err))
		}
		if pr != nil {
			// The subs are finished through results; mark the batch done.
			pr.finished = true
			if p.isLeader() && e.GetTerm() == p.term {
				p.renewLease(pr.proposeTime)
			}
		}
	case cmdAdmin:
		var req raftcmdpb.AdminRequest
		if err := proto.Unmarshal(env.payload, &req); err != nil {
			panic(fmt.Sprintf("raftstore: region %d: entry %d: bad admin request: %v", p.regionID, e.GetIndex(), err))
		}
		res := p.applyAdmin(ab, e.GetIndex(), env, &req)
		if pr != nil {
			results = append(results, applyResult{pr: pr, result: res})
		}
	default:
		panic(fmt.Sprintf("raftstore: region %d: entry %d has unknown command kind %d", p.regionID, e.GetIndex(), env.kind))
	}
	return results
}

// applyConfChange applies a ConfChangeV2 entry: raft's own leave-joint
// entries and Basalt's ChangePeers. A ChangePeers whose conf_ver no longer
// matches is rejected on every replica alike (and raft is not told).
func (p *peer) applyConfChange(e *pb.Entry, results []applyResult) ([]applyResult, bool) {
	var cc pb.ConfChangeV2
	if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
		panic(fmt.Sprintf("raftstore: region %d: entry %d: bad conf change: %v", p.regionID, e.GetIndex(), err))
	}
	reg := proto.Clone(p.region).(*metapb.Region)
	var pr *proposal
	if cc.LeaveJoint() && len(cc.GetContext()) == 0 {
		for _, m := range reg.GetPeers() {
			switch m.GetRole() {
			case metapb.PeerRole_IncomingVoter:
				m.Role = metapb.PeerRole_Voter
			case metapb.PeerRole_DemotingVoter:
				m.Role = metapb.PeerRole_Learner
			}
		}
	} else {
		env, err := decodeEnvelope(cc.GetContext())
		if err != nil || env.kind != cmdChangePeers {
			panic(fmt.Sprintf("raftstore: region %d: entry %d: conf change without a ChangePeers context", p.regionID, e.GetIndex()))
		}
		pr = p.takeProposal(e.GetIndex(), e.GetTerm(), env.proposalID)
		if !region.CheckEpoch(region.CmdChangePeer, env.epoch(), p.region.GetRegionEpoch()) {
			if pr != nil {
				results = append(results, applyResult{pr: pr, err: region.EpochNotMatch(p.region)})
			}
			return results, false
		}
		var cps raftcmdpb.ChangePeers
		if err := proto.Unmarshal(env.payload, &cps); err != nil {
			panic(fmt.Sprintf("raftstore: region %d: entry %d: bad ChangePeers: %v", p.regionID, e.GetIndex(), err))
		}
		applyPeerChanges(reg, cps.GetChanges(), len(cps.GetChanges()) > 1)
	}
	reg.RegionEpoch = &metapb.RegionEpoch{Version: reg.GetRegionEpoch().GetVersion(), ConfVer: reg.GetRegionEpoch().GetConfVer() + 1}
	cs := p.rn.ApplyConfChange(&cc)
	p.setRegion(reg, cs)
	if pr != nil {
		results = append(results, applyResult{pr: pr, result: reg})
	}
	if region.FindPeerByID(reg, p.peerID) == nil {
		p.destroyAfterApply = true
		// Stop serving before the data goes: no lease read, and every
		// read guard taken earlier fails its check.
		p.revokeLease()
		p.dataGen.Add(1)
	}
	return results, true
}

// applyPeerChanges edits reg's peer list as a ChangePeers request says. In a
// joint change an added voter is IncomingVoter and a demoted voter is
// DemotingVoter until raft leaves the joint configuration.
func applyPeerChanges(reg *metapb.Region, changes []*raftcmdpb.ChangePeer, joint bool) {
	for _, c := range changes {
		np := c.GetPeer()
		cur := region.FindPeerByID(reg, np.GetId())
		switch c.GetChangeType() {
		case raftcmdpb.ChangePeerType_AddNode:
			role := metapb.PeerRole_Voter
			if joint {
				role = metapb.PeerRole_IncomingVoter
			}
			if cur != nil {
				cur.Role = role
			} else {
				reg.Peers = append(reg.Peers, &metapb.Peer{Id: np.GetId(), StoreId: np.GetStoreId(), Role: role})
			}
		case raftcmdpb.ChangePeerType_AddLearnerNode:
			if cur != nil {
				if joint && region.IsVoter(cur) {
					cur.Role = metapb.PeerRole_DemotingVoter
				} else {
					cur.Role = metapb.PeerRole_Learner
				}
			} else {
				reg.Peers = append(reg.Peers, &metapb.Peer{Id: np.GetId(), StoreId: np.GetStoreId(), Role: metapb.PeerRole_Learner})
			}
		case raftcmdpb.ChangePeerType_RemoveNode:
			for i, m := range reg.Peers {
				if m.GetId() == np.GetId() {
					reg.Peers = append(reg.Peers[:i], reg.Peers[i+1:]...)
					break
				}
			}
		}
	}
}

// setRegion installs a new descriptor (and conf state) as of the entry being
// applied; the caller writes the region state into the apply batch.
func (p *peer) setRegion(reg *metapb.Region, cs *pb.ConfState) {
	p.region = reg
	p.storage.regionState = &rspb.RegionLocalState{State: p.peerState, Region: reg, ConfState: cs}
	p.store.indexRegion(p)
	p.regionChanged = true
}

// maybeTruncateLog truncates the applied prefix of the log once it is long
// enough, into ab (see keys.go for why that is safe). A leader keeps entries
// its live followers still need, up to LogMaxLagEntries.
func (p *peer) maybeTruncateLog(ab *ApplyBatch) (index, term uint64, ok bool) {
	s := p.storage
	cfg := p.store.cfg
	if s.appliedIndex-s.truncIndex < cfg.LogGCThreshold {
		return 0, 0, false
	}
	target := s.appliedIndex
	if p.isLeader() {
		minMatch := target
		for id, pr := range p.rn.Status().Progress {
			if id != p.peerID && pr.Match < minMatch {
				minMatch = pr.Match
			}
		}
		if s.lastIndex-minMatch < cfg.LogMaxLagEntries {
			target = minMatch
		}
	}
	if target <= s.truncIndex || target-s.truncIndex < cfg.LogGCThreshold/2 {
		return 0, 0, false
	}
	term, err := s.Term(target)
	if err != nil {
		return 0, 0, false
	}
	if err := s.truncateTo(ab.Batch, target); err != nil {
		panic(err)
	}
	return target, term, true
}
