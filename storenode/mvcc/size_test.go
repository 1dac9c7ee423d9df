package mvcc

import (
	"fmt"
	"strings"
	"testing"
)

func TestScanForSplit(t *testing.T) {
	tr := newTestRegion(t, "", "")
	r := tr.region()
	if r.Size().Known {
		t.Fatal("a region never scanned cannot know its size")
	}
	val := strings.Repeat("v", 100)
	for i := 0; i < 100; i++ {
		tr.put(fmt.Sprintf("k%03d", i), val)
	}
	// A key rewritten many times: its versions must stay together.
	for i := 0; i < 30; i++ {
		tr.put("k050", val)
	}
	sz := r.Size().Approx
	if sz.Versions != 130 || sz.Bytes < 130*100 {
		t.Fatalf("size from writes: %+v", sz)
	}
	whole, err := tr.m.ScanForSplit(r, RegionSize{})
	if err != nil {
		t.Fatal(err)
	}
	if whole.Size != sz || len(whole.Keys) != 0 {
		t.Fatalf("scan %+v, counted from writes %+v", whole, sz)
	}
	if info := r.Size(); !info.Known || info.Written != (RegionSize{}) || info.Approx != sz {
		t.Fatalf("just scanned: %+v", info)
	}
	chunks, err := tr.m.ScanForSplit(r, RegionSize{Versions: 20})
	if err != nil {
		t.Fatal(err)
	}
	// Chunks of 20 versions, except that k050's 31 versions stay in one.
	var got []string
	for _, k := range chunks.Keys {
		got = append(got, string(k))
	}
	if want := "[k020 k040 k051 k071 k091]"; fmt.Sprint(got) != want {
		t.Fatalf("split keys %v, want %s", got, want)
	}
	var pieces []int64
	for _, c := range chunks.Chunks {
		pieces = append(pieces, c.Versions)
	}
	if want := "[20 20 41 20 20 9]"; fmt.Sprint(pieces) != want {
		t.Fatalf("chunk versions %v, want %s", pieces, want)
	}
	mid, err := tr.m.MiddleKey(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(mid) != "k051" { // k000..k050 hold 81 of 130 equal-sized versions: past half at k050
		t.Fatalf("middle key %q", mid)
	}
	// Writes add to the approximation; GC marks it stale.
	tr.put("k001", val)
	if info := r.Size(); info.Written.Versions != 1 || info.Approx.Versions != 131 || info.Stale {
		t.Fatalf("after one write: %+v", info)
	}
	tr.compact(tr.region().Revision())
	tr.collectGarbage(tr.region().Revision())
	if !r.Size().Stale {
		t.Fatal("a GC should mark the size stale")
	}
	after, _ := tr.m.ScanForSplit(r, RegionSize{})
	if after.Size.Versions != 100 {
		t.Fatalf("after GC the region holds %d versions, want 100", after.Size.Versions)
	}
}

func TestMiddleKeyOfTinyRegion(t *testing.T) {
	tr := newTestRegion(t, "", "")
	if k, err := tr.m.MiddleKey(tr.region()); err != nil || k != nil {
		t.Fatalf("empty region: %q %v", k, err)
	}
	tr.put("only", "1")
	tr.put("only", "2")
	if k, err := tr.m.MiddleKey(tr.region()); err != nil || k != nil {
		t.Fatalf("one key: %q %v", k, err)
	}
}
