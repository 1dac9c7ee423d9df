package raftstore

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	"github.com/basaltdb/basalt/region"
)

// Admin commands (split, merge) are entries of kind cmdAdmin carrying a
// raftcmdpb.AdminRequest. Each is checked twice: when proposed, against
// the leader's state, to fail fast; and when applied, against each
// replica's state, which is what counts (the two can differ when the
// region changed in between).

// proposeAdmin proposes an admin command to regionID's replica here and
// returns what applying it returned. An outcome that is an error (a refused
// command) is returned as the error.
func (s *Store) proposeAdmin(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch, req *raftcmdpb.AdminRequest) (any, error) {
	p := s.getPeer(regionID)
	if p == nil {
		return nil, region.RegionNotFound(regionID)
	}
	payload, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	pr := newProposal(cmdAdmin, epoch, payload)
	pr.admin = req
	if !p.push(func(mb *mailbox) { mb.props = append(mb.props, pr) }) {
		return nil, region.RegionNotFound(regionID)
	}
	res, err := pr.wait(ctx)
	if err != nil {
		return nil, err
	}
	if e, ok := res.(error); ok {
		return nil, e
	}
	return res, nil
}

// checkAdmin checks an admin proposal on the leader. A region error is
// returned as err; a refused command as result.
func (p *peer) checkAdmin(pr *proposal) (result any, err error) {
	cur := p.region.GetRegionEpoch()
	switch x := pr.admin.GetRequest().(type) {
	case *raftcmdpb.AdminRequest_BatchSplit:
		if !region.CheckEpoch(region.CmdSplit, pr.epoch, cur) {
			return nil, region.EpochNotMatch(p.region)
		}
		if _, err := splitRegions(p.region, x.BatchSplit.GetRequests()); err != nil {
			return err, nil
		}
	case *raftcmdpb.AdminRequest_PrepareMerge:
		if !region.CheckEpoch(region.CmdPrepareMerge, pr.epoch, cur) {
			return nil, region.EpochNotMatch(p.region)
		}
		if p.pendingConfIndex > p.storage.appliedIndex {
			return ErrMembershipChangeInProgress, nil
		}
		if err := p.checkPrepareMerge(x.PrepareMerge); err != nil {
			return err, nil
		}
		if err := p.checkSourceCaughtUp(); err != nil {
			return err, nil
		}
	case *raftcmdpb.AdminRequest_CommitMerge:
		if !region.CheckEpoch(region.CmdCommitMerge, pr.epoch, cur) {
			return nil, region.EpochNotMatch(p.region)
		}
		if err := p.checkCommitMerge(x.CommitMerge); err != nil {
			return err, nil
		}
	case *raftcmdpb.AdminRequest_RollbackMerge:
		if !region.CheckEpoch(region.CmdRollbackMerge, pr.epoch, cur) {
			return nil, region.EpochNotMatch(p.region)
		}
		if err := p.checkRollbackMerge(x.RollbackMerge); err != nil {
			return err, nil
		}
	default:
		return fmt.Errorf("raftstore: unknown admin command %T", x), nil
	}
	return nil, nil
}

// applyAdmin applies an admin entry.
func (p *peer) applyAdmin(ab *ApplyBatch, idx uint64, env envelope, req *raftcmdpb.AdminRequest) any {
	switch x := req.GetRequest().(type) {
	case *raftcmdpb.AdminRequest_BatchSplit:
		res, _ := p.applySplit(ab, env, x.BatchSplit)
		return res
	case *raftcmdpb.AdminRequest_PrepareMerge:
		return p.applyPrepareMerge(ab, idx, env, x.PrepareMerge)
	case *raftcmdpb.AdminRequest_CommitMerge:
		return p.applyCommitMerge(ab, env, x.CommitMerge)
	case *raftcmdpb.AdminRequest_RollbackMerge:
		return p.applyRollbackMerge(ab, env, x.RollbackMerge)
	}
	// Meeting a command this binary does not know means a newer binary
	// wrote this log; guessing would make replicas disagree.
	panic(fmt.Sprintf("raftstore: region %d: entry %d is an admin command (%T) this binary cannot apply", p.regionID, idx, req.GetRequest()))
}
