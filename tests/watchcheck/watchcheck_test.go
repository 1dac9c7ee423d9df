package watchcheck

import (
	"strings"
	"testing"

	"github.com/basaltdb/basalt/proto/kvpb"
)

func put(key, value string, rev int64, prev *kvpb.Event) *kvpb.Event {
	e := &kvpb.Event{Type: kvpb.Event_PUT, Kv: &kvpb.KeyValue{Key: []byte(key), Value: []byte(value), ModRevision: rev}}
	if prev != nil {
		e.PrevKv = prev.GetKv()
	}
	return e
}

func del(key string, rev int64, prev *kvpb.Event) *kvpb.Event {
	return &kvpb.Event{Type: kvpb.Event_DELETE, Kv: &kvpb.KeyValue{Key: []byte(key), ModRevision: rev}, PrevKv: prev.GetKv()}
}

// The checker must accept a correct watch and catch each kind of broken one.
func TestCheckCatchesEachViolation(t *testing.T) {
	a1 := put("a", "1", 10, nil)
	b1 := put("b", "1", 10, nil)
	a2 := put("a", "2", 20, a1)
	ad := del("a", 30, a2)
	c1 := put("c", "1", 40, nil)
	h := NewHistory([]Write{
		{Key: "a", Value: "1", Rev: 10}, {Key: "b", Value: "1", Rev: 10},
		{Key: "a", Value: "2", Rev: 20}, {Key: "a", Delete: true, Rev: 30},
		{Key: "c", Value: "1"}, // failed call: may have happened
	})
	good := []Response{
		{Revision: 10, Events: []*kvpb.Event{a1, b1}},
		{Revision: 15, Progress: true},
		{Revision: 30, Events: []*kvpb.Event{a2, ad}},
		{Revision: 40, Events: []*kvpb.Event{c1}},
	}
	if errs := Check(h, 10, 40, true, good); len(errs) > 0 {
		t.Fatalf("a correct watch failed the check: %v", errs)
	}
	for name, tc := range map[string]struct {
		resps []Response
		want  string
	}{
		"lost": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1, b1}}, {Revision: 30, Events: []*kvpb.Event{ad}}}, "never delivered"},
		"reordered": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1, b1}}, {Revision: 30, Events: []*kvpb.Event{ad}},
			{Revision: 20, Events: []*kvpb.Event{a2}}}, "out of order"},
		"split revision": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1}}, {Revision: 10, Events: []*kvpb.Event{b1}},
			{Revision: 30, Events: []*kvpb.Event{a2, ad}}}, "split across"},
		"duplicated": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1, b1, b1}}, {Revision: 30, Events: []*kvpb.Event{a2, ad}}}, "twice"},
		"below bookmark": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1, b1}}, {Revision: 25, Progress: true},
			{Revision: 30, Events: []*kvpb.Event{a2, ad}}}, "progress notification"},
		"bad prev_kv": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1, b1}}, {Revision: 30, Events: []*kvpb.Event{put("a", "2", 20, put("a", "0", 5, nil)), ad}}}, "prev_kv"},
		"phantom": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1, b1}}, {Revision: 30, Events: []*kvpb.Event{a2, ad}},
			{Revision: 50, Events: []*kvpb.Event{put("d", "9", 50, nil)}}}, "no write issued"},
	} {
		errs := Check(h, 10, 30, true, tc.resps)
		found := false
		for _, err := range errs {
			found = found || strings.Contains(err.Error(), tc.want)
		}
		if !found {
			t.Errorf("%s: want an error containing %q, got %v", name, tc.want, errs)
		}
	}
	if errs := CheckResumed(good, good[2:], 20); len(errs) > 0 {
		t.Errorf("a correct resumed watch failed: %v", errs)
	}
	if errs := CheckResumed(good, good[3:], 20); len(errs) == 0 {
		t.Error("a resumed watch that missed events passed")
	}
}

// A filtered watch must match the unfiltered one's events of the kept kind.
func TestCheckFiltered(t *testing.T) {
	a1 := put("a", "1", 10, nil)
	b1 := put("b", "1", 10, nil)
	a2 := put("a", "2", 20, a1)
	ad := del("a", 30, a2)
	c1 := put("c", "1", 40, nil)
	all := []Response{
		{Revision: 10, Events: []*kvpb.Event{a1, b1}},
		{Revision: 30, Events: []*kvpb.Event{a2, ad}},
		{Revision: 40, Events: []*kvpb.Event{c1}},
		{Revision: 60, Progress: true},
	}
	noDelete := []Response{
		{Revision: 10, Events: []*kvpb.Event{a1, b1}},
		{Revision: 20, Events: []*kvpb.Event{a2}},
		{Revision: 35, Progress: true},
	}
	if errs := CheckFiltered(all, noDelete, false, true); len(errs) > 0 {
		t.Fatalf("a correct delete-filtered watch failed: %v", errs)
	}
	if errs := CheckFiltered(all, []Response{{Revision: 30, Events: []*kvpb.Event{ad}}}, true, false); len(errs) > 0 {
		t.Fatalf("a correct put-filtered watch failed: %v", errs)
	}
	// A revision's events in another order (replayed in key order, the
	// other watch's live in write order) are the same events.
	reordered := []Response{{Revision: 10, Events: []*kvpb.Event{b1, a1}}, {Revision: 20, Events: []*kvpb.Event{a2}}, {Revision: 35, Progress: true}}
	if errs := CheckFiltered(all, reordered, false, true); len(errs) > 0 {
		t.Fatalf("a revision's events in another order failed: %v", errs)
	}
	for name, tc := range map[string]struct {
		resps           []Response
		noPut, noDelete bool
		want            string
	}{
		"lost a put": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1}}, {Revision: 35, Progress: true}}, false, true, "missing"},
		"kept a delete": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1, b1}}, {Revision: 30, Events: []*kvpb.Event{a2, ad}}},
			false, true, "which its filter drops"},
		"wrong prev_kv": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1, b1}}, {Revision: 20, Events: []*kvpb.Event{put("a", "2", 20, nil)}}},
			false, true, "the unfiltered watch's is"},
		"split revision": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1}}, {Revision: 10, Events: []*kvpb.Event{b1}}},
			false, true, "split across"},
		"phantom": {[]Response{{Revision: 30, Events: []*kvpb.Event{ad}}, {Revision: 50, Events: []*kvpb.Event{del("d", 50, nil)}}},
			true, false, "which the unfiltered watch did not"},
		"revisions swapped": {[]Response{{Revision: 20, Events: []*kvpb.Event{a2}}, {Revision: 10, Events: []*kvpb.Event{a1, b1}}, {Revision: 35, Progress: true}},
			false, true, "out of order"},
		"another event in a revision": {[]Response{{Revision: 10, Events: []*kvpb.Event{a1, put("b", "2", 10, nil)}}, {Revision: 20, Events: []*kvpb.Event{a2}}},
			false, true, "the unfiltered watch's is"},
	} {
		errs := CheckFiltered(all, tc.resps, tc.noPut, tc.noDelete)
		found := false
		for _, err := range errs {
			found = found || strings.Contains(err.Error(), tc.want)
		}
		if !found {
			t.Errorf("%s: want an error containing %q, got %v", name, tc.want, errs)
		}
	}
}
