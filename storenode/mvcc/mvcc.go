package mvcc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/region"
)

// MVCC is the state machine of every region of a store (it implements
// raftstore.StateMachine) and serves their reads.
type MVCC struct {
	db     *pebble.DB
	limits Limits
	// prefixSeek: the database orders keys with Comparer, so a point read
	// of one key's versions may seek by prefix (and use bloom filters).
	prefixSeek bool

	mu      sync.RWMutex
	regions map[uint64]*Region

	// OnEvents, if set, receives each applied write's events, after they
	// are committed to pebble, in revision order per region.
	OnEvents func(r *Region, rev int64, events []*kvpb.Event)

	leaseIdx leaseIndex

	// learns: region counts being walked in the background (count.go).
	learns sync.WaitGroup
}

// Wait waits for the background walks to end; call it before closing the
// database.
func (m *MVCC) Wait() { m.learns.Wait() }

// Region is the MVCC view of one region on this store.
type Region struct {
	ID   uint64
	desc atomic.Pointer[metapb.Region]
	// lastRev is the revision of the last write applied and committed to
	// pebble; a read at it sees every write applied so far.
	lastRev atomic.Int64
	// compactRev: reads below it fail with ErrCompacted.
	compactRev atomic.Int64
	// Data is for the layers above (the watch hub, the sequencer).
	Data atomic.Value
	size sizeStats
	// count: how many live user keys the region holds (count.go).
	count regionCount
}

// Desc returns the region's descriptor as last applied.
func (r *Region) Desc() *metapb.Region { return r.desc.Load() }

// Revision returns the region's last applied revision.
func (r *Region) Revision() int64 { return r.lastRev.Load() }

// CompactRevision returns the region's compaction revision.
func (r *Region) CompactRevision() int64 { return r.compactRev.Load() }

// New returns the MVCC state machine over db, whose keys cmp orders (this
// package's Comparer, or pebble's bytewise one for a database made before
// it). It reads the latest version of every key once, to index the keys
// attached to leases.
func New(db *pebble.DB, cmp *pebble.Comparer, limits Limits) (*MVCC, error) {
	m := &MVCC{db: db, limits: limits.withDefaults(), regions: make(map[uint64]*Region), prefixSeek: cmp != nil && cmp.Name == Comparer.Name}
	if err := m.indexLeases(nil, nil); err != nil {
		return nil, fmt.Errorf("mvcc: index leased keys: %w", err)
	}
	return m, nil
}

// Limits returns the request limits in force.
func (m *MVCC) Limits() Limits { return m.limits }

// DataSpans implements raftstore.StateMachine.
func (m *MVCC) DataSpans(start, end []byte) []raftstore.Span { return DataSpans(start, end) }

// RegionChanged implements raftstore.StateMachine.
func (m *MVCC) RegionChanged(id uint64, desc *metapb.Region, state []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if desc == nil {
		delete(m.regions, id)
		return
	}
	r := m.regions[id]
	if r == nil {
		r = &Region{ID: id}
		m.regions[id] = r
	}
	if old := r.desc.Load(); old == nil || !region.SameRange(old, desc) {
		r.noteRangeChanged()
	}
	r.desc.Store(desc)
	st := decodeRegionState(state)
	// A split, a merge, a snapshot: the count was of other data.
	r.count.reset(r, st.lastRev)
	r.compactRev.Store(st.compactRev)
}

// MergeState implements raftstore.StateMachine: the merged region's
// revision is past both regions' writes, and reads below either
// compaction revision stay refused.
func (m *MVCC) MergeState(target, source []byte) []byte {
	t, s := decodeRegionState(target), decodeRegionState(source)
	return regionState{lastRev: max(t.lastRev, s.lastRev), compactRev: max(t.compactRev, s.compactRev)}.encode()
}

// Region returns a region's MVCC view, or nil.
func (m *MVCC) Region(id uint64) *Region {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.regions[id]
}

// WriteResult is what Apply returns for a write: the response, or the
// error that made it change nothing.
type WriteResult struct {
	Revision int64
	Response proto.Message
	Err      error
}

// Apply implements raftstore.StateMachine: one WriteCommand at its
// revision, atomically.
func (m *MVCC) Apply(ab *raftstore.ApplyBatch, c raftstore.Command) any {
	var wc kvpb.WriteCommand
	if err := proto.Unmarshal(c.Data, &wc); err != nil {
		panic(fmt.Sprintf("mvcc: region %d entry %d: %v", c.RegionID, c.Index, err))
	}
	st := decodeRegionState(*c.State)
	reg := m.Region(c.RegionID)
	switch op := wc.GetOp().(type) {
	case *kvpb.WriteCommand_Compact:
		if op.Compact > st.compactRev {
			st.compactRev = op.Compact
			// The region's revision moves up to the compaction revision:
			// a latest read (at the region's revision) must never fall
			// below it, and a write still carrying an older revision must
			// not change the compacted past (it fails ErrRevisionOrder
			// and is retried with a fresh one).
			raised := op.Compact > st.lastRev
			st.lastRev = max(st.lastRev, op.Compact)
			*c.State = st.encode()
			if reg != nil {
				// Raised before the batch commits: a reader that checks the
				// compaction revision after taking its pebble snapshot
				// then never misses versions a later GC in this batch
				// deletes. Failing a read early is harmless: the
				// compaction is committed or replayed after a crash.
				reg.compactRev.Store(op.Compact)
				if raised {
					ab.AfterCommit(func() { reg.count.raise(reg, op.Compact) })
				}
			}
		}
		return &WriteResult{Revision: st.compactRev}
	case *kvpb.WriteCommand_Gc:
		// Deterministic whatever the leader's view: each version is checked
		// against this replica's data as it was before the batch (all are
		// judged first, then deleted).
		var garbage [][]byte
		for _, k := range op.Gc.GetKeys() {
			if region.ContainsKey(c.Region, mustUserKey(k)) && isGarbage(ab, k, st.compactRev) {
				garbage = append(garbage, k)
			}
		}
		for _, k := range garbage {
			if err := ab.Delete(k, nil); err != nil {
				panic(err)
			}
		}
		if reg != nil && len(garbage) > 0 {
			ab.AfterCommit(reg.noteGC)
		}
		return &WriteResult{}
	}
	rev := wc.GetRevision()
	if rev <= st.lastRev {
		return &WriteResult{Err: ErrRevisionOrder}
	}
	w := &writer{m: m, r: ab, b: ab.Batch, region: c.Region, rev: rev, readRev: math.MaxInt64, prevRev: st.lastRev, compactRev: st.compactRev}
	for _, lc := range wc.GetLeaseChecks() {
		if w.leaseChecks == nil {
			w.leaseChecks = map[int64]int64{}
		}
		w.leaseChecks[lc.GetId()] = lc.GetValidUntil()
	}
	var resp proto.Message
	var err error
	switch op := wc.GetOp().(type) {
	case *kvpb.WriteCommand_Put:
		resp, err = w.put(op.Put)
	case *kvpb.WriteCommand_DeleteRange:
		resp, err = w.deleteRange(op.DeleteRange)
	case *kvpb.WriteCommand_Txn:
		resp, err = w.txn(op.Txn)
	case *kvpb.WriteCommand_LeaseGrant:
		resp, err = w.leaseGrant(op.LeaseGrant)
	case *kvpb.WriteCommand_LeaseAttach:
		resp, err = w.leaseAttach(op.LeaseAttach)
	case *kvpb.WriteCommand_LeaseRevoking:
		resp, err = w.leaseRevoking(op.LeaseRevoking)
	case *kvpb.WriteCommand_LeaseDelete:
		resp, err = w.leaseDelete(op.LeaseDelete)
	case *kvpb.WriteCommand_LeaseRevokeKeys:
		resp, err = w.leaseRevokeKeys(op.LeaseRevokeKeys)
	default:
		panic(fmt.Sprintf("mvcc: region %d entry %d: unknown write %T", c.RegionID, c.Index, op))
	}
	if err != nil {
		return &WriteResult{Err: err}
	}
	_, fence := wc.GetOp().(*kvpb.WriteCommand_LeaseRevokeKeys)
	if len(w.events) == 0 && !fence {
		// Nothing changed (a delete of missing keys, a txn that only read):
		// as in etcd, no new revision.
		setRevision(resp, st.lastRev)
		return &WriteResult{Revision: st.lastRev, Response: resp}
	}
	// A lease's key revoke takes its revision even when it deleted nothing:
	// a put that carried the lease's check (at a lower revision) and reaches
	// the log after it must then fail ErrRevisionOrder, not apply
	// (docs/leases.md).
	prevRev := st.lastRev
	st.lastRev = rev
	*c.State = st.encode()
	if reg != nil {
		events := w.events
		// A revision's events go to watchers in key order: the order a
		// watch replaying history reads them in (versions are stored by
		// key and revision, with no sub-revision), so a watch sees the
		// same order live, from history, and when resumed. etcd orders
		// them as the transaction's operations; docs/etcd-compatibility.md.
		sortEventsByKey(events)
		written := w.written
		ver := c.Region.GetRegionEpoch().GetVersion()
		ab.AfterCommit(func() {
			reg.noteWritten(written, int64(len(events)))
			// The count and the revision together: a reader that sees rev
			// finds it counted.
			reg.count.publish(reg, prevRev, rev, ver, liveDelta(events))
			if m.OnEvents != nil && len(events) > 0 {
				m.OnEvents(reg, rev, events)
			}
		})
	}
	return &WriteResult{Revision: rev, Response: resp}
}

// setRevision sets a response's header revision.
func setRevision(resp proto.Message, rev int64) {
	switch r := resp.(type) {
	case *kvpb.DeleteRangeResponse:
		r.Header = &kvpb.ResponseHeader{Revision: rev}
	case *kvpb.TxnResponse:
		setTxnHeaders(r, rev)
	case *kvpb.PutResponse:
		r.Header = &kvpb.ResponseHeader{Revision: rev}
	}
}

func mustUserKey(k []byte) []byte {
	key, _, err := decodeVersionKey(k)
	if err != nil {
		return nil
	}
	return key
}

// ---- reading versions ----

// visitFn is called for each live key; more false stops the walk.
type visitFn func(key []byte, rec record, modRev int64) (more bool, err error)

// visit calls fn with the live keys of [start, end) as of revision atRev
// in key order. end nil: to the end of the data space.
func visit(rd pebble.Reader, start, end []byte, atRev int64, fn visitFn) error {
	return visitCounting(rd, start, end, atRev, nil, fn)
}

// visitCounting is visit for a caller that, while bare() reports true, only
// counts: fn then gets a nil key and an empty record (only modRev is set),
// and the walk decodes and copies nothing. A range's count walks every
// live key of the range while its limit keeps only the first few.
func visitCounting(rd pebble.Reader, start, end []byte, atRev int64, bare func() bool, fn visitFn) error {
	upper := []byte{dataPrefix + 1}
	if end != nil {
		upper = keyPrefix(end)
	}
	it, err := rd.NewIter(&pebble.IterOptions{LowerBound: keyPrefix(start), UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	seekRev := binary8(atRev)
	var pfx, seek []byte
	// sameKey: the iterator is on another version of the key of pfx (the
	// escaped key's terminator makes prefixes of different keys distinct).
	sameKey := func() bool { k := it.Key(); return len(k) == len(pfx)+8 && bytes.HasPrefix(k, pfx) }
	for valid := it.First(); valid; {
		k := it.Key()
		if len(k) < 1+2+8 || k[0] != dataPrefix {
			return errBadKey
		}
		pfx = append(pfx[:0], prefixOf(k)...)
		rev := versionRev(k)
		if rev > atRev {
			seek = append(append(seek[:0], pfx...), seekRev...)
			if valid = it.SeekGE(seek); !valid {
				break
			}
			if !sameKey() {
				continue // no version of this key at or below atRev
			}
			rev = versionRev(it.Key())
		}
		v := it.Value()
		if bare != nil && bare() {
			if len(v) < 2 || v[0] != valueFormatV1 {
				return fmt.Errorf("mvcc: unknown value format")
			}
			if v[1]&flagTombstone == 0 {
				if more, err := fn(nil, record{}, rev); err != nil || !more {
					return err
				}
			}
		} else {
			key, _, err := decodeVersionKey(it.Key())
			if err != nil {
				return err
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			if !rec.tombstone {
				rec.value = append([]byte(nil), rec.value...)
				if more, err := fn(key, rec, rev); err != nil || !more {
					return err
				}
			}
		}
		// To the next key: most keys have a few versions, and a Next costs
		// far less than a seek through every level, so a few Nexts are
		// tried before seeking past the versions.
		valid = it.Next()
		for steps := 1; valid && sameKey(); steps++ {
			if steps == nextsBeforeSeek {
				seek = append(append(seek[:0], pfx...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
				valid = it.SeekGE(seek)
				break
			}
			valid = it.Next()
		}
	}
	return it.Error()
}

// nextsBeforeSeek: how many versions of one key a walk steps over before
// it seeks past the rest.
const nextsBeforeSeek = 8

// versionRev is the revision of a data key (its last 8 bytes, inverted).
func versionRev(k []byte) int64 { return int64(^binary.BigEndian.Uint64(k[len(k)-8:])) }

func binary8(rev int64) []byte {
	u := ^uint64(rev)
	return []byte{byte(u >> 56), byte(u >> 48), byte(u >> 40), byte(u >> 32), byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)}
}

// get returns key's live version as of atRev.
func (m *MVCC) get(rd pebble.Reader, key []byte, atRev int64) (rec record, modRev int64, found bool, err error) {
	if !m.prefixSeek {
		return getByRange(rd, key, atRev)
	}
	return getByPrefix(rd, key, atRev)
}

// getByPrefix is get on a database ordered by Comparer.
func getByPrefix(rd pebble.Reader, key []byte, atRev int64) (rec record, modRev int64, found bool, err error) {
	seek := versionKey(key, atRev)
	it, err := rd.NewIter(nil)
	if err != nil {
		return record{}, 0, false, err
	}
	defer it.Close()
	// In prefix mode the iterator holds only versions of key: the first
	// at or below atRev is the one read.
	if !it.SeekPrefixGE(seek) {
		return record{}, 0, false, it.Error()
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return record{}, 0, false, err
	}
	if rec, err = decodeRecord(v); err != nil || rec.tombstone {
		return record{}, 0, false, err
	}
	rec.value = append([]byte(nil), rec.value...)
	return rec, versionRev(it.Key()), true, nil
}

// getByRange is get on a database ordered bytewise: a walk bounded to the
// key's versions.
func getByRange(rd pebble.Reader, key []byte, atRev int64) (rec record, modRev int64, found bool, err error) {
	end := append(append([]byte(nil), key...), 0)
	err = visit(rd, key, end, atRev, func(_ []byte, r record, rev int64) (bool, error) {
		rec, modRev, found = r, rev, true
		return false, nil
	})
	return rec, modRev, found, err
}

func toKV(key []byte, rec record, modRev int64) *kvpb.KeyValue {
	return &kvpb.KeyValue{Key: key, CreateRevision: rec.createRev, ModRevision: modRev, Version: rec.version, Value: rec.value, Lease: rec.lease}
}

// ---- writes ----

type writer struct {
	m      *MVCC
	r      pebble.Reader
	b      *pebble.Batch
	region *metapb.Region
	rev    int64
	// readRev is the revision the transaction's compares and reads see:
	// the latest (math.MaxInt64, its own earlier writes included) in a
	// write, the fixed revision in a read-only transaction.
	readRev int64
	// prevRev is the region's revision before this write; compactRev its
	// compaction revision.
	prevRev, compactRev int64
	// leaseChecks: lease → the revision its owner's check is valid to.
	leaseChecks map[int64]int64
	events      []*kvpb.Event
	written     int64 // bytes of the versions written
	// counted, in a read-only transaction, lets its ranges count through
	// the region's count (count.go); nil in a write.
	counted *txnCount
}

// txnCount is what a read-only transaction's ranges count with: the
// region's count at the transaction's revision, when known.
type txnCount struct {
	r       *Region
	total   int64
	known   bool
	mayWait bool
}

// errCountLearnt: a range waited for the region's count to be learnt; the
// transaction is read again at a new revision.
var errCountLearnt = errors.New("mvcc: the region's count was learnt meanwhile")

// rangeOp reads one range of a transaction at revision at.
func (w *writer) rangeOp(req *kvpb.RangeRequest, at int64) (*kvpb.RangeResponse, error) {
	if c := w.counted; c != nil && at == w.readRev {
		resp, retry, err := w.m.countedRange(c.r, w.r, w.region, req, at, c.total, c.known, c.mayWait)
		if retry {
			return nil, errCountLearnt
		}
		return resp, err
	}
	return rangeAt(w.r, req, at)
}

func (w *writer) put(p *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	if !inRegion(w.region, p.GetKey(), nil) {
		return nil, region.KeyNotInRegion(p.GetKey(), w.region)
	}
	if err := w.checkPut(p); err != nil {
		return nil, err
	}
	return w.doPut(p)
}

// checkPut: what must hold before a put changes anything.
func (w *writer) checkPut(p *kvpb.PutRequest) error {
	if p.GetIgnoreValue() || p.GetIgnoreLease() {
		if _, _, found, err := w.m.get(w.r, p.GetKey(), w.readRev); err != nil {
			return err
		} else if !found {
			return ErrKeyNotFound
		}
	}
	return w.checkLease(p)
}

func (w *writer) doPut(p *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	prev, prevRev, found, err := w.m.get(w.r, p.GetKey(), w.readRev)
	if err != nil {
		return nil, err
	}
	rec := record{createRev: w.rev, version: 1, lease: p.GetLease(), value: p.GetValue()}
	if found {
		rec.createRev, rec.version = prev.createRev, prev.version+1
	}
	if p.GetIgnoreValue() {
		rec.value = prev.value
	}
	if p.GetIgnoreLease() {
		rec.lease = prev.lease
	}
	vk, vv := versionKey(p.GetKey(), w.rev), appendRecord(nil, rec)
	if err := w.b.Set(vk, vv, nil); err != nil {
		return nil, err
	}
	w.written += int64(len(vk) + len(vv))
	if found && prev.lease != 0 && prev.lease != rec.lease {
		w.m.leaseIdx.remove(prev.lease, p.GetKey())
	}
	if rec.lease != 0 {
		w.m.leaseIdx.add(rec.lease, p.GetKey())
	}
	ev := &kvpb.Event{Type: kvpb.Event_PUT, Kv: toKV(p.GetKey(), rec, w.rev)}
	resp := &kvpb.PutResponse{Header: &kvpb.ResponseHeader{Revision: w.rev}}
	if found {
		ev.PrevKv = toKV(p.GetKey(), prev, prevRev)
		if p.GetPrevKv() {
			resp.PrevKv = ev.PrevKv
		}
	}
	w.events = append(w.events, ev)
	return resp, nil
}

func (w *writer) deleteRange(d *kvpb.DeleteRangeRequest) (*kvpb.DeleteRangeResponse, error) {
	if !inRegion(w.region, d.GetKey(), d.GetRangeEnd()) {
		return nil, region.KeyNotInRegion(d.GetKey(), w.region)
	}
	return w.doDeleteRange(d)
}

func (w *writer) doDeleteRange(d *kvpb.DeleteRangeRequest) (*kvpb.DeleteRangeResponse, error) {
	end, unbounded := rangeEnd(d.GetKey(), d.GetRangeEnd())
	if unbounded {
		end = nil
	}
	type victim struct {
		key []byte
		rec record
		rev int64
	}
	var victims []victim
	err := visit(w.r, d.GetKey(), end, math.MaxInt64, func(key []byte, rec record, rev int64) (bool, error) {
		victims = append(victims, victim{key, rec, rev})
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	resp := &kvpb.DeleteRangeResponse{Header: &kvpb.ResponseHeader{Revision: w.rev}, Deleted: int64(len(victims))}
	for _, v := range victims {
		if err := w.tombstone(v.key, v.rec, v.rev); err != nil {
			return nil, err
		}
		if d.GetPrevKv() {
			resp.PrevKvs = append(resp.PrevKvs, w.events[len(w.events)-1].PrevKv)
		}
	}
	return resp, nil
}

// tombstone deletes key, whose latest version is prev (at prevRev), at the
// write's revision.
func (w *writer) tombstone(key []byte, prev record, prevRev int64) error {
	vk, vv := versionKey(key, w.rev), appendRecord(nil, record{tombstone: true})
	if err := w.b.Set(vk, vv, nil); err != nil {
		return err
	}
	w.written += int64(len(vk) + len(vv))
	if prev.lease != 0 {
		w.m.leaseIdx.remove(prev.lease, key)
	}
	w.events = append(w.events, &kvpb.Event{Type: kvpb.Event_DELETE, Kv: &kvpb.KeyValue{Key: key, ModRevision: w.rev}, PrevKv: toKV(key, prev, prevRev)})
	return nil
}

// txn evaluates every compare (nested ones too) against the state before
// the transaction, checks every operation of the chosen path, and only then
// applies them in order; reads in the transaction see its earlier writes.
func (w *writer) txn(t *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	if !txnInRegion(w.region, t) {
		return nil, region.KeyNotInRegion(txnFirstKey(t), w.region)
	}
	path, err := w.choosePath(t)
	if err != nil {
		return nil, err
	}
	if err := w.checkPath(t, path); err != nil {
		return nil, err
	}
	before := len(w.events)
	resp, err := w.applyTxn(t, &path)
	if err != nil {
		return nil, err
	}
	rev := w.rev
	if len(w.events) == before {
		rev = w.prevRev // it wrote nothing: the revision stays
	}
	setTxnHeaders(resp, rev)
	return resp, nil
}

// choosePath records which branch every (nested) transaction takes, in
// walk order.
func (w *writer) choosePath(t *kvpb.TxnRequest) ([]bool, error) {
	var path []bool
	var walk func(t *kvpb.TxnRequest) error
	walk = func(t *kvpb.TxnRequest) error {
		ok, err := compareAll(w.r, t.GetCompare(), w.readRev)
		if err != nil {
			return err
		}
		path = append(path, ok)
		branch := t.GetFailure()
		if ok {
			branch = t.GetSuccess()
		}
		for _, op := range branch {
			if nt := op.GetRequestTxn(); nt != nil {
				if err := walk(nt); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return path, walk(t)
}

func (w *writer) checkPath(t *kvpb.TxnRequest, path []bool) error {
	i := 0
	var walk func(t *kvpb.TxnRequest) error
	walk = func(t *kvpb.TxnRequest) error {
		branch := t.GetFailure()
		if path[i] {
			branch = t.GetSuccess()
		}
		i++
		for _, op := range branch {
			switch x := op.GetRequest().(type) {
			case *kvpb.RequestOp_RequestPut:
				if err := w.checkPut(x.RequestPut); err != nil {
					return err
				}
			case *kvpb.RequestOp_RequestRange:
				if err := w.checkRangeRev(x.RequestRange.GetRevision()); err != nil {
					return err
				}
			case *kvpb.RequestOp_RequestTxn:
				if err := walk(x.RequestTxn); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(t)
}

func (w *writer) checkRangeRev(rev int64) error {
	switch {
	case rev == 0:
		return nil
	case rev < w.compactRev:
		return ErrCompacted
	case rev > w.prevRev:
		return ErrFutureRev
	}
	return nil
}

func (w *writer) applyTxn(t *kvpb.TxnRequest, path *[]bool) (*kvpb.TxnResponse, error) {
	succeeded := (*path)[0]
	*path = (*path)[1:]
	branch := t.GetFailure()
	if succeeded {
		branch = t.GetSuccess()
	}
	resp := &kvpb.TxnResponse{Succeeded: succeeded}
	for _, op := range branch {
		var ro *kvpb.ResponseOp
		switch x := op.GetRequest().(type) {
		case *kvpb.RequestOp_RequestRange:
			at := x.RequestRange.GetRevision()
			if at == 0 {
				at = w.readRev
			}
			rr, err := w.rangeOp(x.RequestRange, at)
			if err != nil {
				return nil, err
			}
			ro = &kvpb.ResponseOp{Response: &kvpb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case *kvpb.RequestOp_RequestPut:
			pr, err := w.doPut(x.RequestPut)
			if err != nil {
				return nil, err
			}
			ro = &kvpb.ResponseOp{Response: &kvpb.ResponseOp_ResponsePut{ResponsePut: pr}}
		case *kvpb.RequestOp_RequestDeleteRange:
			dr, err := w.doDeleteRange(x.RequestDeleteRange)
			if err != nil {
				return nil, err
			}
			ro = &kvpb.ResponseOp{Response: &kvpb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: dr}}
		case *kvpb.RequestOp_RequestTxn:
			tr, err := w.applyTxn(x.RequestTxn, path)
			if err != nil {
				return nil, err
			}
			ro = &kvpb.ResponseOp{Response: &kvpb.ResponseOp_ResponseTxn{ResponseTxn: tr}}
		}
		resp.Responses = append(resp.Responses, ro)
	}
	return resp, nil
}

// setTxnHeaders gives a transaction response and every nested response the
// revision the transaction ran at.
func setTxnHeaders(t *kvpb.TxnResponse, rev int64) {
	t.Header = &kvpb.ResponseHeader{Revision: rev}
	for _, r := range t.GetResponses() {
		switch x := r.GetResponse().(type) {
		case *kvpb.ResponseOp_ResponseRange:
			x.ResponseRange.Header = &kvpb.ResponseHeader{Revision: rev}
		case *kvpb.ResponseOp_ResponsePut:
			x.ResponsePut.Header = &kvpb.ResponseHeader{Revision: rev}
		case *kvpb.ResponseOp_ResponseDeleteRange:
			x.ResponseDeleteRange.Header = &kvpb.ResponseHeader{Revision: rev}
		case *kvpb.ResponseOp_ResponseTxn:
			setTxnHeaders(x.ResponseTxn, rev)
		}
	}
}

// compareAll evaluates compares as etcd does: every key of a compare's
// range must satisfy it; a missing key reads as all zero, and a value
// compare against a missing key is false.
func compareAll(rd pebble.Reader, cs []*kvpb.Compare, atRev int64) (bool, error) {
	for _, c := range cs {
		end, unbounded := rangeEnd(c.GetKey(), c.GetRangeEnd())
		if unbounded {
			end = nil
		}
		any := false
		ok := true
		err := visit(rd, c.GetKey(), end, atRev, func(key []byte, rec record, rev int64) (bool, error) {
			any = true
			if !compareKV(c, toKV(key, rec, rev)) {
				ok = false
				return false, nil
			}
			return true, nil
		})
		if err != nil {
			return false, err
		}
		if !any {
			if c.GetTarget() == kvpb.Compare_VALUE {
				return false, nil
			}
			ok = compareKV(c, &kvpb.KeyValue{})
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

func compareKV(c *kvpb.Compare, kv *kvpb.KeyValue) bool {
	var r int
	cmpInt := func(a, b int64) int {
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	}
	switch c.GetTarget() {
	case kvpb.Compare_VALUE:
		r = bytes.Compare(kv.GetValue(), c.GetValue())
	case kvpb.Compare_VERSION:
		r = cmpInt(kv.GetVersion(), c.GetVersion())
	case kvpb.Compare_CREATE:
		r = cmpInt(kv.GetCreateRevision(), c.GetCreateRevision())
	case kvpb.Compare_MOD:
		r = cmpInt(kv.GetModRevision(), c.GetModRevision())
	case kvpb.Compare_LEASE:
		r = cmpInt(kv.GetLease(), c.GetLease())
	}
	switch c.GetResult() {
	case kvpb.Compare_EQUAL:
		return r == 0
	case kvpb.Compare_NOT_EQUAL:
		return r != 0
	case kvpb.Compare_GREATER:
		return r > 0
	case kvpb.Compare_LESS:
		return r < 0
	}
	return false
}

// sortEventsByKey orders one revision's events by key. A key appears at
// most once in a revision (etcd refuses a transaction writing a key twice).
func sortEventsByKey(events []*kvpb.Event) {
	if len(events) < 2 {
		return
	}
	sort.SliceStable(events, func(i, j int) bool {
		return bytes.Compare(events[i].GetKv().GetKey(), events[j].GetKv().GetKey()) < 0
	})
}
