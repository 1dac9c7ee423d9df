package raftstore

import (
	"encoding/binary"
	"fmt"
)

// The pebble key layout of a store. One pebble DB holds every region's raft
// state and data; a split moves no data because data keys do not carry a
// region ID. This table is frozen: add prefixes and suffixes, never change
// what an existing one means.
//
//	key                                   value                     written
//	0x00 'i'                              StoreIdent                once, synced
//	0x00 'b'                              metapb.Region             while bootstrapping the cluster
//	0x01 | regionID | 0x01                raftpb.HardState          raft batch, synced
//	0x01 | regionID | 0x02 | index        log entry (encodeEntry)   raft batch, synced
//	0x01 | regionID | 0x03                RaftTruncatedState        apply batch or snapshot
//	0x01 | regionID | 0x04                RaftApplyState            apply batch, unsynced
//	0x02 | regionID | 0x01                RegionLocalState          apply batch, unsynced
//	'z' ...                               state-machine data        apply batch, unsynced
//
// regionID and index are 8-byte big-endian. The state machine owns the 'z'
// space (StateMachine.DataSpans maps a region's key range into it).
//
// What must be persisted before what:
//   - Entries and HardState are synced before the messages that acknowledge
//     them (MsgAppResp, MsgVoteResp) are sent.
//   - The apply batch (data, applied index, region state) is unsynced; it is
//     written after the raft batch holding its entries, and pebble's WAL is
//     ordered, so a crash loses a suffix of applies that replay restores.
//   - Log truncation rides in the apply batch after the applied index that
//     covers it, so a truncation never survives a crash that lost the applies.
const (
	storeIdentKey       = "\x00i"
	prepareBootstrapKey = "\x00b"

	raftLocalPrefix  = 0x01
	regionMetaPrefix = 0x02

	hardStateSuffix      = 0x01
	logEntrySuffix       = 0x02
	truncatedStateSuffix = 0x03
	applyStateSuffix     = 0x04

	regionStateSuffix = 0x01
)

func raftLocalKey(regionID uint64, suffix byte) []byte {
	k := make([]byte, 10)
	k[0] = raftLocalPrefix
	binary.BigEndian.PutUint64(k[1:], regionID)
	k[9] = suffix
	return k
}

func hardStateKey(regionID uint64) []byte      { return raftLocalKey(regionID, hardStateSuffix) }
func truncatedStateKey(regionID uint64) []byte { return raftLocalKey(regionID, truncatedStateSuffix) }
func applyStateKey(regionID uint64) []byte     { return raftLocalKey(regionID, applyStateSuffix) }

func logKey(regionID, index uint64) []byte {
	return appendLogKey(make([]byte, 0, 18), regionID, index)
}

func appendLogKey(dst []byte, regionID, index uint64) []byte {
	dst = append(dst, raftLocalPrefix)
	dst = binary.BigEndian.AppendUint64(dst, regionID)
	dst = append(dst, logEntrySuffix)
	return binary.BigEndian.AppendUint64(dst, index)
}

func logIndexFromKey(k []byte) uint64 {
	if len(k) != 18 || k[0] != raftLocalPrefix || k[9] != logEntrySuffix {
		panic(fmt.Sprintf("raftstore: not a log key: %x", k))
	}
	return binary.BigEndian.Uint64(k[10:])
}

// raftLocalSpan covers every raft-local key of a region.
func raftLocalSpan(regionID uint64) Span {
	lo := make([]byte, 9)
	lo[0] = raftLocalPrefix
	binary.BigEndian.PutUint64(lo[1:], regionID)
	return Span{Start: lo, End: prefixEnd(lo)}
}

func regionStateKey(regionID uint64) []byte {
	k := make([]byte, 10)
	k[0] = regionMetaPrefix
	binary.BigEndian.PutUint64(k[1:], regionID)
	k[9] = regionStateSuffix
	return k
}

// regionMetaSpan covers every region's RegionLocalState.
func regionMetaSpan() Span {
	return Span{Start: []byte{regionMetaPrefix}, End: []byte{regionMetaPrefix + 1}}
}

func regionIDFromStateKey(k []byte) (uint64, bool) {
	if len(k) != 10 || k[0] != regionMetaPrefix || k[9] != regionStateSuffix {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:9]), true
}

// Span is a half-open pebble key range [Start, End).
type Span struct {
	Start, End []byte
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	panic("raftstore: prefixEnd of an all-0xff prefix")
}
