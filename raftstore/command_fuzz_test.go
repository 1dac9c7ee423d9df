package raftstore

import (
	"bytes"
	"testing"

	"github.com/basaltdb/basalt/proto/metapb"
)

// The entry decoder takes whatever bytes a log holds: it never panics, an
// envelope it accepts re-encodes to the same bytes, and a batch payload's
// items survive being rebuilt.
//
//	go test -run '^$' -fuzz FuzzDecodeEnvelope -fuzztime 10m ./raftstore/
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(encodeEnvelope(cmdUser, 7, &metapb.RegionEpoch{Version: 2, ConfVer: 3}, []byte("payload")))
	f.Add(encodeEnvelope(cmdUserBatch, 1, &metapb.RegionEpoch{}, appendBatchItem(appendBatchItem(nil, []byte("a")), []byte("bc"))))
	f.Add([]byte{})
	f.Add([]byte{1, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := decodeEnvelope(data)
		if id, ok := peekProposalID(data); ok != (err == nil) || (ok && id != env.proposalID) {
			t.Fatalf("peekProposalID disagrees with decodeEnvelope: %v %v %v", id, ok, err)
		}
		if err != nil {
			return
		}
		if re := encodeEnvelope(env.kind, env.proposalID, env.epoch(), env.payload); !bytes.Equal(re, data) {
			t.Fatalf("re-encoded %x, decoded from %x", re, data)
		}
		var items [][]byte
		if err := forEachBatchItem(env.payload, func(i int, cmd []byte) {
			if i != len(items) {
				t.Fatalf("item %d after %d items", i, len(items))
			}
			items = append(items, cmd)
		}); err != nil {
			return
		}
		// The encoder writes canonical lengths; the decoder also takes
		// overlong ones (binary.Uvarint does), so the property is that the
		// items survive a rebuild, not the bytes.
		var rebuilt []byte
		for _, it := range items {
			rebuilt = appendBatchItem(rebuilt, it)
		}
		var again [][]byte
		if err := forEachBatchItem(rebuilt, func(_ int, cmd []byte) { again = append(again, cmd) }); err != nil || len(again) != len(items) {
			t.Fatalf("rebuilt batch %x: %v, %d items of %d", rebuilt, err, len(again), len(items))
		}
		for i := range items {
			if !bytes.Equal(again[i], items[i]) {
				t.Fatalf("item %d: %x rebuilt as %x", i, items[i], again[i])
			}
		}
	})
}
