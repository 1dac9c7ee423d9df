package robustness

import (
	"strings"
	"testing"
	"time"

	"github.com/basaltdb/basalt/pd"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

func evPut(key, value string, create, mod, version, lease int64) *kvpb.Event {
	return &kvpb.Event{Type: kvpb.Event_PUT, Kv: &kvpb.KeyValue{Key: []byte(key), Value: []byte(value),
		CreateRevision: create, ModRevision: mod, Version: version, Lease: lease}}
}

func evDel(key string, mod int64) *kvpb.Event {
	return &kvpb.Event{Type: kvpb.Event_DELETE, Kv: &kvpb.KeyValue{Key: []byte(key), ModRevision: mod}}
}

// The replay checker accepts reads that return one revision's state and
// catches each kind of wrong one: a missing key, a wrong value or
// revision, a wrong count, a stale linearizable read, one going back in
// time; and watches that disagree.
func TestReplayCheck(t *testing.T) {
	a1 := evPut("rob/a", "1", 10, 10, 1, 0)
	b1 := evPut("rob/b", "x", 20, 20, 1, 0)
	c1 := evPut("rob/c", "u", 25, 25, 1, 0) // never acknowledged
	ad := evDel("rob/a", 30)
	a2 := evPut("rob/a", "2", 40, 40, 1, 0)
	resps := []watchcheck.Response{
		{Revision: 10, Events: []*kvpb.Event{a1}},
		{Revision: 20, Events: []*kvpb.Event{b1}},
		{Revision: 25, Events: []*kvpb.Event{c1}},
		{Revision: 30, Events: []*kvpb.Event{ad}},
		{Revision: 40, Events: []*kvpb.Event{a2}},
	}
	rp, errs := newReplay([][]watchcheck.Response{resps, resps[:3]}, []int64{40, 25})
	if len(errs) > 0 {
		t.Fatalf("agreeing watches: %v", errs)
	}
	acks := []ack{{"rob/a", 10, 100}, {"rob/b", 20, 200}, {"rob/a", 30, 300}, {"rob/a", 40, 400}}
	at25 := []kv{fromEvent(a1.Kv), fromEvent(b1.Kv), fromEvent(c1.Kv)}
	list := func(rev int64, lin bool, call, ret int64, kvs ...kv) readRecord {
		return readRecord{What: "list", Key: "rob/", End: "rob0", Rev: rev, KVs: kvs, Count: int64(len(kvs)), Linearizable: lin, Call: call, Return: ret}
	}
	good := []readRecord{
		list(25, true, 250, 260, at25...),
		list(15, false, 350, 360, fromEvent(a1.Kv)), // serializable: may lag
		list(45, true, 450, 460, fromEvent(b1.Kv), fromEvent(c1.Kv), fromEvent(a2.Kv)),
		{What: "lease get", Key: "rob/a", End: "rob/a\x00", Rev: 35, Count: -1, Linearizable: true, Call: 310, Return: 320},
	}
	good[2].KVs = []kv{fromEvent(a2.Kv), fromEvent(b1.Kv), fromEvent(c1.Kv)}
	if errs := checkReads(rp, good, acks); len(errs) > 0 {
		t.Fatalf("correct reads failed the check: %v", errs)
	}
	wrongValue := fromEvent(a1.Kv)
	wrongValue.Value = "9"
	wrongMod := fromEvent(b1.Kv)
	wrongMod.Mod = 21
	for name, tc := range map[string]struct {
		reads []readRecord
		want  string
	}{
		"missing key": {[]readRecord{list(25, true, 250, 260, at25[:2]...)}, "missing rob/c"},
		"extra key":   {[]readRecord{list(20, true, 250, 260, at25...)}, "which the writes do not give"},
		"wrong value": {[]readRecord{list(25, true, 250, 260, wrongValue, at25[1], at25[2])}, "the writes give"},
		"wrong mod":   {[]readRecord{list(25, true, 250, 260, at25[0], wrongMod, at25[2])}, "the writes give"},
		"wrong count": {[]readRecord{func() readRecord { r := list(25, true, 250, 260, at25...); r.Count = 4; return r }()}, "count 4"},
		// b@20 was acknowledged at 200, before the read began.
		"stale": {[]readRecord{list(15, true, 250, 260, fromEvent(a1.Kv))}, "is stale"},
		// The first read saw the unacknowledged c@25; the second began
		// after it returned and does not see it.
		"back in time": {[]readRecord{
			list(25, true, 250, 260, at25...),
			list(22, true, 270, 280, at25[:2]...),
		}, "is stale"},
		"stale single key": {[]readRecord{{What: "lease get", Key: "rob/a", End: "rob/a\x00", Rev: 12, KVs: []kv{fromEvent(a1.Kv)},
			Count: -1, Linearizable: true, Call: 310, Return: 320}}, "is stale"},
	} {
		errs := checkReads(rp, tc.reads, acks)
		found := false
		for _, err := range errs {
			found = found || strings.Contains(err.Error(), tc.want)
		}
		if !found {
			t.Errorf("%s: want an error containing %q, got %v", name, tc.want, errs)
		}
	}

	// Watches that disagree: one lost an event below what it vouched for,
	// one delivered a different value.
	b1other := evPut("rob/b", "y", 20, 20, 1, 0)
	other := []watchcheck.Response{resps[0], {Revision: 20, Events: []*kvpb.Event{b1other}}}
	if _, errs := newReplay([][]watchcheck.Response{resps, other}, []int64{40, 20}); len(errs) == 0 {
		t.Error("watches delivering different values passed")
	}
	if _, errs := newReplay([][]watchcheck.Response{resps, {resps[0], resps[2]}}, []int64{40, 25}); len(errs) == 0 {
		t.Error("a watch missing an event below its last revision passed")
	}
}

// A leased key may vanish only once its lease could have ended.
func TestLeaseDeleteCheck(t *testing.T) {
	granted := time.UnixMilli(1_000_000)
	ts := func(ms int64) int64 { return int64(pd.ComposeTS(granted.UnixMilli()+ms, 0)) }
	resps := []watchcheck.Response{
		{Revision: ts(10), Events: []*kvpb.Event{evPut("rob/a/lease", "v", ts(10), ts(10), 1, 7)}},
		{Revision: ts(1500), Events: []*kvpb.Event{evDel("rob/a/lease", ts(1500))}},
	}
	rp, errs := newReplay([][]watchcheck.Response{resps}, []int64{ts(1500)})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	expired := map[int64]*leaseRecord{7: {ID: 7, TTL: 2, GrantCall: granted}}
	if errs := checkLeaseDeletes(rp, expired); len(errs) == 0 {
		t.Error("a key deleted 1.5 s into a 2 s lease passed")
	}
	revoked := map[int64]*leaseRecord{7: {ID: 7, TTL: 2, GrantCall: granted, RevokeCall: granted.Add(time.Second)}}
	if errs := checkLeaseDeletes(rp, revoked); len(errs) > 0 {
		t.Errorf("a key deleted after its lease's revoke was called failed: %v", errs)
	}
	if errs := checkLeaseDeletes(rp, map[int64]*leaseRecord{}); len(errs) == 0 {
		t.Error("a key with a lease never granted passed")
	}
}

// A renewal moves the earliest end: a key deleted 3 s into a 2 s lease
// renewed at 1.5 s for 2 s more ended too early.
func TestLeaseDeleteCheckAfterRenewal(t *testing.T) {
	granted := time.UnixMilli(1_000_000)
	ts := func(ms int64) int64 { return int64(pd.ComposeTS(granted.UnixMilli()+ms, 0)) }
	resps := []watchcheck.Response{
		{Revision: ts(10), Events: []*kvpb.Event{evPut("rob/a/lease", "v", ts(10), ts(10), 1, 7)}},
		{Revision: ts(3000), Events: []*kvpb.Event{evDel("rob/a/lease", ts(3000))}},
	}
	rp, errs := newReplay([][]watchcheck.Response{resps}, []int64{ts(3000)})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	plain := map[int64]*leaseRecord{7: {ID: 7, TTL: 2, GrantCall: granted}}
	if errs := checkLeaseDeletes(rp, plain); len(errs) > 0 {
		t.Errorf("a key deleted after its 2 s lease ran out failed: %v", errs)
	}
	renewed := map[int64]*leaseRecord{7: {ID: 7, TTL: 2, GrantCall: granted, RenewCall: granted.Add(1500 * time.Millisecond), RenewTTL: 2}}
	if errs := checkLeaseDeletes(rp, renewed); len(errs) == 0 {
		t.Error("a key deleted 3 s into a lease renewed at 1.5 s for 2 s passed")
	}
}
