package etcdapi

import (
	"context"
	"encoding/binary"
	"hash/crc32"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/proto/kvpb"
)

type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	s *Server
}

// Status describes the serving store. Leader names the store leading the
// cluster's first region, so exactly one store reports itself leader (as
// `etcdctl endpoint status` expects); the raft figures are this store's
// highest over its regions.
func (m *maintenanceServer) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	rev, err := m.s.currentRevision(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	first, err := m.s.cfg.PD.GetRegion(ctx, nil)
	if err != nil {
		return nil, etcdError(err)
	}
	info := m.s.cfg.Info()
	return &pb.StatusResponse{Header: m.s.header(rev, info.RaftTerm), Version: EtcdVersion, DbSize: info.DBSize,
		DbSizeInUse: info.DBSizeInUse, Leader: first.GetLeader().GetStoreId(), RaftIndex: info.RaftIndex,
		RaftTerm: info.RaftTerm, RaftAppliedIndex: info.RaftAppliedIndex, StorageVersion: "3.6.0"}, nil
}

// Alarm: Basalt raises no etcd alarms (a full store is a PD scheduling
// matter, not a cluster-wide write stop); listing and disarming succeed.
func (m *maintenanceServer) Alarm(ctx context.Context, req *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	if req.GetAction() == pb.AlarmRequest_ACTIVATE {
		return nil, status.Error(codes.Unimplemented, "basalt: alarms cannot be raised by hand; Basalt raises none")
	}
	rev, err := m.s.currentRevision(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.AlarmResponse{Header: m.s.header(rev, 0)}, nil
}

// HashKV hashes every user key's latest version at a revision (default:
// now), read at one revision across all regions: every store answers the
// same hash for the same revision, which is what `etcdctl endpoint hashkv`
// compares. It is not etcd's hash of its own database.
func (m *maintenanceServer) HashKV(ctx context.Context, req *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	var buf []byte
	rev, err := m.s.cfg.Client.Scan(ctx, &kvpb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: req.GetRevision()}, 0,
		func(kvs []*kvpb.KeyValue) error {
			for _, kv := range kvs {
				buf = buf[:0]
				buf = binary.AppendVarint(buf, kv.GetCreateRevision())
				buf = binary.AppendVarint(buf, kv.GetModRevision())
				buf = binary.AppendVarint(buf, kv.GetVersion())
				buf = binary.AppendVarint(buf, kv.GetLease())
				buf = binary.AppendUvarint(buf, uint64(len(kv.GetKey())))
				buf = append(buf, kv.GetKey()...)
				buf = append(buf, kv.GetValue()...)
				h.Write(buf)
			}
			return nil
		})
	if err != nil {
		return nil, etcdError(err)
	}
	comp, err := m.s.cfg.PD.GetCompactRevision(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.HashKVResponse{Header: m.s.header(rev, 0), Hash: h.Sum32(), CompactRevision: int64(comp), HashRevision: rev}, nil
}

func (m *maintenanceServer) Hash(context.Context, *pb.HashRequest) (*pb.HashResponse, error) {
	return nil, status.Error(codes.Unimplemented, "basalt: Hash hashes one member's whole database, which no Basalt store has; use HashKV (etcdctl endpoint hashkv)")
}

func (m *maintenanceServer) Defragment(context.Context, *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	return nil, status.Error(codes.Unimplemented, "basalt: stores compact their pebble databases in the background; there is nothing to defragment")
}

func (m *maintenanceServer) Snapshot(*pb.SnapshotRequest, pb.Maintenance_SnapshotServer) error {
	return status.Error(codes.Unimplemented, "basalt: no store holds the whole cluster; back it up with a range read at one revision (etcdctl get --prefix '' at a revision, or basalt ctl get)")
}

func (m *maintenanceServer) MoveLeader(context.Context, *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	return nil, status.Error(codes.Unimplemented, "basalt: every region has its own leader; move one with basalt ctl region transfer-leader or PD's transfer-leader operator")
}

func (m *maintenanceServer) Downgrade(context.Context, *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	return nil, status.Error(codes.Unimplemented, "basalt: downgrades are not supported")
}
