package kvpb

// Hand-written, not generated: what every reader of RangeRequest needs to
// agree on. `make proto` leaves this file alone.

import (
	"bytes"
	"cmp"
	"sort"
)

// SortKeyValues orders kvs by a range request's sort target, stably: ties
// keep the order kvs arrived in (key order), so every replica and the
// client merging regions produce the same result.
func SortKeyValues(kvs []*KeyValue, target RangeRequest_SortTarget, desc bool) {
	compare := func(a, b *KeyValue) int {
		switch target {
		case RangeRequest_VERSION:
			return cmp.Compare(a.GetVersion(), b.GetVersion())
		case RangeRequest_CREATE:
			return cmp.Compare(a.GetCreateRevision(), b.GetCreateRevision())
		case RangeRequest_MOD:
			return cmp.Compare(a.GetModRevision(), b.GetModRevision())
		case RangeRequest_VALUE:
			return bytes.Compare(a.GetValue(), b.GetValue())
		}
		return bytes.Compare(a.GetKey(), b.GetKey())
	}
	sort.SliceStable(kvs, func(i, j int) bool {
		c := compare(kvs[i], kvs[j])
		if desc {
			return c > 0
		}
		return c < 0
	})
}
