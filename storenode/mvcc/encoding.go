// Package mvcc is etcd's data model on Basalt's regions: every key keeps
// versions with create_revision, mod_revision, version and lease; writes
// apply through a region's Raft log at a revision from PD's TSO; reads
// happen at any revision the region has not compacted.
package mvcc

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/basaltdb/basalt/raftstore"
)

// Data layout (in the 'z' space the raftstore leaves to the state machine;
// frozen once written):
//
//	key   = 'z' | escape(user key) | ^revision (8 bytes, big-endian)
//	value = 0x01 (format) | flags | uvarint(create_revision) |
//	        uvarint(version) | uvarint(lease) | value bytes
//
// escape() maps every 0x00 byte to 0x00 0xFF and ends the key with
// 0x00 0x01: it keeps byte order and no escaped key is a prefix of another,
// so a region's key range [start, end) is exactly the pebble span
// ['z'|escape(start), 'z'|escape(end)) and all versions of a key sit
// together, newest first (^revision ascends as revision descends).
// flags bit 0 marks a tombstone: the key was deleted at that revision.
const (
	dataPrefix    = 'z'
	valueFormatV1 = 1
	flagTombstone = 1
)

func appendEscaped(dst, key []byte) []byte {
	for _, b := range key {
		if b == 0 {
			dst = append(dst, 0, 0xff)
		} else {
			dst = append(dst, b)
		}
	}
	return append(dst, 0, 1)
}

// keyPrefix is 'z' | escape(key): every version of key starts with it.
func keyPrefix(key []byte) []byte {
	return appendEscaped(append(make([]byte, 0, len(key)+3), dataPrefix), key)
}

// versionKey is the pebble key of key at revision rev.
func versionKey(key []byte, rev int64) []byte {
	k := appendEscaped(append(make([]byte, 0, len(key)+11), dataPrefix), key)
	return binary.BigEndian.AppendUint64(k, ^uint64(rev))
}

var errBadKey = errors.New("mvcc: malformed data key")

// decodeVersionKey splits a pebble data key into user key and revision.
func decodeVersionKey(k []byte) (key []byte, rev int64, err error) {
	if len(k) < 1+2+8 || k[0] != dataPrefix {
		return nil, 0, errBadKey
	}
	body := k[1 : len(k)-8]
	key = make([]byte, 0, len(body))
	for i := 0; i < len(body); i++ {
		if body[i] != 0 {
			key = append(key, body[i])
			continue
		}
		if i+1 >= len(body) {
			return nil, 0, errBadKey
		}
		switch body[i+1] {
		case 0xff:
			key = append(key, 0)
			i++
		case 1:
			if i+2 != len(body) {
				return nil, 0, errBadKey
			}
			return key, int64(^binary.BigEndian.Uint64(k[len(k)-8:])), nil
		default:
			return nil, 0, errBadKey
		}
	}
	return nil, 0, errBadKey
}

// prefixOf returns the 'z'|escape(key) part of a data key.
func prefixOf(k []byte) []byte { return k[:len(k)-8] }

// DataSpans implements raftstore.StateMachine: a region's data is the span
// of its escaped keys.
func DataSpans(start, end []byte) []raftstore.Span {
	sp := raftstore.Span{Start: []byte{dataPrefix}, End: []byte{dataPrefix + 1}}
	if len(start) > 0 {
		sp.Start = keyPrefix(start)
	}
	if len(end) > 0 {
		sp.End = keyPrefix(end)
	}
	return []raftstore.Span{sp}
}

// record is one stored version of a key.
type record struct {
	createRev int64
	version   int64
	lease     int64
	tombstone bool
	value     []byte
}

func appendRecord(dst []byte, r record) []byte {
	flags := byte(0)
	if r.tombstone {
		flags |= flagTombstone
	}
	dst = append(dst, valueFormatV1, flags)
	dst = binary.AppendUvarint(dst, uint64(r.createRev))
	dst = binary.AppendUvarint(dst, uint64(r.version))
	dst = binary.AppendUvarint(dst, uint64(r.lease))
	return append(dst, r.value...)
}

func decodeRecord(v []byte) (record, error) {
	if len(v) < 2 || v[0] != valueFormatV1 {
		return record{}, fmt.Errorf("mvcc: unknown value format")
	}
	r := record{tombstone: v[1]&flagTombstone != 0}
	v = v[2:]
	var fields [3]uint64
	for i := range fields {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			return record{}, fmt.Errorf("mvcc: corrupt value")
		}
		fields[i] = x
		v = v[n:]
	}
	r.createRev, r.version, r.lease = int64(fields[0]), int64(fields[1]), int64(fields[2])
	r.value = v
	return r, nil
}

// regionState is the per-region state the raftstore persists with the
// applied index (raftstore.Command.State):
//
//	0x01 | uvarint(last applied revision) | uvarint(compaction revision)
type regionState struct {
	lastRev    int64
	compactRev int64
}

func decodeRegionState(b []byte) regionState {
	if len(b) == 0 || b[0] != 1 {
		return regionState{}
	}
	b = b[1:]
	last, n := binary.Uvarint(b)
	if n <= 0 {
		return regionState{}
	}
	comp, _ := binary.Uvarint(b[n:])
	return regionState{lastRev: int64(last), compactRev: int64(comp)}
}

func (s regionState) encode() []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, uint64(s.lastRev))
	return binary.AppendUvarint(b, uint64(s.compactRev))
}
