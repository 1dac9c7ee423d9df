package etcdapi

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type leaseServer struct {
	pb.UnimplementedLeaseServer
	s *Server
}

func (l *leaseServer) LeaseGrant(ctx context.Context, req *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	resp, err := l.s.cfg.Client.LeaseGrant(ctx, req.GetTTL(), req.GetID())
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.LeaseGrantResponse{Header: l.s.header(resp.GetHeader().GetRevision(), 0), ID: resp.GetId(), TTL: resp.GetTtl()}, nil
}

func (l *leaseServer) LeaseRevoke(ctx context.Context, req *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if err := l.s.cfg.Client.LeaseRevoke(ctx, req.GetID()); err != nil {
		return nil, etcdError(err)
	}
	rev, err := l.s.currentRevision(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.LeaseRevokeResponse{Header: l.s.header(rev, 0)}, nil
}

// LeaseKeepAlive renews the leases named on the stream. Requests that
// arrive while a renewal is under way are renewed together, one request
// per owning region; each gets its own answer (TTL 0: no such lease, as
// etcd answers). A renewal that cannot be done in time ends the stream
// with Unavailable, as etcd's does on an error: clientv3 then opens a new
// one (possibly to another store) and sends its keep-alives again.
func (l *leaseServer) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx := stream.Context()
	ids := make(chan int64, 1024)
	go func() {
		defer close(ids)
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case ids <- req.GetID():
			case <-ctx.Done():
				return
			}
		}
	}()
	for id := range ids {
		batch := []int64{id}
	more:
		for len(batch) < 1000 {
			select {
			case id, ok := <-ids:
				if !ok {
					break more
				}
				batch = append(batch, id)
			default:
				break more
			}
		}
		rev, err := l.s.currentRevision(ctx)
		if err != nil {
			return etcdError(err)
		}
		cctx, cancel := context.WithTimeout(ctx, keepAliveTimeout)
		ttls, err := l.s.cfg.Client.LeaseKeepAliveMany(cctx, batch)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return status.Error(codes.Unavailable, "etcdserver: request timed out: keep-alive: "+err.Error())
		}
		for i, id := range batch {
			if err := stream.Send(&pb.LeaseKeepAliveResponse{Header: l.s.header(rev, 0), ID: id, TTL: ttls[i]}); err != nil {
				return nil
			}
		}
	}
	return nil
}

// keepAliveTimeout bounds one renewal: half the smallest TTL, so a lease
// whose owner region is between leaders is renewed again, through a new
// stream, before it can expire.
const keepAliveTimeout = time.Second

func (l *leaseServer) LeaseTimeToLive(ctx context.Context, req *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	r, err := l.s.cfg.Client.LeaseTimeToLive(ctx, req.GetID(), req.GetKeys())
	if err != nil {
		return nil, etcdError(err)
	}
	rev, err := l.s.currentRevision(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	return &pb.LeaseTimeToLiveResponse{Header: l.s.header(rev, 0), ID: r.ID, TTL: r.TTL, GrantedTTL: r.GrantedTTL, Keys: r.Keys}, nil
}

func (l *leaseServer) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	ids, err := l.s.cfg.Client.Leases(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	rev, err := l.s.currentRevision(ctx)
	if err != nil {
		return nil, etcdError(err)
	}
	out := &pb.LeaseLeasesResponse{Header: l.s.header(rev, 0)}
	for _, id := range ids {
		out.Leases = append(out.Leases, &pb.LeaseStatus{ID: id})
	}
	return out, nil
}
