package storenode

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/internal/forward"
	"github.com/basaltdb/basalt/proto/kvpb"
)

// Forward serves the writes another store's client batches to this one
// (client/forward.go), each exactly as its unary call: the same checks,
// the same response or status, and the same metrics, under its method's
// name.
func (k *kvService) Forward(stream kvpb.KV_ForwardServer) error {
	return forward.Serve(stream, k.serveForwarded)
}

func (k *kvService) serveForwarded(ctx context.Context, w *kvpb.ForwardedWrite) (*kvpb.ForwardedResult, error) {
	start := time.Now()
	var res *kvpb.ForwardedResult
	var method string
	var err error
	switch r := w.GetRequest().(type) {
	case *kvpb.ForwardedWrite_Put:
		method = kvpb.KV_Put_FullMethodName
		var resp *kvpb.PutResponse
		if resp, err = k.Put(ctx, r.Put); err == nil {
			res = &kvpb.ForwardedResult{Response: &kvpb.ForwardedResult_Put{Put: resp}}
		}
	case *kvpb.ForwardedWrite_DeleteRange:
		method = kvpb.KV_DeleteRange_FullMethodName
		var resp *kvpb.DeleteRangeResponse
		if resp, err = k.DeleteRange(ctx, r.DeleteRange); err == nil {
			res = &kvpb.ForwardedResult{Response: &kvpb.ForwardedResult_DeleteRange{DeleteRange: resp}}
		}
	case *kvpb.ForwardedWrite_Txn:
		method = kvpb.KV_Txn_FullMethodName
		var resp *kvpb.TxnResponse
		if resp, err = k.Txn(ctx, r.Txn); err == nil {
			res = &kvpb.ForwardedResult{Response: &kvpb.ForwardedResult_Txn{Txn: resp}}
		}
	default:
		return nil, status.Errorf(codes.InvalidArgument, "storenode: forwarded write %d carries no request", w.GetId())
	}
	if k.metrics != nil {
		k.metrics.Observe(method, start, err)
	}
	return res, err
}
