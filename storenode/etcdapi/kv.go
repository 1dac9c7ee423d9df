package etcdapi

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/basaltdb/basalt/proto/kvpb"
)

type kvServer struct {
	pb.UnimplementedKVServer
	s *Server
}

func (k *kvServer) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	r := rangeRequestFromEtcd(req)
	if k.s.cfg.LocalRange != nil {
		if resp, ok := k.s.cfg.LocalRange(ctx, r); ok {
			out := rangeResponseToEtcd(resp)
			out.Header = k.s.headerOf(resp.GetHeader())
			return out, nil
		}
	}
	// A latest read routed to the regions' leaders is read at a timestamp
	// drawn now, which its header carries: as in etcd, a latest read's
	// revision is at or above every write acknowledged before it anywhere
	// in the cluster (a region's own latest revision may be far below, or
	// 0 for a region never written). The local path does the same with a
	// resolved revision.
	latest := r.GetRevision() == 0 && !r.GetSerializable()
	if latest {
		rev, err := k.s.currentRevision(ctx)
		if err != nil {
			return nil, etcdError(err)
		}
		r.Revision = rev
	}
	resp, err := k.s.cfg.Client.Range(ctx, r)
	if err != nil {
		return nil, etcdError(err)
	}
	rev := resp.GetHeader().GetRevision()
	if latest {
		// A read of a past revision carries the region's current one;
		// this one was asked for the latest, and was read at r.Revision.
		rev = r.GetRevision()
	}
	out := rangeResponseToEtcd(resp)
	out.Header = k.s.header(rev, resp.GetHeader().GetRaftTerm())
	return out, nil
}

// RangeStream sends a range in chunks of at most rangeStreamChunk keys,
// read page by page at one revision, so neither side holds it whole. A
// range with a limit, count_only or a sort other than by key is read at
// once and sent as one chunk.
func (k *kvServer) RangeStream(req *pb.RangeRequest, stream pb.KV_RangeStreamServer) error {
	r := rangeRequestFromEtcd(req)
	ctx := stream.Context()
	byKey := r.GetSortTarget() == kvpb.RangeRequest_KEY || r.GetSortOrder() == kvpb.RangeRequest_NONE
	if r.GetLimit() > 0 || r.GetCountOnly() || !byKey {
		resp, err := k.Range(ctx, req)
		if err != nil {
			return err
		}
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: resp})
	}
	var count int64
	rev, err := k.s.cfg.Client.Scan(ctx, r, rangeStreamChunk, func(kvs []*kvpb.KeyValue) error {
		out := &pb.RangeResponse{Kvs: keyValuesToEtcd(kvs)}
		count += int64(len(kvs))
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: out})
	})
	if err != nil {
		return etcdError(err)
	}
	return stream.Send(&pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Header: k.s.header(rev, 0), Count: count}})
}

const rangeStreamChunk = 1000

func (k *kvServer) Put(ctx context.Context, req *pb.PutRequest) (*pb.PutResponse, error) {
	resp, err := k.s.cfg.Client.Put(ctx, putRequestFromEtcd(req))
	if err != nil {
		return nil, etcdError(err)
	}
	out := putResponseToEtcd(resp)
	out.Header = k.s.headerOf(resp.GetHeader())
	return out, nil
}

func (k *kvServer) DeleteRange(ctx context.Context, req *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	resp, err := k.s.cfg.Client.DeleteRange(ctx, deleteRangeRequestFromEtcd(req))
	if err != nil {
		return nil, etcdError(err)
	}
	out := deleteRangeResponseToEtcd(resp)
	out.Header = k.s.headerOf(resp.GetHeader())
	return out, nil
}

func (k *kvServer) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	r := txnRequestFromEtcd(req)
	if k.s.cfg.LocalReadTxn != nil {
		if resp, ok := k.s.cfg.LocalReadTxn(ctx, r); ok {
			return txnResponseToEtcd(resp, k.s.headerOf(resp.GetHeader())), nil
		}
	}
	resp, err := k.s.cfg.Client.Txn(ctx, r)
	if err != nil {
		return nil, etcdError(err)
	}
	return txnResponseToEtcd(resp, k.s.headerOf(resp.GetHeader())), nil
}

func (k *kvServer) Compact(ctx context.Context, req *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := k.s.cfg.Client.Compact(ctx, req.GetRevision(), req.GetPhysical()); err != nil {
		return nil, etcdError(err)
	}
	rev, err := k.s.currentRevision(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.CompactionResponse{Header: k.s.header(rev, 0)}, nil
}
