package etcdapi

import (
	"context"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/proto/metapb"
)

type clusterServer struct {
	pb.UnimplementedClusterServer
	s *Server
}

// MemberList lists the stores as etcd members: each serves the etcd API on
// its address, so clientv3's endpoint auto-sync spreads over them. A store
// with an etcd listener of its own (--etcd-listen-url, TLS) is listed by
// that listener's URLs alone, so a TLS client syncing its endpoints is
// never sent to a plain one.
func (c *clusterServer) MemberList(ctx context.Context, _ *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	stores, err := c.s.cfg.PD.GetAllStores(ctx, true)
	if err != nil {
		return nil, etcdError(err)
	}
	rev, err := c.s.currentRevision(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	out := &pb.MemberListResponse{Header: c.s.header(rev, 0)}
	for _, st := range stores {
		if st.GetState() == metapb.StoreState_Tombstone {
			continue
		}
		clientURLs := st.GetEtcdClientUrls()
		if len(clientURLs) == 0 {
			clientURLs = []string{"http://" + st.GetAddress()}
		}
		out.Members = append(out.Members, &pb.Member{ID: st.GetId(), Name: fmt.Sprintf("store-%d", st.GetId()),
			PeerURLs: []string{"http://" + st.GetPeerAddress()}, ClientURLs: clientURLs})
	}
	return out, nil
}

const membersAreStores = "basalt: etcd members are Basalt stores: add one by starting `basalt store --pd ...`, remove one through PD (its store API)"

func (c *clusterServer) MemberAdd(context.Context, *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	return nil, status.Error(codes.Unimplemented, membersAreStores)
}

func (c *clusterServer) MemberRemove(context.Context, *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	return nil, status.Error(codes.Unimplemented, membersAreStores)
}

func (c *clusterServer) MemberUpdate(context.Context, *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	return nil, status.Error(codes.Unimplemented, membersAreStores)
}

func (c *clusterServer) MemberPromote(context.Context, *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	return nil, status.Error(codes.Unimplemented, membersAreStores)
}
