package mvcc

import (
	"errors"
	"github.com/cockroachdb/pebble/v2"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/region"
)

// Range serves a read of region r at the request's revision (0: the
// region's latest). readable is the highest revision the caller vouches
// the region holds every write at or below (its last applied revision, or
// a resolved revision above it); asking for more is ErrFutureRev. The
// caller has confirmed it may read (raftstore.ReadIndex) and checks the
// guard afterwards.
func (m *MVCC) Range(r *Region, req *kvpb.RangeRequest, readable int64) (*kvpb.RangeResponse, error) {
	if err := m.limits.ValidateRange(req); err != nil {
		return nil, err
	}
	desc := r.Desc()
	if !inRegion(desc, req.GetKey(), req.GetRangeEnd()) {
		return nil, region.KeyNotInRegion(req.GetKey(), desc)
	}
	ver := desc.GetRegionEpoch().GetVersion()
	for attempt := 0; ; attempt++ {
		rev, total, known, latest := req.GetRevision(), int64(0), false, true
		if rev == 0 {
			rev, total, known = r.count.current(r, ver)
		} else {
			total, known, latest = r.count.at(r, rev, readable, ver)
		}
		if rev > max(readable, r.Revision()) {
			return nil, ErrFutureRev
		}
		snap, err := m.snapshotAt(r, rev)
		if err != nil {
			return nil, err
		}
		if testHookRangeSnapshot != nil {
			testHookRangeSnapshot()
		}
		resp, retry, err := m.countedRange(r, snap, desc, req, rev, total, known, attempt == 0 && latest)
		_ = snap.Close()
		if retry {
			continue // the region's count was learnt meanwhile: read again
		}
		if err != nil {
			return nil, err
		}
		// As in etcd, a read of the past carries the store's current
		// revision; a latest read carries the revision it read, never a
		// later one (writes may have applied since): a paginated list reads
		// its next pages at the first page's revision, and a later one
		// would show them writes the first page did not see.
		if req.GetRevision() != 0 {
			resp.Header.Revision = max(rev, r.Revision())
		}
		return resp, nil
	}
}

// testHookRangeSnapshot, when set (tests only), runs in Range between
// taking the read's snapshot and reading it.
var testHookRangeSnapshot func()

// snapshotAt returns a pebble snapshot from which r can be read at rev.
// The compaction check comes after the snapshot is taken: a compaction
// raises the compaction revision before its GC can commit, so a snapshot
// that passed the check holds every version at rev.
func (m *MVCC) snapshotAt(r *Region, rev int64) (*pebble.Snapshot, error) {
	snap := m.db.NewSnapshot()
	if rev < r.CompactRevision() {
		_ = snap.Close()
		return nil, ErrCompacted
	}
	return snap, nil
}

// rangeAt reads [key, range_end) at rev with etcd's semantics: count is
// every live key of the range; the min/max revision filters, sorting and
// limit apply to the returned keys; more says the limit cut some off.
func rangeAt(rd pebble.Reader, req *kvpb.RangeRequest, rev int64) (*kvpb.RangeResponse, error) {
	resp, _, err := rangeAtBudget(rd, req, rev, -1)
	return resp, err
}

// rangeAtBudget is rangeAt that, once it holds every key it returns, stops
// counting after countBudget keys (-1: never): complete false then says
// resp.Count is only a lower bound.
func rangeAtBudget(rd pebble.Reader, req *kvpb.RangeRequest, rev, countBudget int64) (resp *kvpb.RangeResponse, complete bool, err error) {
	end, unbounded := rangeEnd(req.GetKey(), req.GetRangeEnd())
	if unbounded {
		end = nil
	}
	filtering := req.GetMinModRevision() != 0 || req.GetMaxModRevision() != 0 ||
		req.GetMinCreateRevision() != 0 || req.GetMaxCreateRevision() != 0
	sortOrder := req.GetSortOrder()
	switch {
	case req.GetSortTarget() != kvpb.RangeRequest_KEY && sortOrder == kvpb.RangeRequest_NONE:
		sortOrder = kvpb.RangeRequest_ASCEND
	case req.GetSortTarget() == kvpb.RangeRequest_KEY && sortOrder == kvpb.RangeRequest_ASCEND:
		sortOrder = kvpb.RangeRequest_NONE // keys come in ascending order
	}
	// Without filters or sorting, keys past limit+1 need not be collected.
	collectAll := filtering || sortOrder != kvpb.RangeRequest_NONE || req.GetLimit() == 0
	resp = &kvpb.RangeResponse{Header: &kvpb.ResponseHeader{Revision: rev}}
	var count int64
	complete = true
	onlyCounting := func() bool {
		return req.GetCountOnly() || !collectAll && int64(len(resp.Kvs)) > req.GetLimit()
	}
	err = visitCounting(rd, req.GetKey(), end, rev, onlyCounting, func(key []byte, rec record, modRev int64) (bool, error) {
		count++
		if onlyCounting() {
			if countBudget >= 0 && count >= countBudget {
				complete = false
				return false, nil
			}
			return true, nil
		}
		kv := toKV(key, rec, modRev)
		if keep(req, kv) {
			if req.GetKeysOnly() {
				kv.Value = nil
			}
			resp.Kvs = append(resp.Kvs, kv)
		}
		return true, nil
	})
	if err != nil {
		return nil, false, err
	}
	resp.Count = count
	if sortOrder != kvpb.RangeRequest_NONE {
		kvpb.SortKeyValues(resp.Kvs, req.GetSortTarget(), sortOrder == kvpb.RangeRequest_DESCEND)
	}
	if l := req.GetLimit(); l > 0 && int64(len(resp.Kvs)) > l {
		resp.Kvs = resp.Kvs[:l]
		resp.More = true
	}
	return resp, complete, nil
}

func keep(req *kvpb.RangeRequest, kv *kvpb.KeyValue) bool {
	switch {
	case req.GetMaxModRevision() != 0 && kv.GetModRevision() > req.GetMaxModRevision():
		return false
	case req.GetMinModRevision() != 0 && kv.GetModRevision() < req.GetMinModRevision():
		return false
	case req.GetMaxCreateRevision() != 0 && kv.GetCreateRevision() > req.GetMaxCreateRevision():
		return false
	case req.GetMinCreateRevision() != 0 && kv.GetCreateRevision() < req.GetMinCreateRevision():
		return false
	}
	return true
}

// ReadTxn evaluates a transaction that writes nothing as a read: its
// compares and every range in it see the region at one revision, the
// region's current one.
func (m *MVCC) ReadTxn(r *Region, t *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	desc := r.Desc()
	if !txnInRegion(desc, t) {
		return nil, region.KeyNotInRegion(txnFirstKey(t), desc)
	}
	for attempt := 0; ; attempt++ {
		// The revision and the region's count at it, read together, as
		// Range reads them.
		rev, total, known := r.count.current(r, desc.GetRegionEpoch().GetVersion())
		snap, err := m.snapshotAt(r, rev)
		if err != nil {
			return nil, err
		}
		w := &writer{m: m, r: snap, region: desc, rev: rev, readRev: rev, prevRev: rev, compactRev: r.CompactRevision(),
			counted: &txnCount{r: r, total: total, known: known, mayWait: attempt == 0}}
		resp, err := w.readTxn(t)
		_ = snap.Close()
		if errors.Is(err, errCountLearnt) {
			continue
		}
		if err != nil {
			return nil, err
		}
		setTxnHeaders(resp, rev)
		return resp, nil
	}
}

func (w *writer) readTxn(t *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	path, err := w.choosePath(t)
	if err != nil {
		return nil, err
	}
	if err := w.checkPath(t, path); err != nil {
		return nil, err
	}
	return w.applyTxn(t, &path)
}
