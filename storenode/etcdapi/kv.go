package etcdapi

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
)

type kvServer struct {
	pb.UnimplementedKVServer
	s *Server
}

// toEtcd converts a Basalt response into etcd's type, with etcd's header.
func (s *Server) toEtcd(from proto.Message, h *kvpb.ResponseHeader, to proto.Message) error {
	clearHeaders(from)
	if err := recode(from, to); err != nil {
		return err
	}
	hdr := s.header(h.GetRevision(), h.GetRaftTerm())
	switch r := to.(type) {
	case *pb.RangeResponse:
		r.Header = hdr
	case *pb.PutResponse:
		r.Header = hdr
	case *pb.DeleteRangeResponse:
		r.Header = hdr
	case *pb.TxnResponse:
		setTxnHeaders(r, hdr)
	}
	return nil
}

// setTxnHeaders gives a transaction's response, and every response in it,
// the transaction's header, as etcd does.
func setTxnHeaders(r *pb.TxnResponse, hdr *pb.ResponseHeader) {
	r.Header = hdr
	for _, op := range r.GetResponses() {
		switch x := op.GetResponse().(type) {
		case *pb.ResponseOp_ResponseRange:
			x.ResponseRange.Header = hdr
		case *pb.ResponseOp_ResponsePut:
			x.ResponsePut.Header = hdr
		case *pb.ResponseOp_ResponseDeleteRange:
			x.ResponseDeleteRange.Header = hdr
		case *pb.ResponseOp_ResponseTxn:
			setTxnHeaders(x.ResponseTxn, hdr)
		}
	}
}

func (k *kvServer) Range(ctx context.Context, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	r := rangeRequestFromEtcd(req)
	if k.s.cfg.LocalRange != nil {
		if resp, ok := k.s.cfg.LocalRange(ctx, r); ok {
			out := rangeResponseToEtcd(resp)
			out.Header = k.s.header(resp.GetHeader().GetRevision(), resp.GetHeader().GetRaftTerm())
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
	out.Header = k.s.header(resp.GetHeader().GetRevision(), resp.GetHeader().GetRaftTerm())
	return out, nil
}

func (k *kvServer) DeleteRange(ctx context.Context, req *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	var r kvpb.DeleteRangeRequest
	if err := recode(req, &r); err != nil {
		return nil, err
	}
	resp, err := k.s.cfg.Client.DeleteRange(ctx, &r)
	if err != nil {
		return nil, etcdError(err)
	}
	out := &pb.DeleteRangeResponse{}
	return out, k.s.toEtcd(resp, resp.GetHeader(), out)
}

func (k *kvServer) Txn(ctx context.Context, req *pb.TxnRequest) (*pb.TxnResponse, error) {
	var r kvpb.TxnRequest
	if err := recode(req, &r); err != nil {
		return nil, err
	}
	if k.s.cfg.LocalReadTxn != nil {
		if resp, ok := k.s.cfg.LocalReadTxn(ctx, &r); ok {
			out := &pb.TxnResponse{}
			return out, k.s.toEtcd(resp, resp.GetHeader(), out)
		}
	}
	resp, err := k.s.cfg.Client.Txn(ctx, &r)
	if err != nil {
		return nil, etcdError(err)
	}
	out := &pb.TxnResponse{}
	return out, k.s.toEtcd(resp, resp.GetHeader(), out)
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
