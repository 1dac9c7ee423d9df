package region

import (
	"bytes"
	"errors"

	"github.com/google/btree"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
)

// ErrStaleRegion is returned by RegionTree.Update for a descriptor older than
// one the tree already holds for an overlapping range or the same region.
var ErrStaleRegion = errors.New("region: descriptor is older than the one known")

// RegionTree indexes non-overlapping regions by start key. It is what PD, the
// client's cache and a store use to map a key to its region. Not safe for
// concurrent use; callers lock.
type RegionTree struct {
	tree *btree.BTreeG[*metapb.Region]
	byID map[uint64]*metapb.Region
}

func lessStart(a, b *metapb.Region) bool {
	return bytes.Compare(a.GetStartKey(), b.GetStartKey()) < 0
}

// NewRegionTree returns an empty tree.
func NewRegionTree() *RegionTree {
	return &RegionTree{tree: btree.NewG(32, lessStart), byID: make(map[uint64]*metapb.Region)}
}

// Len returns the number of regions.
func (t *RegionTree) Len() int { return t.tree.Len() }

// GetByID returns the region with id, or nil.
func (t *RegionTree) GetByID(id uint64) *metapb.Region { return t.byID[id] }

// Search returns the region containing key, or nil when no region covers it.
func (t *RegionTree) Search(key []byte) *metapb.Region {
	var found *metapb.Region
	t.tree.DescendLessOrEqual(&metapb.Region{StartKey: key}, func(r *metapb.Region) bool {
		found = r
		return false
	})
	if found != nil && ContainsKey(found, key) {
		return found
	}
	return nil
}

// SearchPrev returns the region adjacent on the left of the region containing
// key (the one whose end is that region's start), or nil.
func (t *RegionTree) SearchPrev(key []byte) *metapb.Region {
	cur := t.Search(key)
	if cur == nil {
		return nil
	}
	var prev *metapb.Region
	t.tree.DescendLessOrEqual(cur, func(r *metapb.Region) bool {
		if r == cur {
			return true
		}
		prev = r
		return false
	})
	if prev != nil && bytes.Equal(prev.GetEndKey(), cur.GetStartKey()) {
		return prev
	}
	return nil
}

// Overlapping returns the regions that overlap [start, end), in key order.
func (t *RegionTree) Overlapping(start, end []byte) []*metapb.Region {
	var out []*metapb.Region
	t.ascendOverlapping(start, end, func(r *metapb.Region) bool {
		out = append(out, r)
		return true
	})
	return out
}

// ascendOverlapping calls fn for each region overlapping [start, end) in key
// order until fn returns false.
func (t *RegionTree) ascendOverlapping(start, end []byte, fn func(*metapb.Region) bool) {
	// The first overlapping region may start before start.
	pivot := &metapb.Region{StartKey: start}
	if first := t.Search(start); first != nil {
		pivot = first
	}
	t.tree.AscendGreaterOrEqual(pivot, func(r *metapb.Region) bool {
		if len(end) != 0 && bytes.Compare(r.GetStartKey(), end) >= 0 {
			return false
		}
		if !Overlaps(r.GetStartKey(), r.GetEndKey(), start, end) {
			return true
		}
		return fn(r)
	})
}

// Ascend calls fn for every region starting at or after start, in key order,
// until fn returns false.
func (t *RegionTree) Ascend(start []byte, fn func(*metapb.Region) bool) {
	t.tree.AscendGreaterOrEqual(&metapb.Region{StartKey: start}, fn)
}

// Update inserts r, replacing the regions it overlaps and the older
// descriptor of the same region. It returns the regions it removed. When r is
// stale (an overlapping region or the same region has a newer epoch) nothing
// changes and ErrStaleRegion is returned. The tree keeps a clone of r.
func (t *RegionTree) Update(r *metapb.Region) ([]*metapb.Region, error) {
	if !ValidRange(r.GetStartKey(), r.GetEndKey()) {
		return nil, errors.New("region: descriptor has start key >= end key")
	}
	overlaps := t.Overlapping(r.GetStartKey(), r.GetEndKey())
	old := t.byID[r.GetId()]
	if old != nil {
		if IsStale(r.GetRegionEpoch(), old.GetRegionEpoch()) {
			return nil, ErrStaleRegion
		}
	}
	for _, o := range overlaps {
		if o.GetId() == r.GetId() {
			continue
		}
		if r.GetRegionEpoch().GetVersion() < o.GetRegionEpoch().GetVersion() {
			return nil, ErrStaleRegion
		}
	}
	var removed []*metapb.Region
	if old != nil {
		t.tree.Delete(old)
		delete(t.byID, old.GetId())
		removed = append(removed, old)
	}
	for _, o := range overlaps {
		if o.GetId() == r.GetId() {
			continue
		}
		t.tree.Delete(o)
		delete(t.byID, o.GetId())
		removed = append(removed, o)
	}
	c := proto.Clone(r).(*metapb.Region)
	t.tree.ReplaceOrInsert(c)
	t.byID[c.GetId()] = c
	return removed, nil
}

// Remove deletes the region with r's ID if the tree holds it. It returns
// whether anything was removed.
func (t *RegionTree) Remove(id uint64) bool {
	old := t.byID[id]
	if old == nil {
		return false
	}
	t.tree.Delete(old)
	delete(t.byID, id)
	return true
}
