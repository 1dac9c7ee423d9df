package mvcc

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/raftstore"
)

// PD's compaction revision is a recent timestamp, usually above an idle
// region's last write: latest reads of the region must keep working (etcd
// never fails a latest read after a compaction), and a write still
// carrying a revision below the compaction revision must not apply.
func TestCompactAboveLastWrite(t *testing.T) {
	tr := newTestRegion(t, "", "")
	tr.put("a", "1") // rev 1
	tr.compact(100)
	resp, err := tr.m.Range(tr.region(), &kvpb.RangeRequest{Key: []byte("a")}, tr.region().Revision())
	if err != nil {
		t.Fatalf("latest read after compacting above the last write: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" || resp.Header.Revision != 100 {
		t.Fatalf("latest read after compaction: %v", resp)
	}
	if res := tr.apply(&kvpb.WriteCommand{Revision: 50, Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: []byte("a"), Value: []byte("late")}}}); res.Err != ErrRevisionOrder {
		t.Fatalf("a write below the compaction revision applied: %+v", res)
	}
	if rev := tr.put("a", "2"); rev != 101 {
		t.Fatalf("next write at %d", rev)
	}
}

// A read-only transaction sees one revision: a transaction writing a and b
// together is never seen half applied, and nothing it returns is newer
// than its header revision.
func TestReadTxnIsASnapshot(t *testing.T) {
	tr := newTestRegion(t, "", "")
	tr.put("a", "0")
	tr.put("b", "0")
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; !stop.Load(); i++ {
			v := []byte(fmt.Sprint(i))
			wc := &kvpb.WriteCommand{Revision: int64(i + 10), Op: &kvpb.WriteCommand_Txn{Txn: &kvpb.TxnRequest{Success: []*kvpb.RequestOp{
				{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte("a"), Value: v}}},
				{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte("b"), Value: v}}},
			}}}}
			data, _ := proto.Marshal(wc)
			ab := raftstore.NewApplyBatch(tr.db.NewIndexedBatch())
			tr.m.Apply(ab, raftstore.Command{RegionID: 1, Region: tr.desc, Index: uint64(i + 10), Data: data, State: &tr.state})
			ab.Commit()
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()
	get := func(k string) *kvpb.RequestOp {
		return &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestRange{RequestRange: &kvpb.RangeRequest{Key: []byte(k)}}}
	}
	cmp := &kvpb.Compare{Key: []byte("a"), Target: kvpb.Compare_MOD, Result: kvpb.Compare_GREATER, TargetUnion: &kvpb.Compare_ModRevision{ModRevision: 0}}
	for i := 0; i < 20000; i++ {
		resp, err := tr.m.ReadTxn(tr.region(), &kvpb.TxnRequest{Compare: []*kvpb.Compare{cmp}, Success: []*kvpb.RequestOp{get("a"), get("b")}})
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Succeeded {
			t.Fatal("compare on a key that exists failed")
		}
		a := resp.Responses[0].GetResponseRange().Kvs[0]
		b := resp.Responses[1].GetResponseRange().Kvs[0]
		if string(a.Value) != string(b.Value) {
			t.Fatalf("fractured read-only txn at %d: a@%d=%s b@%d=%s", resp.Header.Revision, a.ModRevision, a.Value, b.ModRevision, b.Value)
		}
		if a.ModRevision > resp.Header.Revision {
			t.Fatalf("read-only txn saw mod_revision %d above its header revision %d", a.ModRevision, resp.Header.Revision)
		}
	}
}

// A put and a delete of one key in sibling nested transactions cannot both
// be stored (a version key has no sub-revision): the transaction is refused
// rather than silently keeping one of them.
func TestNestedPutThenDeleteOfOneKeyIsRefused(t *testing.T) {
	nested := func(op *kvpb.RequestOp) *kvpb.RequestOp {
		return &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestTxn{RequestTxn: &kvpb.TxnRequest{Success: []*kvpb.RequestOp{op}}}}
	}
	put := &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte("k"), Value: []byte("new")}}}
	del := &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestDeleteRange{RequestDeleteRange: &kvpb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("z")}}}
	for _, txn := range []*kvpb.TxnRequest{
		{Success: []*kvpb.RequestOp{nested(put), nested(del)}},
		{Success: []*kvpb.RequestOp{nested(del), nested(put)}},
		{Success: []*kvpb.RequestOp{put, nested(del)}},
	} {
		if err := (Limits{}).ValidateTxn(txn, proto.Size(txn)); err != ErrDuplicateKey {
			t.Fatalf("%v: %v", txn, err)
		}
	}
}

// History holds a bounded number of events: with a tiny chunk it still
// returns every event once, in revision order, a large revision whole.
func TestHistoryInChunks(t *testing.T) {
	tr := newTestRegion(t, "", "")
	var want []string
	for i := 0; i < 20; i++ {
		k := fmt.Sprintf("k%02d", (i*7)%20)
		rev := tr.put(k, fmt.Sprint(i))
		want = append(want, fmt.Sprintf("PUT %s@%d", k, rev))
	}
	// One revision touching 6 keys, more than a chunk holds.
	var ops []*kvpb.RequestOp
	for i := 0; i < 6; i++ {
		ops = append(ops, &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte(fmt.Sprintf("t%d", i)), Value: []byte("x")}}})
	}
	res := tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_Txn{Txn: &kvpb.TxnRequest{Success: ops}}})
	for i := 0; i < 6; i++ {
		want = append(want, fmt.Sprintf("PUT t%d@%d", i, res.Revision))
	}
	tr.del("k03")
	want = append(want, fmt.Sprintf("DELETE k03@%d", tr.region().Revision()))
	for _, limit := range []int{1, 3, 4096} {
		var got []string
		err := tr.m.history(tr.region(), []byte{0}, []byte{0}, 1, tr.region().Revision(), limit, func(e *kvpb.Event) bool {
			got = append(got, fmt.Sprintf("%s %s@%d", e.Type, e.Kv.Key, e.Kv.ModRevision))
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("limit %d:\n got %v\nwant %v", limit, got, want)
		}
	}
}

// Only one branch of a transaction runs: a put in one and a delete of the
// same key in the other is fine.
func TestPutAndDeleteInOppositeBranches(t *testing.T) {
	put := &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte("k"), Value: []byte("new")}}}
	del := &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestDeleteRange{RequestDeleteRange: &kvpb.DeleteRangeRequest{Key: []byte("k")}}}
	txn := &kvpb.TxnRequest{Success: []*kvpb.RequestOp{
		{Request: &kvpb.RequestOp_RequestTxn{RequestTxn: &kvpb.TxnRequest{Success: []*kvpb.RequestOp{put}, Failure: []*kvpb.RequestOp{del}}}},
	}}
	if err := (Limits{}).ValidateTxn(txn, proto.Size(txn)); err != nil {
		t.Fatal(err)
	}
}

func TestPutRefusesIgnoredFieldsWithValues(t *testing.T) {
	for _, tc := range []struct {
		put  *kvpb.PutRequest
		want error
	}{
		{&kvpb.PutRequest{Key: []byte("k"), Value: []byte("v"), IgnoreValue: true}, ErrValueProvided},
		{&kvpb.PutRequest{Key: []byte("k"), Lease: 7, IgnoreLease: true}, ErrLeaseProvided},
		{&kvpb.PutRequest{Key: []byte("k"), IgnoreValue: true, IgnoreLease: true}, nil},
	} {
		if err := (Limits{}).ValidatePut(tc.put); err != tc.want {
			t.Fatalf("%v: %v, want %v", tc.put, err, tc.want)
		}
		txn := &kvpb.TxnRequest{Success: []*kvpb.RequestOp{{Request: &kvpb.RequestOp_RequestPut{RequestPut: tc.put}}}}
		if err := (Limits{}).ValidateTxn(txn, proto.Size(txn)); err != tc.want {
			t.Fatalf("in a txn %v: %v, want %v", tc.put, err, tc.want)
		}
	}
}
