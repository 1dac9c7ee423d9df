package mvcc

import (
	"bytes"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// etcd's count covers every live key of a range, however small its limit,
// and etcd counts by walking an in-memory index. Walking pebble instead
// costs a large range most of its time (docs/benchmarks.md), so a region
// remembers how many live user keys it holds: once a read has counted the
// whole region, apply keeps the number exact write by write, and a range
// in the region is counted as that number minus the keys outside it (two
// short walks at the region's edges), when those are few.
//
// The number lives in memory only and is labeled with the revision and
// the range version it is exact for; anything that changes a region's data
// other than a write of its own (a split, a merge, a snapshot, a
// membership change) forgets it, and a read uses it only at exactly its
// revision.

// liveCount: n live user keys at revision rev under range version ver.
// rev 0: unknown.
type liveCount struct {
	rev, n int64
	ver    uint64
}

type regionCount struct {
	mu sync.Mutex
	c  liveCount
	// quietUntil: after a range whose edges were too large to count (to
	// learn the region's count, or to use it), no read tries again before
	// then, so ranges that are a small part of a large region pay the edge
	// walk at most once a second.
	quietUntil time.Time
}

const edgeRetryInterval = time.Second

// tryEdges reports whether a read may walk edges now.
func (rc *regionCount) tryEdges() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return time.Now().After(rc.quietUntil)
}

// edgesTooLarge holds edge walks off for a while.
func (rc *regionCount) edgesTooLarge() {
	rc.mu.Lock()
	rc.quietUntil = time.Now().Add(edgeRetryInterval)
	rc.mu.Unlock()
}

// forget drops the count (the region's data changed other than by a write).
func (rc *regionCount) forget() {
	rc.mu.Lock()
	rc.c = liveCount{}
	rc.mu.Unlock()
}

// advance moves the count over one applied write, from prevRev to rev.
// It runs before the region's revision is published, so a reader never
// sees a revision the count has not caught up with yet labeled as exact.
func (rc *regionCount) advance(prevRev, rev int64, ver uint64, delta int64) {
	rc.mu.Lock()
	if rc.c.rev != 0 && rc.c.rev == prevRev && rc.c.ver == ver {
		rc.c = liveCount{rev: rev, n: rc.c.n + delta, ver: ver}
	} else {
		rc.c = liveCount{}
	}
	rc.mu.Unlock()
}

// at returns the count at rev under range version ver, if known.
func (rc *regionCount) at(rev int64, ver uint64) (int64, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.c.rev == 0 || rc.c.rev != rev || rc.c.ver != ver {
		return 0, false
	}
	return rc.c.n, true
}

// learn records a count a read walked at rev, if rev is still the
// region's revision (otherwise writes since were not counted into it).
func (rc *regionCount) learn(r *Region, rev int64, ver uint64, n int64) {
	rc.mu.Lock()
	if r.lastRev.Load() == rev {
		rc.c = liveCount{rev: rev, n: n, ver: ver}
	}
	rc.mu.Unlock()
}

// liveDelta is how many live user keys a write's events add (a put that
// creates a key) or remove (a delete); lease records, in the system range,
// are not user keys.
func liveDelta(events []*kvpb.Event) int64 {
	var d int64
	for _, ev := range events {
		if region.IsSystemKey(ev.GetKv().GetKey()) {
			continue
		}
		switch ev.GetType() {
		case kvpb.Event_PUT:
			if ev.GetKv().GetVersion() == 1 {
				d++
			}
		case kvpb.Event_DELETE:
			d--
		}
	}
	return d
}

// userSpan is the part of a region user keys can be in: its range cut at
// the system range. ok false: the region holds no user key.
func userSpan(desc *metapb.Region) (start, end []byte, ok bool) {
	start, end = desc.GetStartKey(), desc.GetEndKey()
	if len(end) == 0 || bytes.Compare(end, region.SystemStart) > 0 {
		end = region.SystemStart
	}
	return start, end, bytes.Compare(start, end) < 0
}

// edgeWalkLimit: counting a range from the region's count is worth it
// while the keys outside the range are at most this many.
const edgeWalkLimit = 10_000

// countFromRegion counts [key, end) at rev from the region's count and the
// keys of the region outside the range. ok false: the count is not known
// at rev, the range reaches outside the user span, or the edges hold too
// many keys.
func (r *Region) countFromRegion(rd pebble.Reader, desc *metapb.Region, key, end []byte, rev int64) (int64, bool, error) {
	start, userEnd, ok := userSpan(desc)
	if !ok || end == nil || bytes.Compare(end, userEnd) > 0 || bytes.Compare(key, start) < 0 {
		return 0, false, nil
	}
	total, ok := r.count.at(rev, desc.GetRegionEpoch().GetVersion())
	if !ok || !r.count.tryEdges() {
		return 0, false, nil
	}
	outside := int64(0)
	for _, edge := range [][2][]byte{{start, key}, {end, userEnd}} {
		if bytes.Compare(edge[0], edge[1]) >= 0 {
			continue
		}
		n, err := countUpTo(rd, edge[0], edge[1], rev, edgeWalkLimit-outside)
		if err != nil {
			return 0, false, err
		}
		if n < 0 {
			r.count.edgesTooLarge()
			return 0, false, nil
		}
		outside += n
	}
	return total - outside, true, nil
}

// countUpTo counts the live keys of [start, end) at rev, giving up (-1)
// past limit.
func countUpTo(rd pebble.Reader, start, end []byte, rev, limit int64) (int64, error) {
	var n int64
	always := func() bool { return true }
	err := visitCounting(rd, start, end, rev, always, func([]byte, record, int64) (bool, error) {
		n++
		return n <= limit, nil
	})
	if n > limit {
		return -1, err
	}
	return n, err
}

// coversUserSpan reports whether [key, end) is the region's whole user span.
func coversUserSpan(desc *metapb.Region, key, end []byte) bool {
	start, userEnd, ok := userSpan(desc)
	return ok && bytes.Equal(key, start) && end != nil && bytes.Equal(end, userEnd)
}

// countedRange is rangeAt for a read of region r, counting through the
// region's count where that is cheaper than walking the whole range.
func (r *Region) countedRange(rd pebble.Reader, desc *metapb.Region, req *kvpb.RangeRequest, rev int64) (*kvpb.RangeResponse, error) {
	end, unbounded := rangeEnd(req.GetKey(), req.GetRangeEnd())
	if unbounded || len(req.GetRangeEnd()) == 0 {
		return rangeAt(rd, req, rev) // to the end of the key space, or one key
	}
	ver := desc.GetRegionEpoch().GetVersion()
	if _, known := r.count.at(rev, ver); known {
		// Walk what the answer holds and a little more: a small range is
		// counted whole before the region's count is worth its edges.
		resp, complete, err := rangeAtBudget(rd, req, rev, countWalkBudget)
		if err != nil || complete {
			return resp, err
		}
		n, ok, err := r.countFromRegion(rd, desc, req.GetKey(), end, rev)
		if err != nil {
			return nil, err
		}
		if ok {
			resp.Count = n
			return resp, nil
		}
		return rangeAt(rd, req, rev)
	}
	resp, err := rangeAt(rd, req, rev)
	if err != nil || resp.GetCount() < countWalkBudget {
		return resp, err
	}
	// A large range was walked: with its edges (when they are small next
	// to it) that is the region's count, for the reads after it.
	start, userEnd, ok := userSpan(desc)
	if !ok || bytes.Compare(end, userEnd) > 0 || bytes.Compare(req.GetKey(), start) < 0 || !r.count.tryEdges() {
		return resp, nil
	}
	outside := int64(0)
	for _, edge := range [][2][]byte{{start, req.GetKey()}, {end, userEnd}} {
		if bytes.Compare(edge[0], edge[1]) >= 0 {
			continue
		}
		n, err := countUpTo(rd, edge[0], edge[1], rev, min(edgeWalkLimit, resp.GetCount()/4)-outside)
		if err != nil {
			return resp, err
		}
		if n < 0 {
			r.count.edgesTooLarge()
			return resp, nil
		}
		outside += n
	}
	r.count.learn(r, rev, ver, resp.GetCount()+outside)
	return resp, nil
}

// countWalkBudget: ranges of fewer keys are counted by walking them.
const countWalkBudget = 2000
