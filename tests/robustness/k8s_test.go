package robustness

import (
	"strings"
	"testing"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

func withPrev(e *kvpb.Event, prev *kvpb.Event) *kvpb.Event {
	e.PrevKv = prev.GetKv()
	return e
}

// errorsContain says whether one of errs contains want.
func errorsContain(errs []error, want string) bool {
	for _, err := range errs {
		if strings.Contains(err.Error(), want) {
			return true
		}
	}
	return false
}

// The conditional writes' checker accepts a history where every write took
// effect only where its condition held, and catches each wrong one: an
// update that succeeded though another write came between, a create over
// an existing key, a delete of a version nobody compared, a conflict
// reported where the compare held, a write reported failed that took
// effect, an acknowledged write the watches never saw or saw at another
// revision, one below a write of its key acknowledged before it was sent.
func TestK8sCheck(t *testing.T) {
	a := k8sPrefix + "a"
	create := evPut(a, "v1", 10, 10, 1, 0)
	update := evPut(a, "v2", 10, 20, 2, 0)
	unknownUpdate := evPut(a, "v3", 10, 30, 3, 0) // its call failed
	del := evDel(a, 40)
	recreate := evPut(a, "v4", 50, 50, 1, 0)
	events := []*kvpb.Event{create, update, unknownUpdate, del, recreate}
	replayOf := func(evs ...*kvpb.Event) *replay {
		var resps []watchcheck.Response
		for _, e := range evs {
			resps = append(resps, watchcheck.Response{Revision: e.Kv.ModRevision, Events: []*kvpb.Event{e}})
		}
		rp, errs := newReplay([][]watchcheck.Response{resps}, []int64{evs[len(evs)-1].Kv.ModRevision})
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		return rp
	}
	rp := replayOf(events...)
	good := []k8sWrite{
		{Kind: "create", Client: 0, Key: a, Value: "v1", Succeeded: true, Rev: 10, Call: 100},
		{Kind: "update", Client: 1, Key: a, Value: "v2", Seen: 10, Succeeded: true, Rev: 20, Call: 110},
		// Lost the race to v2: at 25 the key's mod revision is 20.
		{Kind: "update", Client: 2, Key: a, Value: "x", Seen: 10, Rev: 25},
		{Kind: "update", Client: 2, Key: a, Value: "v3", Seen: 20, Unknown: true},
		// An unknown update that did not take effect.
		{Kind: "update", Client: 3, Key: a, Value: "y", Seen: 20, Unknown: true},
		{Kind: "delete", Client: 0, Key: a, Seen: 30, Succeeded: true, Rev: 40, Call: 300},
		{Kind: "create", Client: 1, Key: a, Value: "z", Rev: 35}, // existed at 35
		{Kind: "delete", Client: 1, Key: a, Seen: 20, Rev: 45},   // absent at 45
		{Kind: "create", Client: 2, Key: a, Value: "v4", Succeeded: true, Rev: 50, Call: 500},
	}
	acks := []ack{{a, 10, 105}, {a, 20, 205}, {a, 40, 405}, {a, 50, 505}}
	if errs := checkK8s(rp, good, acks); len(errs) > 0 {
		t.Fatalf("a correct history failed the check: %v", errs)
	}
	with := func(i int, w k8sWrite) []k8sWrite {
		ws := append([]k8sWrite(nil), good...)
		ws[i] = w
		return ws
	}
	for name, tc := range map[string]struct {
		rp     *replay
		writes []k8sWrite
		want   string
	}{
		// v3's update compared 10, but v2 was written at 20 between.
		"update after another write": {rp, with(3, k8sWrite{Kind: "update", Client: 2, Key: a, Value: "v3", Seen: 10, Succeeded: true, Rev: 30}),
			"another write came between"},
		// v4's create took effect after v3 with no delete between.
		"create over a key": {replayOf(create, update, unknownUpdate, recreate), append(append([]k8sWrite(nil), good[:5]...), good[8]),
			"though the key existed"},
		"delete of another version": {rp, with(5, k8sWrite{Kind: "delete", Client: 0, Key: a, Seen: 20, Succeeded: true, Rev: 40}),
			"not the one compared"},
		"unknown delete of another version": {rp, with(5, k8sWrite{Kind: "delete", Client: 0, Key: a, Seen: 20, Unknown: true}),
			"no delete that compared"},
		"conflict where the compare held": {rp, with(2, k8sWrite{Kind: "update", Client: 2, Key: a, Value: "x", Seen: 20, Rev: 25}),
			"was the one compared"},
		"create conflict on an absent key": {rp, with(6, k8sWrite{Kind: "create", Client: 1, Key: a, Value: "z", Rev: 45}),
			"did not exist"},
		"failed write took effect": {rp, with(3, k8sWrite{Kind: "update", Client: 2, Key: a, Value: "v3", Seen: 20, Rev: 28}),
			"said the compare failed"},
		"acknowledged at another revision": {rp, with(1, k8sWrite{Kind: "update", Client: 1, Key: a, Value: "v2", Seen: 10, Succeeded: true, Rev: 22}),
			"was written at 20"},
		"put by no conditional write": {rp, good[1:], "no conditional write put it"},
		// v2's update was sent at 600, after the writes at 40 and 50 returned.
		"a write in the past": {rp, with(1, k8sWrite{Kind: "update", Client: 1, Key: a, Value: "v2", Seen: 10, Succeeded: true, Rev: 20, Call: 600}),
			"before it was sent"},
	} {
		if errs := checkK8s(tc.rp, tc.writes, acks); !errorsContain(errs, tc.want) {
			t.Errorf("%s: want an error containing %q, got %v", name, tc.want, errs)
		}
	}
}

// A reflector's cache is its list with its watch's events applied; an
// event whose prev_kv is not what the list and the events before it hold
// means the list and the watch do not tell one story.
func TestReflectEvents(t *testing.T) {
	a, b := k8sPrefix+"a", k8sPrefix+"b"
	a1 := evPut(a, "1", 10, 10, 1, 0)
	b1 := evPut(b, "1", 12, 12, 1, 0)
	a2 := withPrev(evPut(a, "2", 10, 20, 2, 0), a1)
	bd := withPrev(evDel(b, 30), b1)
	b2 := evPut(b, "2", 40, 40, 1, 0)
	list := []kv{fromEvent(a1.Kv), fromEvent(b1.Kv)} // at 15
	resps := []watchcheck.Response{{Revision: 20, Events: []*kvpb.Event{a2}}, {Revision: 30, Events: []*kvpb.Event{bd}},
		{Revision: 40, Events: []*kvpb.Event{b2}}}
	cache, errs := reflectEvents(list, resps)
	if len(errs) > 0 {
		t.Fatalf("a consistent list and watch: %v", errs)
	}
	if d := diffKVs(cache, []kv{fromEvent(a2.Kv), fromEvent(b2.Kv)}); d != "" {
		t.Errorf("cache: %s", d)
	}
	// The list missed b: the delete's prev_kv names a key the cache lacks.
	if _, errs := reflectEvents(list[:1], resps); len(errs) == 0 {
		t.Error("a list missing a key the watch then deleted passed")
	}
	// The list is from after a2 (a watch from too late a revision would
	// replay a2 over it): a2's prev_kv is a1, the cache holds a2.
	if _, errs := reflectEvents([]kv{fromEvent(a2.Kv), fromEvent(b1.Kv)}, resps); len(errs) == 0 {
		t.Error("an event already in the list passed")
	}
}

// Each reflector's watch is checked alone against the objects' writes: a
// watch that skipped an acknowledged write between its start and the
// revision it vouched for fails, and the traffic's other keys are not
// expected in it.
func TestCheckReflections(t *testing.T) {
	a := k8sPrefix + "a"
	a1 := evPut(a, "1", 10, 10, 1, 0)
	a2 := withPrev(evPut(a, "2", 10, 20, 2, 0), a1)
	a3 := withPrev(evPut(a, "3", 10, 30, 3, 0), a2)
	writes := []watchcheck.Write{{Key: a, Value: "1", Rev: 10}, {Key: a, Value: "2", Rev: 20}, {Key: a, Value: "3", Rev: 30},
		{Key: "rob/b", Value: "x", Rev: 25}}
	ok := reflection{Client: 6, Start: 11, Until: 30, Resps: []watchcheck.Response{{Revision: 20, Events: []*kvpb.Event{a2}},
		{Revision: 30, Events: []*kvpb.Event{a3}}}}
	if errs := checkReflections(writes, []reflection{ok}); len(errs) > 0 {
		t.Fatalf("a complete reflector watch: %v", errs)
	}
	// Vouched for up to 30 by a progress notification, without a2.
	lost := reflection{Client: 6, Start: 11, Until: 30, Resps: []watchcheck.Response{{Revision: 30, Progress: true}}}
	if errs := checkReflections(writes, []reflection{lost}); !errorsContain(errs, "never delivered") {
		t.Errorf("a reflector watch missing acknowledged writes: %v", errs)
	}
	// From before a1: an event below its start.
	early := reflection{Client: 6, Start: 21, Until: 30, Resps: ok.Resps}
	if errs := checkReflections(writes, []reflection{early}); !errorsContain(errs, "below the start revision") {
		t.Errorf("a reflector watch delivering events from before its list: %v", errs)
	}
}
