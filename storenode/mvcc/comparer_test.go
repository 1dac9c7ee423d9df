package mvcc

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// comparerKeys: every shape of key the store writes or seeks with, over user
// keys that hold the escape's special bytes.
func comparerKeys(rng *rand.Rand) [][]byte {
	alphabet := []byte{0x00, 0x01, 0x02, 'a', 'z', 0xfe, 0xff}
	users := [][]byte{{}, {0}, {0, 0}, {1}, {0xff}, []byte("a"), []byte("ab")}
	for range 40 {
		u := make([]byte, rng.IntN(12))
		for i := range u {
			u[i] = alphabet[rng.IntN(len(alphabet))]
		}
		users = append(users, u)
	}
	revs := []int64{0, 1, 2, 255, 256, 1 << 40, math.MaxInt64 - 1, math.MaxInt64}
	keys := [][]byte{{dataPrefix}, {dataPrefix + 1}, {0x01}, {0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9}}
	for _, u := range users {
		p := keyPrefix(u)
		keys = append(keys, p, append(append([]byte(nil), p...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
		for _, r := range revs {
			keys = append(keys, versionKey(u, r))
		}
	}
	return keys
}

func sign(x int) int { return min(max(x, -1), 1) }

// TestComparerOrdersAsBytes: Comparer is pebble's prefix-then-suffix order,
// and on every key shape Basalt uses that is bytes.Compare's order, the
// order every database had before it.
func TestComparerOrdersAsBytes(t *testing.T) {
	keys := comparerKeys(rand.New(rand.NewPCG(7, 8)))
	for _, a := range keys {
		for _, b := range keys {
			got, want := sign(Comparer.Compare(a, b)), sign(bytes.Compare(a, b))
			if got != want {
				t.Fatalf("Compare(%x, %x) = %d, bytes.Compare %d", a, b, got, want)
			}
			if Comparer.Equal(a, b) != (want == 0) {
				t.Fatalf("Equal(%x, %x) disagrees", a, b)
			}
			if Comparer.AbbreviatedKey(a) < Comparer.AbbreviatedKey(b) && want >= 0 {
				t.Fatalf("AbbreviatedKey(%x) < AbbreviatedKey(%x), but the keys are not in that order", a, b)
			}
		}
	}
	// Data keys split at the user key; bounds and seek keys are all prefix.
	for _, u := range [][]byte{{}, {0}, {0, 1}, []byte("a\x00\x01b"), []byte("0123456789abcdef")} {
		p := keyPrefix(u)
		if n := Comparer.Split(p); n != len(p) {
			t.Fatalf("Split(keyPrefix(%x)) = %d of %d", u, n, len(p))
		}
		past := append(append([]byte(nil), p...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		if n := Comparer.Split(past); n != len(past) {
			t.Fatalf("Split of the seek past %x's versions = %d of %d", u, n, len(past))
		}
		for _, rev := range []int64{0, 1, 1 << 40, math.MaxInt64} {
			if k := versionKey(u, rev); Comparer.Split(k) != len(p) {
				t.Fatalf("Split(versionKey(%x, %d)) = %d, want %d", u, rev, Comparer.Split(k), len(p))
			}
		}
	}
	// All versions of one key share a prefix, and no two user keys do.
	a, b := versionKey([]byte("k\x00"), 5), versionKey([]byte("k\x00"), 9)
	if pa, pb := a[:Comparer.Split(a)], b[:Comparer.Split(b)]; !bytes.Equal(pa, pb) || !bytes.Equal(pa, keyPrefix([]byte("k\x00"))) {
		t.Fatalf("versions of one key split to %x and %x", pa, pb)
	}
}

// TestPrefixReadsMatchTheWalk: the same writes on a database ordered by
// Comparer (point reads seek by prefix through bloom filters) and on one
// ordered bytewise (point reads walk the key's versions) answer every read
// alike, at every revision, with the versions spread over memtables and
// flushed tables.
func TestPrefixReadsMatchTheWalk(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	byPrefix := newTestRegionOrderedBy(t, "", "", Comparer)
	byWalk := newTestRegionOrderedBy(t, "", "", pebble.DefaultComparer)
	if !byPrefix.m.prefixSeek || byWalk.m.prefixSeek {
		t.Fatal("the two regions do not read differently")
	}
	keys := make([][]byte, 30)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("k%02d\x00%c", i, 'a'+i%3))
	}
	const writes = 600
	for i := 1; i <= writes; i++ {
		k := keys[rng.IntN(len(keys))]
		var wc *kvpb.WriteCommand
		switch rng.IntN(10) {
		case 0:
			wc = &kvpb.WriteCommand{Op: &kvpb.WriteCommand_DeleteRange{DeleteRange: &kvpb.DeleteRangeRequest{Key: k}}}
		case 1:
			// Keeps the value: the put reads the previous version first.
			wc = &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: k, IgnoreValue: true, PrevKv: true}}}
		default:
			wc = &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: k, Value: []byte(fmt.Sprint(i)), PrevKv: true}}}
		}
		w2 := proto.Clone(wc).(*kvpb.WriteCommand)
		r1, r2 := byPrefix.apply(wc), byWalk.apply(w2)
		if fmt.Sprint(r1.Err, r1.Revision, r1.Response) != fmt.Sprint(r2.Err, r2.Revision, r2.Response) {
			t.Fatalf("write %d: %v %d %v against %v %d %v", i, r1.Err, r1.Revision, r1.Response, r2.Err, r2.Revision, r2.Response)
		}
		if i%97 == 0 {
			for _, tr := range []*testRegion{byPrefix, byWalk} {
				if err := tr.db.Flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	tables, err := byPrefix.db.SSTables()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, level := range tables {
		n += len(level)
	}
	if flushes := byPrefix.db.Metrics().Flush.Count; n == 0 || flushes < writes/97 {
		t.Fatalf("%d tables after %d flushes", n, flushes)
	}
	if f := byPrefix.db.Metrics().Filter; f.Hits == 0 {
		t.Fatalf("no read was answered by a bloom filter: %+v", f)
	}
	found := 0
	for rev := int64(1); rev <= byPrefix.region().Revision(); rev += 7 {
		for _, k := range append(keys, []byte("k00"), []byte("k99")) {
			rec1, m1, ok1, err1 := byPrefix.m.get(byPrefix.db, k, rev)
			rec2, m2, ok2, err2 := byWalk.m.get(byWalk.db, k, rev)
			if err1 != nil || err2 != nil || ok1 != ok2 || m1 != m2 || fmt.Sprint(rec1) != fmt.Sprint(rec2) {
				t.Fatalf("get %q at %d: %v %d %v %v against %v %d %v %v", k, rev, rec1, m1, ok1, err1, rec2, m2, ok2, err2)
			}
			if ok1 {
				found++
			}
		}
		req := &kvpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Revision: rev}
		r1, err1 := byPrefix.m.Range(byPrefix.region(), req, byPrefix.region().Revision())
		r2, err2 := byWalk.m.Range(byWalk.region(), req, byWalk.region().Revision())
		if fmt.Sprint(r1.GetKvs(), r1.GetCount(), err1) != fmt.Sprint(r2.GetKvs(), r2.GetCount(), err2) {
			t.Fatalf("range at %d: %v against %v", rev, r1, r2)
		}
	}
	if found == 0 {
		t.Fatal("no read found a version")
	}
}

// TestComparerIsFrozen: the comparer's name and Split are on disk (tables'
// bloom filters hold Split prefixes, the database records the name). A
// change that kept the name would make old filters deny keys they hold, so
// a put would lose its key's previous version without an error. Never
// change these answers; add a comparer under a new name instead.
func TestComparerIsFrozen(t *testing.T) {
	if Comparer.Name != "basalt.VersionedKeyComparator.v1" {
		t.Fatalf("the comparer's name changed to %q", Comparer.Name)
	}
	for _, c := range []struct {
		hex   string
		split int
	}{
		{"7a", 1},                                      // the data space's start
		{"7b", 1},                                      // its end
		{"7a6b0001", 4},                                // keyPrefix("k")
		{"7a6b0001fffffffffffffffffe", 13},             // keyPrefix("k") + 9 bytes: not a data key
		{"7a6b0001fffffffffffffff5", 4},                // versionKey("k", 10)
		{"7a6b00ff6a0001fffffffffffffff5", 7},          // versionKey("k\x00j", 10)
		{"7a0001fffffffffffffffe", 3},                  // versionKey("", 1)
		{"7a0001", 3},                                  // keyPrefix("")
		{"01020000000000000001000000000000000009", 19}, // a raft key
		{"0100000000000000000001ffffffffffffffff", 19}, // shaped like a data key outside 'z'
	} {
		k, err := hex.DecodeString(c.hex)
		if err != nil {
			t.Fatal(err)
		}
		if got := Comparer.Split(k); got != c.split {
			t.Fatalf("Split(%s) = %d, frozen at %d", c.hex, got, c.split)
		}
	}
}
