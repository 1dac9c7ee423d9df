package client

import (
	"strings"
	"testing"

	"github.com/basaltdb/basalt/proto/kvpb"
)

func TestPrefixEnd(t *testing.T) {
	for in, want := range map[string]string{"a": "b", "a\xff": "b", "ab": "ac", "": "\x00", "\xff\xff": "\x00"} {
		if got := string(PrefixEnd([]byte(in))); got != want {
			t.Errorf("PrefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOptionsBuildRequests(t *testing.T) {
	r := newOp("k/", []OpOption{WithPrefix(), WithRev(7), WithLimit(3), WithKeysOnly(),
		WithSort(kvpb.RangeRequest_MOD, kvpb.RangeRequest_DESCEND), WithMinModRev(2)}).rangeRequest()
	if string(r.GetRangeEnd()) != "k0" || r.GetRevision() != 7 || r.GetLimit() != 3 || !r.GetKeysOnly() ||
		r.GetSortTarget() != kvpb.RangeRequest_MOD || r.GetSortOrder() != kvpb.RangeRequest_DESCEND || r.GetMinModRevision() != 2 {
		t.Fatalf("range request: %v", r)
	}
	if r := newOp("k", []OpOption{WithFromKey()}).rangeRequest(); string(r.GetRangeEnd()) != "\x00" {
		t.Fatalf("from key: %q", r.GetRangeEnd())
	}
	o := newOp("k", []OpOption{WithLease(5), WithPrevKV(), WithIgnoreValue()})
	if p := o.putRequest(); p.GetLease() != 5 || !p.GetPrevKv() || !p.GetIgnoreValue() {
		t.Fatalf("put request: %v", p)
	}
	w := newOp("k", []OpOption{WithPrefix(), WithFilterPut(), WithProgressNotify(), WithRev(9)}).watchRequest()
	if string(w.GetRangeEnd()) != "l" || len(w.GetFilters()) != 1 || w.GetFilters()[0] != kvpb.WatchCreateRequest_NOPUT || !w.GetProgressNotify() || w.GetStartRevision() != 9 {
		t.Fatalf("watch request: %v", w)
	}
}

func TestTxnBuilder(t *testing.T) {
	kv := KV{}
	tx := kv.Txn(t.Context()).If(Compare(Value("a"), "=", "1"), Compare(Version("b"), ">", 0)).
		Then(OpPut("a", "2")).Else(OpGet("a"), OpTxn(nil, []Op{OpDelete("c", WithPrefix())}, nil))
	req := txnRequest(tx.cmps, tx.thenOps, tx.elseOps)
	if len(req.GetCompare()) != 2 || req.GetCompare()[0].GetResult() != kvpb.Compare_EQUAL || string(req.GetCompare()[0].GetValue()) != "1" ||
		req.GetCompare()[1].GetVersion() != 0 || req.GetCompare()[1].GetResult() != kvpb.Compare_GREATER {
		t.Fatalf("compares: %v", req.GetCompare())
	}
	if len(req.GetSuccess()) != 1 || len(req.GetFailure()) != 2 ||
		string(req.GetFailure()[1].GetRequestTxn().GetSuccess()[0].GetRequestDeleteRange().GetRangeEnd()) != "d" {
		t.Fatalf("ops: %v", req)
	}
	if _, err := kv.Txn(t.Context()).Then(OpPut("a", "1")).If(Compare(Value("a"), "=", "1")).Commit(); err == nil || !strings.Contains(err.Error(), "If after") {
		t.Fatalf("If after Then: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a value comparison with an integer did not panic")
		}
	}()
	Compare(Value("a"), "=", 1)
}
