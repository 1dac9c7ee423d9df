package region

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/basaltdb/basalt/proto/metapb"
)

func describeTree(t *RegionTree) string {
	var parts []string
	t.Ascend(nil, func(r *metapb.Region) bool {
		parts = append(parts, fmtRegion(r))
		return true
	})
	return strings.Join(parts, " ")
}

func fmtRegion(r *metapb.Region) string {
	end := string(r.GetEndKey())
	if end == "" {
		end = "∞"
	}
	return fmt.Sprintf("%d[%s,%s)v%d/c%d", r.GetId(), r.GetStartKey(), end,
		r.GetRegionEpoch().GetVersion(), r.GetRegionEpoch().GetConfVer())
}

func fmtRegions(rs []*metapb.Region) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmtRegion(r))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func TestRegionTreeDataDriven(t *testing.T) {
	datadriven.RunTest(t, "testdata/tree", func(t *testing.T, d *datadriven.TestData) string {
		tree := treeUnderTest
		switch d.Cmd {
		case "reset":
			treeUnderTest = NewRegionTree()
			return "ok"
		case "update":
			var id, ver, conf uint64
			var start, end string
			d.ScanArgs(t, "id", &id)
			d.MaybeScanArgs(t, "start", &start)
			d.MaybeScanArgs(t, "end", &end)
			d.ScanArgs(t, "ver", &ver)
			d.ScanArgs(t, "conf", &conf)
			r := &metapb.Region{Id: id, StartKey: []byte(start), EndKey: []byte(end),
				RegionEpoch: &metapb.RegionEpoch{Version: ver, ConfVer: conf}}
			removed, err := tree.Update(r)
			if err != nil {
				return fmt.Sprintf("error: %v\ntree: %s", err, describeTree(tree))
			}
			return fmt.Sprintf("removed: %s\ntree: %s", fmtRegions(removed), describeTree(tree))
		case "search":
			var key string
			d.ScanArgs(t, "key", &key)
			if r := tree.Search([]byte(key)); r != nil {
				return fmtRegion(r)
			}
			return "none"
		case "prev":
			var key string
			d.ScanArgs(t, "key", &key)
			if r := tree.SearchPrev([]byte(key)); r != nil {
				return fmtRegion(r)
			}
			return "none"
		case "overlapping":
			var start, end string
			d.MaybeScanArgs(t, "start", &start)
			d.MaybeScanArgs(t, "end", &end)
			return fmtRegions(tree.Overlapping([]byte(start), []byte(end)))
		case "remove":
			var id uint64
			d.ScanArgs(t, "id", &id)
			return fmt.Sprintf("%v\ntree: %s", tree.Remove(id), describeTree(tree))
		}
		t.Fatalf("unknown command %q", d.Cmd)
		return ""
	})
}

var treeUnderTest = NewRegionTree()

// TestRegionTreeMatchesModel applies random updates and checks every lookup
// against a brute-force model: a plain list of regions, updated by the same
// replace-on-newer-epoch rule.
func TestRegionTreeMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tree := NewRegionTree()
	var model []*metapb.Region
	key := func() []byte { return []byte{byte('a' + rng.IntN(20))} }

	for step := 0; step < 5000; step++ {
		start, end := key(), key()
		if rng.IntN(8) == 0 {
			end = nil
		}
		if rng.IntN(8) == 0 {
			start = nil
		}
		if !ValidRange(start, end) {
			continue
		}
		r := &metapb.Region{Id: uint64(1 + rng.IntN(12)), StartKey: start, EndKey: end,
			RegionEpoch: &metapb.RegionEpoch{Version: uint64(rng.IntN(10)), ConfVer: uint64(rng.IntN(10))}}

		// Model: stale if same ID has a stale-making epoch or an overlap has a newer version.
		stale := false
		for _, m := range model {
			if m.GetId() == r.GetId() && IsStale(r.GetRegionEpoch(), m.GetRegionEpoch()) {
				stale = true
			}
			if m.GetId() != r.GetId() && Overlaps(m.GetStartKey(), m.GetEndKey(), start, end) &&
				r.GetRegionEpoch().GetVersion() < m.GetRegionEpoch().GetVersion() {
				stale = true
			}
		}
		_, err := tree.Update(r)
		if stale != (err == ErrStaleRegion) {
			t.Fatalf("step %d: update %s: model stale=%v, tree err=%v", step, fmtRegion(r), stale, err)
		}
		if !stale {
			var next []*metapb.Region
			for _, m := range model {
				if m.GetId() != r.GetId() && !Overlaps(m.GetStartKey(), m.GetEndKey(), start, end) {
					next = append(next, m)
				}
			}
			model = append(next, r)
			sort.Slice(model, func(i, j int) bool { return bytes.Compare(model[i].GetStartKey(), model[j].GetStartKey()) < 0 })
		}
		if tree.Len() != len(model) {
			t.Fatalf("step %d: tree has %d regions, model %d", step, tree.Len(), len(model))
		}
		for c := byte('a' - 1); c <= 'a'+21; c++ {
			k := []byte{c}
			var want *metapb.Region
			for _, m := range model {
				if ContainsKey(m, k) {
					want = m
				}
			}
			if got := tree.Search(k); got.GetId() != want.GetId() {
				t.Fatalf("step %d: search %q: got %v want %v", step, k, got, want)
			}
			qs, qe := key(), key()
			if !ValidRange(qs, qe) {
				continue
			}
			var wantOv []uint64
			for _, m := range model {
				if Overlaps(m.GetStartKey(), m.GetEndKey(), qs, qe) {
					wantOv = append(wantOv, m.GetId())
				}
			}
			var gotOv []uint64
			for _, o := range tree.Overlapping(qs, qe) {
				gotOv = append(gotOv, o.GetId())
			}
			if fmt.Sprint(gotOv) != fmt.Sprint(wantOv) {
				t.Fatalf("step %d: overlapping [%q,%q): got %v want %v", step, qs, qe, gotOv, wantOv)
			}
		}
	}
}

func TestClipUserRange(t *testing.T) {
	sys := string(SystemStart)
	for _, c := range []struct {
		key, end string
		k, e     string
		ok       bool
	}{
		{"a", "", "a", "", true},
		{"a", "b", "a", "b", true},
		{"\x00", "\x00", "\x00", sys, true},
		{"\xff", "", "\xff", "", true},
		{"a", "\xff\xff\xff\xff\xff", "a", sys, true},
		{"a", sys, "a", sys, true},
		{sys, "", "", "", false},
		{sys + "Lx", "\x00", "", "", false},
	} {
		k, e, ok := ClipUserRange([]byte(c.key), []byte(c.end))
		if ok != c.ok || string(k) != c.k || string(e) != c.e {
			t.Errorf("ClipUserRange(%q, %q) = %q, %q, %v; want %q, %q, %v", c.key, c.end, k, e, ok, c.k, c.e, c.ok)
		}
	}
	if !IsSystemKey(LeaseKey(7)) || IsSystemKey([]byte("\x00")) || IsSystemKey([]byte("\xff\xff\xff\xff")) {
		t.Fatal("lease keys must be system keys; 0x00 and four 0xff bytes must not")
	}
	if string(LeaseKey(1)) == string(LeaseKey(2)) {
		t.Fatal("lease keys collide")
	}
}
