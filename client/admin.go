package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
)

// SplitRegions makes every key a region boundary: each region holding some
// of the keys is split at them by its leader. A key that already starts a
// region is left as it is, so a repeated call changes nothing. It returns
// the regions the splits made, in key order.
func (c *Client) SplitRegions(ctx context.Context, keys [][]byte) ([]*metapb.Region, error) {
	keys = sortedDistinct(keys)
	var out []*metapb.Region
	for len(keys) > 0 {
		var made []*metapb.Region
		var used int
		err := c.do(ctx, keys[0], false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
			var in [][]byte
			used = 0
			for _, k := range keys {
				if !inRegion(rt.region, k) {
					break
				}
				used++
				if !bytes.Equal(k, rt.region.GetStartKey()) {
					in = append(in, k)
				}
			}
			if len(in) == 0 {
				made = nil
				return &kvpb.ResponseHeader{}, nil
			}
			resp, err := rt.admin.SplitRegion(ctx, &kvpb.SplitRegionRequest{Context: rt.context(), SplitKeys: in})
			made = resp.GetRegions()
			return resp.GetHeader(), err
		})
		if err != nil {
			return out, err
		}
		for _, r := range made {
			c.learn(r, nil)
		}
		out = append(out, made...)
		keys = keys[used:]
	}
	return out, nil
}

// SplitRegionInHalf splits the region holding key at the key that halves
// its data.
func (c *Client) SplitRegionInHalf(ctx context.Context, key []byte) ([]*metapb.Region, error) {
	var made []*metapb.Region
	err := c.do(ctx, key, false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
		resp, err := rt.admin.SplitRegion(ctx, &kvpb.SplitRegionRequest{Context: rt.context()})
		made = resp.GetRegions()
		return resp.GetHeader(), err
	})
	for _, r := range made {
		c.learn(r, nil)
	}
	return made, err
}

// MergeRegions merges region sourceID into its neighbour targetID. Their
// replicas must be voters on the same stores. It returns the target as it
// is after absorbing the source.
func (c *Client) MergeRegions(ctx context.Context, sourceID, targetID uint64) (*metapb.Region, error) {
	if sourceID == 0 || targetID == 0 {
		return nil, errors.New("client: merge needs a source and a target region ID")
	}
	src, err := c.pd.GetRegionByID(ctx, sourceID)
	if err != nil {
		return nil, err
	}
	if src.GetRegion() == nil {
		return nil, fmt.Errorf("client: region %d does not exist (merged away, or never was)", sourceID)
	}
	c.learn(src.GetRegion(), src.GetLeader())
	var merged *metapb.Region
	err = c.do(ctx, src.GetRegion().GetStartKey(), false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
		if rt.region.GetId() != sourceID {
			return nil, fmt.Errorf("client: region %d no longer holds key %q (region %d does): it was merged or split meanwhile",
				sourceID, src.GetRegion().GetStartKey(), rt.region.GetId())
		}
		resp, err := rt.admin.MergeRegion(ctx, &kvpb.MergeRegionRequest{Context: rt.context(), TargetRegionId: targetID})
		merged = resp.GetRegion()
		return resp.GetHeader(), err
	})
	if err != nil {
		return nil, err
	}
	c.learn(merged, nil)
	return merged, nil
}

func inRegion(r *metapb.Region, k []byte) bool {
	return bytes.Compare(k, r.GetStartKey()) >= 0 && (len(r.GetEndKey()) == 0 || bytes.Compare(k, r.GetEndKey()) < 0)
}

func sortedDistinct(keys [][]byte) [][]byte {
	out := make([][]byte, 0, len(keys))
	for _, k := range keys {
		if len(k) > 0 {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i], out[j]) < 0 })
	n := 0
	for i, k := range out {
		if i == 0 || !bytes.Equal(k, out[n-1]) {
			out[n] = k
			n++
		}
	}
	return out[:n]
}
