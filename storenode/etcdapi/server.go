// Package etcdapi serves etcd's v3 gRPC API (go.etcd.io/etcd/api/v3 wire
// types) on every store, routing through Basalt's own client, so etcdctl,
// clientv3 and Kubernetes work against any store unchanged.
// docs/etcd-compatibility.md lists every RPC and field.
package etcdapi

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/proto/kvpb"
)

// EtcdVersion is the etcd version the front end reports (Status): a
// 3.7-compatible server, so clients enable what 3.7 supports.
const EtcdVersion = "3.7.3"

// StoreInfo is what Status reports about the serving store.
type StoreInfo struct {
	DBSize, DBSizeInUse int64
	// RaftIndex and RaftTerm: the highest of any region on the store.
	RaftIndex, RaftAppliedIndex, RaftTerm uint64
}

// Config wires the front end to its store.
type Config struct {
	Client  *client.Client
	PD      *pdclient.Client
	StoreID uint64
	// LocalRange serves a range from the store's own replica (serializable
	// or, after a ReadIndex, linearizable); ok false means it cannot, and
	// the range is routed through Client.
	LocalRange func(context.Context, *kvpb.RangeRequest) (resp *kvpb.RangeResponse, ok bool)
	// LocalReadTxn does the same for a transaction that only reads.
	LocalReadTxn func(context.Context, *kvpb.TxnRequest) (resp *kvpb.TxnResponse, ok bool)
	// Info reports the store's size and raft position.
	Info func() StoreInfo
	// MaxRequestBytes bounds a watch response before it is fragmented.
	MaxRequestBytes int
	// ProgressNotifyInterval: how often a watch with progress_notify gets
	// one when quiet (etcd's default: 10 minutes).
	ProgressNotifyInterval time.Duration
}

// Server implements etcd's KV, Watch, Lease, Maintenance and Cluster
// services.
type Server struct {
	cfg Config
}

// Register adds etcd's services to a gRPC server.
func Register(g *grpc.Server, cfg Config) *Server {
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = 1536 << 10
	}
	if cfg.ProgressNotifyInterval == 0 {
		cfg.ProgressNotifyInterval = 10 * time.Minute
	}
	s := &Server{cfg: cfg}
	pb.RegisterKVServer(g, &kvServer{s: s})
	pb.RegisterWatchServer(g, &watchServer{s: s})
	pb.RegisterLeaseServer(g, &leaseServer{s: s})
	pb.RegisterMaintenanceServer(g, &maintenanceServer{s: s})
	pb.RegisterClusterServer(g, &clusterServer{s: s})
	return s
}

// header is etcd's response header: the cluster, this store as the
// member, the revision, a raft term.
func (s *Server) header(rev int64, term uint64) *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: s.cfg.PD.ClusterID(), MemberId: s.cfg.StoreID, Revision: rev, RaftTerm: term}
}

// headerOf is etcd's header for a response whose Basalt header is h.
func (s *Server) headerOf(h *kvpb.ResponseHeader) *pb.ResponseHeader {
	return s.header(h.GetRevision(), h.GetRaftTerm())
}

// currentRevision is the cluster's revision now: a fresh timestamp (every
// write acknowledged before it has a smaller revision).
func (s *Server) currentRevision(ctx context.Context) (int64, error) {
	ts, err := s.cfg.PD.GetTS(ctx)
	return int64(ts), err
}
