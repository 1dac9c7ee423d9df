package raftstore

import (
	"container/list"
	"sync"

	pb "go.etcd.io/raft/v3/raftpb"
)

// entryCache keeps the most recent log entries of every region in memory,
// under one store-wide byte limit, so a leader feeding followers and a peer
// applying what it just appended rarely read pebble. Each region's entries are
// a contiguous run [first, first+len); when the cache is over its limit it
// evicts whole regions, least recently appended first, then trims the front of
// the region being appended.
type entryCache struct {
	maxBytes int64

	mu    sync.Mutex
	bytes int64
	parts map[uint64]*cachePart
	lru   *list.List // of *cachePart; front = most recently appended
}

type cachePart struct {
	regionID uint64
	ents     []*pb.Entry
	sizes    []int64
	bytes    int64
	elem     *list.Element
}

func newEntryCache(maxBytes int64) *entryCache {
	return &entryCache{maxBytes: maxBytes, parts: make(map[uint64]*cachePart), lru: list.New()}
}

func entrySize(e *pb.Entry) int64 { return int64(len(e.GetData())) + 48 }

// append adds ents (consecutive) to a region's run. Entries at or after
// ents[0]'s index are replaced, as raft does when a follower's log conflicts
// with its leader's. If ents does not continue the run, the run restarts.
func (c *entryCache) append(regionID uint64, ents []*pb.Entry) {
	if len(ents) == 0 || c.maxBytes <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.parts[regionID]
	if p == nil {
		p = &cachePart{regionID: regionID}
		p.elem = c.lru.PushFront(p)
		c.parts[regionID] = p
	} else {
		c.lru.MoveToFront(p.elem)
	}
	first := ents[0].GetIndex()
	if len(p.ents) > 0 {
		pFirst := p.ents[0].GetIndex()
		pNext := pFirst + uint64(len(p.ents))
		switch {
		case first < pFirst || first > pNext:
			c.dropFrontLocked(p, len(p.ents))
		case first < pNext:
			c.dropBackLocked(p, int(pNext-first))
		}
	}
	for _, e := range ents {
		s := entrySize(e)
		p.ents = append(p.ents, e)
		p.sizes = append(p.sizes, s)
		p.bytes += s
		c.bytes += s
	}
	c.evictLocked(p)
}

func (c *entryCache) dropFrontLocked(p *cachePart, n int) {
	for i := 0; i < n; i++ {
		p.bytes -= p.sizes[i]
		c.bytes -= p.sizes[i]
		p.ents[i] = nil
	}
	p.ents = p.ents[n:]
	p.sizes = p.sizes[n:]
	if len(p.ents) == 0 {
		// Let the backing arrays go.
		p.ents, p.sizes = nil, nil
	}
}

func (c *entryCache) dropBackLocked(p *cachePart, n int) {
	keep := len(p.ents) - n
	for i := keep; i < len(p.ents); i++ {
		p.bytes -= p.sizes[i]
		c.bytes -= p.sizes[i]
		p.ents[i] = nil
	}
	p.ents = p.ents[:keep]
	p.sizes = p.sizes[:keep]
}

// evictLocked brings the cache under its limit, sparing keep as long as
// possible.
func (c *entryCache) evictLocked(keep *cachePart) {
	for c.bytes > c.maxBytes {
		back := c.lru.Back()
		victim := back.Value.(*cachePart)
		if victim == keep {
			if c.lru.Len() > 1 {
				c.lru.MoveToFront(back)
				continue
			}
			// Only the region being appended is left: trim its oldest half.
			n := (len(keep.ents) + 1) / 2
			c.dropFrontLocked(keep, n)
			continue
		}
		c.removeLocked(victim)
	}
}

func (c *entryCache) removeLocked(p *cachePart) {
	c.bytes -= p.bytes
	c.lru.Remove(p.elem)
	delete(c.parts, p.regionID)
}

// get returns the cached entries [lo, hi) up to maxSize bytes (at least one),
// or ok=false if lo is not cached.
func (c *entryCache) get(regionID, lo, hi, maxSize uint64) (ents []*pb.Entry, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.parts[regionID]
	if p == nil || len(p.ents) == 0 {
		return nil, false
	}
	first := p.ents[0].GetIndex()
	next := first + uint64(len(p.ents))
	if lo < first || hi > next || lo >= hi {
		return nil, false
	}
	var size uint64
	out := make([]*pb.Entry, 0, hi-lo)
	for i := lo - first; i < hi-first; i++ {
		size += uint64(p.sizes[i])
		if len(out) > 0 && size > maxSize {
			break
		}
		out = append(out, p.ents[i])
	}
	return out, true
}

// term returns the cached term of entry i.
func (c *entryCache) term(regionID, i uint64) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.parts[regionID]
	if p == nil || len(p.ents) == 0 {
		return 0, false
	}
	first := p.ents[0].GetIndex()
	if i < first || i >= first+uint64(len(p.ents)) {
		return 0, false
	}
	return p.ents[i-first].GetTerm(), true
}

// truncateTo drops a region's entries at or below index.
func (c *entryCache) truncateTo(regionID, index uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.parts[regionID]
	if p == nil || len(p.ents) == 0 {
		return
	}
	first := p.ents[0].GetIndex()
	if index < first {
		return
	}
	n := int(index - first + 1)
	if n > len(p.ents) {
		n = len(p.ents)
	}
	c.dropFrontLocked(p, n)
}

// drop forgets a region.
func (c *entryCache) drop(regionID uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.parts[regionID]; p != nil {
		c.removeLocked(p)
	}
}

// size returns the bytes held.
func (c *entryCache) size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
