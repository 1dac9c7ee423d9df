package mvcc

import (
	"bytes"
	"encoding/binary"

	"github.com/cockroachdb/pebble/v2"
)

// Comparer is the pebble comparer of a store's database. It orders keys as
// bytes.Compare does for every key Basalt writes or seeks, and it tells
// pebble which part of a data key is the user key (Split), so that tables
// carry a bloom filter of user keys and a point read of one key's versions
// (SeekPrefixGE) skips every table that does not hold the key. Without it,
// the previous-version read of every put sought into each level and each
// L0 sublevel, loading blocks of tables that could not hold the key.
//
// A database records its comparer's name and opens only with it: one made
// before this comparer keeps pebble's bytewise comparer, and reads that way
// (raftstore.OpenEngineWith; New is told which), and an older binary
// cannot open a database made with this one. The name, Split and ordering
// are on disk (tables' filters hold Split prefixes): never change them; a
// different split is a new comparer under a new name, with this one kept
// (TestComparerIsFrozen). Never ingest with a synthetic prefix: Split reads
// the leading 'z'.
//
// Split: a data key ('z' | escape(user key) | 8-byte inverted revision) is
// prefix 'z' | escape(user key), whose escape ends with the pair 0x00 0x01;
// any other key (raft state, bounds, seek keys) is all prefix. The escape
// makes the prefixes of data keys prefix-free, so comparing prefixes
// bytewise and then suffixes bytewise, which pebble requires of Compare,
// gives bytes.Compare's order for data keys, for keys outside 'z', and for
// the bounds and seek keys this package builds (TestComparerOrdersAsBytes).
var Comparer = &pebble.Comparer{
	Name:                 "basalt.VersionedKeyComparator.v1",
	Split:                splitVersion,
	Compare:              compareVersioned,
	Equal:                bytes.Equal,
	ComparePointSuffixes: bytes.Compare,
	CompareRangeSuffixes: bytes.Compare,
	AbbreviatedKey: func(k []byte) uint64 {
		// The first 8 bytes of the prefix, zero-padded: monotone in the
		// prefix, which Compare orders first.
		p := k[:splitVersion(k)]
		if len(p) >= 8 {
			return binary.BigEndian.Uint64(p)
		}
		var b [8]byte
		copy(b[:], p)
		return binary.BigEndian.Uint64(b[:])
	},
	// Index separators and successors are the key itself: pebble's
	// shortened bytewise separators are not always keys this Split reads
	// the way bytes.Compare orders them.
	Separator: func(dst, a, _ []byte) []byte { return append(dst, a...) },
	Successor: func(dst, a []byte) []byte { return append(dst, a...) },
	// Only asked of prefixes (Split(a) == len(a)); a prefix followed by
	// 0x00 is never a data key's shape, so it is the next prefix.
	ImmediateSuccessor: func(dst, a []byte) []byte { return append(append(dst, a...), 0) },
	FormatKey:          pebble.DefaultComparer.FormatKey,
}

// splitVersion is the length of k's prefix (see Comparer).
func splitVersion(k []byte) int {
	n := len(k)
	if n >= 1+2+8 && k[0] == dataPrefix && k[n-10] == 0 && k[n-9] == 1 {
		return n - 8
	}
	return n
}

func compareVersioned(a, b []byte) int {
	an, bn := splitVersion(a), splitVersion(b)
	if c := bytes.Compare(a[:an], b[:bn]); c != 0 {
		return c
	}
	return bytes.Compare(a[an:], b[bn:])
}
