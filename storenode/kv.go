package storenode

import (
	"bytes"
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/client"
	istatus "github.com/basaltdb/basalt/internal/status"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// kvService serves Basalt's KV API. Region problems (wrong region, stale
// epoch, not leader, key outside the region) come back as typed region
// errors in the response header, for the client to correct its routing;
// bad input comes back as a gRPC error with etcd's code and message; in both
// cases nothing changed.
type kvService struct {
	kvpb.UnimplementedKVServer
	s *Server
	// metrics: the gRPC server's, for the writes Forward serves (nil in
	// the store's in-process use).
	metrics *istatus.GRPCMetrics
}

// grpcError maps an expected condition to etcd's gRPC status.
func grpcError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mvcc.ErrCompacted), errors.Is(err, mvcc.ErrFutureRev):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, mvcc.ErrLeaseNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, mvcc.ErrLeaseExist):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, mvcc.ErrLeaseTTLTooLarge):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, mvcc.ErrReservedKey), errors.Is(err, errBadLeaseID):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, mvcc.ErrLeaseCheckStale), errors.Is(err, errNotLeaseOwner):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, mvcc.ErrKeyNotFound), errors.Is(err, mvcc.ErrEmptyKey), errors.Is(err, mvcc.ErrKeyTooLarge),
		errors.Is(err, mvcc.ErrTooLarge), errors.Is(err, mvcc.ErrTooManyOps), errors.Is(err, mvcc.ErrDuplicateKey),
		errors.Is(err, mvcc.ErrBadRange), errors.Is(err, mvcc.ErrValueProvided), errors.Is(err, mvcc.ErrLeaseProvided):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, mvcc.ErrRevisionOrder):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, errStopping), errors.Is(err, client.ErrGaveUp), errors.Is(err, raftstore.ErrOutcomeUnknown):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// regionHeader turns a region error into a response header; other errors
// are returned as they are.
func regionHeader(err error) (*kvpb.ResponseHeader, error) {
	var re *region.Error
	if errors.As(err, &re) {
		return &kvpb.ResponseHeader{RegionError: re.Proto()}, nil
	}
	return nil, grpcError(err)
}

// stampTerm puts the raft term of the region that served a request in its
// response header, as etcd's headers carry its one group's term.
func (s *Server) stampTerm(h *kvpb.ResponseHeader, regionID uint64) {
	if h == nil {
		return
	}
	if st := s.store.RegionStatus(regionID); st != nil {
		h.RaftTerm = st.Term
	}
}

func (k *kvService) region(c *kvpb.Context) (*mvcc.Region, error) {
	if c.GetRegionId() == 0 {
		return nil, region.RegionNotFound(0)
	}
	if p := c.GetPeer(); p != nil && p.GetStoreId() != 0 && p.GetStoreId() != k.s.storeID {
		return nil, region.StoreNotMatch(p.GetStoreId(), k.s.storeID)
	}
	r := k.s.mvcc.Region(c.GetRegionId())
	if r == nil {
		return nil, region.RegionNotFound(c.GetRegionId())
	}
	return r, nil
}

func (k *kvService) Range(ctx context.Context, req *kvpb.RangeRequest) (*kvpb.RangeResponse, error) {
	if err := k.s.mvcc.Limits().ValidateRange(req); err != nil {
		return nil, grpcError(err)
	}
	// Copied only when the range reaches into the system range: a read is
	// the hot path.
	if _, end, ok := region.ClipUserRange(req.GetKey(), req.GetRangeEnd()); !ok {
		return k.emptyRange(req)
	} else if !bytes.Equal(end, req.GetRangeEnd()) {
		req = req.ShallowCopy()
		req.RangeEnd = end
	}
	resp, err := k.s.serveRange(ctx, req)
	if err != nil {
		h, gerr := regionHeader(err)
		if gerr != nil {
			return nil, gerr
		}
		return &kvpb.RangeResponse{Header: h}, nil
	}
	return resp, nil
}

// serveRange reads under a read guard: linearizable (ReadIndex) unless the
// request asks for a stale read, which this replica serves at or below its
// resolved revision.
func (s *Server) serveRange(ctx context.Context, req *kvpb.RangeRequest) (*kvpb.RangeResponse, error) {
	k := &kvService{s: s}
	r, err := k.region(req.GetContext())
	if err != nil {
		return nil, err
	}
	c := req.GetContext()
	if c.GetStaleRead() {
		return s.serveStaleRange(r, req)
	}
	readable := max(r.Revision(), s.watches.resolved(r.ID))
	var guard *raftstore.ReadGuard
	if req.GetRevision() > readable {
		// A read at a revision this region has not reached: typically a
		// timestamp the client drew for a range over several regions. A
		// resolved revision T drawn now is above it (PD's timestamps only
		// grow and T is drawn after the client's), and once it is
		// established no write at or below the requested revision can
		// still apply here. A revision above T is in the future.
		var t int64
		if t, guard, err = s.resolve(ctx, r.ID, c.GetRegionEpoch()); err != nil {
			return nil, err
		}
		s.watches.noteResolved(r.ID, t)
		readable = max(readable, t)
	} else if guard, err = s.store.ReadIndex(ctx, r.ID, c.GetRegionEpoch()); err != nil {
		return nil, err
	}
	return s.rangeUnderGuard(r, req, readable, guard)
}

// rangeUnderGuard reads under guard, which must still hold afterwards:
// the replica was not destroyed, replaced by a snapshot or reshaped while
// it was read.
func (s *Server) rangeUnderGuard(r *mvcc.Region, req *kvpb.RangeRequest, readable int64, guard *raftstore.ReadGuard) (*kvpb.RangeResponse, error) {
	resp, err := s.mvcc.Range(r, req, readable)
	if err != nil {
		return nil, err
	}
	if err := guard.Check(); err != nil {
		return nil, err
	}
	s.load.recordRead(r.ID, req.GetKey(), resp.GetKvs())
	s.stampTerm(resp.GetHeader(), r.ID)
	return resp, nil
}

// serveStaleRange serves a serializable read from this replica, leader or
// not, without asking anyone: at the request's revision, or at its
// region's last applied revision when it asks for none. It vouches for
// every revision up to that one (apply refuses an entry whose revision is
// not above it, so no write at or below it can still arrive here) or up to
// a resolved revision this store established, whichever is higher. The
// answer may trail the cluster's, as an etcd member's serializable read
// may. ErrFutureRev: the request's revision is above what this replica can
// vouch for; the caller reads at the leader instead.
func (s *Server) serveStaleRange(r *mvcc.Region, req *kvpb.RangeRequest) (*kvpb.RangeResponse, error) {
	guard := s.store.LocalGuard(r.ID)
	if guard == nil {
		return nil, region.RegionNotFound(r.ID)
	}
	if !region.CheckEpoch(region.CmdRead, req.GetContext().GetRegionEpoch(), guard.Region.GetRegionEpoch()) {
		return nil, region.EpochNotMatch(guard.Region)
	}
	return s.rangeUnderGuard(r, req, max(r.Revision(), s.watches.resolved(r.ID)), guard)
}

// emptyRange answers a read that lies wholly in the system range: no user
// key is there. The region must still be the one asked for.
func (k *kvService) emptyRange(req *kvpb.RangeRequest) (*kvpb.RangeResponse, error) {
	r, err := k.region(req.GetContext())
	if err != nil {
		h, gerr := regionHeader(err)
		if gerr != nil {
			return nil, gerr
		}
		return &kvpb.RangeResponse{Header: h}, nil
	}
	return &kvpb.RangeResponse{Header: &kvpb.ResponseHeader{Revision: r.Revision()}}, nil
}

func (k *kvService) write(ctx context.Context, c *kvpb.Context, cmd *kvpb.WriteCommand) (*mvcc.WriteResult, *kvpb.ResponseHeader, error) {
	res, err := k.s.submitWrite(ctx, c, cmd)
	if err != nil {
		h, gerr := regionHeader(err)
		return nil, h, gerr
	}
	return res, nil, nil
}

// submitWrite proposes a user write, with the checks of the leases its
// puts attach (lease.go); a write whose checks ran out before its revision
// is sent again with fresh ones.
func (s *Server) submitWrite(ctx context.Context, c *kvpb.Context, cmd *kvpb.WriteCommand) (*mvcc.WriteResult, error) {
	r, err := (&kvService{s: s}).region(c)
	if err != nil {
		return nil, err
	}
	leases := mvcc.AttachedLeases(cmd)
	for attempt := 0; ; attempt++ {
		if len(leases) > 0 {
			// The range registered with the leases must be the range the
			// write applies under: apply checks the epoch's version, and a
			// range changes only with it.
			desc := r.Desc()
			if c.GetRegionEpoch().GetVersion() != desc.GetRegionEpoch().GetVersion() {
				return nil, region.EpochNotMatch(desc)
			}
			if cmd.LeaseChecks, err = s.leaseChecks.forWrite(ctx, desc, leases, attempt > 0); err != nil {
				return nil, err
			}
		}
		res, err := s.seq.submit(ctx, c.GetRegionId(), c.GetRegionEpoch(), cmd)
		if err == nil {
			err = res.Err
		}
		if errors.Is(err, mvcc.ErrLeaseCheckStale) && attempt < 2 {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.load.recordWrite(r.ID, cmd)
		if h, ok := res.Response.(interface{ GetHeader() *kvpb.ResponseHeader }); ok {
			s.stampTerm(h.GetHeader(), r.ID)
		}
		return res, nil
	}
}

func (k *kvService) Put(ctx context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	if err := k.s.mvcc.Limits().ValidatePut(req); err != nil {
		return nil, grpcError(err)
	}
	if region.IsSystemKey(req.GetKey()) {
		return nil, grpcError(mvcc.ErrReservedKey)
	}
	c := req.GetContext()
	p := req.ShallowCopy()
	p.Context = nil
	res, h, err := k.write(ctx, c, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: p}})
	if err != nil || h != nil {
		return &kvpb.PutResponse{Header: h}, err
	}
	return res.Response.(*kvpb.PutResponse), nil
}

func (k *kvService) DeleteRange(ctx context.Context, req *kvpb.DeleteRangeRequest) (*kvpb.DeleteRangeResponse, error) {
	if err := k.s.mvcc.Limits().ValidateDeleteRange(req); err != nil {
		return nil, grpcError(err)
	}
	c := req.GetContext()
	d := req.ShallowCopy()
	d.Context = nil
	if !clipDelete(d) {
		if len(req.GetRangeEnd()) == 0 {
			return nil, grpcError(mvcc.ErrReservedKey)
		}
		// A range starting in the system range holds no user key.
		r, err := k.region(c)
		if err != nil {
			h, gerr := regionHeader(err)
			return &kvpb.DeleteRangeResponse{Header: h}, gerr
		}
		return &kvpb.DeleteRangeResponse{Header: &kvpb.ResponseHeader{Revision: r.Revision()}}, nil
	}
	res, h, err := k.write(ctx, c, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_DeleteRange{DeleteRange: d}})
	if err != nil || h != nil {
		return &kvpb.DeleteRangeResponse{Header: h}, err
	}
	return res.Response.(*kvpb.DeleteRangeResponse), nil
}

func (k *kvService) Txn(ctx context.Context, req *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	if err := k.s.mvcc.Limits().ValidateTxn(req, proto.Size(req)); err != nil {
		return nil, grpcError(err)
	}
	c := req.GetContext()
	t := proto.Clone(req).(*kvpb.TxnRequest)
	t.Context = nil
	if err := clipTxn(t); err != nil {
		return nil, grpcError(err)
	}
	if !hasWrites(t) {
		// A read-only transaction needs no revision and no log entry.
		return k.readTxn(ctx, c, t)
	}
	res, h, err := k.write(ctx, c, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Txn{Txn: t}})
	if err != nil || h != nil {
		return &kvpb.TxnResponse{Header: h}, err
	}
	return res.Response.(*kvpb.TxnResponse), nil
}

func hasWrites(t *kvpb.TxnRequest) bool {
	for _, b := range [][]*kvpb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range b {
			switch x := op.GetRequest().(type) {
			case *kvpb.RequestOp_RequestPut, *kvpb.RequestOp_RequestDeleteRange:
				return true
			case *kvpb.RequestOp_RequestTxn:
				if hasWrites(x.RequestTxn) {
					return true
				}
			}
		}
	}
	return false
}

// readTxn evaluates a transaction without writes as a linearizable read.
func (k *kvService) readTxn(ctx context.Context, c *kvpb.Context, t *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	r, err := k.region(c)
	if err == nil {
		var guard interface{ Check() error }
		g, gerr := k.s.store.ReadIndex(ctx, r.ID, c.GetRegionEpoch())
		if gerr != nil {
			err = gerr
		} else {
			guard = g
			var resp *kvpb.TxnResponse
			resp, err = k.s.mvcc.ReadTxn(r, t)
			if err == nil {
				if err = guard.Check(); err == nil {
					k.s.stampTerm(resp.GetHeader(), r.ID)
					return resp, nil
				}
			}
		}
	}
	h, gerr := regionHeader(err)
	if gerr != nil {
		return nil, gerr
	}
	return &kvpb.TxnResponse{Header: h}, nil
}

// ResolveRevision draws a resolved revision of a region this store leads
// (kvpb: every write acknowledged before the call is below it, and every
// write of the region below it has applied): a follower's etcd front end
// reads its own replica after it, at a revision that orders the whole
// cluster.
func (k *kvService) ResolveRevision(ctx context.Context, req *kvpb.ResolveRevisionRequest) (*kvpb.ResolveRevisionResponse, error) {
	r, err := k.region(req.GetContext())
	if err == nil {
		var t int64
		var guard *raftstore.ReadGuard
		if t, guard, err = k.s.sharedResolve(ctx, r.ID, req.GetContext().GetRegionEpoch()); err == nil {
			k.s.watches.noteResolved(r.ID, t)
			h := &kvpb.ResponseHeader{Revision: t}
			k.s.stampTerm(h, r.ID)
			return &kvpb.ResolveRevisionResponse{Header: h, ReadIndex: guard.Index}, nil
		}
	}
	h, gerr := regionHeader(err)
	if gerr != nil {
		return nil, gerr
	}
	return &kvpb.ResolveRevisionResponse{Header: h}, nil
}

// Compact raises the cluster's compaction revision through PD; every
// region then drops older versions in the background. As in etcd, compacting
// a revision not yet reached or already compacted is an error.
func (k *kvService) Compact(ctx context.Context, req *kvpb.CompactRequest) (*kvpb.CompactResponse, error) {
	rev := req.GetRevision()
	if req.GetLocal() {
		cur, err := k.s.pd.GetCompactRevision(ctx)
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		if rev <= 0 || uint64(rev) > cur {
			return nil, status.Error(codes.InvalidArgument, "basalt: a local compaction must name a revision PD already compacted at")
		}
		k.s.markCompacted(rev)
		return &kvpb.CompactResponse{Header: &kvpb.ResponseHeader{Revision: rev}}, nil
	}
	now, err := k.s.pd.GetTS(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if rev <= 0 || uint64(rev) > now {
		return nil, grpcError(mvcc.ErrFutureRev)
	}
	cur, err := k.s.pd.GetCompactRevision(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if uint64(rev) <= cur {
		return nil, grpcError(mvcc.ErrCompacted)
	}
	if _, err := k.s.pd.UpdateCompactRevision(ctx, uint64(rev)); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	k.s.markCompacted(rev)
	if req.GetPhysical() {
		k.s.compactNow()
		deadline := time.Now().Add(30 * time.Second)
		for !k.s.compactedLocally(rev) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond) // the background compaction catches up
		}
	}
	return &kvpb.CompactResponse{Header: &kvpb.ResponseHeader{Revision: rev}}, nil
}
