package mvcc

import (
	"bytes"

	"github.com/cockroachdb/pebble/v2"
)

// Compaction keeps, for every key, each version newer than the compaction
// revision C and the newest version at or below C (unless that one is a
// tombstone); everything else is garbage. The region's leader finds garbage
// with GarbageKeys in bounded batches and proposes GCBatch commands; apply
// re-checks each key against the same rule on its own data (deterministic on
// every replica), so a stale list can never remove a live version.

// GarbageKeys returns up to limit garbage versions of region r at or after
// the data key from (nil: the region's start), and where to resume (nil:
// done).
func (m *MVCC) GarbageKeys(r *Region, compactRev int64, from []byte, limit int) (keys [][]byte, next []byte, err error) {
	desc := r.Desc()
	sp := DataSpans(desc.GetStartKey(), desc.GetEndKey())[0]
	lower := sp.Start
	if from != nil && bytes.Compare(from, lower) > 0 {
		lower = from
	}
	it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: sp.End})
	if err != nil {
		return nil, nil, err
	}
	defer it.Close()
	var curPrefix []byte
	seenAtOrBelow := false
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		pfx := prefixOf(k)
		if !bytes.Equal(pfx, curPrefix) {
			if len(keys) >= limit {
				return keys, append([]byte(nil), k...), nil
			}
			curPrefix = append(curPrefix[:0], pfx...)
			seenAtOrBelow = false
		}
		_, rev, err := decodeVersionKey(k)
		if err != nil {
			return nil, nil, err
		}
		if rev > compactRev {
			continue
		}
		if !seenAtOrBelow {
			seenAtOrBelow = true
			rec, err := decodeRecord(it.Value())
			if err != nil {
				return nil, nil, err
			}
			if !rec.tombstone || rev >= compactRev {
				continue // the version visible at the compaction revision
			}
		}
		keys = append(keys, append([]byte(nil), k...))
	}
	return keys, nil, it.Error()
}

// isGarbage re-checks one listed version on the applying replica's data.
func isGarbage(rd pebble.Reader, k []byte, compactRev int64) bool {
	_, rev, err := decodeVersionKey(k)
	if err != nil || rev >= compactRev {
		return false
	}
	// The newest version at or below the compaction revision, tombstones
	// included.
	it, err := rd.NewIter(&pebble.IterOptions{LowerBound: prefixOf(k), UpperBound: append(append([]byte(nil), prefixOf(k)...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)})
	if err != nil {
		return false
	}
	defer it.Close()
	if !it.SeekGE(append(append([]byte(nil), prefixOf(k)...), binary8(compactRev)...)) {
		return false
	}
	_, newest, err := decodeVersionKey(it.Key())
	if err != nil {
		return false
	}
	if newest > rev {
		return true
	}
	if newest == rev {
		rec, err := decodeRecord(it.Value())
		return err == nil && rec.tombstone
	}
	return false
}
