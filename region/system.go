package region

import (
	"bytes"
	"encoding/binary"
)

// The system range: every key at or above SystemStart is Basalt's own
// data, served by ordinary regions but never visible to (or writable by)
// users. Lease records live there (docs/leases.md). It sits at the very end
// of the key space, so that hiding it from a user's range only ever moves
// the range's end, and behind a prefix no etcd program writes: four 0xFF
// bytes. (A single 0x00 byte, tried first, is what etcd's own benchmark
// tool starts its keys with.)
var (
	// SystemStart is the first key of the system range.
	SystemStart = []byte("\xff\xff\xff\xffbasalt/")
	// LeasePrefix starts every lease record's key.
	LeasePrefix = append(append([]byte(nil), SystemStart...), 'L')
	// LeaseSpanEnd ends the lease records' span.
	LeaseSpanEnd = append(append([]byte(nil), SystemStart...), 'M')
)

// IsSystemKey reports whether key lies in the reserved system range.
func IsSystemKey(key []byte) bool { return bytes.Compare(key, SystemStart) >= 0 }

// LeaseKey is the key of lease id's record. The ID is scrambled by a
// bijection so that sequential or clustered IDs still spread over every
// region of the lease span (each region's leader runs its leases' clocks).
func LeaseKey(id int64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), LeasePrefix...), mix64(uint64(id)))
}

// mix64 is MurmurHash3's 64-bit finalizer: a bijection on uint64.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// ClipUserRange hides the system range from a user's range [key, end)
// given in etcd's form (end empty: the single key; end "\x00": to the end of
// the key space). It returns the part of the range users may see, and
// false when nothing of it is left.
func ClipUserRange(key, end []byte) (k, e []byte, ok bool) {
	if IsSystemKey(key) {
		return nil, nil, false
	}
	if len(end) == 0 {
		return key, end, true // a single user key
	}
	if (len(end) == 1 && end[0] == 0) || bytes.Compare(end, SystemStart) > 0 {
		end = SystemStart
	}
	return key, end, true
}
