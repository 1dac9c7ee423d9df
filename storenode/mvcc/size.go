package mvcc

import (
	"bytes"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/basaltdb/basalt/region"
)

// Size accounting for split and merge decisions. pebble's size estimates
// miss the memtable and lag compactions, and it has no key counts, so each
// region keeps: the totals of its last scan, plus what was written since.
// Writes only add; deletes and GC shrink a region only at the next scan,
// which a GC, a range change or enough new writes ask for.

// RegionSize is a region's approximate data size.
type RegionSize struct {
	Bytes    int64 // keys and values of every stored version
	Versions int64 // stored versions (what region-max-keys counts, as TiKV counts its MVCC keys)
}

type sizeStats struct {
	mu      sync.Mutex
	scanned RegionSize // as of the last scan
	written RegionSize // added since
	known   bool       // a scan happened since the range last changed
	stale   bool       // GC ran since the last scan
}

// SizeInfo is what a region knows of its size.
type SizeInfo struct {
	// Approx is the last scan's totals plus what was written since: an
	// upper bound of the size unless the range changed since the scan.
	Approx RegionSize
	// Written is what was written since the last scan.
	Written RegionSize
	// Known: a scan happened since the range last changed.
	Known bool
	// Stale: GC deleted versions since the last scan (Approx overstates).
	Stale bool
}

// Size returns what the region knows of its size.
func (r *Region) Size() SizeInfo {
	s := &r.size
	s.mu.Lock()
	defer s.mu.Unlock()
	return SizeInfo{
		Approx:  RegionSize{Bytes: s.scanned.Bytes + s.written.Bytes, Versions: s.scanned.Versions + s.written.Versions},
		Written: s.written, Known: s.known, Stale: s.stale,
	}
}

// SetSize records a size learnt otherwise than by scanning this region
// (a split hands each piece the size its parent's scan measured).
func (r *Region) SetSize(sz RegionSize) {
	r.size.mu.Lock()
	r.size.scanned, r.size.written = sz, RegionSize{}
	r.size.known, r.size.stale = true, false
	r.size.mu.Unlock()
}

func (r *Region) noteWritten(bytes, versions int64) {
	r.size.mu.Lock()
	r.size.written.Bytes += bytes
	r.size.written.Versions += versions
	r.size.mu.Unlock()
}

func (r *Region) noteGC() {
	r.size.mu.Lock()
	r.size.stale = true
	r.size.mu.Unlock()
}

func (r *Region) noteRangeChanged() {
	r.size.mu.Lock()
	r.size.known = false
	r.size.mu.Unlock()
}

// SplitScan is what a scan of a region's data found.
type SplitScan struct {
	Size RegionSize
	// Keys are user keys at which a chunk of at least the asked size
	// ends and the next begins: splitting at all of them cuts the region
	// into such chunks (the last one may be smaller).
	Keys [][]byte
	// Chunks are the sizes of the len(Keys)+1 pieces.
	Chunks []RegionSize
}

// ScanForSplit reads region r's data once: its exact size, and the keys
// that cut it into chunks of chunk bytes or chunk versions, whichever
// comes first (0: no limit on that dimension). A key's versions always stay
// together. The totals become the region's new size baseline.
func (m *MVCC) ScanForSplit(r *Region, chunk RegionSize) (SplitScan, error) {
	desc := r.Desc()
	// What is written from here on counts as written after the scan; a
	// write racing the scan may be counted twice, never missed.
	r.size.mu.Lock()
	r.size.written = RegionSize{}
	r.size.stale = false
	r.size.mu.Unlock()
	snap := m.db.NewSnapshot()
	defer snap.Close()
	sp := DataSpans(desc.GetStartKey(), desc.GetEndKey())[0]
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: sp.Start, UpperBound: sp.End})
	if err != nil {
		return SplitScan{}, err
	}
	defer it.Close()
	var out SplitScan
	var inChunk RegionSize
	var prevKey []byte
	for valid := it.First(); valid; valid = it.Next() {
		key, _, err := decodeVersionKey(it.Key())
		if err != nil {
			return SplitScan{}, err
		}
		newKey := prevKey == nil || !bytes.Equal(key, prevKey)
		if newKey && prevKey != nil &&
			((chunk.Bytes > 0 && inChunk.Bytes >= chunk.Bytes) || (chunk.Versions > 0 && inChunk.Versions >= chunk.Versions)) {
			out.Keys = append(out.Keys, append([]byte(nil), key...))
			out.Chunks = append(out.Chunks, inChunk)
			inChunk = RegionSize{}
		}
		if newKey {
			prevKey = append(prevKey[:0], key...)
		}
		n := int64(len(it.Key()) + len(it.Value()))
		inChunk.Bytes += n
		inChunk.Versions++
		out.Size.Bytes += n
		out.Size.Versions++
	}
	if err := it.Error(); err != nil {
		return SplitScan{}, err
	}
	out.Chunks = append(out.Chunks, inChunk)
	r.size.mu.Lock()
	if region.SameRange(desc, r.Desc()) {
		r.size.scanned = out.Size
		r.size.known = true
	}
	r.size.mu.Unlock()
	return out, nil
}

// MiddleKey returns a user key that cuts region r's data in two halves by
// size, or nil when it holds fewer than two keys.
func (m *MVCC) MiddleKey(r *Region) ([]byte, error) {
	whole, err := m.ScanForSplit(r, RegionSize{})
	if err != nil {
		return nil, err
	}
	half, err := m.ScanForSplit(r, RegionSize{Bytes: max(1, whole.Size.Bytes/2)})
	if err != nil {
		return nil, err
	}
	if len(half.Keys) == 0 {
		return nil, nil
	}
	return half.Keys[0], nil
}
