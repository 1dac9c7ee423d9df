package mvcc

import (
	"bytes"
	"math"
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
// revision. A read of a large range that finds no count starts one walk of
// the whole region in the background (the writes applied meanwhile are
// added as they are published) and waits for it, so a burst of lists pays
// one walk, not one each.

// liveCount: n live user keys at revision rev under range version ver.
// rev 0: unknown.
type liveCount struct {
	rev, n int64
	ver    uint64
}

// pendingCount is a walk of the whole region in flight, counting at rev;
// the writes applied meanwhile add up in delta. valid false: the region's
// data changed otherwise and the walk's result is worthless.
type pendingCount struct {
	rev   int64
	ver   uint64
	delta int64
	valid bool
	done  chan struct{}
}

// regionCount holds a region's count. Its mutex also guards publishing the
// region's revision (Region.lastRev), so a count and the revision it is
// exact for are read together.
type regionCount struct {
	mu      sync.Mutex
	c       liveCount
	pending *pendingCount
	// quietUntil: after a range whose edges were too large to count, no
	// read tries again before then, so ranges that are a small part of a
	// large region pay the edge walk at most once a second.
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

// reset publishes a revision set otherwise than by a write of the region's
// own (a split, a merge, a snapshot): the count, and any walk in flight,
// were of other data.
func (rc *regionCount) reset(r *Region, rev int64) {
	rc.mu.Lock()
	rc.c = liveCount{}
	if rc.pending != nil {
		rc.pending.valid = false
	}
	r.lastRev.Store(rev)
	rc.mu.Unlock()
}

// forget drops the count (the region's data was replaced).
func (rc *regionCount) forget() {
	rc.mu.Lock()
	rc.c = liveCount{}
	if rc.pending != nil {
		rc.pending.valid = false
	}
	rc.mu.Unlock()
}

// publish moves the count over one applied write, from prevRev to rev, and
// publishes rev as the region's revision.
func (rc *regionCount) publish(r *Region, prevRev, rev int64, ver uint64, delta int64) {
	rc.mu.Lock()
	if rc.c.rev != 0 && rc.c.rev == prevRev && rc.c.ver == ver {
		rc.c = liveCount{rev: rev, n: rc.c.n + delta, ver: ver}
	} else {
		rc.c = liveCount{}
	}
	if p := rc.pending; p != nil {
		if p.ver == ver {
			p.delta += delta
		} else {
			p.valid = false
		}
	}
	r.lastRev.Store(rev)
	rc.mu.Unlock()
}

// raise publishes a higher revision that changed no key (a compaction
// above the last write).
func (rc *regionCount) raise(r *Region, rev int64) {
	rc.mu.Lock()
	if rc.c.rev != 0 && rc.c.rev == r.lastRev.Load() {
		rc.c.rev = rev
	}
	r.lastRev.Store(rev)
	rc.mu.Unlock()
}

// current returns the region's revision and, when known, its count at it.
func (rc *regionCount) current(r *Region, ver uint64) (rev, n int64, known bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rev = r.lastRev.Load()
	if rc.c.rev != 0 && rc.c.rev == rev && rc.c.ver == ver {
		return rev, rc.c.n, true
	}
	return rev, 0, false
}

// at returns the count at rev under range version ver, if known. latest:
// rev is at or above the region's last write and at or below readable, a
// revision the caller vouches every write at or below is applied. No write
// of the region then lies between its last revision and rev (one applied
// later has a revision above readable), so the count now is the count at
// rev, and a walk that learns it serves rev. A routed latest read carries
// such a revision: a timestamp drawn for it, above the last write more
// often than equal to it.
func (rc *regionCount) at(r *Region, rev, readable int64, ver uint64) (n int64, known, latest bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	last := r.lastRev.Load()
	latest = last <= rev && rev <= readable
	if rc.c.rev == 0 || rc.c.ver != ver || rc.c.rev != rev && !(latest && rc.c.rev == last) {
		return 0, false, latest
	}
	return rc.c.n, true, latest
}

// inFlight returns the channel a walk in flight closes, or nil.
func (rc *regionCount) inFlight() <-chan struct{} {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.pending == nil {
		return nil
	}
	return rc.pending.done
}

// learn counts the whole region in the background, once at a time: the
// walk counts at the revision published when it starts, and the writes
// applied while it runs are added as they are published.
func (m *MVCC) learn(r *Region, desc *metapb.Region) {
	start, end, ok := userSpan(desc)
	if !ok {
		return
	}
	ver := desc.GetRegionEpoch().GetVersion()
	rc := &r.count
	rc.mu.Lock()
	if rc.pending != nil {
		rc.mu.Unlock()
		return
	}
	p := &pendingCount{rev: r.lastRev.Load(), ver: ver, valid: true, done: make(chan struct{})}
	rc.pending = p
	rc.mu.Unlock()
	m.learns.Add(1)
	go func() {
		defer m.learns.Done()
		// The snapshot is taken after the revision was read: it holds every
		// write at or below it.
		snap := m.db.NewSnapshot()
		n, err := countUpTo(snap, start, end, p.rev, math.MaxInt64)
		_ = snap.Close()
		rc.mu.Lock()
		if err == nil && p.valid {
			rc.c = liveCount{rev: r.lastRev.Load(), n: n + p.delta, ver: ver}
		}
		rc.pending = nil
		close(p.done)
		rc.mu.Unlock()
	}()
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

// countFromRegion counts [key, end) at rev from the region's count there
// (total) and the keys of the region outside the range. ok false: the count is not known
// at rev, the range reaches outside the user span, or the edges hold too
// many keys.
func (r *Region) countFromRegion(rd pebble.Reader, desc *metapb.Region, key, end []byte, rev, total int64) (int64, bool, error) {
	start, userEnd, ok := userSpan(desc)
	if !ok || end == nil || bytes.Compare(end, userEnd) > 0 || bytes.Compare(key, start) < 0 || !r.count.tryEdges() {
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

// countedRange reads req in region r at rev (from a pebble snapshot taken
// after rev was published), counting through the region's count when it
// is known at rev (total) and that is cheaper than walking the range.
// retry: the count was being learnt; the caller may read again at a new
// revision and find it.
func (m *MVCC) countedRange(r *Region, rd pebble.Reader, desc *metapb.Region, req *kvpb.RangeRequest, rev, total int64, known, mayWait bool) (resp *kvpb.RangeResponse, retry bool, err error) {
	end, unbounded := rangeEnd(req.GetKey(), req.GetRangeEnd())
	if unbounded || len(req.GetRangeEnd()) == 0 {
		resp, err = rangeAt(rd, req, rev) // to the end of the key space, or one key
		return resp, false, err
	}
	// Walk what the answer holds and a little more: a small range is
	// counted whole before the region's count is worth its edges.
	resp, complete, err := rangeAtBudget(rd, req, rev, countWalkBudget)
	if err != nil || complete {
		return resp, false, err
	}
	if known {
		n, ok, err := r.countFromRegion(rd, desc, req.GetKey(), end, rev, total)
		if err != nil {
			return nil, false, err
		}
		if ok {
			resp.Count = n
			return resp, false, nil
		}
	} else if mayWait {
		// A large range and no count: learn it (one walk for every reader)
		// and wait for it, a bounded while, rather than walk alongside.
		m.learn(r, desc)
		if done := r.count.inFlight(); done != nil {
			select {
			case <-done:
				return nil, true, nil
			case <-time.After(learnWait):
			}
		}
	}
	if testHookCountWalk != nil {
		testHookCountWalk()
	}
	resp, err = rangeAt(rd, req, rev)
	return resp, false, err
}

// testHookCountWalk, when set (tests only), runs when a range larger than
// countWalkBudget is counted by walking it whole.
var testHookCountWalk func()

// learnWait bounds how long a read waits for the region's count.
const learnWait = 2 * time.Second

// countWalkBudget: ranges of fewer keys are counted by walking them.
const countWalkBudget = 2000
