package client

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/region"
)

// Leases (docs/leases.md). A lease's record lives at region.LeaseKey(id),
// so every lease call goes to the leader of the region holding that key;
// the keys attached to a lease may live in any region.

// ErrLeaseNotFound is what the lease calls return for a lease that does
// not exist (etcd's message).
var ErrLeaseNotFound = errors.New("etcdserver: requested lease not found")

// IsLeaseNotFound reports whether err says the lease does not exist.
func IsLeaseNotFound(err error) bool {
	return errors.Is(err, ErrLeaseNotFound) || status.Code(err) == codes.NotFound
}

// LeaseGrant creates a lease with a TTL in seconds. id 0 picks a random
// free ID. A TTL below the cluster's minimum is raised to it, as etcd does.
func (c *Client) LeaseGrant(ctx context.Context, ttl, id int64) (*kvpb.LeaseGrantResponse, error) {
	pick := id == 0
	for attempt := 0; ; attempt++ {
		if pick {
			id = rand.Int64N(1<<62) + 1
		}
		var out *kvpb.LeaseGrantResponse
		err := c.do(ctx, region.LeaseKey(id), false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
			resp, err := rt.kv.LeaseGrant(ctx, &kvpb.LeaseGrantRequest{Id: id, Ttl: ttl, Context: rt.context()})
			out = resp
			return resp.GetHeader(), err
		})
		if pick && status.Code(err) == codes.FailedPrecondition && attempt < 3 {
			continue // the random ID was taken
		}
		return out, err
	}
}

// LeaseRevoke revokes a lease: when it returns, every key attached to it,
// in every region, is deleted.
func (c *Client) LeaseRevoke(ctx context.Context, id int64) error {
	return c.do(ctx, region.LeaseKey(id), false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
		resp, err := rt.kv.LeaseRevoke(ctx, &kvpb.LeaseRevokeRequest{Id: id, Context: rt.context()})
		return resp.GetHeader(), err
	})
}

// LeaseKeepAliveOnce renews a lease once and returns its TTL.
func (c *Client) LeaseKeepAliveOnce(ctx context.Context, id int64) (int64, error) {
	ttls, err := c.LeaseKeepAliveMany(ctx, []int64{id})
	if err != nil {
		return 0, err
	}
	if ttls[0] <= 0 {
		return 0, ErrLeaseNotFound
	}
	return ttls[0], nil
}

// LeaseKeepAliveMany renews many leases with one request per region that
// owns some of them. The TTLs come back in the order of ids, 0 for a
// lease that does not exist.
func (c *Client) LeaseKeepAliveMany(ctx context.Context, ids []int64) ([]int64, error) {
	out := make([]int64, len(ids))
	// Group by owning region, as the cache knows it; a group that meets a
	// region error is sent again lease by lease through the routing loop.
	groups := map[uint64][]int{}
	for i, id := range ids {
		rt, err := c.locate(ctx, region.LeaseKey(id))
		if err != nil {
			return nil, err
		}
		groups[rt.region.GetId()] = append(groups[rt.region.GetId()], i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(groups))
	for _, idx := range groups {
		wg.Add(1)
		go func(idx []int) {
			defer wg.Done()
			first := region.LeaseKey(ids[idx[0]])
			var sent []int
			// A renewal is idempotent: retried like a read.
			err := c.do(ctx, first, true, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
				req := &kvpb.LeaseKeepAliveRequest{Context: rt.context()}
				sent = sent[:0]
				for _, i := range idx {
					if region.ContainsKey(rt.region, region.LeaseKey(ids[i])) {
						req.Ids = append(req.Ids, ids[i])
						sent = append(sent, i)
					}
				}
				resp, err := rt.kv.LeaseKeepAlive(ctx, req)
				if err == nil && resp.GetHeader().GetRegionError() == nil {
					for j, i := range sent {
						out[i] = resp.GetTtls()[j]
					}
				}
				return resp.GetHeader(), err
			})
			if err == nil && len(sent) < len(idx) {
				// The region split since the cache grouped these: the rest
				// go one by one.
				for _, i := range idx {
					if !containsInt(sent, i) {
						ttl, err := c.LeaseKeepAliveMany(ctx, []int64{ids[i]})
						if err != nil {
							errs <- err
							return
						}
						out[i] = ttl[0]
					}
				}
			}
			if err != nil {
				errs <- err
			}
		}(idx)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return out, nil
}

func containsInt(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// LeaseKeepAlive renews the lease every third of its TTL until ctx ends or
// the lease is gone, as clientv3's KeepAlive does. Each renewal's TTL is
// sent on the channel (dropped when the reader is behind); the channel is
// closed when the keep-alive stops.
func (c *Client) LeaseKeepAlive(ctx context.Context, id int64) (<-chan int64, error) {
	ttl, err := c.LeaseKeepAliveOnce(ctx, id)
	if err != nil {
		return nil, err
	}
	ch := make(chan int64, 16)
	ch <- ttl
	go func() {
		defer close(ch)
		wait := time.Duration(ttl) * time.Second / 3
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			// A failed renewal is tried again half a second later; one
			// attempt may take a third of the TTL plus a second (an election
			// in the owner region takes about one).
			callCtx, cancel := context.WithTimeout(ctx, time.Duration(ttl)*time.Second/3+time.Second)
			t, err := c.LeaseKeepAliveOnce(callCtx, id)
			cancel()
			switch {
			case IsLeaseNotFound(err):
				return
			case err != nil:
				wait = 500 * time.Millisecond
				continue
			}
			ttl = t
			wait = time.Duration(ttl) * time.Second / 3
			select {
			case ch <- t:
			default:
			}
		}
	}()
	return ch, nil
}

// LeaseTimeToLive describes a lease. With keys, it lists the keys attached
// to it, from every region its keys registered in.
type LeaseTimeToLive struct {
	ID         int64
	TTL        int64 // remaining seconds; -1 when the lease does not exist
	GrantedTTL int64
	Keys       [][]byte
}

// LeaseTimeToLive returns a lease's remaining TTL (and its keys).
func (c *Client) LeaseTimeToLive(ctx context.Context, id int64, keys bool) (*LeaseTimeToLive, error) {
	var resp *kvpb.LeaseTimeToLiveResponse
	err := c.do(ctx, region.LeaseKey(id), true, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
		var err error
		resp, err = rt.kv.LeaseTimeToLive(ctx, &kvpb.LeaseTimeToLiveRequest{Id: id, Context: rt.context()})
		return resp.GetHeader(), err
	})
	if err != nil {
		return nil, err
	}
	out := &LeaseTimeToLive{ID: id, TTL: resp.GetTtl(), GrantedTTL: resp.GetGrantedTtl()}
	if !keys || out.TTL < 0 {
		return out, nil
	}
	for _, sp := range resp.GetSpans() {
		err := c.forEachRegion(ctx, sp.GetStart(), sp.GetEnd(), true, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
			r, err := rt.kv.LeaseKeys(ctx, &kvpb.LeaseKeysRequest{Id: id, Context: rt.context()})
			if err == nil && r.GetHeader().GetRegionError() == nil {
				for _, k := range r.GetKeys() {
					if region.ContainsKey(rt.region, k) && inSpan(k, sp) {
						out.Keys = append(out.Keys, k)
					}
				}
			}
			return r.GetHeader(), err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func inSpan(k []byte, sp *kvpb.KeySpan) bool {
	return bytes.Compare(k, sp.GetStart()) >= 0 && (len(sp.GetEnd()) == 0 || bytes.Compare(k, sp.GetEnd()) < 0)
}

// Leases lists every lease of the cluster.
func (c *Client) Leases(ctx context.Context) ([]int64, error) {
	var out []int64
	err := c.forEachRegion(ctx, region.LeasePrefix, region.LeaseSpanEnd, true, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
		r, err := rt.kv.LeaseList(ctx, &kvpb.LeaseListRequest{Context: rt.context()})
		if err == nil && r.GetHeader().GetRegionError() == nil {
			out = append(out, r.GetIds()...)
		}
		return r.GetHeader(), err
	})
	return out, err
}

// LeaseAttach asks a lease's owner to register span with it before a put
// in span attaches the lease; it returns the revision up to which such
// puts may carry the check. Stores call it; applications never need to.
func (c *Client) LeaseAttach(ctx context.Context, id int64, span *kvpb.KeySpan) (int64, error) {
	var until int64
	err := c.do(ctx, region.LeaseKey(id), false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
		r, err := rt.kv.LeaseAttach(ctx, &kvpb.LeaseAttachRequest{Id: id, Span: span, Context: rt.context()})
		until = r.GetValidUntil()
		return r.GetHeader(), err
	})
	return until, err
}

// LeaseRevokeKeys deletes the keys attached to a lease in every region
// overlapping span, each region's keys in one revision. Stores call it
// while revoking.
func (c *Client) LeaseRevokeKeys(ctx context.Context, id int64, span *kvpb.KeySpan) (int64, error) {
	var deleted int64
	err := c.forEachRegion(ctx, span.GetStart(), span.GetEnd(), false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
		r, err := rt.kv.LeaseRevokeKeys(ctx, &kvpb.LeaseRevokeKeysRequest{Id: id, Context: rt.context()})
		if err == nil && r.GetHeader().GetRegionError() == nil {
			deleted += r.GetDeleted()
		}
		return r.GetHeader(), err
	})
	return deleted, err
}

// forEachRegion calls call once for every region overlapping [start, end)
// (end empty: unbounded), in key order, routing and retrying each as do
// does. A region that splits or merges meanwhile is covered by following
// the cursor: the next call starts where the last region ended.
func (c *Client) forEachRegion(ctx context.Context, start, end []byte, read bool, call func(context.Context, route) (*kvpb.ResponseHeader, error)) error {
	cursor := start
	for {
		var regionEnd []byte
		err := c.do(ctx, cursor, read, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
			regionEnd = rt.region.GetEndKey()
			return call(ctx, rt)
		})
		if err != nil {
			return err
		}
		if len(regionEnd) == 0 || (len(end) > 0 && bytes.Compare(regionEnd, end) >= 0) {
			return nil
		}
		cursor = regionEnd
	}
}
