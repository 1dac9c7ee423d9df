package pd

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
	"github.com/basaltdb/basalt/region"
)

type grpcService struct {
	pdpb.UnimplementedPDServer
	s *Server
}

func (g *grpcService) header(err *pdpb.Error) *pdpb.ResponseHeader {
	return &pdpb.ResponseHeader{ClusterId: g.s.fsm.getClusterID(), Error: err}
}

func (g *grpcService) errorHeader(t pdpb.ErrorType, msg string) *pdpb.ResponseHeader {
	return g.header(&pdpb.Error{Type: t, Message: msg})
}

// check validates the request header and that this member leads. It returns
// a header with an error when the request cannot be served here.
func (g *grpcService) check(h *pdpb.RequestHeader) *pdpb.ResponseHeader {
	if id := h.GetClusterId(); id != 0 && id != g.s.fsm.getClusterID() {
		return g.errorHeader(pdpb.ErrorType_CLUSTER_MISMATCH, "request is for another cluster")
	}
	if !g.s.IsLeader() {
		return g.notLeader()
	}
	return nil
}

func (g *grpcService) notLeader() *pdpb.ResponseHeader {
	e := &pdpb.Error{Type: pdpb.ErrorType_NOT_LEADER, Message: "this PD member is not the leader"}
	if l := g.s.leaderMember(); l != nil && l.GetMemberId() != g.s.memberID {
		e.LeaderAddr = l.GetClientAddr()
	}
	return g.header(e)
}

// toHeader turns an internal error into a response header.
func (g *grpcService) toHeader(err error) *pdpb.ResponseHeader {
	switch {
	case err == nil:
		return g.header(nil)
	case errors.Is(err, errNotLeader), errors.Is(err, region.ErrNotLeader), errors.Is(err, region.ErrStaleCommand):
		return g.notLeader()
	case errors.Is(err, errAlreadyBootstrapped):
		return g.errorHeader(pdpb.ErrorType_ALREADY_BOOTSTRAPPED, err.Error())
	case errors.Is(err, errStoreNotFound):
		return g.errorHeader(pdpb.ErrorType_STORE_NOT_FOUND, err.Error())
	case errors.Is(err, errStaleRegion):
		return g.errorHeader(pdpb.ErrorType_STALE_REGION, err.Error())
	case errors.Is(err, errInvalidCount), errors.Is(err, errInvalidArgument):
		return g.errorHeader(pdpb.ErrorType_INVALID_ARGUMENT, err.Error())
	}
	return g.errorHeader(pdpb.ErrorType_UNKNOWN, err.Error())
}

var errInvalidArgument = errors.New("pd: invalid argument")

func (g *grpcService) GetMembers(ctx context.Context, req *pdpb.GetMembersRequest) (*pdpb.GetMembersResponse, error) {
	resp := &pdpb.GetMembersResponse{Header: g.header(nil), Members: g.s.allMembers()}
	if l := g.s.leaderMember(); l != nil {
		resp.Leader = l
	}
	return resp, nil
}

func (g *grpcService) RegisterMember(ctx context.Context, req *pdpb.RegisterMemberRequest) (*pdpb.RegisterMemberResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.RegisterMemberResponse{Header: h}, nil
	}
	m := req.GetMember()
	known := false
	for _, x := range g.s.members {
		if x.id == m.GetMemberId() && x.name == m.GetName() {
			known = true
		}
	}
	if !known {
		return &pdpb.RegisterMemberResponse{Header: g.errorHeader(pdpb.ErrorType_INVALID_ARGUMENT, "not a member of this PD cluster")}, nil
	}
	for _, x := range g.s.fsm.getMembers() {
		if proto.Equal(x, m) {
			return &pdpb.RegisterMemberResponse{Header: g.header(nil)}, nil
		}
	}
	_, err := g.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_PutMember{PutMember: m}})
	return &pdpb.RegisterMemberResponse{Header: g.toHeader(err)}, nil
}

func (g *grpcService) Tso(stream pdpb.PD_TsoServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp := &pdpb.TsoResponse{}
		if h := g.check(req.GetHeader()); h != nil {
			resp.Header = h
		} else if ts, err := g.s.tso.alloc(req.GetCount()); err != nil {
			resp.Header = g.toHeader(err)
		} else {
			resp.Header, resp.Count, resp.Timestamp = g.header(nil), req.GetCount(), ts
			g.s.tso.requests.Add(1)
			g.s.tso.timestamps.Add(int64(req.GetCount()))
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (g *grpcService) AllocID(ctx context.Context, req *pdpb.AllocIDRequest) (*pdpb.AllocIDResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.AllocIDResponse{Header: h}, nil
	}
	n := max(req.GetCount(), 1)
	id, err := g.s.ids.alloc(ctx, n)
	if err != nil {
		return &pdpb.AllocIDResponse{Header: g.toHeader(err)}, nil
	}
	return &pdpb.AllocIDResponse{Header: g.header(nil), Id: id, Count: n}, nil
}

func (g *grpcService) IsBootstrapped(ctx context.Context, req *pdpb.IsBootstrappedRequest) (*pdpb.IsBootstrappedResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.IsBootstrappedResponse{Header: h}, nil
	}
	return &pdpb.IsBootstrappedResponse{Header: g.header(nil), Bootstrapped: g.s.fsm.getCluster() != nil}, nil
}

func (g *grpcService) Bootstrap(ctx context.Context, req *pdpb.BootstrapRequest) (*pdpb.BootstrapResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.BootstrapResponse{Header: h}, nil
	}
	st, r := req.GetStore(), req.GetRegion()
	switch {
	case st.GetId() == 0 || st.GetAddress() == "":
		return &pdpb.BootstrapResponse{Header: g.errorHeader(pdpb.ErrorType_INVALID_ARGUMENT, "bootstrap needs a store with an ID and an address")}, nil
	case r.GetId() == 0 || len(r.GetStartKey()) != 0 || len(r.GetEndKey()) != 0 || region.FindPeer(r, st.GetId()) == nil ||
		r.GetRegionEpoch().GetVersion() == 0 || r.GetRegionEpoch().GetConfVer() == 0:
		return &pdpb.BootstrapResponse{Header: g.errorHeader(pdpb.ErrorType_INVALID_ARGUMENT,
			"bootstrap needs the first region: an ID, the whole key space, a peer on the store, an epoch of at least 1/1")}, nil
	}
	cfg := g.s.cluster.config()
	cmd := &pdpb.BootstrapCommand{
		Cluster: &metapb.Cluster{Id: g.s.fsm.getClusterID(), MaxPeerCount: uint32(cfg.MaxReplicas)},
		Store:   st, Region: r,
	}
	if _, err := g.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_Bootstrap{Bootstrap: cmd}}); err != nil {
		return &pdpb.BootstrapResponse{Header: g.toHeader(err)}, nil
	}
	g.s.cluster.load()
	return &pdpb.BootstrapResponse{Header: g.header(nil)}, nil
}

func (g *grpcService) GetClusterConfig(ctx context.Context, req *pdpb.GetClusterConfigRequest) (*pdpb.GetClusterConfigResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.GetClusterConfigResponse{Header: h}, nil
	}
	c := g.s.fsm.getCluster()
	if c == nil {
		return &pdpb.GetClusterConfigResponse{Header: g.errorHeader(pdpb.ErrorType_NOT_BOOTSTRAPPED, "cluster is not bootstrapped")}, nil
	}
	return &pdpb.GetClusterConfigResponse{Header: g.header(nil), Cluster: c}, nil
}

func (g *grpcService) bootstrapped() *pdpb.ResponseHeader {
	if g.s.fsm.getCluster() == nil {
		return g.errorHeader(pdpb.ErrorType_NOT_BOOTSTRAPPED, "cluster is not bootstrapped")
	}
	return nil
}

func (g *grpcService) PutStore(ctx context.Context, req *pdpb.PutStoreRequest) (*pdpb.PutStoreResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.PutStoreResponse{Header: h}, nil
	}
	if h := g.bootstrapped(); h != nil {
		return &pdpb.PutStoreResponse{Header: h}, nil
	}
	err := g.s.cluster.putStore(ctx, req.GetStore())
	if err != nil && !errors.Is(err, errNotLeader) {
		return &pdpb.PutStoreResponse{Header: g.errorHeader(pdpb.ErrorType_INVALID_ARGUMENT, err.Error())}, nil
	}
	return &pdpb.PutStoreResponse{Header: g.toHeader(err)}, nil
}

func (g *grpcService) GetStore(ctx context.Context, req *pdpb.GetStoreRequest) (*pdpb.GetStoreResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.GetStoreResponse{Header: h}, nil
	}
	st, stats, err := g.s.cluster.getStore(req.GetStoreId())
	if err != nil {
		return &pdpb.GetStoreResponse{Header: g.toHeader(err)}, nil
	}
	return &pdpb.GetStoreResponse{Header: g.header(nil), Store: st, Stats: stats}, nil
}

func (g *grpcService) GetAllStores(ctx context.Context, req *pdpb.GetAllStoresRequest) (*pdpb.GetAllStoresResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.GetAllStoresResponse{Header: h}, nil
	}
	resp := &pdpb.GetAllStoresResponse{Header: g.header(nil)}
	for _, st := range g.s.cluster.storeStatuses() {
		if req.GetExcludeTombstoneStores() && st.Store.GetState() == metapb.StoreState_Tombstone {
			continue
		}
		resp.Stores = append(resp.Stores, st.Store)
	}
	return resp, nil
}

func (g *grpcService) StoreHeartbeat(ctx context.Context, req *pdpb.StoreHeartbeatRequest) (*pdpb.StoreHeartbeatResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.StoreHeartbeatResponse{Header: h}, nil
	}
	return &pdpb.StoreHeartbeatResponse{Header: g.toHeader(g.s.cluster.handleStoreHeartbeat(req.GetStats()))}, nil
}

// heartbeatStream serializes sends on one store's region heartbeat stream:
// replies to heartbeats and steps pushed by the scheduler.
type heartbeatStream struct {
	mu     sync.Mutex
	stream pdpb.PD_RegionHeartbeatServer
}

func (h *heartbeatStream) send(resp *pdpb.RegionHeartbeatResponse) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stream.Send(resp)
}

func (g *grpcService) RegionHeartbeat(stream pdpb.PD_RegionHeartbeatServer) error {
	hs := &heartbeatStream{stream: stream}
	var bound uint64
	defer func() {
		if bound != 0 {
			g.s.cluster.unbindStream(bound, hs)
		}
	}()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if h := g.check(req.GetHeader()); h != nil {
			if err := hs.send(&pdpb.RegionHeartbeatResponse{Header: h}); err != nil {
				return err
			}
			continue
		}
		if sid := req.GetLeader().GetStoreId(); sid != 0 && sid != bound {
			if bound != 0 {
				g.s.cluster.unbindStream(bound, hs)
			}
			bound = sid
			g.s.cluster.bindStream(sid, hs)
		}
		resp, err := g.s.cluster.handleRegionHeartbeat(req)
		switch {
		case err != nil:
			if err := hs.send(&pdpb.RegionHeartbeatResponse{Header: g.toHeader(err), RegionId: req.GetRegion().GetId()}); err != nil {
				return err
			}
		case resp != nil:
			resp.Header = g.header(nil)
			if err := hs.send(resp); err != nil {
				return err
			}
		}
	}
}

func (g *grpcService) regionResponse(ri *regionInfo) *pdpb.GetRegionResponse {
	if ri == nil {
		return &pdpb.GetRegionResponse{Header: g.header(nil)}
	}
	return &pdpb.GetRegionResponse{Header: g.header(nil), Region: ri.meta, Leader: ri.leader,
		DownPeers: ri.downPeers, PendingPeers: ri.pendingPeers}
}

func (g *grpcService) GetRegion(ctx context.Context, req *pdpb.GetRegionRequest) (*pdpb.GetRegionResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.GetRegionResponse{Header: h}, nil
	}
	return g.regionResponse(g.s.cluster.regionByKey(req.GetRegionKey())), nil
}

func (g *grpcService) GetPrevRegion(ctx context.Context, req *pdpb.GetRegionRequest) (*pdpb.GetRegionResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.GetRegionResponse{Header: h}, nil
	}
	return g.regionResponse(g.s.cluster.prevRegion(req.GetRegionKey())), nil
}

func (g *grpcService) GetRegionByID(ctx context.Context, req *pdpb.GetRegionByIDRequest) (*pdpb.GetRegionResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.GetRegionResponse{Header: h}, nil
	}
	return g.regionResponse(g.s.cluster.regionByID(req.GetRegionId())), nil
}

func (g *grpcService) ScanRegions(ctx context.Context, req *pdpb.ScanRegionsRequest) (*pdpb.ScanRegionsResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.ScanRegionsResponse{Header: h}, nil
	}
	if !region.ValidRange(req.GetStartKey(), req.GetEndKey()) {
		return &pdpb.ScanRegionsResponse{Header: g.errorHeader(pdpb.ErrorType_INVALID_ARGUMENT, "start key must be below end key")}, nil
	}
	return &pdpb.ScanRegionsResponse{Header: g.header(nil),
		Regions: g.s.cluster.scanRegions(req.GetStartKey(), req.GetEndKey(), int(req.GetLimit()))}, nil
}

func (g *grpcService) WatchRegions(req *pdpb.WatchRegionsRequest, stream pdpb.PD_WatchRegionsServer) error {
	if h := g.check(req.GetHeader()); h != nil {
		return stream.Send(&pdpb.WatchRegionsResponse{Header: h})
	}
	w := g.s.watch.subscribe()
	defer g.s.watch.unsubscribe(w)
	// Leadership may have ended since the header check, and stopLeader
	// closed only the subscribers registered before it cleared leading.
	if !g.s.IsLeader() {
		return stream.Send(&pdpb.WatchRegionsResponse{Header: g.notLeader()})
	}
	// An empty first message tells the subscriber it is registered: every
	// change after it will be sent.
	if err := stream.Send(&pdpb.WatchRegionsResponse{Header: g.header(nil)}); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-w.dropped:
			if !g.s.IsLeader() {
				// Closed by stopLeader: a follower would publish nothing,
				// so the subscriber must follow the leader.
				return stream.Send(&pdpb.WatchRegionsResponse{Header: g.notLeader()})
			}
			return errors.New("pd: region watch fell behind; rescan and watch again")
		case ev := <-w.ch:
			if !g.s.IsLeader() {
				return stream.Send(&pdpb.WatchRegionsResponse{Header: g.notLeader()})
			}
			ev.Header = g.header(nil)
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

func (g *grpcService) AskBatchSplit(ctx context.Context, req *pdpb.AskBatchSplitRequest) (*pdpb.AskBatchSplitResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.AskBatchSplitResponse{Header: h}, nil
	}
	n, peers := req.GetSplitCount(), len(req.GetRegion().GetPeers())
	if n == 0 || n > 1024 || peers == 0 {
		return &pdpb.AskBatchSplitResponse{Header: g.errorHeader(pdpb.ErrorType_INVALID_ARGUMENT, "split count must be 1..1024 for a region with peers")}, nil
	}
	first, err := g.s.ids.alloc(ctx, n*uint32(1+peers))
	if err != nil {
		return &pdpb.AskBatchSplitResponse{Header: g.toHeader(err)}, nil
	}
	resp := &pdpb.AskBatchSplitResponse{Header: g.header(nil)}
	next := first
	for i := uint32(0); i < n; i++ {
		sid := &pdpb.SplitID{NewRegionId: next}
		next++
		for j := 0; j < peers; j++ {
			sid.NewPeerIds = append(sid.NewPeerIds, next)
			next++
		}
		resp.Ids = append(resp.Ids, sid)
	}
	return resp, nil
}

func (g *grpcService) ReportBatchSplit(ctx context.Context, req *pdpb.ReportBatchSplitRequest) (*pdpb.ReportBatchSplitResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.ReportBatchSplitResponse{Header: h}, nil
	}
	// The regions' leaders report them through heartbeats too; the report
	// makes them visible before the new regions have elected leaders.
	if err := g.s.cluster.reportSplit(req.GetRegions(), req.GetStoreId()); err != nil {
		return &pdpb.ReportBatchSplitResponse{Header: g.toHeader(err)}, nil
	}
	return &pdpb.ReportBatchSplitResponse{Header: g.header(nil)}, nil
}

func (g *grpcService) GetCompactRevision(ctx context.Context, req *pdpb.GetCompactRevisionRequest) (*pdpb.GetCompactRevisionResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.GetCompactRevisionResponse{Header: h}, nil
	}
	return &pdpb.GetCompactRevisionResponse{Header: g.header(nil), Revision: g.s.fsm.getCompactRev()}, nil
}

func (g *grpcService) UpdateCompactRevision(ctx context.Context, req *pdpb.UpdateCompactRevisionRequest) (*pdpb.UpdateCompactRevisionResponse, error) {
	if h := g.check(req.GetHeader()); h != nil {
		return &pdpb.UpdateCompactRevisionResponse{Header: h}, nil
	}
	res, err := g.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_SetCompactRevision{SetCompactRevision: req.GetRevision()}})
	if err != nil {
		return &pdpb.UpdateCompactRevisionResponse{Header: g.toHeader(err)}, nil
	}
	return &pdpb.UpdateCompactRevisionResponse{Header: g.header(nil), Revision: res.(uint64)}, nil
}
