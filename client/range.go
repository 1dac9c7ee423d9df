package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// A range that lies in one region is one request at that region's latest
// revision. A range over several regions is a snapshot at one revision R:
// the client draws R from PD's TSO (or takes the caller's), then reads
// every region at R in key order. Every write acknowledged before the call
// began has a revision below R, and a region asked for a revision it has
// not resolved yet establishes it first (storenode serveRange), so the
// parts fit together as one snapshot however the regions change meanwhile:
// a part whose region split or merged is planned again and read at the
// same R.

// DefaultPageSize is how many keys one request to a region asks for when a
// range is streamed with Scan.
const DefaultPageSize = 1000

// errRouteChanged: the region a part was planned for no longer holds it;
// the rest of the range is planned again.
var errRouteChanged = errors.New("client: region changed under a range read")

// Range reads a key or a range. Over several regions it is a consistent
// snapshot at one revision, which the header carries; limit, count_only,
// sort and the revision filters apply across the whole range as etcd
// applies them on one store, and Count covers the whole range whatever
// the limit. The result is held in memory: use Scan to stream a large
// range.
//
// A serializable range that one region holds is served by one of its
// replicas from what it has applied (rangeFromReplica), or by the leader
// when none can; over several regions it is the snapshot above.
func (c *Client) Range(ctx context.Context, req *kvpb.RangeRequest) (*kvpb.RangeResponse, error) {
	if req.GetSerializable() {
		if resp, ok := c.rangeFromReplica(ctx, req); ok {
			return resp, nil
		}
	}
	if resp, err := c.rangeOneRegion(ctx, req); !errors.Is(err, errRouteChanged) {
		return resp, err
	}
	rev, err := c.snapshotRevision(ctx, req.GetRevision())
	if err != nil {
		return nil, err
	}
	// As etcd (and mvcc.Range): no order with a target other than the key
	// means ascending by that target.
	byKey := req.GetSortTarget() == kvpb.RangeRequest_KEY
	limit := req.GetLimit()
	if !byKey {
		// Sorting by anything but the key needs every key first, as in etcd.
		limit = 0
	}
	w := &rangeWalk{c: c, tmpl: req, rev: rev, desc: byKey && req.GetSortOrder() == kvpb.RangeRequest_DESCEND, counting: true}
	out := &kvpb.RangeResponse{Header: &kvpb.ResponseHeader{Revision: rev}}
	err = w.run(ctx, func() int64 {
		if req.GetCountOnly() {
			return -1
		}
		if limit == 0 {
			return 0
		}
		if left := limit - int64(len(out.Kvs)); left > 0 {
			return left
		}
		return -1
	}, func(kvs []*kvpb.KeyValue) error {
		out.Kvs = append(out.Kvs, kvs...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out.Count = w.count
	if !byKey {
		kvpb.SortKeyValues(out.Kvs, req.GetSortTarget(), req.GetSortOrder() == kvpb.RangeRequest_DESCEND)
	}
	if l := req.GetLimit(); l > 0 && int64(len(out.Kvs)) > l {
		out.Kvs = out.Kvs[:l]
	}
	out.More = !req.GetCountOnly() && out.Count > int64(len(out.Kvs))
	return out, nil
}

// Scan streams a key range at one revision, in key order (descending when
// the request sorts by key descending), page by page: fn gets at most
// pageSize keys at a time (0: DefaultPageSize) and memory stays bounded
// however large the range. The request's limit bounds the keys delivered;
// count_only and sorting by anything but the key are refused (use Range).
// It returns the revision read at.
func (c *Client) Scan(ctx context.Context, req *kvpb.RangeRequest, pageSize int, fn func([]*kvpb.KeyValue) error) (int64, error) {
	if req.GetCountOnly() {
		return 0, errors.New("client: Scan streams keys; use Range for count_only")
	}
	if req.GetSortOrder() != kvpb.RangeRequest_NONE && req.GetSortTarget() != kvpb.RangeRequest_KEY {
		return 0, errors.New("client: Scan streams in key order; sort by another target with Range")
	}
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	rev, err := c.snapshotRevision(ctx, req.GetRevision())
	if err != nil {
		return 0, err
	}
	w := &rangeWalk{c: c, tmpl: req, rev: rev, desc: req.GetSortOrder() == kvpb.RangeRequest_DESCEND}
	var sent int64
	err = w.run(ctx, func() int64 {
		n := int64(pageSize)
		if l := req.GetLimit(); l > 0 {
			if l-sent <= 0 {
				return -1
			}
			n = min(n, l-sent)
		}
		return n
	}, func(kvs []*kvpb.KeyValue) error {
		sent += int64(len(kvs))
		return fn(kvs)
	})
	return rev, err
}

// snapshotRevision is the revision a multi-region read is taken at: the
// caller's, or a fresh timestamp.
func (c *Client) snapshotRevision(ctx context.Context, rev int64) (int64, error) {
	if rev > 0 {
		return rev, nil
	}
	ts, err := c.pd.GetTS(ctx)
	return int64(ts), err
}

// rangeOneRegion serves a range that one region holds; errRouteChanged
// when it spans regions (as far as the cache knows).
func (c *Client) rangeOneRegion(ctx context.Context, req *kvpb.RangeRequest) (*kvpb.RangeResponse, error) {
	lo := req.GetKey()
	return c.readRegion(ctx, req.ShallowCopy(), lo, region.ExclusiveEnd(lo, req.GetRangeEnd()))
}

// rangeWalk reads [lo, hi) at rev part by part: a part is the piece of
// the range one region holds, read in pages.
type rangeWalk struct {
	c        *Client
	tmpl     *kvpb.RangeRequest
	rev      int64
	desc     bool
	counting bool // sum the parts' counts into count
	count    int64
	// What count covers: [start, countedTo) ascending, [countedFrom, end)
	// descending (nil: +∞). A part planned again after its region merged
	// may reach past it; only the rest is counted.
	countedTo, countedFrom []byte
}

// run walks the range. want says how many keys the next request may
// return (0: no limit, -1: none, only counts); got receives them in order.
func (w *rangeWalk) run(ctx context.Context, want func() int64, got func([]*kvpb.KeyValue) error) error {
	lo := append([]byte{}, w.tmpl.GetKey()...)
	hi := region.ExclusiveEnd(lo, w.tmpl.GetRangeEnd())
	w.countedTo, w.countedFrom = lo, hi
	var replans retryTries
	progressed := time.Now()
replan:
	for keyBefore(lo, hi) {
		regions, err := w.c.regionsCovering(ctx, lo, hi)
		if err != nil {
			return err
		}
		if w.desc {
			for i, j := 0, len(regions)-1; i < j; i, j = i+1, j-1 {
				regions[i], regions[j] = regions[j], regions[i]
			}
		}
		for _, r := range regions {
			plo, phi := clamp(lo, hi, r)
			for first := true; ; first = false {
				n := want()
				if n < 0 && !w.counting {
					return nil
				}
				resp, err := w.readPart(ctx, plo, phi, n, first)
				if errors.Is(err, errRouteChanged) {
					// The cache was corrected; if it keeps disagreeing with
					// the stores (PD behind them), replanning backs off,
					// and gives up after a retry budget without progress.
					if time.Since(progressed) > w.c.opts.RetryBudget {
						return &GaveUpError{Budget: w.c.opts.RetryBudget, Last: err}
					}
					if err := sleepCtx(ctx, replans.next(retryRouted)); err != nil {
						return err
					}
					continue replan
				}
				if err != nil {
					return err
				}
				progressed = time.Now()
				kvs := resp.GetKvs()
				if len(kvs) > 0 {
					if err := got(kvs); err != nil {
						return err
					}
					last := kvs[len(kvs)-1].GetKey()
					if w.desc {
						phi = append([]byte(nil), last...)
						hi = phi
					} else {
						plo = append(append([]byte(nil), last...), 0)
						lo = plo
					}
				}
				if n < 0 || !resp.GetMore() || len(kvs) == 0 {
					break
				}
			}
			if w.desc {
				hi = plo
			} else {
				if phi == nil {
					return nil
				}
				lo = phi
			}
		}
	}
	return nil
}

// readPart sends one request for [plo, phi) to the region holding plo. n
// is the limit (0: none, -1: count only). A part's first request also
// counts whatever of the part is not counted yet.
func (w *rangeWalk) readPart(ctx context.Context, plo, phi []byte, n int64, first bool) (*kvpb.RangeResponse, error) {
	r := w.tmpl.ShallowCopy()
	r.Key, r.RangeEnd, r.Revision = plo, region.EtcdRangeEnd(phi), w.rev
	r.SortTarget, r.SortOrder = kvpb.RangeRequest_KEY, kvpb.RangeRequest_ASCEND
	if w.desc {
		r.SortOrder = kvpb.RangeRequest_DESCEND
	}
	r.CountOnly, r.Limit = n < 0, max(n, 0)
	resp, err := w.c.readRegion(ctx, r, plo, phi)
	if err != nil || !w.counting || !first {
		return resp, err
	}
	// The part's uncounted piece: all of it (counted by this response, as
	// a count ignores the limit), none, or a rest counted separately.
	clo, chi := plo, phi
	if w.desc {
		chi = minEnd(phi, w.countedFrom)
		if keyBefore(plo, w.countedFrom) {
			w.countedFrom = plo
		}
	} else {
		if keyBefore(plo, w.countedTo) {
			clo = w.countedTo
		}
		if cmpEnd(phi, w.countedTo) > 0 {
			w.countedTo = phi
		}
	}
	switch {
	case bytes.Equal(clo, plo) && cmpEnd(chi, phi) == 0:
		w.count += resp.GetCount()
	case keyBefore(clo, chi):
		cr := w.tmpl.ShallowCopy()
		cr.Key, cr.RangeEnd, cr.Revision, cr.CountOnly, cr.Limit = clo, region.EtcdRangeEnd(chi), w.rev, true, 0
		cnt, err := w.c.readRegion(ctx, cr, clo, chi)
		if err != nil {
			return nil, err
		}
		w.count += cnt.GetCount()
	}
	return resp, nil
}

// readRegion sends r, which reads [lo, hi), to the region holding lo;
// errRouteChanged when that region does not hold all of it.
func (c *Client) readRegion(ctx context.Context, r *kvpb.RangeRequest, lo, hi []byte) (*kvpb.RangeResponse, error) {
	var out *kvpb.RangeResponse
	err := c.do(ctx, lo, true, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
		if !regionHolds(rt.region, lo, hi) {
			return nil, errRouteChanged
		}
		r.Context = rt.context()
		resp, err := rt.kv.Range(ctx, r)
		out = resp
		return resp.GetHeader(), err
	})
	return out, err
}

// regionsCovering lists the regions holding [lo, hi) in key order, from
// the cache where it has them and from PD (a batched scan) where not.
func (c *Client) regionsCovering(ctx context.Context, lo, hi []byte) ([]*metapb.Region, error) {
	var out []*metapb.Region
	cursor := lo
	for {
		c.mu.Lock()
		r := c.regions.Search(cursor)
		c.mu.Unlock()
		if r == nil {
			infos, err := c.pd.ScanRegions(ctx, cursor, hi, regionScanBatch)
			if err != nil {
				return nil, err
			}
			if len(infos) == 0 || !region.ContainsKey(infos[0].GetRegion(), cursor) {
				return nil, fmt.Errorf("client: no region holds key %q yet", cursor)
			}
			for _, info := range infos {
				c.learn(info.GetRegion(), info.GetLeader())
			}
			c.mu.Lock()
			r = c.regions.Search(cursor)
			c.mu.Unlock()
			if r == nil {
				// PD is behind the cache, which refused its region as
				// older than one it overlaps: plan by PD's, and the
				// store's EpochNotMatch will put the cache right (asking
				// PD again at once would get the same answer).
				r = infos[0].GetRegion()
			}
		}
		out = append(out, r)
		end := r.GetEndKey()
		if len(end) == 0 || cmpEnd(end, hi) >= 0 {
			return out, nil
		}
		cursor = end
	}
}

// regionScanBatch is how many regions one PD scan asks for.
const regionScanBatch = 64

// clamp is the part of [lo, hi) in r.
func clamp(lo, hi []byte, r *metapb.Region) ([]byte, []byte) {
	if bytes.Compare(r.GetStartKey(), lo) > 0 {
		lo = r.GetStartKey()
	}
	if end := r.GetEndKey(); len(end) > 0 {
		hi = minEnd(hi, end)
	}
	return lo, hi
}

// cmpEnd compares two exclusive ends, nil being +∞ (a key compares as the
// end just before it). Unlike region.CompareEnd, an empty non-nil end is
// the smallest end, not +∞: a descending walk ends at the empty key.
func cmpEnd(a, b []byte) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// keyBefore: key lies below the exclusive end (nil: +∞).
func keyBefore(key, end []byte) bool { return end == nil || bytes.Compare(key, end) < 0 }

func minEnd(a, b []byte) []byte {
	if cmpEnd(a, b) <= 0 {
		return a
	}
	return b
}

// regionHolds: [lo, hi) (hi nil: +∞) lies in r.
func regionHolds(r *metapb.Region, lo, hi []byte) bool {
	return region.ContainsRange(r.GetStartKey(), r.GetEndKey(), lo, hi)
}

// ErrRegionChanged: ResolveRevision found the region holding the key is no
// longer the one the caller named (split, merged or otherwise changed).
var ErrRegionChanged = errors.New("client: the region changed")

// ResolveRevision asks the leader of the region holding key for a resolved
// revision T (kvpb.KV.ResolveRevision): every write acknowledged before the
// call is below T, and every write of the region below T has applied by the
// time it returns. want names the region as the caller knows it (a
// replica's descriptor): if the region holding key has another ID or epoch
// the call fails with ErrRegionChanged, since T would not be about the
// caller's range.
func (c *Client) ResolveRevision(ctx context.Context, key []byte, want *metapb.Region) (rev int64, readIndex uint64, err error) {
	err = c.do(ctx, key, true, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
		if rt.region.GetId() != want.GetId() || !proto.Equal(rt.region.GetRegionEpoch(), want.GetRegionEpoch()) {
			return nil, ErrRegionChanged
		}
		resp, err := rt.kv.ResolveRevision(ctx, &kvpb.ResolveRevisionRequest{Context: rt.context()})
		rev, readIndex = resp.GetHeader().GetRevision(), resp.GetReadIndex()
		return resp.GetHeader(), err
	})
	return rev, readIndex, err
}
