package storenode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/region"
)

// The merge driver. raftstore gives the three commands (PrepareMerge on
// the source, CommitMerge on the target, RollbackMerge on the source; see
// raftstore/merge.go); this file decides when each may be proposed.
//
// The driver runs on the store leading the source. It moves the target's
// leadership here too, so that the source and target descriptors it acts
// on are this store's own replicas' and every decision below is made from
// state this store applied:
//
//   - CommitMerge only after every source replica reported (with a WAL
//     sync) that it applied the PrepareMerge: a target replica applying the
//     commit then always finds its source complete and final.
//   - RollbackMerge only when this store's source replica is still in
//     Merging and this store's target replica has applied an entry that
//     moved its epoch past the one the merge recorded without absorbing the
//     source. The target's log is the same everywhere and its epoch only
//     grows, so no replica can ever apply that CommitMerge: the two never
//     both happen. (Judging from another store's view, or from PD's, could
//     roll back a merge some lagging replica is about to commit.)
//
// A merge whose source has a replica on a store that is down waits for it;
// the source takes no writes meanwhile. So the source is frozen only when
// every replica is there to follow: PD merges only regions without down or
// pending peers, the driver checks every replica answers, and the source's
// leader refuses the PrepareMerge while a replica is not caught up with its
// log (raftstore.ErrMergeReplicaBehind), which the driver retries for
// mergeCatchUpWait.

// ErrCannotMerge rejects merges that cannot start: the regions are not
// adjacent, their replicas are not on the same stores, or a replica does
// not answer.
var ErrCannotMerge = errors.New("storenode: regions cannot be merged")

// ErrMergeRolledBack reports a merge that was prepared and then rolled
// back because its target changed; the source takes writes again.
var ErrMergeRolledBack = errors.New("storenode: merge rolled back")

// mergeRetryInterval paces the driver's polls while it waits for replicas,
// for leadership and for retries of a refused step.
const mergeRetryInterval = 50 * time.Millisecond

// mergeRun is one merge being driven; concurrent requests for the same
// source share it.
type mergeRun struct {
	done   chan struct{}
	merged *metapb.Region
	err    error
}

// merges tracks the merges this store is driving, by source region.
type merges struct {
	mu   sync.Mutex
	runs map[uint64]*mergeRun
}

// mergeRegion merges sourceID (this store leads it) into its neighbour
// targetID, or finishes the merge sourceID is already in (targetID 0: into
// whatever target it was prepared for). epoch, when set, is the source
// epoch the caller saw. It returns the widened target.
func (s *Server) mergeRegion(ctx context.Context, sourceID uint64, epoch *metapb.RegionEpoch, targetID uint64) (*metapb.Region, error) {
	s.merges.mu.Lock()
	if s.merges.runs == nil {
		s.merges.runs = map[uint64]*mergeRun{}
	}
	run := s.merges.runs[sourceID]
	if run == nil {
		run = &mergeRun{done: make(chan struct{})}
		s.merges.runs[sourceID] = run
		s.merges.mu.Unlock()
		run.merged, run.err = s.driveMerge(ctx, sourceID, epoch, targetID)
		s.merges.mu.Lock()
		delete(s.merges.runs, sourceID)
		s.merges.mu.Unlock()
		close(run.done)
		return run.merged, run.err
	}
	s.merges.mu.Unlock()
	select {
	case <-run.done:
		if run.err == nil && targetID != 0 && run.merged.GetId() != targetID {
			return nil, fmt.Errorf("%w: region %d was merged into region %d", ErrCannotMerge, sourceID, run.merged.GetId())
		}
		return run.merged, run.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *Server) driveMerge(ctx context.Context, sourceID uint64, epoch *metapb.RegionEpoch, targetID uint64) (*metapb.Region, error) {
	st := s.store.RegionStatus(sourceID)
	switch {
	case st == nil || !st.Initialized:
		return nil, region.RegionNotFound(sourceID)
	case !st.IsLeader():
		return nil, region.NotLeader(sourceID, st.Leader)
	}
	pm := st.Merge
	if pm != nil {
		if targetID != 0 && pm.Target.GetId() != targetID {
			return nil, fmt.Errorf("%w: region %d is already being merged into region %d", ErrCannotMerge, sourceID, pm.Target.GetId())
		}
		return s.finishMerge(ctx, pm)
	}
	if targetID == 0 {
		return nil, fmt.Errorf("%w: region %d is not being merged and no target was named", ErrCannotMerge, sourceID)
	}
	if epoch != nil && !region.CheckEpoch(region.CmdPrepareMerge, epoch, st.Region.GetRegionEpoch()) {
		return nil, region.EpochNotMatch(st.Region)
	}
	tst := s.store.RegionStatus(targetID)
	if tst == nil || !tst.Initialized {
		return nil, fmt.Errorf("%w: this store has no replica of region %d; move the replicas of regions %d and %d onto the same stores first",
			ErrCannotMerge, targetID, sourceID, targetID)
	}
	if err := mergePairError(st.Region, tst.Region); err != nil {
		return nil, err
	}
	if tst.Merge != nil {
		// Its CommitMerge would refuse a target in Merging anyway, and two
		// regions merging into each other would only roll each other back.
		return nil, fmt.Errorf("%w: region %d is itself being merged into region %d", ErrCannotMerge, targetID, tst.Merge.Target.GetId())
	}
	// Freeze the source only once every replica answers: one on a store
	// that is down would keep it frozen until the store returns.
	for _, m := range st.Region.GetPeers() {
		if _, err := s.replicaStatus(ctx, m.GetStoreId(), sourceID, false); err != nil {
			return nil, fmt.Errorf("%w: the replica of region %d on store %d does not answer: %v", ErrCannotMerge, sourceID, m.GetStoreId(), err)
		}
	}
	pm, err := s.prepareMerge(ctx, st.Region, targetID)
	if err != nil {
		return nil, err
	}
	s.log.Info("merge prepared", "source", sourceID, "target", targetID, "commit", pm.Commit)
	s.hb.mark(sourceID)
	return s.finishMerge(ctx, pm)
}

// mergeCatchUpWait bounds how long the driver waits for the source's
// replicas to catch up with its leader before it gives up on a merge. A
// region split a moment ago has followers the leader is still probing, so
// a merge right after a split waits here rather than failing.
const mergeCatchUpWait = 10 * time.Second

// prepareMerge freezes the source for a merge into targetID, which it
// leads here first. The source's leader refuses while a replica lags
// (raftstore.ErrMergeReplicaBehind): it is retried, with the target's
// leadership and descriptor taken afresh, until mergeCatchUpWait passes.
func (s *Server) prepareMerge(ctx context.Context, source *metapb.Region, targetID uint64) (*raftstore.PreparedMerge, error) {
	deadline := time.Now().Add(mergeCatchUpWait)
	for {
		target, err := s.leadHere(ctx, targetID)
		if err != nil {
			return nil, err
		}
		if err := mergePairError(source, target); err != nil {
			return nil, err
		}
		pm, err := s.store.PrepareMerge(ctx, source.GetId(), source.GetRegionEpoch(), target)
		switch {
		case err == nil:
			return pm, nil
		case errors.Is(err, raftstore.ErrMergeReplicaBehind) && time.Now().Before(deadline):
			if serr := sleepCtx(ctx, mergeRetryInterval); serr != nil {
				return nil, fmt.Errorf("waiting for region %d's replicas to catch up before a merge (%v): %w", source.GetId(), err, serr)
			}
		case errors.Is(err, raftstore.ErrMergeReplicaBehind):
			return nil, fmt.Errorf("%w: %v, still after %v", ErrCannotMerge, err, mergeCatchUpWait)
		case errors.Is(err, raftstore.ErrBadMerge):
			return nil, fmt.Errorf("%w: %v", ErrCannotMerge, err)
		default:
			return nil, err
		}
	}
}

// mergePairError checks what a merge needs of its two regions, with an
// error a person can act on.
func mergePairError(source, target *metapb.Region) error {
	err := raftstore.CheckMergePair(source, target)
	switch {
	case errors.Is(err, raftstore.ErrMergeNotAligned):
		return fmt.Errorf("%w: %v: regions %d and %d are on stores %v and %v; have PD align and merge them "+
			`with POST /pd/api/v1/operators {"name": "merge-region", "source_region_id": %d, "target_region_id": %d}`,
			ErrCannotMerge, err, source.GetId(), target.GetId(), peerStores(source), peerStores(target), source.GetId(), target.GetId())
	case err != nil:
		return fmt.Errorf("%w: %v", ErrCannotMerge, err)
	}
	return nil
}

func peerStores(r *metapb.Region) []uint64 {
	out := make([]uint64, 0, len(r.GetPeers()))
	for _, m := range r.GetPeers() {
		out = append(out, m.GetStoreId())
	}
	return out
}

// finishMerge takes a prepared merge to its end: committed, or rolled back
// when the target moved on.
func (s *Server) finishMerge(ctx context.Context, pm *raftstore.PreparedMerge) (*metapb.Region, error) {
	sourceID, targetID := pm.Source.GetId(), pm.Target.GetId()
	for _, m := range pm.Source.GetPeers() {
		for {
			ok, err := s.sourceReplicaReady(ctx, m.GetStoreId(), pm)
			if ok {
				break
			}
			if merged, over, serr := s.settleMerge(ctx, pm); over {
				return merged, serr
			}
			if sleepCtx(ctx, mergeRetryInterval) != nil {
				why := "it has not applied the PrepareMerge yet"
				if err != nil {
					why = err.Error()
				}
				return nil, fmt.Errorf("merge of region %d: waiting for its replica on store %d (%s): %w", sourceID, m.GetStoreId(), why, ctx.Err())
			}
		}
	}
	for {
		target, err := s.leadHere(ctx, targetID)
		if err == nil && region.EpochEqual(target.GetRegionEpoch(), pm.Target.GetRegionEpoch()) {
			var merged *metapb.Region
			merged, err = s.store.CommitMerge(ctx, targetID, pm.Target.GetRegionEpoch(), pm.Source, pm.Commit)
			if err == nil {
				s.log.Info("merge committed", "source", sourceID, "target", targetID, "range", fmt.Sprintf("[%q, %q)", merged.GetStartKey(), merged.GetEndKey()))
				s.hb.mark(targetID)
				return merged, nil
			}
		}
		if merged, over, serr := s.settleMerge(ctx, pm); over {
			return merged, serr
		}
		if serr := sleepCtx(ctx, mergeRetryInterval); serr != nil {
			return nil, fmt.Errorf("merge of region %d into %d: %v: %w", sourceID, targetID, err, ctx.Err())
		}
	}
}

// sourceReplicaReady reports whether the source's replica on storeID
// applied the PrepareMerge and made it durable, or is already gone into
// the target.
func (s *Server) sourceReplicaReady(ctx context.Context, storeID uint64, pm *raftstore.PreparedMerge) (bool, error) {
	rs, err := s.replicaStatus(ctx, storeID, pm.Source.GetId(), true)
	if err != nil {
		return false, err
	}
	if !rs.GetExists() {
		// Merged away there: an earlier driver committed, which it did
		// only after this replica was ready. (Removal cannot be it: a
		// Merging source takes no membership change.)
		return region.EpochEqual(rs.GetTombstoneEpoch(), pm.Source.GetRegionEpoch()), nil
	}
	return rs.GetMerging() && rs.GetMergeCommit() == pm.Commit && rs.GetAppliedIndex() >= pm.Commit, nil
}

// settleMerge reports whether the merge is over, judged from this store's
// replicas (see the file comment): committed (the target covers the
// source), rolled back here now because the target moved on, or rolled
// back by someone else.
func (s *Server) settleMerge(ctx context.Context, pm *raftstore.PreparedMerge) (*metapb.Region, bool, error) {
	sourceID, targetID := pm.Source.GetId(), pm.Target.GetId()
	// Target first: a target status showing the merge was published after
	// the source left the store, so a source still here means the target
	// status read before it had not absorbed it.
	tst := s.store.RegionStatus(targetID)
	sst := s.store.RegionStatus(sourceID)
	if sst == nil || sst.Merge == nil || sst.Merge.Commit != pm.Commit {
		switch {
		case tst != nil && covers(tst.Region, pm.Source):
			return tst.Region, true, nil
		case sst != nil && sst.Merge == nil:
			return nil, true, fmt.Errorf("%w: region %d takes writes again", ErrMergeRolledBack, sourceID)
		}
		return nil, true, region.RegionNotFound(sourceID)
	}
	if tst == nil || !tst.Initialized {
		return nil, false, nil
	}
	te, recorded := tst.Region.GetRegionEpoch(), pm.Target.GetRegionEpoch()
	moved := !region.EpochEqual(te, recorded) && !region.IsStale(te, recorded)
	if !moved || covers(tst.Region, pm.Source) {
		return nil, false, nil
	}
	if !sst.IsLeader() {
		return nil, true, region.NotLeader(sourceID, sst.Leader)
	}
	r, err := s.store.RollbackMerge(ctx, sourceID, sst.Region.GetRegionEpoch(), pm.Commit)
	if err != nil {
		return nil, false, nil
	}
	s.log.Info("merge rolled back", "source", sourceID, "target", targetID, "target epoch", te)
	s.hb.mark(sourceID)
	return nil, true, fmt.Errorf("%w: target region %d changed (epoch %v, the merge expected %v); region %d (epoch %v) takes writes again",
		ErrMergeRolledBack, targetID, te, recorded, sourceID, r.GetRegionEpoch())
}

func covers(outer, inner *metapb.Region) bool {
	return region.ContainsRange(outer.GetStartKey(), outer.GetEndKey(), inner.GetStartKey(), inner.GetEndKey())
}

// leadHere brings regionID's leadership to this store's replica and
// returns its descriptor as the leader has it.
func (s *Server) leadHere(ctx context.Context, regionID uint64) (*metapb.Region, error) {
	for {
		st := s.store.RegionStatus(regionID)
		if st == nil || !st.Initialized {
			return nil, region.RegionNotFound(regionID)
		}
		if st.IsLeader() {
			return st.Region, nil
		}
		if err := s.store.RequestLeadership(regionID); err != nil {
			return nil, err
		}
		if err := sleepCtx(ctx, mergeRetryInterval); err != nil {
			return nil, fmt.Errorf("move the leadership of region %d to store %d: %w", regionID, s.storeID, err)
		}
	}
}

// replicaStatus asks storeID (this store included) about its replica of
// regionID; sync makes the answering store's applied state durable first.
func (s *Server) replicaStatus(ctx context.Context, storeID, regionID uint64, sync bool) (*kvpb.ReplicaStatusResponse, error) {
	if storeID == s.storeID {
		return s.localReplicaStatus(regionID, sync)
	}
	cc, err := s.trans.ClientConn(storeID)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return kvpb.NewAdminClient(cc).ReplicaStatus(cctx, &kvpb.ReplicaStatusRequest{RegionId: regionID, Sync: sync})
}

func (s *Server) localReplicaStatus(regionID uint64, sync bool) (*kvpb.ReplicaStatusResponse, error) {
	// Status first, sync second: what the status shows applied is then
	// durable when the answer leaves. Only a replica in Merging is worth a
	// sync: the driver polls the others until they get there.
	st := s.store.RegionStatus(regionID)
	if sync && st != nil && st.Merge != nil {
		if err := s.store.SyncApplied(); err != nil {
			return nil, err
		}
	}
	if st == nil || !st.Initialized {
		return &kvpb.ReplicaStatusResponse{TombstoneEpoch: s.store.TombstoneEpoch(regionID)}, nil
	}
	resp := &kvpb.ReplicaStatusResponse{Exists: true, Region: st.Region, AppliedIndex: st.Applied}
	if st.Merge != nil {
		resp.Merging, resp.MergeCommit = true, st.Merge.Commit
	}
	return resp, nil
}

// mergeResumeLoop finishes merges whose driver stopped (this store
// restarted, or the source's leadership moved here mid-merge).
func (s *Server) mergeResumeLoop() {
	t := time.NewTicker(s.cfg.MergeResumeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		for _, st := range s.store.Regions() {
			if st == nil || st.Merge == nil || !st.IsLeader() {
				continue
			}
			id := st.Region.GetId()
			s.merges.mu.Lock()
			running := s.merges.runs[id] != nil
			s.merges.mu.Unlock()
			if running {
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
				defer cancel()
				if _, err := s.mergeRegion(ctx, id, nil, 0); err != nil && s.ctx.Err() == nil {
					s.log.Debug("resume merge", "source", id, "err", err)
				}
			}()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
