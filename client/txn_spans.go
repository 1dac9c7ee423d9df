package client

import (
	"bytes"
	"context"
	"fmt"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// ErrTxnSpansRegions: a transaction names keys in more than one region.
// Transactions are single-region; nothing was applied.
type ErrTxnSpansRegions struct {
	Region   *metapb.Region // the region holding the transaction's first key
	Key      []byte         // a key (or range start) the region does not hold
	Boundary []byte         // the region's edge the key lies beyond
}

func (e *ErrTxnSpansRegions) Error() string {
	return fmt.Sprintf("client: transaction spans regions: region %d holds [%q, %q) but the transaction also names %q, beyond the boundary %q; a transaction must stay within one region",
		e.Region.GetId(), e.Region.GetStartKey(), e.Region.GetEndKey(), e.Key, e.Boundary)
}

// keySpan is [lo, hi) with hi nil for +∞.
type keySpan struct{ lo, hi []byte }

// txnSpans lists every key or range a transaction compares or touches,
// both branches and nested transactions included.
func txnSpans(t *kvpb.TxnRequest, out []keySpan) []keySpan {
	add := func(key, end []byte) {
		lo := append([]byte{}, key...)
		out = append(out, keySpan{lo, region.ExclusiveEnd(lo, end)})
	}
	for _, cmp := range t.GetCompare() {
		add(cmp.GetKey(), cmp.GetRangeEnd())
	}
	for _, b := range [][]*kvpb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range b {
			switch x := op.GetRequest().(type) {
			case *kvpb.RequestOp_RequestRange:
				add(x.RequestRange.GetKey(), x.RequestRange.GetRangeEnd())
			case *kvpb.RequestOp_RequestPut:
				add(x.RequestPut.GetKey(), nil)
			case *kvpb.RequestOp_RequestDeleteRange:
				add(x.RequestDeleteRange.GetKey(), x.RequestDeleteRange.GetRangeEnd())
			case *kvpb.RequestOp_RequestTxn:
				out = txnSpans(x.RequestTxn, out)
			}
		}
	}
	return out
}

// checkTxnSpans: every span lies in r.
func checkTxnSpans(r *metapb.Region, spans []keySpan) error {
	for _, s := range spans {
		if regionHolds(r, s.lo, s.hi) {
			continue
		}
		boundary := r.GetEndKey()
		if bytes.Compare(s.lo, r.GetStartKey()) < 0 {
			boundary = r.GetStartKey()
		}
		return &ErrTxnSpansRegions{Region: r, Key: s.lo, Boundary: boundary}
	}
	return nil
}

// refresh replaces the cached region holding key with PD's view.
func (c *Client) refresh(ctx context.Context, key []byte) error {
	resp, err := c.pd.GetRegion(ctx, key)
	if err != nil {
		return err
	}
	if r := resp.GetRegion(); r != nil {
		c.mu.Lock()
		if old := c.regions.Search(key); old != nil {
			c.forgetLocked(old.GetId())
		}
		c.mu.Unlock()
		c.learn(r, resp.GetLeader())
	}
	return nil
}
