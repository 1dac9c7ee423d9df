package mvcc

import (
	"container/heap"
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// historyChunkEvents bounds the events History holds in memory at once.
// Versions are stored key-major, so events come out of pebble in key order,
// not revision order: History scans the range once per chunk, keeping only
// the chunk's earliest revisions.
const historyChunkEvents = 4096

// History calls fn with the events of [key, range_end) in region r whose
// revision is in [from, to], oldest first (within one revision, in key
// order), each with its previous version, until fn returns false. It is how
// a watch catches up before it follows live events. Memory stays bounded
// whatever the history's length; the range is scanned once per
// historyChunkEvents events.
func (m *MVCC) History(r *Region, key, rangeEndArg []byte, from, to int64, fn func(*kvpb.Event) bool) error {
	return m.history(r, key, rangeEndArg, from, to, historyChunkEvents, fn)
}

func (m *MVCC) history(r *Region, key, rangeEndArg []byte, from, to int64, limit int, fn func(*kvpb.Event) bool) error {
	snap, err := m.snapshotAt(r, from)
	if err != nil {
		return err
	}
	defer snap.Close()
	end, unbounded := rangeEnd(key, rangeEndArg)
	if unbounded {
		end = nil
	}
	for lo := from; lo <= to; {
		evs, next, err := historyChunk(snap, key, end, lo, to, limit)
		if err != nil {
			return err
		}
		if len(evs) == 0 && next <= to {
			// One revision has more events than a chunk holds (a large
			// transaction or delete): make room for it whole.
			limit *= 2
			continue
		}
		for _, e := range evs {
			if !fn(e) {
				return nil
			}
		}
		lo = next
	}
	return nil
}

type historyEvent struct {
	rev int64
	seq int // discovery order: key order within a revision
	e   *kvpb.Event
}

// latestFirst is a max-heap by revision: the chunk evicts its latest events
// when it overflows.
type latestFirst []historyEvent

func (h latestFirst) Len() int { return len(h) }
func (h latestFirst) Less(i, j int) bool {
	if h[i].rev != h[j].rev {
		return h[i].rev > h[j].rev
	}
	return h[i].seq > h[j].seq
}
func (h latestFirst) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *latestFirst) Push(x any)   { *h = append(*h, x.(historyEvent)) }
func (h *latestFirst) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// historyChunk returns, in order, every event of [key, end) with a revision
// in [lo, next), where next is as far as at most limit events reach without
// splitting a revision (to+1 when everything up to to fit).
func historyChunk(rd pebble.Reader, key, end []byte, lo, to int64, limit int) ([]*kvpb.Event, int64, error) {
	upper := []byte{dataPrefix + 1}
	if end != nil {
		upper = keyPrefix(end)
	}
	it, err := rd.NewIter(&pebble.IterOptions{LowerBound: keyPrefix(key), UpperBound: upper})
	if err != nil {
		return nil, 0, err
	}
	defer it.Close()
	var kept latestFirst
	next := to + 1 // the earliest revision evicted, if any
	seq := 0
	// Versions of a key come newest first: an event's previous version is
	// the entry after it.
	var pending *kvpb.Event
	var pendingKey []byte
	for valid := it.First(); valid; valid = it.Next() {
		k, rev, err := decodeVersionKey(it.Key())
		if err != nil {
			return nil, 0, err
		}
		if pending != nil && string(k) == string(pendingKey) {
			rec, err := decodeRecord(it.Value())
			if err != nil {
				return nil, 0, err
			}
			if !rec.tombstone {
				rec.value = append([]byte(nil), rec.value...)
				pending.PrevKv = toKV(k, rec, rev)
			}
		}
		pending = nil
		if rev >= next || rev < lo {
			continue
		}
		rec, err := decodeRecord(it.Value())
		if err != nil {
			return nil, 0, err
		}
		var e *kvpb.Event
		if rec.tombstone {
			e = &kvpb.Event{Type: kvpb.Event_DELETE, Kv: &kvpb.KeyValue{Key: k, ModRevision: rev}}
		} else {
			rec.value = append([]byte(nil), rec.value...)
			e = &kvpb.Event{Type: kvpb.Event_PUT, Kv: toKV(k, rec, rev)}
		}
		heap.Push(&kept, historyEvent{rev: rev, seq: seq, e: e})
		seq++
		pending, pendingKey = e, k
		for kept.Len() > limit {
			next = min(next, heap.Pop(&kept).(historyEvent).rev)
		}
	}
	if err := it.Error(); err != nil {
		return nil, 0, err
	}
	// Events at next may have been evicted in part: they wait for the next
	// chunk.
	out := kept[:0]
	for _, x := range kept {
		if x.rev < next {
			out = append(out, x)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].rev != out[j].rev {
			return out[i].rev < out[j].rev
		}
		return out[i].seq < out[j].seq
	})
	evs := make([]*kvpb.Event, len(out))
	for i, x := range out {
		evs[i] = x.e
	}
	return evs, next, nil
}
