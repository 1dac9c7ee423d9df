package storenode

import (
	"bytes"
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// localReadIndexTimeout bounds a local ReadIndex: a follower cut off from
// its leader would hold the read until the caller's deadline; after this
// the routed path takes it.
const localReadIndexTimeout = 2 * time.Second

// localRegion returns this store's replica of the region holding key, or
// nil.
func (s *Server) localRegion(key []byte) *mvcc.Region {
	id := s.store.RegionIDByKey(key)
	if id == 0 {
		return nil
	}
	return s.mvcc.Region(id)
}

// localReadIndex confirms a linearizable read of the local replica of r.
func (s *Server) localReadIndex(ctx context.Context, r *mvcc.Region) (*raftstore.ReadGuard, error) {
	rctx, cancel := context.WithTimeout(ctx, localReadIndexTimeout)
	defer cancel()
	return s.store.ReadIndex(rctx, r.ID, r.Desc().GetRegionEpoch())
}

// resolvedRead confirms a linearizable read of the latest state of the
// local replica of r, as localReadIndex does, and also returns a resolved
// revision T of the region (drawn by this store if it leads the region,
// else by its leader): every write acknowledged anywhere before the call
// is below T and every write of the region below T is applied here once
// the guard is returned. The state read is then the region's state at
// max(T, the revision read), which is the header etcd's clients expect of
// a latest read: a revision at or above every write acknowledged before it
// in the whole cluster, not only in this region (the Kubernetes API server
// takes it as the current revision of everything).
func (s *Server) resolvedRead(ctx context.Context, r *mvcc.Region, key []byte) (int64, *raftstore.ReadGuard, error) {
	rctx, cancel := context.WithTimeout(ctx, localReadIndexTimeout)
	defer cancel()
	desc := r.Desc()
	if st := s.store.RegionStatus(r.ID); st != nil && st.IsLeader() {
		t, guard, err := s.sharedResolve(rctx, r.ID, desc.GetRegionEpoch())
		if err == nil {
			s.watches.noteResolved(r.ID, t)
			return t, guard, nil
		}
		// Leadership moved meanwhile: ask the new leader.
	}
	return s.remoteResolves.join(rctx, r.ID, desc.GetRegionEpoch(), func(ctx context.Context) (int64, *raftstore.ReadGuard, error) {
		ctx, cancel := context.WithTimeout(ctx, localReadIndexTimeout)
		defer cancel()
		t, index, err := s.router.ResolveRevision(ctx, key, desc)
		if err != nil {
			return 0, nil, err
		}
		// The leader's read index spares this replica a ReadIndex round of
		// its own (a message to the leader and back).
		var guard *raftstore.ReadGuard
		if index > 0 {
			guard, err = s.store.ReadAtIndex(ctx, r.ID, desc.GetRegionEpoch(), index)
		} else {
			guard, err = s.store.ReadIndex(ctx, r.ID, desc.GetRegionEpoch())
		}
		return t, guard, err
	})
}

// localRange serves an etcd range from this store's own replica, leader or
// follower, as an etcd member serves one from its own state, so reads
// spread over every store instead of queueing at the leader:
//   - serializable: no ReadIndex, at the revision the replica has applied
//     (which may trail the cluster's);
//   - linearizable: after a ReadIndex (a follower asks the leader for its
//     commit index and waits to apply it), so every write acknowledged
//     before the call is seen; a read of the latest revision also gets a
//     resolved revision first (resolvedRead), which its header carries when
//     above the revision read.
//
// It does so only when one region here holds the whole range, so the
// answer is one region's state at one revision, and for a revision this
// replica has applied (the region's log is in revision order, so every
// write at or below it is here). ok false: the caller routes the range
// through the client (it spans regions, no replica of it is here, it asks
// for a newer revision, or the read failed and the routed path gives the
// error etcd's clients know).
func (s *Server) localRange(ctx context.Context, req *kvpb.RangeRequest) (*kvpb.RangeResponse, bool) {
	key, end, inUser := region.ClipUserRange(req.GetKey(), req.GetRangeEnd())
	if !inUser {
		return nil, false
	}
	r := s.localRegion(key)
	if r == nil {
		return nil, false
	}
	var guard *raftstore.ReadGuard
	var resolved int64
	switch {
	case req.GetSerializable():
		guard = s.store.LocalGuard(r.ID)
	case req.GetRevision() == 0:
		resolved, guard, _ = s.resolvedRead(ctx, r, key)
	default:
		guard, _ = s.localReadIndex(ctx, r)
	}
	if guard == nil {
		return nil, false
	}
	desc := guard.Region
	if len(end) > 0 && !region.ContainsRange(desc.GetStartKey(), desc.GetEndKey(), key, end) {
		return nil, false
	}
	if req.GetRevision() > r.Revision() {
		return nil, false
	}
	if !bytes.Equal(end, req.GetRangeEnd()) {
		req = req.ShallowCopy()
		req.RangeEnd = end
	}
	resp, err := s.mvcc.Range(r, req, r.Revision())
	if err != nil {
		return nil, false
	}
	// The read must not straddle the replica leaving this store, its data
	// being replaced, or its range changing: then the routed path answers.
	if guard.Check() != nil {
		return nil, false
	}
	resp.Header.Revision = max(resp.Header.Revision, resolved)
	s.load.recordRead(r.ID, key, resp.GetKvs())
	s.stampTerm(resp.GetHeader(), r.ID)
	return resp, true
}

// localReadTxn serves a transaction that only reads, in one region, from
// this store's replica after a ReadIndex and with a resolved revision
// (resolvedRead), as localRange serves a latest range
// (etcd's benchmark and some clients read through Txn().Then(Get)). ok
// false: the caller routes it.
func (s *Server) localReadTxn(ctx context.Context, t *kvpb.TxnRequest) (*kvpb.TxnResponse, bool) {
	if hasWrites(t) {
		return nil, false
	}
	t = proto.Clone(t).(*kvpb.TxnRequest)
	if clipTxn(t) != nil {
		return nil, false
	}
	key := mvcc.TxnKey(t)
	if key == nil {
		return nil, false
	}
	r := s.localRegion(key)
	if r == nil {
		return nil, false
	}
	resolved, guard, err := s.resolvedRead(ctx, r, key)
	if err != nil {
		return nil, false
	}
	resp, err := s.mvcc.ReadTxn(r, t)
	if err != nil || guard.Check() != nil {
		return nil, false
	}
	resp.Header.Revision = max(resp.Header.Revision, resolved)
	s.load.recordRead(r.ID, key, nil)
	s.stampTerm(resp.GetHeader(), r.ID)
	return resp, true
}
