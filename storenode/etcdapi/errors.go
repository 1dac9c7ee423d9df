package etcdapi

import (
	"context"
	"errors"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/client"
)

// etcdError turns what the client returned into the gRPC error etcd would
// send: clientv3 recognises errors by their exact messages.
func etcdError(err error) error {
	if err == nil {
		return nil
	}
	var spans *client.ErrTxnSpansRegions
	switch {
	case errors.As(err, &spans):
		return status.Error(codes.FailedPrecondition, "basalt: "+spans.Error())
	case errors.Is(err, client.ErrGaveUp):
		return status.Error(codes.Unavailable, "etcdserver: request timed out: "+err.Error())
	case errors.Is(err, context.Canceled):
		return rpctypes.ErrGRPCCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return rpctypes.ErrGRPCDeadlineExceeded
	case errors.Is(err, client.ErrLeaseNotFound):
		return rpctypes.ErrGRPCLeaseNotFound
	case errors.Is(err, client.ErrCompacted):
		return rpctypes.ErrGRPCCompacted
	}
	st, ok := status.FromError(err)
	if !ok {
		// Routing gave up (no leader for a region in time) or PD is away.
		return status.Error(codes.Unavailable, "etcdserver: request timed out: "+err.Error())
	}
	msg := st.Message()
	switch {
	case strings.Contains(msg, "required revision has been compacted"):
		return rpctypes.ErrGRPCCompacted
	case strings.Contains(msg, "required revision is a future revision"):
		return rpctypes.ErrGRPCFutureRev
	case st.Code() == codes.Unavailable && !strings.HasPrefix(msg, "etcdserver: "):
		return status.Error(codes.Unavailable, "etcdserver: "+msg)
	}
	return err
}
