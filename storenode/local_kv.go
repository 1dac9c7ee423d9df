package storenode

import (
	"context"

	"google.golang.org/grpc"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// localKV serves the store's own client (the router behind the etcd front
// end, lease owners, revokes) without a gRPC round trip to itself: a
// request for a region this store leads costs no encoding, no HTTP/2
// frames and no second goroutine hand-off. Streams (Watch) still go
// through gRPC.
//
// The calls share request and response objects with the caller:
// kvService copies a request before changing it (clips, write commands)
// and builds every response fresh, so neither side sees the other's
// changes.
type localKV struct {
	kvpb.KVClient // the store's gRPC client, for streams
	k             *kvService
}

func (l localKV) Range(ctx context.Context, in *kvpb.RangeRequest, _ ...grpc.CallOption) (*kvpb.RangeResponse, error) {
	return l.k.Range(ctx, in)
}

func (l localKV) ResolveRevision(ctx context.Context, in *kvpb.ResolveRevisionRequest, _ ...grpc.CallOption) (*kvpb.ResolveRevisionResponse, error) {
	return l.k.ResolveRevision(ctx, in)
}

func (l localKV) Put(ctx context.Context, in *kvpb.PutRequest, _ ...grpc.CallOption) (*kvpb.PutResponse, error) {
	return l.k.Put(ctx, in)
}

func (l localKV) DeleteRange(ctx context.Context, in *kvpb.DeleteRangeRequest, _ ...grpc.CallOption) (*kvpb.DeleteRangeResponse, error) {
	return l.k.DeleteRange(ctx, in)
}

func (l localKV) Txn(ctx context.Context, in *kvpb.TxnRequest, _ ...grpc.CallOption) (*kvpb.TxnResponse, error) {
	return l.k.Txn(ctx, in)
}

func (l localKV) LeaseGrant(ctx context.Context, in *kvpb.LeaseGrantRequest, _ ...grpc.CallOption) (*kvpb.LeaseGrantResponse, error) {
	return l.k.LeaseGrant(ctx, in)
}

func (l localKV) LeaseRevoke(ctx context.Context, in *kvpb.LeaseRevokeRequest, _ ...grpc.CallOption) (*kvpb.LeaseRevokeResponse, error) {
	return l.k.LeaseRevoke(ctx, in)
}

func (l localKV) LeaseKeepAlive(ctx context.Context, in *kvpb.LeaseKeepAliveRequest, _ ...grpc.CallOption) (*kvpb.LeaseKeepAliveResponse, error) {
	return l.k.LeaseKeepAlive(ctx, in)
}

func (l localKV) LeaseTimeToLive(ctx context.Context, in *kvpb.LeaseTimeToLiveRequest, _ ...grpc.CallOption) (*kvpb.LeaseTimeToLiveResponse, error) {
	return l.k.LeaseTimeToLive(ctx, in)
}

func (l localKV) LeaseAttach(ctx context.Context, in *kvpb.LeaseAttachRequest, _ ...grpc.CallOption) (*kvpb.LeaseAttachResponse, error) {
	return l.k.LeaseAttach(ctx, in)
}
