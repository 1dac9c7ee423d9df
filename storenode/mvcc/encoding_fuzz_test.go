package mvcc

import (
	"bytes"
	"testing"
)

// The MVCC key encoding: any user key and revision round-trip; the
// encoding keeps user-key order and, within a key, newest revision first;
// a key's prefix is a prefix of all its versions and of no other key's;
// and decoding arbitrary bytes never panics.
//
//	go test -run '^$' -fuzz FuzzVersionKey -fuzztime 10m ./storenode/mvcc/
func FuzzVersionKey(f *testing.F) {
	f.Add([]byte("a"), []byte("b"), int64(1), int64(2))
	f.Add([]byte{0}, []byte{0, 0}, int64(5), int64(5))
	f.Add([]byte{0, 0xff, 1}, []byte{0, 1}, int64(1)<<62, int64(0))
	f.Add([]byte{}, []byte{0xff}, int64(9), int64(8))
	f.Fuzz(func(t *testing.T, k1, k2 []byte, r1, r2 int64) {
		if r1 < 0 || r2 < 0 {
			return // revisions are never negative
		}
		for _, c := range []struct {
			k []byte
			r int64
		}{{k1, r1}, {k2, r2}} {
			vk := versionKey(c.k, c.r)
			key, rev, err := decodeVersionKey(vk)
			if err != nil || !bytes.Equal(key, c.k) || rev != c.r {
				t.Fatalf("versionKey(%x, %d) = %x decodes to %x, %d, %v", c.k, c.r, vk, key, rev, err)
			}
			if !bytes.HasPrefix(vk, keyPrefix(c.k)) || len(vk) != len(keyPrefix(c.k))+8 || versionRev(vk) != c.r {
				t.Fatalf("versionKey(%x, %d) = %x does not extend keyPrefix %x", c.k, c.r, vk, keyPrefix(c.k))
			}
		}
		v1, v2 := versionKey(k1, r1), versionKey(k2, r2)
		want := bytes.Compare(k1, k2)
		if want == 0 {
			// Same key: the newer revision sorts first.
			switch {
			case r1 > r2:
				want = -1
			case r1 < r2:
				want = 1
			}
		}
		if got := bytes.Compare(v1, v2); got != want {
			t.Fatalf("order of (%x, %d) and (%x, %d): encoded %d, want %d", k1, r1, k2, r2, got, want)
		}
		if !bytes.Equal(k1, k2) && bytes.HasPrefix(v2, keyPrefix(k1)) {
			t.Fatalf("keyPrefix(%x) is a prefix of a version of %x", k1, k2)
		}
		// Arbitrary bytes: an error or a key that encodes back.
		if key, rev, err := decodeVersionKey(k1); err == nil && rev >= 0 && !bytes.Equal(versionKey(key, rev), k1) {
			t.Fatalf("decodeVersionKey(%x) = %x, %d, which encodes to %x", k1, key, rev, versionKey(key, rev))
		}
	})
}
