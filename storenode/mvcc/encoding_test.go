package mvcc

import (
	"bytes"
	"math/rand/v2"
	"sort"
	"testing"
)

func TestEscapedKeysKeepOrderAndRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var keys [][]byte
	for i := 0; i < 2000; i++ {
		k := make([]byte, rng.IntN(6))
		for j := range k {
			k[j] = []byte{0, 1, 0xff, 'a'}[rng.IntN(4)]
		}
		keys = append(keys, k)
	}
	for _, k := range keys {
		rev := int64(rng.Uint64() >> 2)
		got, r, err := decodeVersionKey(versionKey(k, rev))
		if err != nil || !bytes.Equal(got, k) || r != rev {
			t.Fatalf("round trip %x@%d: %x@%d %v", k, rev, got, r, err)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return bytes.Compare(keys[i], keys[j]) < 0 })
	for i := 1; i < len(keys); i++ {
		a, b := keys[i-1], keys[i]
		// Every version of a smaller key sorts before every version of a
		// larger key, whatever the revisions.
		if !bytes.Equal(a, b) && bytes.Compare(versionKey(a, 1), versionKey(b, 1<<60)) >= 0 {
			t.Fatalf("%x@1 does not sort before %x@2^60", a, b)
		}
		if bytes.HasPrefix(keyPrefix(b), keyPrefix(a)) && !bytes.Equal(a, b) {
			t.Fatalf("escaped %x is a prefix of escaped %x", a, b)
		}
	}
	// Newer revisions of a key sort first.
	if bytes.Compare(versionKey([]byte("k"), 10), versionKey([]byte("k"), 9)) >= 0 {
		t.Fatal("revision 10 does not sort before revision 9")
	}
}

func TestRecordAndStateRoundTrip(t *testing.T) {
	r := record{createRev: 5, version: 3, lease: 77, tombstone: true, value: []byte("v")}
	got, err := decodeRecord(appendRecord(nil, r))
	if err != nil || got.createRev != 5 || got.version != 3 || got.lease != 77 || !got.tombstone || string(got.value) != "v" {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := decodeRecord([]byte{9, 0}); err == nil {
		t.Fatal("unknown format accepted")
	}
	st := regionState{lastRev: 1 << 50, compactRev: 12}
	if decodeRegionState(st.encode()) != st {
		t.Fatal("region state round trip")
	}
	if decodeRegionState(nil) != (regionState{}) {
		t.Fatal("empty region state")
	}
}
