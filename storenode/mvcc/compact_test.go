package mvcc

import (
	"fmt"
	"strings"
	"testing"

	"github.com/basaltdb/basalt/proto/kvpb"
)

func (tr *testRegion) put(k, v string) int64 {
	tr.t.Helper()
	res := tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: []byte(k), Value: []byte(v)}}})
	if res.Err != nil {
		tr.t.Fatal(res.Err)
	}
	return res.Revision
}

func (tr *testRegion) del(k string) {
	tr.t.Helper()
	if res := tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_DeleteRange{DeleteRange: &kvpb.DeleteRangeRequest{Key: []byte(k)}}}); res.Err != nil {
		tr.t.Fatal(res.Err)
	}
}

func (tr *testRegion) compact(rev int64) {
	tr.apply(&kvpb.WriteCommand{Revision: -1, Op: &kvpb.WriteCommand_Compact{Compact: rev}})
}

func (tr *testRegion) gc(keys [][]byte) {
	tr.apply(&kvpb.WriteCommand{Revision: -1, Op: &kvpb.WriteCommand_Gc{Gc: &kvpb.GCBatch{Keys: keys}}})
}

func (tr *testRegion) versions(k string) string {
	var out []string
	it, _ := tr.db.NewIter(nil)
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		key, rev, err := decodeVersionKey(it.Key())
		if err != nil || string(key) != k {
			continue
		}
		rec, _ := decodeRecord(it.Value())
		if rec.tombstone {
			out = append(out, fmt.Sprintf("%d:del", rev))
		} else {
			out = append(out, fmt.Sprintf("%d:%s", rev, rec.value))
		}
	}
	return strings.Join(out, " ")
}

func (tr *testRegion) collectGarbage(rev int64) {
	tr.t.Helper()
	tr.compact(rev)
	var from []byte
	for {
		keys, next, err := tr.m.GarbageKeys(tr.region(), rev, from, 2)
		if err != nil {
			tr.t.Fatal(err)
		}
		tr.gc(keys)
		if next == nil {
			return
		}
		from = next
	}
}

func TestCompactionKeepsWhatIsVisible(t *testing.T) {
	tr := newTestRegion(t, "", "")
	tr.put("a", "1") // 1
	tr.put("a", "2") // 2
	tr.put("a", "3") // 3
	tr.del("a")      // 4
	tr.put("b", "1") // 5
	tr.put("b", "2") // 6

	tr.collectGarbage(3)
	if got := tr.versions("a"); got != "4:del 3:3" {
		t.Fatalf("a after compacting at 3: %s", got)
	}
	if got := tr.versions("b"); got != "6:2 5:1" {
		t.Fatalf("b after compacting at 3: %s", got)
	}
	resp, err := tr.m.Range(tr.region(), &kvpb.RangeRequest{Key: []byte("a"), Revision: 3}, 6)
	if err != nil || len(resp.GetKvs()) != 1 || string(resp.GetKvs()[0].GetValue()) != "3" {
		t.Fatalf("read at the compaction revision: %v %v", resp, err)
	}
	tr.collectGarbage(5)
	if got := tr.versions("a"); got != "" {
		t.Fatalf("a after compacting past its delete: %s", got)
	}
	if got := tr.versions("b"); got != "6:2 5:1" {
		t.Fatalf("b's version at the compaction revision must stay: %s", got)
	}
}

// A GC list from a confused or stale leader cannot remove the version
// visible at the compaction revision: apply checks every key itself.
func TestGCApplyRefusesLiveVersions(t *testing.T) {
	tr := newTestRegion(t, "", "")
	tr.put("a", "1")
	tr.put("a", "2")
	tr.compact(2)
	tr.gc([][]byte{versionKey([]byte("a"), 2), versionKey([]byte("a"), 1)})
	if got := tr.versions("a"); got != "2:2" {
		t.Fatalf("a: %s", got)
	}
}

func TestHistory(t *testing.T) {
	tr := newTestRegion(t, "", "")
	tr.put("a", "1") // 1
	tr.put("b", "1") // 2
	tr.put("a", "2") // 3
	tr.del("b")      // 4
	tr.put("c", "1") // 5
	var got []string
	err := tr.m.History(tr.region(), []byte("a"), []byte("c"), 2, 5, func(e *kvpb.Event) bool {
		s := fmt.Sprintf("%s %s@%d", e.GetType(), e.GetKv().GetKey(), e.GetKv().GetModRevision())
		if p := e.GetPrevKv(); p != nil {
			s += fmt.Sprintf(" prev=%s@%d", p.GetValue(), p.GetModRevision())
		}
		got = append(got, s)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "PUT b@2 | PUT a@3 prev=1@1 | DELETE b@4 prev=1@2"
	if strings.Join(got, " | ") != want {
		t.Fatalf("history:\n got %s\nwant %s", strings.Join(got, " | "), want)
	}
	tr.compact(3)
	if err := tr.m.History(tr.region(), []byte("a"), nil, 2, 5, func(*kvpb.Event) bool { return true }); err != ErrCompacted {
		t.Fatalf("history below the compaction revision: %v", err)
	}
}

// A transaction's events reach watchers in key order, live and from
// history alike, whatever the order of its operations.
func TestRevisionEventsInKeyOrder(t *testing.T) {
	tr := newTestRegion(t, "", "")
	put := func(k string) *kvpb.RequestOp {
		return &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte(k), Value: []byte("v")}}}
	}
	res := tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_Txn{Txn: &kvpb.TxnRequest{Success: []*kvpb.RequestOp{put("c"), put("a"), put("b")}}}})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	keys := func(evs []*kvpb.Event) string {
		var ks []string
		for _, e := range evs {
			ks = append(ks, string(e.GetKv().GetKey()))
		}
		return strings.Join(ks, ",")
	}
	if got := keys(tr.events); got != "a,b,c" {
		t.Errorf("live events: %s, want a,b,c", got)
	}
	var hist []*kvpb.Event
	if err := tr.m.History(tr.region(), []byte("a"), []byte{0}, 1, res.Revision, func(e *kvpb.Event) bool {
		hist = append(hist, e)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if got := keys(hist); got != "a,b,c" {
		t.Errorf("history: %s, want a,b,c", got)
	}
}
