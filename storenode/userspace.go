package storenode

import (
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// The system range (region.SystemStart onwards, at the end of the key
// space) is hidden at the KV service's edge: user writes to it are
// refused, user ranges that reach into it are cut to end before it, and
// watches never show its events (watcher.filter). Lease records go through
// their own commands, never through these paths.

// clipRange cuts a read to the user key space; false: nothing is left.
func clipRange(req *kvpb.RangeRequest) bool {
	k, e, ok := region.ClipUserRange(req.GetKey(), req.GetRangeEnd())
	req.Key, req.RangeEnd = k, e
	return ok
}

// clipDelete cuts a delete to the user key space; false: nothing is left.
func clipDelete(req *kvpb.DeleteRangeRequest) bool {
	k, e, ok := region.ClipUserRange(req.GetKey(), req.GetRangeEnd())
	req.Key, req.RangeEnd = k, e
	return ok
}

// clipTxn cuts every range of a transaction to the user key space and
// refuses one that names a system key (or a range starting in the system
// range): a compare or a put there has no user meaning.
func clipTxn(t *kvpb.TxnRequest) error {
	for _, c := range t.GetCompare() {
		k, e, ok := region.ClipUserRange(c.GetKey(), c.GetRangeEnd())
		if !ok {
			return mvcc.ErrReservedKey
		}
		c.Key, c.RangeEnd = k, e
	}
	for _, ops := range [][]*kvpb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range ops {
			switch x := op.GetRequest().(type) {
			case *kvpb.RequestOp_RequestRange:
				if !clipRange(x.RequestRange) {
					return mvcc.ErrReservedKey
				}
			case *kvpb.RequestOp_RequestPut:
				if region.IsSystemKey(x.RequestPut.GetKey()) {
					return mvcc.ErrReservedKey
				}
			case *kvpb.RequestOp_RequestDeleteRange:
				if !clipDelete(x.RequestDeleteRange) {
					return mvcc.ErrReservedKey
				}
			case *kvpb.RequestOp_RequestTxn:
				if err := clipTxn(x.RequestTxn); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
