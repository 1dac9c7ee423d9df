package storenode

import (
	"context"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// The lease RPCs of the KV service. Owner-side calls go to the leader of
// the region holding the lease's record; LeaseRevokeKeys and LeaseKeys to
// any data region's leader.

func (k *kvService) LeaseGrant(ctx context.Context, req *kvpb.LeaseGrantRequest) (*kvpb.LeaseGrantResponse, error) {
	resp, err := k.s.leases.grant(ctx, req.GetContext(), req.GetId(), req.GetTtl())
	if err != nil {
		h, gerr := regionHeader(err)
		return &kvpb.LeaseGrantResponse{Header: h}, gerr
	}
	return resp, nil
}

func (k *kvService) LeaseRevoke(ctx context.Context, req *kvpb.LeaseRevokeRequest) (*kvpb.LeaseRevokeResponse, error) {
	if err := k.s.leases.revoke(ctx, req.GetContext(), req.GetId()); err != nil {
		h, gerr := regionHeader(err)
		return &kvpb.LeaseRevokeResponse{Header: h}, gerr
	}
	return &kvpb.LeaseRevokeResponse{Header: &kvpb.ResponseHeader{}}, nil
}

func (k *kvService) LeaseKeepAlive(ctx context.Context, req *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error) {
	ttls, err := k.s.leases.keepAlive(ctx, req.GetContext(), req.GetIds())
	if err != nil {
		h, gerr := regionHeader(err)
		return &kvpb.LeaseKeepAliveResponse{Header: h}, gerr
	}
	return &kvpb.LeaseKeepAliveResponse{Header: &kvpb.ResponseHeader{}, Ttls: ttls}, nil
}

func (k *kvService) LeaseTimeToLive(ctx context.Context, req *kvpb.LeaseTimeToLiveRequest) (*kvpb.LeaseTimeToLiveResponse, error) {
	resp, err := k.s.leases.timeToLive(ctx, req.GetContext(), req.GetId())
	if err != nil {
		h, gerr := regionHeader(err)
		return &kvpb.LeaseTimeToLiveResponse{Header: h}, gerr
	}
	return resp, nil
}

func (k *kvService) LeaseList(ctx context.Context, req *kvpb.LeaseListRequest) (*kvpb.LeaseListResponse, error) {
	ids, err := k.s.leases.list(ctx, req.GetContext())
	if err != nil {
		h, gerr := regionHeader(err)
		return &kvpb.LeaseListResponse{Header: h}, gerr
	}
	return &kvpb.LeaseListResponse{Header: &kvpb.ResponseHeader{}, Ids: ids}, nil
}

func (k *kvService) LeaseAttach(ctx context.Context, req *kvpb.LeaseAttachRequest) (*kvpb.LeaseAttachResponse, error) {
	until, err := k.s.leases.attach(ctx, req.GetContext(), req.GetId(), req.GetSpan())
	if err != nil {
		h, gerr := regionHeader(err)
		return &kvpb.LeaseAttachResponse{Header: h}, gerr
	}
	return &kvpb.LeaseAttachResponse{Header: &kvpb.ResponseHeader{}, ValidUntil: until}, nil
}

func (k *kvService) LeaseRevokeKeys(ctx context.Context, req *kvpb.LeaseRevokeKeysRequest) (*kvpb.LeaseRevokeKeysResponse, error) {
	res, h, err := k.write(ctx, req.GetContext(), &kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseRevokeKeys{LeaseRevokeKeys: req.GetId()}})
	if err != nil || h != nil {
		return &kvpb.LeaseRevokeKeysResponse{Header: h}, err
	}
	if resp, ok := res.Response.(*kvpb.LeaseRevokeKeysResponse); ok {
		return resp, nil
	}
	return &kvpb.LeaseRevokeKeysResponse{Header: &kvpb.ResponseHeader{Revision: res.Revision}}, nil
}

func (k *kvService) LeaseKeys(ctx context.Context, req *kvpb.LeaseKeysRequest) (*kvpb.LeaseKeysResponse, error) {
	c := req.GetContext()
	r, err := k.region(c)
	if err == nil {
		var guard interface{ Check() error }
		if guard, err = k.s.store.ReadIndex(ctx, r.ID, c.GetRegionEpoch()); err == nil {
			var keys [][]byte
			if keys, err = k.s.mvcc.LeaseKeys(r, req.GetId()); err == nil {
				if err = guard.Check(); err == nil {
					return &kvpb.LeaseKeysResponse{Header: &kvpb.ResponseHeader{Revision: r.Revision()}, Keys: keys}, nil
				}
			}
		}
	}
	h, gerr := regionHeader(err)
	return &kvpb.LeaseKeysResponse{Header: h}, gerr
}
