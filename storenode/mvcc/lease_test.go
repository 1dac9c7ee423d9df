package mvcc

import (
	"errors"
	"math"
	"testing"

	"github.com/basaltdb/basalt/proto/kvpb"
)

func leasePut(key string, lease int64) *kvpb.WriteCommand {
	return &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: lease}}}
}

func TestLeaseRecordLifecycle(t *testing.T) {
	tr := newTestRegion(t, "", "")
	grant := func(id, ttl int64) error {
		return tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseGrant{LeaseGrant: &kvpb.LeaseGrantRequest{Id: id, Ttl: ttl}}}).Err
	}
	if err := grant(5, 10); err != nil {
		t.Fatal(err)
	}
	if err := grant(5, 10); !errors.Is(err, ErrLeaseExist) {
		t.Fatalf("second grant: %v, want ErrLeaseExist", err)
	}
	if err := grant(6, MaxLeaseTTL+1); !errors.Is(err, ErrLeaseTTLTooLarge) {
		t.Fatalf("huge TTL: %v", err)
	}
	attach := func(id int64, start, end string) *WriteResult {
		return tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseAttach{LeaseAttach: &kvpb.LeaseAttachRequest{Id: id,
			Span: &kvpb.KeySpan{Start: []byte(start), End: []byte(end)}}}})
	}
	if res := attach(5, "a", "c"); res.Err != nil {
		t.Fatal(res.Err)
	}
	rev := tr.region().Revision()
	if res := attach(5, "a", "b"); res.Err != nil || tr.region().Revision() != rev {
		t.Fatalf("a covered span must change nothing: %v, revision %d → %d", res.Err, rev, tr.region().Revision())
	}
	res := attach(5, "c", "d")
	if lr := res.Response.(*kvpb.LeaseRecord); len(lr.GetSpans()) != 1 || string(lr.GetSpans()[0].GetEnd()) != "d" {
		t.Fatalf("touching spans must merge: %v", lr.GetSpans())
	}
	if res := attach(9, "a", "b"); !errors.Is(res.Err, ErrLeaseNotFound) {
		t.Fatalf("attach to a missing lease: %v", res.Err)
	}
	recs, err := tr.m.LeaseRecords(tr.region())
	if err != nil || len(recs) != 1 || recs[0].GetId() != 5 || recs[0].GetTtl() != 10 {
		t.Fatalf("records: %v %v", recs, err)
	}
	if res := tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseRevoking{LeaseRevoking: 5}}); res.Err != nil || !res.Response.(*kvpb.LeaseRecord).GetRevoking() {
		t.Fatalf("revoking: %+v", res)
	}
	if res := attach(5, "x", "y"); !errors.Is(res.Err, ErrLeaseNotFound) {
		t.Fatalf("attach to a revoking lease: %v", res.Err)
	}
	if res := tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseDelete{LeaseDelete: 5}}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if lr, _ := tr.m.LeaseRecord(tr.region(), 5); lr != nil {
		t.Fatalf("record survived its delete: %v", lr)
	}
	// A lease's record may only be written where its key lives.
	other := newTestRegion(t, "", "\xff")
	if res := other.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseGrant{LeaseGrant: &kvpb.LeaseGrantRequest{Id: 1, Ttl: 5}}}); res.Err == nil {
		t.Fatal("a grant outside the lease's region applied")
	}
}

func TestLeaseChecksGuardPuts(t *testing.T) {
	tr := newTestRegion(t, "", "")
	noCheck := leasePut("a", 7)
	noCheck.LeaseChecks = []*kvpb.LeaseCheck{}
	if res := tr.apply(noCheck); !errors.Is(res.Err, ErrLeaseNotFound) {
		t.Fatalf("a put without its lease's check: %v", res.Err)
	}
	stale := leasePut("a", 7)
	stale.Revision = tr.region().Revision() + 10
	stale.LeaseChecks = []*kvpb.LeaseCheck{{Id: 7, ValidUntil: stale.Revision - 1}}
	if res := tr.apply(stale); !errors.Is(res.Err, ErrLeaseCheckStale) {
		t.Fatalf("a put past its check: %v", res.Err)
	}
	ok := leasePut("a", 7)
	ok.Revision = tr.region().Revision() + 10
	ok.LeaseChecks = []*kvpb.LeaseCheck{{Id: 7, ValidUntil: ok.Revision}}
	if res := tr.apply(ok); res.Err != nil {
		t.Fatal(res.Err)
	}
	// A txn's untaken branch may name a lease nobody checked.
	txn := &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Txn{Txn: &kvpb.TxnRequest{
		Success: []*kvpb.RequestOp{{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte("b"), Lease: 7}}}},
		Failure: []*kvpb.RequestOp{{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte("b"), Lease: 8}}}},
	}}, LeaseChecks: []*kvpb.LeaseCheck{{Id: 7, ValidUntil: math.MaxInt64}}}
	if res := tr.apply(txn); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := AttachedLeases(txn); len(got) != 2 {
		t.Fatalf("AttachedLeases = %v", got)
	}
}

func TestLeaseRevokeKeys(t *testing.T) {
	tr := newTestRegion(t, "", "")
	for _, k := range []string{"a", "b", "c"} {
		if res := tr.apply(leasePut(k, 7)); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	tr.apply(leasePut("d", 8))
	tr.apply(leasePut("b", 8)) // moved to another lease
	tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_DeleteRange{DeleteRange: &kvpb.DeleteRangeRequest{Key: []byte("c")}}})
	keys, err := tr.m.LeaseKeys(tr.region(), 7)
	if err != nil || len(keys) != 1 || string(keys[0]) != "a" {
		t.Fatalf("keys of lease 7: %q %v", keys, err)
	}
	tr.events = nil
	res := tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_LeaseRevokeKeys{LeaseRevokeKeys: 8}})
	if res.Err != nil || res.Response.(*kvpb.LeaseRevokeKeysResponse).GetDeleted() != 2 {
		t.Fatalf("revoke keys: %+v", res)
	}
	if len(tr.events) != 2 || tr.events[0].GetType() != kvpb.Event_DELETE || string(tr.events[0].GetKv().GetKey()) != "b" ||
		tr.events[0].GetPrevKv().GetLease() != 8 {
		t.Fatalf("events: %v", tr.events)
	}
	// A store reopened on the same data finds the leased keys again.
	m2, err := New(tr.db, tr.m.comparer(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m2.RegionChanged(1, tr.desc, tr.state)
	if keys, _ := m2.LeaseKeys(m2.Region(1), 7); len(keys) != 1 || string(keys[0]) != "a" {
		t.Fatalf("after reopening: %q", keys)
	}
	if keys, _ := m2.LeaseKeys(m2.Region(1), 8); len(keys) != 0 {
		t.Fatalf("revoked keys after reopening: %q", keys)
	}
	// Keys a snapshot brought are found after DataReplaced.
	m3 := &MVCC{db: tr.db, limits: Limits{}.withDefaults(), regions: map[uint64]*Region{}}
	m3.RegionChanged(1, tr.desc, tr.state)
	m3.DataReplaced(tr.desc)
	if keys, _ := m3.LeaseKeys(m3.Region(1), 7); len(keys) != 1 {
		t.Fatalf("after DataReplaced: %q", keys)
	}
}

func TestAddSpan(t *testing.T) {
	sp := func(s, e string) *kvpb.KeySpan { return &kvpb.KeySpan{Start: []byte(s), End: []byte(e)} }
	var spans []*kvpb.KeySpan
	var changed bool
	for _, s := range []*kvpb.KeySpan{sp("m", "p"), sp("a", "c"), sp("x", ""), sp("c", "e"), sp("n", "o")} {
		spans, _ = AddSpan(spans, s)
	}
	want := "[a,e) [m,p) [x,∞)"
	got := ""
	for i, s := range spans {
		if i > 0 {
			got += " "
		}
		e := string(s.GetEnd())
		if e == "" {
			e = "∞"
		}
		got += "[" + string(s.GetStart()) + "," + e + ")"
	}
	if got != want {
		t.Fatalf("spans %s, want %s", got, want)
	}
	if _, changed = AddSpan(spans, sp("y", "z")); changed {
		t.Fatal("a covered span changed the set")
	}
	if spans, _ = AddSpan(spans, sp("e", "x")); len(spans) != 1 || len(spans[0].GetEnd()) != 0 {
		t.Fatalf("bridging span: %v", spans)
	}
}

// A key revoke that deletes nothing still takes its revision: a put with
// the lease's check at a lower revision that reaches the log after it must
// fail, not apply.
func TestLeaseRevokeKeysFencesLaterPuts(t *testing.T) {
	tr := newTestRegion(t, "", "")
	rev := tr.region().Revision() + 10
	res := tr.apply(&kvpb.WriteCommand{Revision: rev, Op: &kvpb.WriteCommand_LeaseRevokeKeys{LeaseRevokeKeys: 7}})
	if res.Err != nil || tr.region().Revision() != rev {
		t.Fatalf("revoke keys: %v, revision %d, want %d", res.Err, tr.region().Revision(), rev)
	}
	late := leasePut("a", 7)
	late.Revision = rev - 1
	late.LeaseChecks = []*kvpb.LeaseCheck{{Id: 7, ValidUntil: rev - 1}}
	if res := tr.apply(late); !errors.Is(res.Err, ErrRevisionOrder) {
		t.Fatalf("a put below the revoke: %v", res.Err)
	}
}
