package client

import (
	"github.com/basaltdb/basalt/proto/kvpb"
)

// An etcd-clientv3-shaped API over the request-level methods: KV with
// Get, Put, Delete, Txn, Compact and Watch taking string keys and
// options. The option names and meanings are clientv3's.

// OpOption sets an option of an operation.
type OpOption func(*op)

// op is one operation being built.
type op struct {
	key, end, val []byte
	rev, limit    int64
	lease         int64
	sortTarget    kvpb.RangeRequest_SortTarget
	sortOrder     kvpb.RangeRequest_SortOrder
	keysOnly      bool
	countOnly     bool
	prevKV        bool
	ignoreValue   bool
	ignoreLease   bool
	minModRev     int64
	maxModRev     int64
	minCreateRev  int64
	maxCreateRev  int64
	prefix        bool
	fromKey       bool
	serializable  bool
	// watch only
	progressNotify bool
	createdNotify  bool
	filterPut      bool
	filterDelete   bool
}

func newOp(key string, opts []OpOption) *op {
	o := &op{key: []byte(key)}
	for _, f := range opts {
		f(o)
	}
	switch {
	case o.prefix:
		o.end = PrefixEnd(o.key)
	case o.fromKey:
		o.end = []byte{0}
	}
	return o
}

// PrefixEnd is the range end covering every key with prefix p, as etcd's
// GetPrefixRangeEnd ("\x00", every key, for an empty or all-0xff prefix).
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// WithPrefix: every key starting with the key.
func WithPrefix() OpOption { return func(o *op) { o.prefix = true } }

// WithRange: the keys in [key, end).
func WithRange(end string) OpOption { return func(o *op) { o.end = []byte(end) } }

// WithFromKey: every key at or above the key.
func WithFromKey() OpOption { return func(o *op) { o.fromKey = true } }

// WithRev: read at (or watch from) a revision.
func WithRev(rev int64) OpOption { return func(o *op) { o.rev = rev } }

// WithLimit: at most n keys.
func WithLimit(n int64) OpOption { return func(o *op) { o.limit = n } }

// WithKeysOnly: keys without values.
func WithKeysOnly() OpOption { return func(o *op) { o.keysOnly = true } }

// WithCountOnly: only the count.
func WithCountOnly() OpOption { return func(o *op) { o.countOnly = true } }

// WithSort orders a Get's result.
func WithSort(target kvpb.RangeRequest_SortTarget, order kvpb.RangeRequest_SortOrder) OpOption {
	return func(o *op) { o.sortTarget, o.sortOrder = target, order }
}

// WithPrevKV: return (Put, Delete) or send (Watch) the previous key-value.
func WithPrevKV() OpOption { return func(o *op) { o.prevKV = true } }

// WithLease attaches a Put's key to a lease.
func WithLease(id int64) OpOption { return func(o *op) { o.lease = id } }

// WithIgnoreValue: a Put keeps the current value.
func WithIgnoreValue() OpOption { return func(o *op) { o.ignoreValue = true } }

// WithIgnoreLease: a Put keeps the current lease.
func WithIgnoreLease() OpOption { return func(o *op) { o.ignoreLease = true } }

// WithMinModRev, WithMaxModRev, WithMinCreateRev, WithMaxCreateRev filter
// a Get by revision.
func WithMinModRev(rev int64) OpOption    { return func(o *op) { o.minModRev = rev } }
func WithMaxModRev(rev int64) OpOption    { return func(o *op) { o.maxModRev = rev } }
func WithMinCreateRev(rev int64) OpOption { return func(o *op) { o.minCreateRev = rev } }
func WithMaxCreateRev(rev int64) OpOption { return func(o *op) { o.maxCreateRev = rev } }

// WithSerializable: a Get may be served by any replica of the region,
// follower or leader, from what that replica has applied, without a round
// to the leader: as etcd's serializable read, it may miss the latest
// writes (see Client.Range).
func WithSerializable() OpOption { return func(o *op) { o.serializable = true } }

// WithProgressNotify: a watch sends progress notifications.
func WithProgressNotify() OpOption { return func(o *op) { o.progressNotify = true } }

// WithCreatedNotify: a watch's first response says it is created.
func WithCreatedNotify() OpOption { return func(o *op) { o.createdNotify = true } }

// WithFilterPut, WithFilterDelete: a watch skips those events.
func WithFilterPut() OpOption    { return func(o *op) { o.filterPut = true } }
func WithFilterDelete() OpOption { return func(o *op) { o.filterDelete = true } }

func (o *op) rangeRequest() *kvpb.RangeRequest {
	return &kvpb.RangeRequest{Key: o.key, RangeEnd: o.end, Revision: o.rev, Limit: o.limit,
		SortTarget: o.sortTarget, SortOrder: o.sortOrder, KeysOnly: o.keysOnly, CountOnly: o.countOnly,
		MinModRevision: o.minModRev, MaxModRevision: o.maxModRev, MinCreateRevision: o.minCreateRev, MaxCreateRevision: o.maxCreateRev,
		Serializable: o.serializable}
}

func (o *op) putRequest() *kvpb.PutRequest {
	return &kvpb.PutRequest{Key: o.key, Value: o.val, Lease: o.lease, PrevKv: o.prevKV, IgnoreValue: o.ignoreValue, IgnoreLease: o.ignoreLease}
}

func (o *op) deleteRequest() *kvpb.DeleteRangeRequest {
	return &kvpb.DeleteRangeRequest{Key: o.key, RangeEnd: o.end, PrevKv: o.prevKV}
}

func (o *op) watchRequest() *kvpb.WatchCreateRequest {
	w := &kvpb.WatchCreateRequest{Key: o.key, RangeEnd: o.end, StartRevision: o.rev, ProgressNotify: o.progressNotify, PrevKv: o.prevKV}
	if o.filterPut {
		w.Filters = append(w.Filters, kvpb.WatchCreateRequest_NOPUT)
	}
	if o.filterDelete {
		w.Filters = append(w.Filters, kvpb.WatchCreateRequest_NODELETE)
	}
	return w
}

// Op is an operation inside a transaction.
type Op struct{ req *kvpb.RequestOp }

// OpGet reads inside a transaction.
func OpGet(key string, opts ...OpOption) Op {
	return Op{&kvpb.RequestOp{Request: &kvpb.RequestOp_RequestRange{RequestRange: newOp(key, opts).rangeRequest()}}}
}

// OpPut writes inside a transaction.
func OpPut(key, val string, opts ...OpOption) Op {
	o := newOp(key, opts)
	o.val = []byte(val)
	return Op{&kvpb.RequestOp{Request: &kvpb.RequestOp_RequestPut{RequestPut: o.putRequest()}}}
}

// OpDelete deletes inside a transaction.
func OpDelete(key string, opts ...OpOption) Op {
	return Op{&kvpb.RequestOp{Request: &kvpb.RequestOp_RequestDeleteRange{RequestDeleteRange: newOp(key, opts).deleteRequest()}}}
}

// OpTxn nests a transaction.
func OpTxn(cmps []Cmp, thenOps, elseOps []Op) Op {
	return Op{&kvpb.RequestOp{Request: &kvpb.RequestOp_RequestTxn{RequestTxn: txnRequest(cmps, thenOps, elseOps)}}}
}
