package storenode

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/region"
)

// adminService serves region administration (kvpb.Admin).
type adminService struct {
	kvpb.UnimplementedAdminServer
	s *Server
}

func (a *adminService) SplitRegion(ctx context.Context, req *kvpb.SplitRegionRequest) (*kvpb.SplitRegionResponse, error) {
	c := req.GetContext()
	if c.GetRegionId() == 0 {
		return nil, status.Error(codes.InvalidArgument, "split: the request names no region")
	}
	regions, err := a.s.splitRegion(ctx, c.GetRegionId(), c.GetRegionEpoch(), req.GetSplitKeys())
	var re *region.Error
	switch {
	case err == nil:
		return &kvpb.SplitRegionResponse{Header: &kvpb.ResponseHeader{}, Regions: regions}, nil
	case errors.As(err, &re):
		return &kvpb.SplitRegionResponse{Header: &kvpb.ResponseHeader{RegionError: re.Proto()}}, nil
	case errors.Is(err, ErrCannotSplit), errors.Is(err, raftstore.ErrBadSplit):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return nil, grpcError(err)
}

func (a *adminService) MergeRegion(ctx context.Context, req *kvpb.MergeRegionRequest) (*kvpb.MergeRegionResponse, error) {
	c := req.GetContext()
	if c.GetRegionId() == 0 || req.GetTargetRegionId() == 0 {
		return nil, status.Error(codes.InvalidArgument, "merge: the request must name a source and a target region")
	}
	merged, err := a.s.mergeRegion(ctx, c.GetRegionId(), c.GetRegionEpoch(), req.GetTargetRegionId())
	var re *region.Error
	switch {
	case err == nil:
		return &kvpb.MergeRegionResponse{Header: &kvpb.ResponseHeader{}, Region: merged}, nil
	case errors.As(err, &re):
		return &kvpb.MergeRegionResponse{Header: &kvpb.ResponseHeader{RegionError: re.Proto()}}, nil
	case errors.Is(err, ErrCannotMerge), errors.Is(err, raftstore.ErrBadMerge):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrMergeRolledBack):
		return nil, status.Error(codes.Aborted, err.Error())
	}
	return nil, grpcError(err)
}

func (a *adminService) ReplicaStatus(_ context.Context, req *kvpb.ReplicaStatusRequest) (*kvpb.ReplicaStatusResponse, error) {
	if req.GetRegionId() == 0 {
		return nil, status.Error(codes.InvalidArgument, "replica status: the request names no region")
	}
	resp, err := a.s.localReplicaStatus(req.GetRegionId(), req.GetSync())
	if err != nil {
		return nil, grpcError(err)
	}
	return resp, nil
}
