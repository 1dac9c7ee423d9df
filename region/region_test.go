package region

import (
	"errors"
	"fmt"
	"testing"

	"github.com/basaltdb/basalt/proto/metapb"
)

func TestRangeHelpers(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	cases := []struct {
		name string
		got  bool
		want bool
	}{
		{"contains start", Contains(b("a"), b("c"), b("a")), true},
		{"excludes end", Contains(b("a"), b("c"), b("c")), false},
		{"unbounded end", Contains(b("a"), nil, b("zzzz")), true},
		{"below start", Contains(b("b"), nil, b("a")), false},
		{"touching ranges do not overlap", Overlaps(b("a"), b("b"), b("b"), b("c")), false},
		{"overlap", Overlaps(b("a"), b("c"), b("b"), nil), true},
		{"unbounded overlap", Overlaps(nil, nil, b("x"), b("y")), true},
		{"contains range", ContainsRange(b("a"), nil, b("b"), b("c")), true},
		{"range past end", ContainsRange(b("a"), b("c"), b("b"), nil), false},
		{"invalid range", ValidRange(b("b"), b("a")), false},
		{"empty range invalid", ValidRange(b("a"), b("a")), false},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: got %v want %v", c.name, c.got, c.want)
		}
	}
	if CompareEnd(nil, b("z")) != 1 || CompareEnd(b("a"), nil) != -1 || CompareEnd(nil, nil) != 0 {
		t.Error("CompareEnd does not treat empty as +infinity")
	}
	if got := ExclusiveEnd(b("k"), nil); string(got) != "k\x00" {
		t.Errorf("ExclusiveEnd of a single key: %q", got)
	}
	if got := ExclusiveEnd(b("k"), []byte{0}); got != nil {
		t.Errorf("ExclusiveEnd to the end of the key space: %q", got)
	}
	if got := EtcdRangeEnd(ExclusiveEnd(b("k"), b("m"))); string(got) != "m" {
		t.Errorf("EtcdRangeEnd round trip: %q", got)
	}
	if got := EtcdRangeEnd(nil); string(got) != "\x00" {
		t.Errorf("EtcdRangeEnd(unbounded) = %q", got)
	}
}

func TestEpochCheckTable(t *testing.T) {
	cur := &metapb.RegionEpoch{Version: 5, ConfVer: 7}
	newerConf := &metapb.RegionEpoch{Version: 5, ConfVer: 6}
	olderVer := &metapb.RegionEpoch{Version: 4, ConfVer: 7}
	// A write only cares about the key range, so only version matters.
	if !CheckEpoch(CmdWrite, newerConf, cur) {
		t.Error("a write must not fail on a conf_ver change")
	}
	if CheckEpoch(CmdWrite, olderVer, cur) {
		t.Error("a write must fail after a split")
	}
	// A membership change cares about membership only.
	if !CheckEpoch(CmdChangePeer, olderVer, cur) || CheckEpoch(CmdChangePeer, newerConf, cur) {
		t.Error("change peer checks conf_ver only")
	}
	if CheckEpoch(CmdSplit, newerConf, cur) || CheckEpoch(CmdSplit, olderVer, cur) {
		t.Error("split checks both")
	}
	if !CheckEpoch(CmdCompactLog, &metapb.RegionEpoch{}, cur) {
		t.Error("compact log checks nothing")
	}
	if !IsStale(olderVer, cur) || IsStale(cur, cur) || !EpochEqual(cur, cur) {
		t.Error("IsStale/EpochEqual")
	}
}

func TestErrorsMatchByKind(t *testing.T) {
	leader := &metapb.Peer{Id: 3, StoreId: 2}
	err := fmt.Errorf("propose: %w", NotLeader(9, leader))
	if !errors.Is(err, ErrNotLeader) {
		t.Fatal("wrapped NotLeader does not match ErrNotLeader")
	}
	if errors.Is(err, ErrEpochNotMatch) {
		t.Fatal("NotLeader matches ErrEpochNotMatch")
	}
	var re *Error
	if !errors.As(err, &re) || re.Proto().GetNotLeader().GetLeader().GetStoreId() != 2 {
		t.Fatal("details lost")
	}
	if got := NotLeader(9, leader).Error(); got != "region 9: not leader; leader is peer 3 on store 2" {
		t.Fatalf("message: %q", got)
	}
	rt := FromProto(EpochNotMatch(&metapb.Region{Id: 4}).Proto())
	if !errors.Is(rt, ErrEpochNotMatch) || len(rt.Proto().GetEpochNotMatch().GetCurrentRegions()) != 1 {
		t.Fatal("round trip through proto")
	}
	if FromProto(nil) != nil {
		t.Fatal("FromProto(nil) must be nil")
	}
}
