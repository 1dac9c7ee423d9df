package storenode

import "sync"

// resolveDemands are the regions clients asked to resolve now: a region
// watch's progress request with resolve set. A client merging several
// regions' watches holds one region's events until every other region
// vouches for their revision; the periodic resolve (ResolveInterval) would
// make it wait up to a whole interval, a demand only one resolve.
//
// Demands coalesce: a region asked for many times before the resolver
// takes it is resolved once, and a region already resolving is resolved
// again when that ends, since the resolve in flight may have drawn its
// revision before the writes the demand is about.
type resolveDemands struct {
	mu      sync.Mutex // guards pending
	pending map[uint64]struct{}
	// wake holds one token while pending is worth a look.
	wake chan struct{}
}

func newResolveDemands() *resolveDemands {
	return &resolveDemands{pending: map[uint64]struct{}{}, wake: make(chan struct{}, 1)}
}

// add demands a resolve of the region.
func (d *resolveDemands) add(regionID uint64) {
	d.mu.Lock()
	d.pending[regionID] = struct{}{}
	d.mu.Unlock()
	d.signal()
}

// keep puts back a region taken while it was busy, without waking the
// resolver: wakeIfPending does when the busy resolve ends.
func (d *resolveDemands) keep(regionID uint64) {
	d.mu.Lock()
	d.pending[regionID] = struct{}{}
	d.mu.Unlock()
}

// wakeIfPending wakes the resolver when the region is still demanded.
func (d *resolveDemands) wakeIfPending(regionID uint64) {
	d.mu.Lock()
	_, ok := d.pending[regionID]
	d.mu.Unlock()
	if ok {
		d.signal()
	}
}

// take returns the demanded regions and forgets them.
func (d *resolveDemands) take() []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]uint64, 0, len(d.pending))
	for id := range d.pending {
		ids = append(ids, id)
	}
	clear(d.pending)
	return ids
}

func (d *resolveDemands) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}
