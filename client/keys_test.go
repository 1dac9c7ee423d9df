package client

import (
	"errors"
	"testing"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
)

func TestRegionHolds(t *testing.T) {
	r := &metapb.Region{StartKey: []byte("b"), EndKey: []byte("d")}
	last := &metapb.Region{StartKey: []byte("d")}
	for _, tc := range []struct {
		r      *metapb.Region
		lo, hi string
		inf    bool
		want   bool
	}{
		{r, "b", "d", false, true},
		{r, "b", "d\x00", false, false},
		{r, "a", "c", false, false},
		{r, "c", "", true, false},
		{last, "d", "", true, true},
		{last, "x", "z", false, true},
		{last, "c", "z", false, false},
	} {
		hi := []byte(tc.hi)
		if tc.inf {
			hi = nil
		}
		if got := regionHolds(tc.r, []byte(tc.lo), hi); got != tc.want {
			t.Errorf("regionHolds([%q,%q), %q, %q inf=%v) = %v", tc.r.GetStartKey(), tc.r.GetEndKey(), tc.lo, tc.hi, tc.inf, got)
		}
	}
}

// Every key a transaction names counts, nested and failure branches too.
func TestTxnSpansChecksEveryKey(t *testing.T) {
	r := &metapb.Region{Id: 7, StartKey: []byte("b"), EndKey: []byte("m")}
	put := func(k string) *kvpb.RequestOp {
		return &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte(k)}}}
	}
	inside := &kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("c")}}, Success: []*kvpb.RequestOp{put("d")}}
	if err := checkTxnSpans(r, txnSpans(inside, nil)); err != nil {
		t.Fatalf("a txn inside the region: %v", err)
	}
	nested := &kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("c")}},
		Failure: []*kvpb.RequestOp{{Request: &kvpb.RequestOp_RequestTxn{RequestTxn: &kvpb.TxnRequest{Success: []*kvpb.RequestOp{put("q")}}}}}}
	var span *ErrTxnSpansRegions
	if err := checkTxnSpans(r, txnSpans(nested, nil)); !errors.As(err, &span) || string(span.Key) != "q" || string(span.Boundary) != "m" {
		t.Fatalf("nested key beyond the end: %v", err)
	}
	ranged := &kvpb.TxnRequest{Success: []*kvpb.RequestOp{{Request: &kvpb.RequestOp_RequestRange{RequestRange: &kvpb.RangeRequest{Key: []byte("c"), RangeEnd: []byte{0}}}}}}
	if err := checkTxnSpans(r, txnSpans(ranged, nil)); !errors.As(err, &span) {
		t.Fatalf("a range to the end of the key space: %v", err)
	}
	below := &kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("a")}}}
	if err := checkTxnSpans(r, txnSpans(below, nil)); !errors.As(err, &span) || string(span.Boundary) != "b" {
		t.Fatalf("a key below the start: %v", err)
	}
}

func TestKeyBefore(t *testing.T) {
	if !keyBefore([]byte("z"), nil) || keyBefore([]byte("z"), []byte("z")) {
		t.Error("keyBefore")
	}
}
