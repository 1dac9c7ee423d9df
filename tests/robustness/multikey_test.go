package robustness

import (
	"strings"
	"testing"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

// The multi-key checker accepts transactions and range deletes applied
// whole at one revision, and catches each kind of wrong one.
func TestMultiKeyCheck(t *testing.T) {
	// m/0=a and m/1=b at 10; a txn at 20 puts m/0=c, m/1=d and deletes
	// m/2 (absent) under the compare m/0 = "a"; a range delete of rob/m/
	// at 30 removes both.
	resps := []watchcheck.Response{
		{Revision: 10, Events: []*kvpb.Event{evPut("rob/m/0", "a", 10, 10, 1, 0), evPut("rob/m/1", "b", 10, 10, 1, 0)}},
		{Revision: 20, Events: []*kvpb.Event{evPut("rob/m/0", "c", 10, 20, 2, 0), evPut("rob/m/1", "d", 10, 20, 2, 0)}},
		{Revision: 30, Events: []*kvpb.Event{evDel("rob/m/0", 30), evDel("rob/m/1", 30)}},
		{Revision: 40, Events: []*kvpb.Event{evPut("rob/m/3", "e", 40, 40, 1, 0)}},
		// A put at 50 that a txn of unknown outcome may have made, split
		// from its partner at 51.
		{Revision: 50, Events: []*kvpb.Event{evPut("rob/m/1", "f", 50, 50, 1, 0)}},
		{Revision: 51, Events: []*kvpb.Event{evPut("rob/m/2", "g", 51, 51, 1, 0)}},
	}
	rp, errs := newReplay([][]watchcheck.Response{resps}, []int64{51})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	first := multiTxn{Puts: map[string]string{"rob/m/0": "a", "rob/m/1": "b"}, Succeeded: true, Rev: 10}
	good := multiTxn{CompareKey: "rob/m/0", CompareValue: "a", Puts: map[string]string{"rob/m/0": "c", "rob/m/1": "d"},
		Deletes: []string{"rob/m/2"}, Succeeded: true, Rev: 20}
	failed := multiTxn{CompareKey: "rob/m/0", CompareValue: "a", Puts: map[string]string{"rob/m/3": "z"}, Rev: 25}
	refused := multiTxn{Puts: map[string]string{"rob/m/3": "y"}, Refused: true}
	lost := multiTxn{Puts: map[string]string{"rob/m/3": "x", "rob/m/0": "w"}, Unknown: true}
	unknownApplied := multiTxn{Puts: map[string]string{"rob/m/3": "e"}, Unknown: true}
	del := rangeDelete{Prefix: "rob/m/", Rev: 30, Deleted: 2, Prev: []kv{fromEvent(resps[1].Events[1].Kv), fromEvent(resps[1].Events[0].Kv)}}
	emptyDel := rangeDelete{Prefix: "rob/m/", Rev: 35, Deleted: 0}
	if errs := checkMultiKey(rp, []multiTxn{first, good, failed, refused, lost, unknownApplied}, []rangeDelete{del, emptyDel}); len(errs) > 0 {
		t.Fatalf("correct multi-key writes failed the check: %v", errs)
	}

	for name, tc := range map[string]struct {
		txns []multiTxn
		dels []rangeDelete
		want string
	}{
		"a put missing": {txns: []multiTxn{with(good, func(m *multiTxn) {
			m.Puts = map[string]string{"rob/m/0": "c", "rob/m/1": "d", "rob/m/3": "q"}
		})}, want: "rob/m/3@20 is not"},
		"another write at its revision": {txns: []multiTxn{with(good, func(m *multiTxn) {
			m.Puts = map[string]string{"rob/m/0": "c"}
		})}, want: "written at the same revision"},
		"a delete of an existing key not done": {txns: []multiTxn{with(first, func(m *multiTxn) {
			m.Rev = 20
			m.Puts = map[string]string{"rob/m/0": "c", "rob/m/1": "d"}
			m.Deletes = []string{"rob/m/1"}
		})}, want: "rob/m/1 existed before 20"},
		"compare did not hold":        {txns: []multiTxn{with(good, func(m *multiTxn) { m.CompareValue = "zz" })}, want: "its compare did not hold"},
		"failed but its compare held": {txns: []multiTxn{with(failed, func(m *multiTxn) { m.Rev = 15 })}, want: "its compare held at 15"},
		"failed but applied": {txns: []multiTxn{with(failed, func(m *multiTxn) {
			m.Puts = map[string]string{"rob/m/3": "e"}
		})}, want: "its values were written"},
		"refused but applied": {txns: []multiTxn{with(refused, func(m *multiTxn) {
			m.Puts = map[string]string{"rob/m/3": "e"}
		})}, want: "its values were written"},
		"unknown, applied in halves": {txns: []multiTxn{{Puts: map[string]string{"rob/m/1": "f", "rob/m/2": "g"}, Unknown: true}},
			want: "several revisions"},
		"unknown, applied without its partner": {txns: []multiTxn{{Puts: map[string]string{"rob/m/1": "f", "rob/m/3": "h"}, Unknown: true}},
			want: "applied at 50"},
		"range delete count": {dels: []rangeDelete{with(del, func(d *rangeDelete) { d.Deleted = 3 })}, want: "2 keys existed"},
		"range delete prev_kv": {dels: []rangeDelete{with(del, func(d *rangeDelete) { d.Prev = d.Prev[:1]; d.Deleted = 1 })},
			want: "prev_kv missing"},
		"range delete deleting nothing over a key": {dels: []rangeDelete{{Prefix: "rob/m/", Rev: 45}}, want: "prev_kv missing"},
		"range delete missing a key": {dels: []rangeDelete{{Prefix: "rob/m/", Rev: 50, Deleted: 1,
			Prev: []kv{fromEvent(resps[3].Events[0].Kv)}}}, want: "was not deleted at its revision"},
	} {
		errs := checkMultiKey(rp, tc.txns, tc.dels)
		found := false
		for _, err := range errs {
			found = found || strings.Contains(err.Error(), tc.want)
		}
		if !found {
			t.Errorf("%s: want an error containing %q, got %v", name, tc.want, errs)
		}
	}
}

// with is a copy of v changed by f.
func with[T any](v T, f func(*T)) T { f(&v); return v }
