package client

import (
	"context"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
	"github.com/basaltdb/basalt/region"
)

// followRouting keeps the region cache current from PD's routing
// subscription, so splits, merges and leader moves reach the cache before
// a request trips over them. Region errors still correct it; this only
// saves the round trips. After a broken subscription the cache is
// emptied, as changes may have been missed, and refills on demand.
func (c *Client) followRouting(ctx context.Context) {
	for attempt, subscribed := 0, false; ctx.Err() == nil; attempt++ {
		err := c.pd.WatchRegions(ctx, func() {
			if subscribed {
				c.mu.Lock()
				c.regions = region.NewRegionTree()
				clear(c.leaders)
				clear(c.missingPeers)
				c.mu.Unlock()
			}
			subscribed = true
			attempt = 0
		}, c.applyRouting)
		if err == nil || ctx.Err() != nil {
			continue
		}
		if backoff(ctx, attempt) != nil {
			return
		}
	}
}

func (c *Client) applyRouting(changed []*pdpb.RegionInfo, removed []uint64) {
	c.mu.Lock()
	for _, id := range removed {
		c.forgetLocked(id)
	}
	c.mu.Unlock()
	for _, info := range changed {
		c.learn(info.GetRegion(), info.GetLeader())
	}
}

// CachedRegion returns the region the client's cache says holds key, if
// it has one (for diagnostics: requests correct the cache themselves).
func (c *Client) CachedRegion(key []byte) (*metapb.Region, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.regions.Search(key)
	return r, r != nil
}
