package mvcc

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/raftstore"
)

// testRegion applies writes to one region the way its raft worker does: one
// command per apply batch, at the next revision, with the region state the
// raftstore would persist.
type testRegion struct {
	t      testing.TB
	db     *pebble.DB
	m      *MVCC
	desc   *metapb.Region
	state  []byte
	index  uint64
	events []*kvpb.Event
}

func newTestRegion(t testing.TB, start, end string) *testRegion {
	return newTestRegionOrderedBy(t, start, end, Comparer)
}

// newTestRegionOrderedBy is newTestRegion on a database ordered by cmp, with
// a store's options (bloom filters when cmp splits keys).
func newTestRegionOrderedBy(t testing.TB, start, end string, cmp *pebble.Comparer) *testRegion {
	eng, err := raftstore.OpenEngineWith("/s", vfs.NewMem(), raftstore.EngineOptions{Comparer: cmp, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	db := eng.DB
	m, err := New(db, eng.Opts.Comparer, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Wait(); db.Close() })
	tr := &testRegion{t: t, db: db, m: m,
		desc: &metapb.Region{Id: 1, StartKey: []byte(start), EndKey: []byte(end), RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1}}}
	tr.m.RegionChanged(1, tr.desc, nil)
	tr.m.OnEvents = func(_ *Region, _ int64, evs []*kvpb.Event) { tr.events = append(tr.events, evs...) }
	return tr
}

// apply proposes one write at the next revision (or at rev, when given).
// Production revisions are TSO timestamps with gaps; here the next
// revision is the region's last one plus one, so the scripts read like
// etcd's consecutive revisions.
func (tr *testRegion) apply(wc *kvpb.WriteCommand) *WriteResult {
	if wc.Revision == 0 {
		wc.Revision = tr.region().Revision() + 1
	}
	if wc.LeaseChecks == nil {
		// As the store does: every lease a put attaches is checked with its
		// owner first (here: every lease exists, for ever).
		for _, l := range AttachedLeases(wc) {
			wc.LeaseChecks = append(wc.LeaseChecks, &kvpb.LeaseCheck{Id: l, ValidUntil: math.MaxInt64})
		}
	}
	data, err := proto.Marshal(wc)
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.index++
	ab := raftstore.NewApplyBatch(tr.db.NewIndexedBatch())
	res := tr.m.Apply(ab, raftstore.Command{RegionID: 1, Region: tr.desc, Index: tr.index, Data: data, State: &tr.state})
	ab.Commit()
	return res.(*WriteResult)
}

func (tr *testRegion) region() *Region { return tr.m.Region(1) }

func fmtKV(kv *kvpb.KeyValue) string {
	s := fmt.Sprintf("%s=%s c=%d m=%d v=%d", kv.GetKey(), kv.GetValue(), kv.GetCreateRevision(), kv.GetModRevision(), kv.GetVersion())
	if kv.GetLease() != 0 {
		s += fmt.Sprintf(" l=%d", kv.GetLease())
	}
	return s
}

func argRange(d *datadriven.TestData) (key, end []byte) {
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "k":
			key = []byte(a.Vals[0])
		case "end":
			end = []byte(a.Vals[0])
		case "prefix":
			end = prefixEnd(key)
		case "from":
			end = []byte{0}
		}
	}
	return key, end
}

func prefixEnd(k []byte) []byte {
	e := append([]byte(nil), k...)
	for i := len(e) - 1; i >= 0; i-- {
		if e[i] < 0xff {
			e[i]++
			return e[:i+1]
		}
	}
	return []byte{0}
}

func argInt(d *datadriven.TestData, name string) int64 {
	for _, a := range d.CmdArgs {
		if a.Key == name {
			v, err := strconv.ParseInt(a.Vals[0], 10, 64)
			if err != nil {
				panic(err)
			}
			return v
		}
	}
	return 0
}

func parseRangeReq(t *testing.T, d *datadriven.TestData) *kvpb.RangeRequest {
	key, end := argRange(d)
	req := &kvpb.RangeRequest{Key: key, RangeEnd: end, Revision: argInt(d, "rev"), Limit: argInt(d, "limit"),
		KeysOnly: d.HasArg("keys_only"), CountOnly: d.HasArg("count_only"),
		MinModRevision: argInt(d, "min_mod"), MaxModRevision: argInt(d, "max_mod"),
		MinCreateRevision: argInt(d, "min_create"), MaxCreateRevision: argInt(d, "max_create")}
	if d.HasArg("sort") {
		var spec string
		d.ScanArgs(t, "sort", &spec)
		target, order, _ := strings.Cut(spec, ":")
		req.SortTarget = kvpb.RangeRequest_SortTarget(kvpb.RangeRequest_SortTarget_value[strings.ToUpper(target)])
		req.SortOrder = kvpb.RangeRequest_SortOrder(kvpb.RangeRequest_SortOrder_value[strings.ToUpper(order)])
	}
	return req
}

func fmtRange(r *kvpb.RangeResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "count=%d more=%v", r.GetCount(), r.GetMore())
	for _, kv := range r.GetKvs() {
		b.WriteString("\n" + fmtKV(kv))
	}
	return b.String()
}

// parseOp reads one "put k v [lease=N]", "del k [end]", "get k [end]" or
// "txn ... end" line (nested txns span lines up to their "end").
func parseOp(lines []string, i int) (*kvpb.RequestOp, int) {
	f := strings.Fields(lines[i])
	switch f[0] {
	case "put":
		p := &kvpb.PutRequest{Key: []byte(f[1]), Value: []byte(f[2])}
		if f[2] == "-" { // no value
			p.Value = nil
		}
		for _, x := range f[3:] {
			if strings.HasPrefix(x, "lease=") {
				p.Lease, _ = strconv.ParseInt(strings.TrimPrefix(x, "lease="), 10, 64)
			}
			if x == "ignore_value" {
				p.IgnoreValue = true
			}
		}
		return &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestPut{RequestPut: p}}, i + 1
	case "del":
		d := &kvpb.DeleteRangeRequest{Key: []byte(f[1])}
		if len(f) > 2 {
			d.RangeEnd = []byte(f[2])
		}
		return &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}, i + 1
	case "get":
		r := &kvpb.RangeRequest{Key: []byte(f[1])}
		if len(f) > 2 {
			r.RangeEnd = []byte(f[2])
		}
		return &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestRange{RequestRange: r}}, i + 1
	case "txn":
		t, next := parseTxn(lines, i+1)
		return &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestTxn{RequestTxn: t}}, next
	}
	panic("unknown op " + lines[i])
}

// parseTxn reads "compare", "success" and "failure" lines until "end" or the
// end of input:
//
//	compare value(k1) = v1     compare version(k1..k9) > 0
//	success put k2 v2          failure get k1
func parseTxn(lines []string, i int) (*kvpb.TxnRequest, int) {
	t := &kvpb.TxnRequest{}
	for i < len(lines) {
		line := strings.TrimSpace(lines[i])
		if line == "end" {
			return t, i + 1
		}
		kind, rest, _ := strings.Cut(line, " ")
		switch kind {
		case "compare":
			t.Compare = append(t.Compare, parseCompare(rest))
			i++
		case "success", "failure":
			sub := append([]string{rest}, lines[i+1:]...)
			op, next := parseOp(sub, 0)
			if kind == "success" {
				t.Success = append(t.Success, op)
			} else {
				t.Failure = append(t.Failure, op)
			}
			i += next
		default:
			panic("bad txn line " + line)
		}
	}
	return t, i
}

func parseCompare(s string) *kvpb.Compare {
	f := strings.Fields(s)
	target, keys, _ := strings.Cut(strings.TrimSuffix(f[0], ")"), "(")
	key, end, _ := strings.Cut(keys, "..")
	c := &kvpb.Compare{Key: []byte(key), RangeEnd: []byte(end)}
	c.Result = map[string]kvpb.Compare_CompareResult{"=": kvpb.Compare_EQUAL, "!=": kvpb.Compare_NOT_EQUAL,
		">": kvpb.Compare_GREATER, "<": kvpb.Compare_LESS}[f[1]]
	operand := f[2]
	if operand == `""` {
		operand = ""
	}
	n, _ := strconv.ParseInt(operand, 10, 64)
	switch target {
	case "value":
		c.Target, c.TargetUnion = kvpb.Compare_VALUE, &kvpb.Compare_Value{Value: []byte(operand)}
	case "version":
		c.Target, c.TargetUnion = kvpb.Compare_VERSION, &kvpb.Compare_Version{Version: n}
	case "create":
		c.Target, c.TargetUnion = kvpb.Compare_CREATE, &kvpb.Compare_CreateRevision{CreateRevision: n}
	case "mod":
		c.Target, c.TargetUnion = kvpb.Compare_MOD, &kvpb.Compare_ModRevision{ModRevision: n}
	case "lease":
		c.Target, c.TargetUnion = kvpb.Compare_LEASE, &kvpb.Compare_Lease{Lease: n}
	}
	return c
}

func fmtTxn(b *strings.Builder, t *kvpb.TxnResponse, indent string) {
	fmt.Fprintf(b, "%ssucceeded=%v rev=%d", indent, t.GetSucceeded(), t.GetHeader().GetRevision())
	for _, r := range t.GetResponses() {
		switch x := r.GetResponse().(type) {
		case *kvpb.ResponseOp_ResponseRange:
			fmt.Fprintf(b, "\n%sget: %s", indent, strings.ReplaceAll(fmtRange(x.ResponseRange), "\n", "\n"+indent+"  "))
		case *kvpb.ResponseOp_ResponsePut:
			fmt.Fprintf(b, "\n%sput: rev=%d", indent, x.ResponsePut.GetHeader().GetRevision())
		case *kvpb.ResponseOp_ResponseDeleteRange:
			fmt.Fprintf(b, "\n%sdel: deleted=%d", indent, x.ResponseDeleteRange.GetDeleted())
		case *kvpb.ResponseOp_ResponseTxn:
			b.WriteString("\n")
			fmtTxn(b, x.ResponseTxn, indent+"  ")
		}
	}
}

func TestEtcdSemantics(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		tr := newTestRegion(t, "", "")
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "region":
				var start, end string
				d.MaybeScanArgs(t, "start", &start)
				d.MaybeScanArgs(t, "end", &end)
				tr.desc = &metapb.Region{Id: 1, StartKey: []byte(start), EndKey: []byte(end), RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 2}}
				tr.m.RegionChanged(1, tr.desc, tr.state)
				return "ok"
			case "put":
				var key, val string
				d.ScanArgs(t, "k", &key)
				d.MaybeScanArgs(t, "v", &val)
				p := &kvpb.PutRequest{Key: []byte(key), Value: []byte(val), Lease: argInt(d, "lease"),
					PrevKv: d.HasArg("prev_kv"), IgnoreValue: d.HasArg("ignore_value"), IgnoreLease: d.HasArg("ignore_lease")}
				if err := tr.m.Limits().ValidatePut(p); err != nil {
					return "error: " + err.Error()
				}
				res := tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: p}})
				if res.Err != nil {
					return "error: " + res.Err.Error()
				}
				out := fmt.Sprintf("rev=%d", res.Revision)
				if pk := res.Response.(*kvpb.PutResponse).GetPrevKv(); pk != nil {
					out += "\nprev: " + fmtKV(pk)
				}
				return out
			case "del":
				key, end := argRange(d)
				dr := &kvpb.DeleteRangeRequest{Key: key, RangeEnd: end, PrevKv: d.HasArg("prev_kv")}
				if err := tr.m.Limits().ValidateDeleteRange(dr); err != nil {
					return "error: " + err.Error()
				}
				res := tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_DeleteRange{DeleteRange: dr}})
				if res.Err != nil {
					return "error: " + res.Err.Error()
				}
				r := res.Response.(*kvpb.DeleteRangeResponse)
				out := fmt.Sprintf("rev=%d deleted=%d", r.GetHeader().GetRevision(), r.GetDeleted())
				for _, kv := range r.GetPrevKvs() {
					out += "\nprev: " + fmtKV(kv)
				}
				return out
			case "get":
				resp, err := tr.m.Range(tr.region(), parseRangeReq(t, d), tr.region().Revision())
				if err != nil {
					return "error: " + err.Error()
				}
				return fmtRange(resp)
			case "txn":
				txn, _ := parseTxn(strings.Split(d.Input, "\n"), 0)
				if err := tr.m.Limits().ValidateTxn(txn, proto.Size(txn)); err != nil {
					return "error: " + err.Error()
				}
				res := tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_Txn{Txn: txn}})
				if res.Err != nil {
					return "error: " + res.Err.Error()
				}
				var b strings.Builder
				fmtTxn(&b, res.Response.(*kvpb.TxnResponse), "")
				return b.String()
			case "compact":
				res := tr.apply(&kvpb.WriteCommand{Revision: -1, Op: &kvpb.WriteCommand_Compact{Compact: argInt(d, "rev")}})
				return fmt.Sprintf("compact=%d", res.Revision)
			case "stale-write":
				// A write whose revision is not above the last applied one.
				res := tr.apply(&kvpb.WriteCommand{Revision: argInt(d, "rev"), Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: []byte("stale"), Value: []byte("x")}}})
				if res.Err != nil {
					return "error: " + res.Err.Error()
				}
				return fmt.Sprintf("rev=%d", res.Revision)
			case "events":
				var b strings.Builder
				for _, e := range tr.events {
					fmt.Fprintf(&b, "%s %s", e.GetType(), fmtKV(e.GetKv()))
					if e.GetPrevKv() != nil {
						fmt.Fprintf(&b, " (prev %s)", fmtKV(e.GetPrevKv()))
					}
					b.WriteString("\n")
				}
				tr.events = nil
				return strings.TrimSuffix(b.String(), "\n")
			}
			t.Fatalf("unknown command %s", d.Cmd)
			return ""
		})
	})
}

// A latest read's header carries the revision it read, not one a write
// applied during the read reached: a client paging through a list reads
// the next pages at the first page's header revision, and they would count
// keys the first page never saw. (A robustness run failed on exactly that:
// a first page counted a key deleted just after it was read.)
func TestLatestReadHeaderIsTheRevisionRead(t *testing.T) {
	tr := newTestRegion(t, "", "")
	tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: []byte("a"), Value: []byte("1")}}})
	tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: []byte("b"), Value: []byte("1")}}})
	read := tr.region().Revision()
	// A delete applies after the read took its snapshot.
	testHookRangeSnapshot = func() {
		testHookRangeSnapshot = nil
		tr.apply(&kvpb.WriteCommand{Op: &kvpb.WriteCommand_DeleteRange{DeleteRange: &kvpb.DeleteRangeRequest{Key: []byte("b")}}})
	}
	defer func() { testHookRangeSnapshot = nil }()
	resp, err := tr.m.Range(tr.region(), &kvpb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c"), Limit: 1}, tr.region().Revision())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 2 || resp.Header.GetRevision() != read {
		t.Fatalf("read count %d at header revision %d; the snapshot was at %d (count 2), the delete at %d",
			resp.Count, resp.Header.GetRevision(), read, tr.region().Revision())
	}
	// A read of the past still carries the current revision, as etcd's.
	past, err := tr.m.Range(tr.region(), &kvpb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c"), Revision: read}, tr.region().Revision())
	if err != nil {
		t.Fatal(err)
	}
	if past.Count != 2 || past.Header.GetRevision() != tr.region().Revision() {
		t.Fatalf("a read at %d: count %d, header %d (current %d)", read, past.Count, past.Header.GetRevision(), tr.region().Revision())
	}
}

// comparer is the comparer the test database was opened with.
func (m *MVCC) comparer() *pebble.Comparer {
	if m.prefixSeek {
		return Comparer
	}
	return pebble.DefaultComparer
}
