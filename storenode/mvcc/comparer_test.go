package mvcc

import (
	"bytes"
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
		n := Comparer.Split(a)
		if isData := len(a) >= 11 && a[0] == dataPrefix && bytes.Equal(a[n:], a[len(a)-8:]) && n == len(a)-8; !isData && n != len(a) {
			t.Fatalf("Split(%x) = %d", a, n)
		}
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
	// Data keys split at the user key: all versions of one key share a
	// prefix, and no two user keys do.
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
