package client

import (
	"context"
	"fmt"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// Response types, as clientv3 names them.
type (
	GetResponse    = kvpb.RangeResponse
	PutResponse    = kvpb.PutResponse
	DeleteResponse = kvpb.DeleteRangeResponse
	TxnResponse    = kvpb.TxnResponse
)

// KV is the clientv3-shaped view of a Client.
type KV struct{ c *Client }

// KV returns the client's clientv3-shaped API.
func (c *Client) KV() KV { return KV{c} }

// Get reads a key, or a range with WithPrefix, WithRange or WithFromKey;
// over several regions it is a snapshot at one revision.
func (kv KV) Get(ctx context.Context, key string, opts ...OpOption) (*GetResponse, error) {
	return kv.c.Range(ctx, newOp(key, opts).rangeRequest())
}

// Put writes key=val.
func (kv KV) Put(ctx context.Context, key, val string, opts ...OpOption) (*PutResponse, error) {
	o := newOp(key, opts)
	o.val = []byte(val)
	return kv.c.Put(ctx, o.putRequest())
}

// Delete deletes a key or a range (atomic per region; see
// Client.DeleteRange).
func (kv KV) Delete(ctx context.Context, key string, opts ...OpOption) (*DeleteResponse, error) {
	return kv.c.DeleteRange(ctx, newOp(key, opts).deleteRequest())
}

// Compact compacts the cluster's history below rev.
func (kv KV) Compact(ctx context.Context, rev int64) error { return kv.c.Compact(ctx, rev, false) }

// Watch watches a key or a range (WithPrefix, WithRange, WithFromKey),
// from WithRev if given, with WithPrevKV, WithProgressNotify,
// WithCreatedNotify and the filters.
func (kv KV) Watch(ctx context.Context, key string, opts ...OpOption) *Watch {
	o := newOp(key, opts)
	return kv.c.Watch(ctx, o.watchRequest(), WatchOptions{CreatedNotify: o.createdNotify})
}

// Txn starts a transaction: Txn(ctx).If(...).Then(...).Else(...).Commit().
func (kv KV) Txn(ctx context.Context) *Txn { return &Txn{kv: kv, ctx: ctx} }

// Txn builds a single-region transaction. If, Then and Else may each be
// called once, in that order, as in clientv3.
type Txn struct {
	kv              KV
	ctx             context.Context
	cmps            []Cmp
	thenOps         []Op
	elseOps         []Op
	cif, cthen, cel bool
	err             error
}

// If adds comparisons; all must hold for Then to run.
func (t *Txn) If(cs ...Cmp) *Txn {
	if t.cif || t.cthen || t.cel {
		t.fail("If after If, Then or Else")
	}
	t.cif = true
	t.cmps = append(t.cmps, cs...)
	return t
}

// Then adds the operations run when the comparisons hold.
func (t *Txn) Then(ops ...Op) *Txn {
	if t.cthen || t.cel {
		t.fail("Then after Then or Else")
	}
	t.cthen = true
	t.thenOps = append(t.thenOps, ops...)
	return t
}

// Else adds the operations run when they do not.
func (t *Txn) Else(ops ...Op) *Txn {
	if t.cel {
		t.fail("Else after Else")
	}
	t.cel = true
	t.elseOps = append(t.elseOps, ops...)
	return t
}

func (t *Txn) fail(what string) {
	if t.err == nil {
		t.err = fmt.Errorf("client: transaction built wrongly: %s", what)
	}
}

// Commit runs the transaction.
func (t *Txn) Commit() (*TxnResponse, error) {
	if t.err != nil {
		return nil, t.err
	}
	return t.kv.c.Txn(t.ctx, txnRequest(t.cmps, t.thenOps, t.elseOps))
}

func txnRequest(cmps []Cmp, thenOps, elseOps []Op) *kvpb.TxnRequest {
	r := &kvpb.TxnRequest{}
	for _, c := range cmps {
		r.Compare = append(r.Compare, c.pb)
	}
	for _, o := range thenOps {
		r.Success = append(r.Success, o.req)
	}
	for _, o := range elseOps {
		r.Failure = append(r.Failure, o.req)
	}
	return r
}

// Cmp is a transaction comparison: Compare(Value("k"), "=", "v").
type Cmp struct{ pb *kvpb.Compare }

// Value, Version, CreateRevision, ModRevision and LeaseValue name what a
// comparison looks at.
func Value(key string) Cmp { return cmpOf(key, kvpb.Compare_VALUE) }
func Version(key string) Cmp {
	return cmpOf(key, kvpb.Compare_VERSION)
}
func CreateRevision(key string) Cmp { return cmpOf(key, kvpb.Compare_CREATE) }
func ModRevision(key string) Cmp    { return cmpOf(key, kvpb.Compare_MOD) }
func LeaseValue(key string) Cmp     { return cmpOf(key, kvpb.Compare_LEASE) }

func cmpOf(key string, t kvpb.Compare_CompareTarget) Cmp {
	return Cmp{&kvpb.Compare{Key: []byte(key), Target: t}}
}

// WithRange makes a comparison hold for every key in [key, end).
func (c Cmp) WithRange(end string) Cmp { c.pb.RangeEnd = []byte(end); return c }

// WithPrefix makes a comparison hold for every key with the prefix.
func (c Cmp) WithPrefix() Cmp { c.pb.RangeEnd = PrefixEnd(c.pb.GetKey()); return c }

// Compare completes a comparison with an operator ("=", "!=", "<", ">")
// and a value: a string for Value, an integer for the others. A wrong
// operator or value type panics, as in clientv3: it is a programming
// error.
func Compare(c Cmp, result string, v any) Cmp {
	switch result {
	case "=":
		c.pb.Result = kvpb.Compare_EQUAL
	case "!=":
		c.pb.Result = kvpb.Compare_NOT_EQUAL
	case "<":
		c.pb.Result = kvpb.Compare_LESS
	case ">":
		c.pb.Result = kvpb.Compare_GREATER
	default:
		panic(fmt.Sprintf("client: unknown comparison %q", result))
	}
	switch c.pb.GetTarget() {
	case kvpb.Compare_VALUE:
		s, ok := v.(string)
		if !ok {
			panic(fmt.Sprintf("client: a value comparison needs a string, got %T", v))
		}
		c.pb.TargetUnion = &kvpb.Compare_Value{Value: []byte(s)}
	default:
		n, ok := toInt64(v)
		if !ok {
			panic(fmt.Sprintf("client: a %s comparison needs an integer, got %T", c.pb.GetTarget(), v))
		}
		switch c.pb.GetTarget() {
		case kvpb.Compare_VERSION:
			c.pb.TargetUnion = &kvpb.Compare_Version{Version: n}
		case kvpb.Compare_CREATE:
			c.pb.TargetUnion = &kvpb.Compare_CreateRevision{CreateRevision: n}
		case kvpb.Compare_MOD:
			c.pb.TargetUnion = &kvpb.Compare_ModRevision{ModRevision: n}
		case kvpb.Compare_LEASE:
			c.pb.TargetUnion = &kvpb.Compare_Lease{Lease: n}
		}
	}
	return c
}

func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case int32:
		return int64(x), true
	case uint64:
		return int64(x), true
	}
	return 0, false
}

// CompareProto and OpProto expose what a Cmp or an Op sends, for callers
// that build kvpb requests (the command line, the etcd front end).
func CompareProto(c Cmp) *kvpb.Compare { return c.pb }
func OpProto(o Op) *kvpb.RequestOp     { return o.req }
