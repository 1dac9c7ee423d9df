package raftstore

import (
	"bytes"
	"testing"

	"github.com/basaltdb/basalt/proto/metapb"
)

// The entry decoder takes whatever bytes a log holds: it never panics, and
// what it accepts re-encodes to the same bytes; a batch payload yields
// exactly the items it was built from.
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
		var rebuilt []byte
		for _, it := range items {
			rebuilt = appendBatchItem(rebuilt, it)
		}
		if !bytes.Equal(rebuilt, env.payload) {
			t.Fatalf("batch payload %x rebuilt as %x", env.payload, rebuilt)
		}
	})
}
