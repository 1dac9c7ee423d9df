package client

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// Serializable reads from any replica. etcd serves a serializable read
// from the member the client talks to, with no round to the leader, so
// reads spread over the members and go on without a quorum. Here a
// serializable range that one region holds goes to one of the region's
// replicas, which reads what it has applied (kvpb.Context.stale_read,
// storenode serveStaleRange): at the request's revision if the replica
// has every write up to it, at its own last applied revision when the
// request names none. The answer may trail the latest writes, as etcd's
// does; a read at an explicit revision is as exact as the leader's.

// replicaReadTimeout bounds one replica's answer: a replica paused or cut
// off gives way to the next instead of taking the call's whole budget.
// One that timed out is tried last for slowReplicaPenalty.
const (
	replicaReadTimeout = 2 * time.Second
	slowReplicaPenalty = 10 * time.Second
)

// rangeFromReplica tries the region's replicas in turn, this process's
// own store first and the rest from a random one on (so reads spread),
// those that lately timed out last. A region error or an unreachable
// replica moves on to the next; any other error (a future or compacted
// revision, a bad request) would be the same everywhere, so the leader is
// asked at once. Region errors do not correct the cache: a follower's view
// of the region may be older than ours. ok false: the range spans regions
// (as far as the cache knows) or no replica served it; the caller reads
// through the leader, which also puts the cache right.
func (c *Client) rangeFromReplica(ctx context.Context, req *kvpb.RangeRequest) (*kvpb.RangeResponse, bool) {
	lo := req.GetKey()
	rt, err := c.locate(ctx, lo)
	if err != nil || !regionHolds(rt.region, lo, region.ExclusiveEnd(lo, req.GetRangeEnd())) {
		return nil, false
	}
	for _, p := range c.replicaOrder(rt.region) {
		cc, err := c.storeConn(ctx, p.GetStoreId())
		if err != nil {
			continue
		}
		kv := kvpb.NewKVClient(cc)
		if c.opts.LocalKV != nil && p.GetStoreId() == c.opts.LocalStoreID {
			kv = c.opts.LocalKV(kv)
		}
		r := req.ShallowCopy()
		r.Context = &kvpb.Context{RegionId: rt.region.GetId(), RegionEpoch: rt.region.GetRegionEpoch(), Peer: p, StaleRead: true}
		actx, cancel := context.WithTimeout(ctx, replicaReadTimeout)
		resp, err := kv.Range(actx, r)
		timedOut := actx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil, false
		case err == nil && resp.GetHeader().GetRegionError() == nil:
			return resp, true
		case err == nil:
			continue // a region error: this replica cannot serve it
		case timedOut:
			c.markSlow(p.GetStoreId())
		case !notSent(err) && !retryableTransport(err):
			return nil, false
		}
	}
	return nil, false
}

// markSlow puts a store that did not answer a replica read in time last
// in the order for a while.
func (c *Client) markSlow(storeID uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slowStores == nil {
		c.slowStores = map[uint64]time.Time{}
	}
	c.slowStores[storeID] = time.Now().Add(slowReplicaPenalty)
}

// replicaOrder is the order rangeFromReplica tries a region's replicas in.
func (c *Client) replicaOrder(r *metapb.Region) []*metapb.Peer {
	peers := r.GetPeers()
	if len(peers) == 0 {
		return nil
	}
	var local, others, slow []*metapb.Peer
	now := time.Now()
	c.mu.Lock()
	start := rand.IntN(len(peers))
	for i := range peers {
		p := peers[(start+i)%len(peers)]
		switch {
		case now.Before(c.slowStores[p.GetStoreId()]):
			slow = append(slow, p)
		case c.opts.LocalStoreID != 0 && p.GetStoreId() == c.opts.LocalStoreID:
			local = append(local, p)
		default:
			others = append(others, p)
		}
	}
	c.mu.Unlock()
	return append(append(local, others...), slow...)
}
