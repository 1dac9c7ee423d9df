package region

import (
	"bytes"

	"github.com/basaltdb/basalt/proto/metapb"
)

// Keys are raw user keys. A range is [start, end); an empty end means the
// range is unbounded on the right. An empty start is the smallest key.

// Contains reports whether key lies in [start, end).
func Contains(start, end, key []byte) bool {
	return bytes.Compare(key, start) >= 0 && (len(end) == 0 || bytes.Compare(key, end) < 0)
}

// CompareEnd compares two range ends, where an empty end is +infinity.
func CompareEnd(a, b []byte) int {
	switch {
	case len(a) == 0 && len(b) == 0:
		return 0
	case len(a) == 0:
		return 1
	case len(b) == 0:
		return -1
	}
	return bytes.Compare(a, b)
}

// ExclusiveEnd turns etcd's range_end for key into an exclusive end, nil
// when unbounded: an empty range_end means key alone, "\x00" every key
// from key on.
func ExclusiveEnd(key, rangeEnd []byte) []byte {
	switch {
	case len(rangeEnd) == 0:
		return append(append([]byte(nil), key...), 0)
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return nil
	}
	return rangeEnd
}

// EtcdRangeEnd turns an exclusive end (nil: unbounded) back into etcd's
// range_end.
func EtcdRangeEnd(end []byte) []byte {
	if end == nil {
		return []byte{0}
	}
	return end
}

// Overlaps reports whether [s1, e1) and [s2, e2) share a key.
func Overlaps(s1, e1, s2, e2 []byte) bool {
	return (len(e2) == 0 || bytes.Compare(s1, e2) < 0) && (len(e1) == 0 || bytes.Compare(s2, e1) < 0)
}

// ContainsRange reports whether [start, end) lies within [outerStart, outerEnd).
func ContainsRange(outerStart, outerEnd, start, end []byte) bool {
	return bytes.Compare(start, outerStart) >= 0 && CompareEnd(end, outerEnd) <= 0
}

// ValidRange reports whether [start, end) is well formed: start < end unless
// end is unbounded.
func ValidRange(start, end []byte) bool {
	return len(end) == 0 || bytes.Compare(start, end) < 0
}

// ContainsKey reports whether r's range holds key.
func ContainsKey(r *metapb.Region, key []byte) bool {
	return Contains(r.GetStartKey(), r.GetEndKey(), key)
}

// FindPeer returns r's peer on storeID, or nil.
func FindPeer(r *metapb.Region, storeID uint64) *metapb.Peer {
	for _, p := range r.GetPeers() {
		if p.GetStoreId() == storeID {
			return p
		}
	}
	return nil
}

// FindPeerByID returns r's peer with the given peer ID, or nil.
func FindPeerByID(r *metapb.Region, peerID uint64) *metapb.Peer {
	for _, p := range r.GetPeers() {
		if p.GetId() == peerID {
			return p
		}
	}
	return nil
}

// IsVoter reports whether p votes in the incoming configuration.
func IsVoter(p *metapb.Peer) bool {
	return p.GetRole() == metapb.PeerRole_Voter || p.GetRole() == metapb.PeerRole_IncomingVoter
}

// SameRange reports whether a and b cover the same key range.
func SameRange(a, b *metapb.Region) bool {
	return bytes.Equal(a.GetStartKey(), b.GetStartKey()) && bytes.Equal(a.GetEndKey(), b.GetEndKey())
}
