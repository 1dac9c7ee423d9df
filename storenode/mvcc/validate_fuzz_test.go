package mvcc

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// etcd API requests as they arrive (kvpb shares etcd's field numbers, so
// the front end's bytes decode the same): validation never panics, a
// request it refuses is never applied, and one it accepts applies or reads
// without a panic, with an error only of the kinds etcd answers with.
//
//	go test -run '^$' -fuzz FuzzRequests -fuzztime 10m ./storenode/mvcc/
func FuzzRequests(f *testing.F) {
	seed := func(kind byte, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{kind}, b...))
	}
	seed(0, &kvpb.PutRequest{Key: []byte("a"), Value: []byte("1"), PrevKv: true})
	seed(1, &kvpb.RangeRequest{Key: []byte("a"), RangeEnd: []byte{0}, Limit: 2, CountOnly: true})
	seed(2, &kvpb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), PrevKv: true})
	seed(3, &kvpb.TxnRequest{
		Compare: []*kvpb.Compare{{Key: []byte("a"), Target: kvpb.Compare_VALUE, TargetUnion: &kvpb.Compare_Value{Value: []byte("1")}}},
		Success: []*kvpb.RequestOp{{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte("b")}}}},
		Failure: []*kvpb.RequestOp{{Request: &kvpb.RequestOp_RequestRange{RequestRange: &kvpb.RangeRequest{Key: []byte("a")}}}},
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		tr := newTestRegion(t, "", "")
		// Something to read, compare and delete.
		tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: []byte("a"), Value: []byte("1")}}})
		before := tr.region().Revision()
		var l Limits
		var wc *kvpb.WriteCommand
		switch data[0] % 4 {
		case 0:
			var r kvpb.PutRequest
			if proto.Unmarshal(data[1:], &r) != nil || l.ValidatePut(&r) != nil {
				return
			}
			r.Lease = 0 // lease checks are the store's, not this layer's
			wc = &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &r}}
		case 1:
			var r kvpb.RangeRequest
			if proto.Unmarshal(data[1:], &r) != nil {
				return
			}
			if err := l.ValidateRange(&r); err != nil {
				return
			}
			if _, err := tr.m.Range(tr.region(), &r, tr.region().Revision()); err != nil && err != ErrCompacted && err != ErrFutureRev {
				t.Fatalf("valid range %v: %v", &r, err)
			}
			return
		case 2:
			var r kvpb.DeleteRangeRequest
			if proto.Unmarshal(data[1:], &r) != nil || l.ValidateDeleteRange(&r) != nil {
				return
			}
			wc = &kvpb.WriteCommand{Op: &kvpb.WriteCommand_DeleteRange{DeleteRange: &r}}
		case 3:
			var r kvpb.TxnRequest
			if proto.Unmarshal(data[1:], &r) != nil || l.ValidateTxn(&r, len(data)) != nil || hasLease(&r) {
				return
			}
			wc = &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Txn{Txn: &r}}
		}
		res := tr.apply(wc)
		if res.Err != nil && tr.region().Revision() != before {
			t.Fatalf("a write that failed (%v) moved the revision from %d to %d", res.Err, before, tr.region().Revision())
		}
	})
}

// hasLease reports whether a transaction attaches a lease anywhere (lease
// checks belong to the store).
func hasLease(t *kvpb.TxnRequest) bool {
	for _, b := range [][]*kvpb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range b {
			if op.GetRequestPut().GetLease() != 0 || (op.GetRequestTxn() != nil && hasLease(op.GetRequestTxn())) {
				return true
			}
		}
	}
	return false
}
