package raftstore

import (
	"encoding/binary"
	"fmt"

	"github.com/basaltdb/basalt/proto/metapb"
)

// The data of every normal entry Basalt proposes, and the context of every
// ConfChangeV2 it proposes, starts with a fixed header so that a leader can
// find its own proposals in Ready.Entries without decoding a protobuf:
//
//	offset size
//	0      1    format version (1)
//	1      1    command kind (cmdUser, cmdAdmin, cmdChangePeers, cmdUserBatch)
//	2      8    proposal ID (big-endian), unique per proposing store
//	10     8    region epoch version
//	18     8    region epoch conf_ver
//	26     -    payload: user bytes, a raftcmdpb.AdminRequest, a raftcmdpb.ChangePeers,
//	            or for cmdUserBatch several user commands, each uvarint(len) bytes
//
// A cmdUserBatch entry carries the writes a leader received for a region in
// one round: they apply in order at the entry's index, as if they were
// consecutive entries, but cost the log one entry.
//
// Entries with empty data are raft's own (a new leader's empty entry). The
// format is frozen: a new field needs a new version byte.
const (
	envelopeVersion = 1
	envelopeLen     = 26

	cmdUser        byte = 1
	cmdAdmin       byte = 2
	cmdChangePeers byte = 3
	cmdUserBatch   byte = 4
)

type envelope struct {
	kind             byte
	proposalID       uint64
	version, confVer uint64
	payload          []byte
}

// epoch returns the region epoch the command was proposed under.
func (e *envelope) epoch() *metapb.RegionEpoch {
	return &metapb.RegionEpoch{Version: e.version, ConfVer: e.confVer}
}

func encodeEnvelope(kind byte, proposalID uint64, epoch *metapb.RegionEpoch, payload []byte) []byte {
	b := make([]byte, envelopeLen, envelopeLen+len(payload))
	b[0] = envelopeVersion
	b[1] = kind
	binary.BigEndian.PutUint64(b[2:], proposalID)
	binary.BigEndian.PutUint64(b[10:], epoch.GetVersion())
	binary.BigEndian.PutUint64(b[18:], epoch.GetConfVer())
	return append(b, payload...)
}

func decodeEnvelope(b []byte) (envelope, error) {
	if len(b) < envelopeLen {
		return envelope{}, fmt.Errorf("raftstore: entry of %d bytes is shorter than the envelope", len(b))
	}
	if b[0] != envelopeVersion {
		return envelope{}, fmt.Errorf("raftstore: unknown envelope version %d", b[0])
	}
	return envelope{
		kind:       b[1],
		proposalID: binary.BigEndian.Uint64(b[2:]),
		version:    binary.BigEndian.Uint64(b[10:]),
		confVer:    binary.BigEndian.Uint64(b[18:]),
		payload:    b[envelopeLen:],
	}, nil
}

// peekProposalID reads the proposal ID of an envelope without validating the
// rest; ok is false for data that is not an envelope.
func peekProposalID(b []byte) (id uint64, ok bool) {
	if len(b) < envelopeLen || b[0] != envelopeVersion {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[2:]), true
}

// appendBatchItem adds one user command to a cmdUserBatch payload.
func appendBatchItem(dst, cmd []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(cmd)))
	return append(dst, cmd...)
}

// forEachBatchItem calls fn for each user command of a cmdUserBatch payload.
func forEachBatchItem(payload []byte, fn func(i int, cmd []byte)) error {
	for i := 0; len(payload) > 0; i++ {
		n, w := binary.Uvarint(payload)
		if w <= 0 || uint64(len(payload)-w) < n {
			return fmt.Errorf("raftstore: corrupt batch entry at item %d", i)
		}
		fn(i, payload[w:w+int(n)])
		payload = payload[w+int(n):]
	}
	return nil
}
