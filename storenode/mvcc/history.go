package mvcc

import (
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// History calls fn with the events of [key, range_end) in region r whose
// revision is in [from, to], oldest first (within one revision, in key
// order), each with its previous version. It is how a watch catches up
// before it follows live events.
func (m *MVCC) History(r *Region, key, rangeEndArg []byte, from, to int64, fn func(*kvpb.Event) bool) error {
	if from < r.CompactRevision() {
		return ErrCompacted
	}
	end, unbounded := rangeEnd(key, rangeEndArg)
	if unbounded {
		end = nil
	}
	upper := []byte{dataPrefix + 1}
	if end != nil {
		upper = keyPrefix(end)
	}
	it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: keyPrefix(key), UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	type ev struct {
		rev int64
		e   *kvpb.Event
	}
	var evs []ev
	// Versions of a key come newest first: an event's previous version is
	// the entry after it.
	var pending *kvpb.Event
	var pendingKey []byte
	for valid := it.First(); valid; valid = it.Next() {
		k, rev, err := decodeVersionKey(it.Key())
		if err != nil {
			return err
		}
		rec, err := decodeRecord(it.Value())
		if err != nil {
			return err
		}
		if pending != nil && string(k) == string(pendingKey) && !rec.tombstone {
			rec.value = append([]byte(nil), rec.value...)
			pending.PrevKv = toKV(k, rec, rev)
		}
		pending = nil
		if rev > to || rev < from {
			continue
		}
		var e *kvpb.Event
		if rec.tombstone {
			e = &kvpb.Event{Type: kvpb.Event_DELETE, Kv: &kvpb.KeyValue{Key: k, ModRevision: rev}}
		} else {
			rec.value = append([]byte(nil), rec.value...)
			e = &kvpb.Event{Type: kvpb.Event_PUT, Kv: toKV(k, rec, rev)}
		}
		evs = append(evs, ev{rev, e})
		pending, pendingKey = e, k
	}
	if err := it.Error(); err != nil {
		return err
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].rev < evs[j].rev })
	for _, x := range evs {
		if !fn(x.e) {
			break
		}
	}
	return nil
}
