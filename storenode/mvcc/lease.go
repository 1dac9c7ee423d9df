package mvcc

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// Leases in the MVCC (docs/leases.md): a lease's record is the value of
// region.LeaseKey(id), an ordinary versioned key in the system range, so
// records split, merge, replicate and travel in snapshots with their
// regions. Data regions find the keys attached to a lease through an
// in-memory index over the latest versions of this store's data.

var (
	ErrLeaseExist       = errors.New("etcdserver: lease already exists")
	ErrLeaseTTLTooLarge = errors.New("etcdserver: too large lease TTL")
	// ErrLeaseCheckStale: a put carried its lease's check past the revision
	// the check was valid to. Nothing was applied; the store validates the
	// lease again and retries.
	ErrLeaseCheckStale = errors.New("mvcc: lease check expired before the write's revision; revalidate")
	// ErrReservedKey: users may not read or write the system range.
	ErrReservedKey = errors.New("basalt: keys from 0xFF 0xFF 0xFF 0xFF \"basalt/\" on are reserved for system data")
)

// MaxLeaseTTL is etcd's bound on a lease's TTL, in seconds.
const MaxLeaseTTL = 9_000_000_000

// leaseIndex maps a lease to the keys of this store whose latest version
// carries it. It may hold keys that no longer carry the lease (users of it
// check each key's latest version), but must never miss one: every replica
// of a region deletes the same keys on a revoke only if each finds them
// all. Kept current by Apply, rebuilt from pebble at start and over the
// range of every snapshot a region receives.
type leaseIndex struct {
	mu   sync.Mutex
	keys map[int64]map[string]struct{}
}

func (x *leaseIndex) add(lease int64, key []byte) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.keys == nil {
		x.keys = map[int64]map[string]struct{}{}
	}
	set := x.keys[lease]
	if set == nil {
		set = map[string]struct{}{}
		x.keys[lease] = set
	}
	set[string(key)] = struct{}{}
}

func (x *leaseIndex) remove(lease int64, key []byte) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if set := x.keys[lease]; set != nil {
		delete(set, string(key))
		if len(set) == 0 {
			delete(x.keys, lease)
		}
	}
}

// keysIn returns the indexed keys of lease inside desc's range, sorted.
func (x *leaseIndex) keysIn(lease int64, desc *metapb.Region) [][]byte {
	x.mu.Lock()
	var out [][]byte
	for k := range x.keys[lease] {
		if region.ContainsKey(desc, []byte(k)) {
			out = append(out, []byte(k))
		}
	}
	x.mu.Unlock()
	slices.SortFunc(out, bytes.Compare)
	return out
}

// Leases returns how many leases the index holds keys for (metrics, tests).
func (x *leaseIndex) leases() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.keys)
}

// indexLeases adds every latest version in [start, end) that carries a
// lease to the index.
func (m *MVCC) indexLeases(start, end []byte) error {
	return visit(m.db, start, end, math.MaxInt64, func(key []byte, rec record, _ int64) (bool, error) {
		if rec.lease != 0 {
			m.leaseIdx.add(rec.lease, key)
		}
		return true, nil
	})
}

// DataReplaced implements raftstore.DataReplacedNotifier: the keys a
// snapshot brought are indexed.
func (m *MVCC) DataReplaced(desc *metapb.Region) {
	if r := m.Region(desc.GetId()); r != nil {
		r.count.forget()
	}
	if err := m.indexLeases(desc.GetStartKey(), endOrNil(desc.GetEndKey())); err != nil {
		panic(err) // the data was just written; failing to read it back is a broken store
	}
}

func endOrNil(end []byte) []byte {
	if len(end) == 0 {
		return nil
	}
	return end
}

// LeaseKeys returns the keys of r attached to lease, as of now.
func (m *MVCC) LeaseKeys(r *Region, lease int64) ([][]byte, error) {
	snap := m.db.NewSnapshot()
	defer snap.Close()
	var out [][]byte
	for _, k := range m.leaseIdx.keysIn(lease, r.Desc()) {
		rec, _, found, err := m.get(snap, k, math.MaxInt64)
		if err != nil {
			return nil, err
		}
		if found && rec.lease == lease {
			out = append(out, k)
		}
	}
	return out, nil
}

// LeaseRecords returns the lease records r holds, as of now.
func (m *MVCC) LeaseRecords(r *Region) ([]*kvpb.LeaseRecord, error) {
	desc := r.Desc()
	start, end := region.LeasePrefix, region.LeaseSpanEnd
	if bytes.Compare(desc.GetStartKey(), start) > 0 {
		start = desc.GetStartKey()
	}
	if e := desc.GetEndKey(); len(e) > 0 && bytes.Compare(e, end) < 0 {
		end = e
	}
	if bytes.Compare(start, end) >= 0 {
		return nil, nil
	}
	var out []*kvpb.LeaseRecord
	err := visit(m.db, start, end, math.MaxInt64, func(_ []byte, rec record, _ int64) (bool, error) {
		lr := &kvpb.LeaseRecord{}
		if err := proto.Unmarshal(rec.value, lr); err != nil {
			return false, err
		}
		out = append(out, lr)
		return true, nil
	})
	return out, err
}

// LeaseRecord returns lease id's record in r, or nil.
func (m *MVCC) LeaseRecord(r *Region, id int64) (*kvpb.LeaseRecord, error) {
	if key := region.LeaseKey(id); !region.ContainsKey(r.Desc(), key) {
		return nil, region.KeyNotInRegion(key, r.Desc())
	}
	return m.readLeaseRecord(m.db, id)
}

func (m *MVCC) readLeaseRecord(rd pebble.Reader, id int64) (*kvpb.LeaseRecord, error) {
	rec, _, found, err := m.get(rd, region.LeaseKey(id), math.MaxInt64)
	if err != nil || !found {
		return nil, err
	}
	lr := &kvpb.LeaseRecord{}
	if err := proto.Unmarshal(rec.value, lr); err != nil {
		return nil, err
	}
	return lr, nil
}

// ---- applying lease commands ----

func (w *writer) putLeaseRecord(lr *kvpb.LeaseRecord) error {
	v, err := proto.Marshal(lr)
	if err != nil {
		return err
	}
	_, err = w.doPut(&kvpb.PutRequest{Key: region.LeaseKey(lr.GetId()), Value: v})
	return err
}

func (w *writer) leaseRecordHere(id int64) (*kvpb.LeaseRecord, error) {
	if key := region.LeaseKey(id); !inRegion(w.region, key, nil) {
		return nil, region.KeyNotInRegion(key, w.region)
	}
	return w.m.readLeaseRecord(w.r, id)
}

func (w *writer) leaseGrant(g *kvpb.LeaseGrantRequest) (*kvpb.LeaseGrantResponse, error) {
	lr, err := w.leaseRecordHere(g.GetId())
	if err != nil {
		return nil, err
	}
	if lr != nil {
		return nil, ErrLeaseExist
	}
	if g.GetId() <= 0 || g.GetTtl() <= 0 {
		return nil, ErrLeaseNotFound // the store validates both first; never reached from it
	}
	if g.GetTtl() > MaxLeaseTTL {
		return nil, ErrLeaseTTLTooLarge
	}
	if err := w.putLeaseRecord(&kvpb.LeaseRecord{Id: g.GetId(), Ttl: g.GetTtl()}); err != nil {
		return nil, err
	}
	return &kvpb.LeaseGrantResponse{Header: &kvpb.ResponseHeader{Revision: w.rev}, Id: g.GetId(), Ttl: g.GetTtl()}, nil
}

// leaseAttach registers a span with a live lease. The record after the
// command is the response.
func (w *writer) leaseAttach(a *kvpb.LeaseAttachRequest) (*kvpb.LeaseRecord, error) {
	lr, err := w.leaseRecordHere(a.GetId())
	if err != nil {
		return nil, err
	}
	if lr == nil || lr.GetRevoking() {
		return nil, ErrLeaseNotFound
	}
	spans, changed := AddSpan(lr.GetSpans(), a.GetSpan())
	if !changed {
		return lr, nil
	}
	lr.Spans = spans
	return lr, w.putLeaseRecord(lr)
}

func (w *writer) leaseRevoking(id int64) (*kvpb.LeaseRecord, error) {
	lr, err := w.leaseRecordHere(id)
	if err != nil {
		return nil, err
	}
	if lr == nil {
		return nil, ErrLeaseNotFound
	}
	if lr.GetRevoking() {
		return lr, nil
	}
	lr.Revoking = true
	return lr, w.putLeaseRecord(lr)
}

func (w *writer) leaseDelete(id int64) (*kvpb.LeaseRecord, error) {
	lr, err := w.leaseRecordHere(id)
	if err != nil || lr == nil {
		return lr, err
	}
	_, err = w.doDeleteRange(&kvpb.DeleteRangeRequest{Key: region.LeaseKey(id)})
	return lr, err
}

// leaseRevokeKeys deletes every key of the region whose latest version
// carries the lease, all at this write's revision.
func (w *writer) leaseRevokeKeys(id int64) (*kvpb.LeaseRevokeKeysResponse, error) {
	resp := &kvpb.LeaseRevokeKeysResponse{Header: &kvpb.ResponseHeader{Revision: w.rev}}
	for _, k := range w.m.leaseIdx.keysIn(id, w.region) {
		rec, rev, found, err := w.m.get(w.r, k, w.readRev)
		if err != nil {
			return nil, err
		}
		if !found || rec.lease != id {
			w.m.leaseIdx.remove(id, k)
			continue
		}
		if err := w.tombstone(k, rec, rev); err != nil {
			return nil, err
		}
		resp.Deleted++
	}
	return resp, nil
}

// checkLease: a put attaching a lease needs the lease owner's check, valid
// at this write's revision.
func (w *writer) checkLease(p *kvpb.PutRequest) error {
	l := p.GetLease()
	if l == 0 || p.GetIgnoreLease() {
		return nil
	}
	until, ok := w.leaseChecks[l]
	if !ok {
		return ErrLeaseNotFound
	}
	if until < w.rev {
		return ErrLeaseCheckStale
	}
	return nil
}

// ---- spans ----

// AddSpan adds s to spans (sorted, disjoint, not touching) and reports
// whether that changed them: a span already covered changes nothing.
func AddSpan(spans []*kvpb.KeySpan, s *kvpb.KeySpan) ([]*kvpb.KeySpan, bool) {
	for _, x := range spans {
		if bytes.Compare(x.GetStart(), s.GetStart()) <= 0 && region.CompareEnd(s.GetEnd(), x.GetEnd()) <= 0 {
			return spans, false
		}
	}
	all := append(slices.Clone(spans), &kvpb.KeySpan{Start: s.GetStart(), End: s.GetEnd()})
	slices.SortFunc(all, func(a, b *kvpb.KeySpan) int { return bytes.Compare(a.GetStart(), b.GetStart()) })
	out := all[:1]
	for _, x := range all[1:] {
		last := out[len(out)-1]
		if len(last.GetEnd()) == 0 || bytes.Compare(x.GetStart(), last.GetEnd()) <= 0 {
			if region.CompareEnd(x.GetEnd(), last.GetEnd()) > 0 {
				out[len(out)-1] = &kvpb.KeySpan{Start: last.GetStart(), End: x.GetEnd()}
			}
			continue
		}
		out = append(out, x)
	}
	return out, true
}

// AttachedLeases lists, without repeats, the leases a write's puts would
// attach (both branches of every transaction: the branch is chosen only at
// apply).
func AttachedLeases(wc *kvpb.WriteCommand) []int64 {
	var out []int64
	note := func(p *kvpb.PutRequest) {
		if l := p.GetLease(); l != 0 && !p.GetIgnoreLease() && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	var walk func(t *kvpb.TxnRequest)
	walk = func(t *kvpb.TxnRequest) {
		for _, ops := range [][]*kvpb.RequestOp{t.GetSuccess(), t.GetFailure()} {
			for _, op := range ops {
				if p := op.GetRequestPut(); p != nil {
					note(p)
				} else if nt := op.GetRequestTxn(); nt != nil {
					walk(nt)
				}
			}
		}
	}
	switch op := wc.GetOp().(type) {
	case *kvpb.WriteCommand_Put:
		note(op.Put)
	case *kvpb.WriteCommand_Txn:
		walk(op.Txn)
	}
	return out
}
