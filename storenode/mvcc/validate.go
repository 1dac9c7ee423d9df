package mvcc

import (
	"bytes"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// Limits bound what one request may carry. Zero fields take the defaults.
type Limits struct {
	MaxKeyBytes     int // default 8 KiB
	MaxRequestBytes int // default 1.5 MiB, as etcd
	MaxTxnOps       int // default 128, as etcd
}

func (l Limits) withDefaults() Limits {
	if l.MaxKeyBytes == 0 {
		l.MaxKeyBytes = 8 << 10
	}
	if l.MaxRequestBytes == 0 {
		l.MaxRequestBytes = 1536 << 10
	}
	if l.MaxTxnOps == 0 {
		l.MaxTxnOps = 128
	}
	return l
}

// rangeEnd is region.ExclusiveEnd with unboundedness spelled out.
func rangeEnd(key, end []byte) (exclusiveEnd []byte, unbounded bool) {
	e := region.ExclusiveEnd(key, end)
	return e, e == nil
}

func (l Limits) checkKey(key []byte) error {
	if len(key) == 0 {
		return ErrEmptyKey
	}
	if len(key) > l.MaxKeyBytes {
		return ErrKeyTooLarge
	}
	return nil
}

func (l Limits) checkRange(key, end []byte) error {
	if err := l.checkKey(key); err != nil {
		return err
	}
	if len(end) > 1 || (len(end) == 1 && end[0] != 0) {
		if len(end) > l.MaxKeyBytes {
			return ErrKeyTooLarge
		}
		if bytes.Compare(end, key) <= 0 {
			return ErrBadRange
		}
	}
	return nil
}

// ValidateRange checks a read before it is served.
func (l Limits) ValidateRange(r *kvpb.RangeRequest) error {
	l = l.withDefaults()
	if r.GetRevision() < 0 || r.GetLimit() < 0 {
		return ErrBadRange
	}
	return l.checkRange(r.GetKey(), r.GetRangeEnd())
}

// ValidatePut checks a put before it is proposed.
func (l Limits) ValidatePut(r *kvpb.PutRequest) error {
	l = l.withDefaults()
	if err := l.checkPutFields(r); err != nil {
		return err
	}
	if len(r.GetKey())+len(r.GetValue()) > l.MaxRequestBytes {
		return ErrTooLarge
	}
	return nil
}

// checkPutFields: a put that keeps the old value or lease must not also
// give one (etcd refuses the ambiguity rather than pick).
func (l Limits) checkPutFields(r *kvpb.PutRequest) error {
	if err := l.checkKey(r.GetKey()); err != nil {
		return err
	}
	if r.GetIgnoreValue() && len(r.GetValue()) != 0 {
		return ErrValueProvided
	}
	if r.GetIgnoreLease() && r.GetLease() != 0 {
		return ErrLeaseProvided
	}
	return nil
}

// ValidateDeleteRange checks a delete before it is proposed.
func (l Limits) ValidateDeleteRange(r *kvpb.DeleteRangeRequest) error {
	return l.withDefaults().checkRange(r.GetKey(), r.GetRangeEnd())
}

// ValidateTxn checks a transaction before it is proposed: op counts, every
// key, request size, and no key written twice in one branch.
func (l Limits) ValidateTxn(t *kvpb.TxnRequest, size int) error {
	l = l.withDefaults()
	if size > l.MaxRequestBytes {
		return ErrTooLarge
	}
	return l.validateTxn(t)
}

func (l Limits) validateTxn(t *kvpb.TxnRequest) error {
	if len(t.GetCompare()) > l.MaxTxnOps || len(t.GetSuccess()) > l.MaxTxnOps || len(t.GetFailure()) > l.MaxTxnOps {
		return ErrTooManyOps
	}
	for _, c := range t.GetCompare() {
		if err := l.checkRange(c.GetKey(), c.GetRangeEnd()); err != nil {
			return err
		}
	}
	for _, branch := range [][]*kvpb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range branch {
			var err error
			switch r := op.GetRequest().(type) {
			case *kvpb.RequestOp_RequestRange:
				err = l.checkRange(r.RequestRange.GetKey(), r.RequestRange.GetRangeEnd())
			case *kvpb.RequestOp_RequestPut:
				err = l.checkPutFields(r.RequestPut)
			case *kvpb.RequestOp_RequestDeleteRange:
				err = l.checkRange(r.RequestDeleteRange.GetKey(), r.RequestDeleteRange.GetRangeEnd())
			case *kvpb.RequestOp_RequestTxn:
				err = l.validateTxn(r.RequestTxn)
			default:
				err = ErrBadRange
			}
			if err != nil {
				return err
			}
		}
		if err := checkDuplicates(branch); err != nil {
			return err
		}
	}
	return nil
}

type interval struct{ start, end []byte } // end nil: unbounded

// checkDuplicates refuses a branch that puts a key twice, or puts a key
// one of its deletes removes, as etcd does. A nested transaction's two
// branches may write the same key (only one runs), but neither may clash
// with the writes around it.
func checkDuplicates(ops []*kvpb.RequestOp) error {
	_, _, err := branchWrites(ops)
	return err
}

// branchWrites returns the keys a branch puts and the ranges it deletes,
// nested transactions included.
func branchWrites(ops []*kvpb.RequestOp) (map[string]bool, []interval, error) {
	var dels []interval
	for _, op := range ops {
		if d := op.GetRequestDeleteRange(); d != nil {
			end, unbounded := rangeEnd(d.GetKey(), d.GetRangeEnd())
			if unbounded {
				end = nil
			}
			dels = append(dels, interval{d.GetKey(), end})
		}
	}
	deleted := func(k string, ds []interval) bool {
		for _, d := range ds {
			if region.Contains(d.start, d.end, []byte(k)) {
				return true
			}
		}
		return false
	}
	puts := map[string]bool{}
	for _, op := range ops {
		t := op.GetRequestTxn()
		if t == nil {
			continue
		}
		thenPuts, thenDels, err := branchWrites(t.GetSuccess())
		if err != nil {
			return nil, nil, err
		}
		elsePuts, elseDels, err := branchWrites(t.GetFailure())
		if err != nil {
			return nil, nil, err
		}
		// etcd accepts a put followed by a delete of the same key in a
		// later sibling transaction (its versions have sub-revisions).
		// Ours are keyed by revision alone, so both cannot be stored:
		// refuse instead of keeping one silently.
		for k := range puts {
			if deleted(k, thenDels) || deleted(k, elseDels) {
				return nil, nil, ErrDuplicateKey
			}
		}
		for k := range thenPuts {
			if puts[k] || deleted(k, dels) {
				return nil, nil, ErrDuplicateKey
			}
			puts[k] = true
		}
		for k := range elsePuts {
			if (puts[k] && !thenPuts[k]) || deleted(k, dels) {
				return nil, nil, ErrDuplicateKey
			}
			puts[k] = true
		}
		dels = append(append(dels, thenDels...), elseDels...)
	}
	for _, op := range ops {
		if p := op.GetRequestPut(); p != nil {
			k := string(p.GetKey())
			if puts[k] || deleted(k, dels) {
				return nil, nil, ErrDuplicateKey
			}
			puts[k] = true
		}
	}
	return puts, dels, nil
}

// inRegion reports whether [key, etcd range_end) lies within r.
func inRegion(r *metapb.Region, key, end []byte) bool {
	if !region.ContainsKey(r, key) {
		return false
	}
	if len(end) == 0 {
		return true
	}
	e, unbounded := rangeEnd(key, end)
	if unbounded {
		return len(r.GetEndKey()) == 0
	}
	return region.CompareEnd(e, r.GetEndKey()) <= 0
}

// txnInRegion reports whether every key a transaction touches lies in r.
func txnInRegion(r *metapb.Region, t *kvpb.TxnRequest) bool {
	for _, c := range t.GetCompare() {
		if !inRegion(r, c.GetKey(), c.GetRangeEnd()) {
			return false
		}
	}
	for _, branch := range [][]*kvpb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range branch {
			ok := true
			switch x := op.GetRequest().(type) {
			case *kvpb.RequestOp_RequestRange:
				ok = inRegion(r, x.RequestRange.GetKey(), x.RequestRange.GetRangeEnd())
			case *kvpb.RequestOp_RequestPut:
				ok = inRegion(r, x.RequestPut.GetKey(), nil)
			case *kvpb.RequestOp_RequestDeleteRange:
				ok = inRegion(r, x.RequestDeleteRange.GetKey(), x.RequestDeleteRange.GetRangeEnd())
			case *kvpb.RequestOp_RequestTxn:
				ok = txnInRegion(r, x.RequestTxn)
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

// txnFirstKey names a key of the transaction for error messages.
func txnFirstKey(t *kvpb.TxnRequest) []byte {
	if len(t.GetCompare()) > 0 {
		return t.GetCompare()[0].GetKey()
	}
	for _, b := range [][]*kvpb.RequestOp{t.GetSuccess(), t.GetFailure()} {
		for _, op := range b {
			switch x := op.GetRequest().(type) {
			case *kvpb.RequestOp_RequestRange:
				return x.RequestRange.GetKey()
			case *kvpb.RequestOp_RequestPut:
				return x.RequestPut.GetKey()
			case *kvpb.RequestOp_RequestDeleteRange:
				return x.RequestDeleteRange.GetKey()
			case *kvpb.RequestOp_RequestTxn:
				return txnFirstKey(x.RequestTxn)
			}
		}
	}
	return nil
}

// TxnKey returns a key a transaction touches (its first), to find its
// region; nil for an empty transaction.
func TxnKey(t *kvpb.TxnRequest) []byte { return txnFirstKey(t) }
