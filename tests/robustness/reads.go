package robustness

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/basaltdb/basalt/pd"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

// Multi-key reads (paginated lists of the whole prefix) and reads of keys
// that may vanish on their own (those put with a lease) are not checked by
// porcupine: its model is single-key, and a lease's expiry is a write no
// client issues. They are checked by replay instead. The watches deliver
// every committed write with its revision, acknowledged or not, and
// revisions order the whole cluster, so the watches' events give the state
// of every key at every revision; a read at revision R must return exactly
// that state, and a linearizable one must not miss a write that committed
// before it began.

// listPrefix is what the lists read: every key of the traffic, the
// single-key ones and the leased ones, over several regions.
const listPrefix = "rob/"

// kv is one version of a key as a read or an event shows it.
type kv struct {
	Key, Value                  string
	Create, Mod, Version, Lease int64
}

func (k kv) String() string {
	return fmt.Sprintf("%s=%q (mod %d, create %d, version %d, lease %x)", k.Key, k.Value, k.Mod, k.Create, k.Version, k.Lease)
}

func fromEtcd(k *mvccpb.KeyValue) kv {
	return kv{Key: string(k.Key), Value: string(k.Value), Create: k.CreateRevision, Mod: k.ModRevision, Version: k.Version, Lease: k.Lease}
}

func fromEvent(k *kvpb.KeyValue) kv {
	return kv{Key: string(k.GetKey()), Value: string(k.GetValue()), Create: k.GetCreateRevision(), Mod: k.GetModRevision(),
		Version: k.GetVersion(), Lease: k.GetLease()}
}

// readRecord is one successful read of every key of [Key, End) at one
// revision: a list (all its pages) or a get of one key.
type readRecord struct {
	What     string // for messages: "list", "serializable list", "lease get", ...
	Client   int
	Key, End string
	Rev      int64
	KVs      []kv
	// Count is the first page's count, every key of the range at Rev; -1:
	// not checked.
	Count int64
	// Linearizable reads must also see every write that committed before
	// they began; serializable ones only one revision's state.
	Linearizable bool
	Call, Return int64 // history times
}

func (r readRecord) covers(key string) bool {
	return key >= r.Key && (r.End == "" || key < r.End)
}

func (r readRecord) String() string {
	lin := "serializable"
	if r.Linearizable {
		lin = "linearizable"
	}
	return fmt.Sprintf("%s by client %d of [%q, %q) at revision %d (%s, called at %v, returned at %v)",
		r.What, r.Client, r.Key, r.End, r.Rev, lin, time.Duration(r.Call), time.Duration(r.Return))
}

// ack is a write acknowledged at Rev, known to the test at Return.
type ack struct {
	Key    string
	Rev    int64
	Return int64
}

// leaseRecord is a lease the traffic was granted: its keys may not vanish
// before its TTL ran out from the grant's call, or before a revoke of it
// was called.
type leaseRecord struct {
	ID, TTL    int64
	GrantCall  time.Time
	RevokeCall time.Time // zero: never revoked
	// RenewCall is when the last keep-alive that returned was called, and
	// RenewTTL the TTL it returned: the lease cannot end before
	// RenewCall+RenewTTL either. (One that failed may not have renewed
	// anything, so it moves no bound.)
	RenewCall time.Time
	RenewTTL  int64
}

// earliestEnd is the first moment the lease could have ended.
func (l *leaseRecord) earliestEnd() time.Time {
	end := l.GrantCall.Add(time.Duration(l.TTL) * time.Second)
	if renewed := l.RenewCall.Add(time.Duration(l.RenewTTL) * time.Second); !l.RenewCall.IsZero() && renewed.After(end) {
		end = renewed
	}
	if !l.RevokeCall.IsZero() && l.RevokeCall.Before(end) {
		end = l.RevokeCall
	}
	return end
}

// readLog collects what the lists and lease traffic did, for the replay
// check at the end.
type readLog struct {
	h      *history
	mu     sync.Mutex
	reads  []readRecord
	acks   []ack
	leases map[int64]*leaseRecord
	// k8s are the Kubernetes-like profile's conditional writes, reflections
	// its reflectors' watches (k8s.go).
	k8s         []k8sWrite
	reflections []reflection
	// txns and rangeDeletes are the multi-key writes (multikey.go).
	txns         []multiTxn
	rangeDeletes []rangeDelete
	// errs are violations seen as they happened (a page longer than its
	// limit, a revoked lease's key still there).
	errs []error
}

func newReadLog(h *history) *readLog { return &readLog{h: h, leases: map[int64]*leaseRecord{}} }

func (l *readLog) read(r readRecord) {
	l.mu.Lock()
	l.reads = append(l.reads, r)
	l.mu.Unlock()
}

func (l *readLog) ack(key string, rev int64) {
	a := ack{Key: key, Rev: rev, Return: l.h.now()}
	l.mu.Lock()
	l.acks = append(l.acks, a)
	l.mu.Unlock()
}

func (l *readLog) violation(format string, args ...any) {
	l.mu.Lock()
	l.errs = append(l.errs, fmt.Errorf(format, args...))
	l.mu.Unlock()
}

// count adds to the run's operation summary.
func (h *history) count(what string) {
	h.mu.Lock()
	h.counts[what]++
	h.mu.Unlock()
}

// list reads the whole prefix in pages of a small limit, each page from the
// key after the last one, every page at the first page's revision (as a
// Kubernetes reflector lists). A page at a revision compacted meanwhile
// fails with ErrCompacted, as it should: the list starts over.
func (c *trafficClient) list(ctx context.Context) {
	serializable := c.rng.IntN(2) == 0
	what := "list"
	if serializable {
		what = "serializable list"
	}
	limit := int64(2 + c.rng.IntN(2))
	// One list in four is read by a slow consumer, which takes its time
	// between pages, so compactions overtake lists in flight.
	var pause time.Duration
	if c.rng.IntN(4) == 0 {
		pause = time.Duration(100+c.rng.IntN(300)) * time.Millisecond
	}
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		rec, err := c.listOnce(ctx, listPrefix, what, serializable, limit, pause)
		switch {
		case err == nil:
			c.h.count(what + " ok")
			c.reads.read(rec)
			return
		case errors.Is(err, rpctypes.ErrCompacted):
			c.h.count(what + " compacted")
		case ctx.Err() != nil:
			return
		default:
			c.h.count(what + " failed")
			return
		}
	}
}

// listOnce reads prefix (the traffic's, or the Kubernetes-like keys' for a
// reflector, k8s.go) in pages of limit keys at the first page's revision.
func (c *trafficClient) listOnce(ctx context.Context, prefix, what string, serializable bool, limit int64, pause time.Duration) (readRecord, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	rec := readRecord{What: what, Client: c.id, Key: prefix, End: end, Count: -1, Linearizable: !serializable, Call: c.h.now()}
	from := prefix
	for page := 0; ; page++ {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit)}
		if serializable {
			opts = append(opts, clientv3.WithSerializable())
		}
		if page > 0 {
			opts = append(opts, clientv3.WithRev(rec.Rev))
			sleep(ctx, pause)
		}
		pctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := c.cli.Get(pctx, from, opts...)
		cancel()
		if err != nil {
			return rec, err
		}
		if page == 0 {
			rec.Rev, rec.Count = resp.Header.Revision, resp.Count
		} else if want := rec.Count - int64(len(rec.KVs)); resp.Count != want {
			c.reads.violation("%s: page %d from %q at revision %d counts %d keys, the first page's count leaves %d",
				what, page, from, rec.Rev, resp.Count, want)
		}
		if int64(len(resp.Kvs)) > limit || (resp.More && len(resp.Kvs) == 0) {
			c.reads.violation("%s: page %d from %q at revision %d has %d keys (limit %d), more=%v",
				what, page, from, rec.Rev, len(resp.Kvs), limit, resp.More)
			return rec, fmt.Errorf("bad page")
		}
		for _, k := range resp.Kvs {
			rec.KVs = append(rec.KVs, fromEtcd(k))
		}
		if !resp.More {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	rec.Return = c.h.now()
	return rec, nil
}

// getOne reads one key as a record for the replay check.
func (c *trafficClient) getOne(ctx context.Context, what, key string, serializable bool) (readRecord, error) {
	rec := readRecord{What: what, Client: c.id, Key: key, End: key + "\x00", Count: -1, Linearizable: !serializable, Call: c.h.now()}
	var opts []clientv3.OpOption
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := c.cli.Get(gctx, key, opts...)
	if err != nil {
		return rec, err
	}
	rec.Rev = resp.Header.Revision
	for _, k := range resp.Kvs {
		rec.KVs = append(rec.KVs, fromEtcd(k))
	}
	rec.Return = c.h.now()
	return rec, nil
}

// leaseGet reads one leased key, linearizable or serializable.
func (c *trafficClient) leaseGet(ctx context.Context) {
	key := c.leaseKeys[c.rng.IntN(len(c.leaseKeys))]
	serializable := c.rng.IntN(2) == 0
	what := "lease get"
	if serializable {
		what = "serializable lease get"
	}
	rec, err := c.getOne(ctx, what, key, serializable)
	if err != nil {
		if ctx.Err() == nil {
			c.h.count(what + " failed")
		}
		return
	}
	c.h.count(what + " ok")
	c.reads.read(rec)
}

// leaseOp grants a lease of 2–5 s, puts one or two of the leased keys with
// it and, half the time, revokes it at once; the other half it expires.
// Every leased put is logged twice for the watch checks: as the put, and as
// a delete at an unknown revision (the lease's end deletes the key, and no
// client sees at which revision).
func (c *trafficClient) leaseOp(ctx context.Context) {
	ttl := int64(2 + c.rng.IntN(4))
	grantCall := time.Now()
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	lease, err := c.cli.Grant(gctx, ttl)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			c.h.count("lease grant failed")
		}
		return
	}
	c.h.count("lease grant ok")
	id := int64(lease.ID)
	c.reads.mu.Lock()
	c.reads.leases[id] = &leaseRecord{ID: id, TTL: lease.TTL, GrantCall: grantCall}
	c.reads.mu.Unlock()
	keys := []string{c.leaseKeys[c.rng.IntN(len(c.leaseKeys))]}
	if other := c.leaseKeys[c.rng.IntN(len(c.leaseKeys))]; other != keys[0] && c.rng.IntN(2) == 0 {
		keys = append(keys, other)
	}
	for _, key := range keys {
		value := fmt.Sprintf("c%d-lease-%x", c.id, id)
		pctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := c.cli.Put(pctx, key, value, clientv3.WithLease(lease.ID))
		cancel()
		if err == nil {
			c.h.count("lease put ok")
			c.write(watchcheck.Write{Key: key, Value: value, Rev: resp.Header.Revision})
		} else {
			// Expired already, or unknown: either way it may be there.
			c.h.count("lease put failed")
			c.write(watchcheck.Write{Key: key, Value: value})
		}
		c.write(watchcheck.Write{Key: key, Delete: true})
	}
	switch c.rng.IntN(4) {
	case 0, 1:
		c.renewLease(ctx, id)
	case 2:
		c.keepLeaseAlive(ctx, id)
	}
	if c.rng.IntN(2) == 0 || ctx.Err() != nil {
		return
	}
	c.reads.mu.Lock()
	c.reads.leases[id].RevokeCall = time.Now()
	c.reads.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	_, err = c.cli.Revoke(rctx, lease.ID)
	cancel()
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		c.h.count("lease revoke found it expired")
	case err != nil:
		if ctx.Err() == nil {
			c.h.count("lease revoke failed")
		}
		return
	default:
		c.h.count("lease revoke ok")
	}
	// Revoke returns once every key of the lease is deleted (expiry, too,
	// deletes them before the lease is gone): a linearizable read after it
	// must not find one.
	for _, key := range keys {
		rec, err := c.getOne(ctx, "get after revoke", key, false)
		if err != nil {
			continue
		}
		c.reads.read(rec)
		for _, k := range rec.KVs {
			if k.Lease == id {
				c.reads.violation("%s still holds %s after the revoke of lease %x returned", rec, k, id)
			}
		}
	}
}

// renewLease sends one keep-alive for lease id and records it if it
// returned: the lease's keys must then outlive the TTL it returned, counted
// from the call.
func (c *trafficClient) renewLease(ctx context.Context, id int64) {
	call := time.Now()
	kctx, cancel := context.WithTimeout(ctx, opTimeout)
	resp, err := c.cli.KeepAliveOnce(kctx, clientv3.LeaseID(id))
	cancel()
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		c.h.count("lease keep-alive found it expired")
	case err != nil:
		if ctx.Err() == nil {
			c.h.count("lease keep-alive failed")
		}
	case resp.TTL <= 0:
		c.h.count("lease keep-alive found it expired")
	default:
		c.h.count("lease keep-alive ok")
		c.reads.mu.Lock()
		l := c.reads.leases[id]
		l.RenewCall, l.RenewTTL = call, resp.TTL
		c.reads.mu.Unlock()
	}
}

// keepLeaseAlive keeps lease id alive through a KeepAlive stream for 1–2 s,
// as etcd clients do, and records its answers. An answer on the stream
// says the lease was renewed when the server took a keep-alive the client
// sent after the stream opened: the lease cannot end before the stream's
// opening plus the TTL answered (a weaker bound than a single keep-alive
// gives, since which request an answer is to is not known, but a sound
// one).
func (c *trafficClient) keepLeaseAlive(ctx context.Context, id int64) {
	open := time.Now()
	kctx, cancel := context.WithTimeout(ctx, time.Duration(1000+c.rng.IntN(1000))*time.Millisecond)
	defer cancel()
	ch, err := c.cli.KeepAlive(kctx, clientv3.LeaseID(id))
	if err != nil {
		if ctx.Err() == nil {
			c.h.count("lease keep-alive stream failed")
		}
		return
	}
	answers := 0
	var ttl int64
	for resp := range ch {
		if resp.TTL > 0 {
			answers++
			ttl = max(ttl, resp.TTL)
		}
	}
	if answers == 0 {
		// Expired, cut off, or the window too short for an answer.
		c.h.count("lease keep-alive stream got no answer")
		return
	}
	c.h.count("lease keep-alive stream ok")
	c.reads.mu.Lock()
	l := c.reads.leases[id]
	if end := open.Add(time.Duration(ttl) * time.Second); l.RenewCall.IsZero() || end.After(l.RenewCall.Add(time.Duration(l.RenewTTL)*time.Second)) {
		l.RenewCall, l.RenewTTL = open, ttl
	}
	c.reads.mu.Unlock()
}

// event is one committed write as the watches delivered it.
type event struct {
	Delete bool
	KV     kv
}

// replay is every key's committed writes in revision order, as the watches
// delivered them.
type replay struct {
	byKey map[string][]event
	keys  []string // sorted
}

// newReplay merges the watches' events. complete[i] is the revision up to
// which watch i delivered everything (its last event or bookmark): every
// event any watch delivered at or below it must be in watch i too, with
// the same content, or the watches disagree about what was committed.
func newReplay(watches [][]watchcheck.Response, complete []int64) (*replay, []error) {
	var errs []error
	report := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	type at struct {
		key string
		rev int64
	}
	all := map[at]event{}
	seen := make([]map[at]bool, len(watches))
	for i, resps := range watches {
		seen[i] = map[at]bool{}
		for _, r := range resps {
			for _, e := range r.Events {
				ev := event{Delete: e.GetType() == kvpb.Event_DELETE, KV: fromEvent(e.GetKv())}
				if ev.Delete {
					// A delete event names the key and its revision only.
					ev.KV = kv{Key: ev.KV.Key, Mod: ev.KV.Mod}
				}
				k := at{ev.KV.Key, ev.KV.Mod}
				seen[i][k] = true
				if prev, ok := all[k]; ok && prev != ev {
					report("watches disagree about %s@%d: %+v and %+v", k.key, k.rev, prev, ev)
				}
				all[k] = ev
			}
		}
	}
	rp := &replay{byKey: map[string][]event{}}
	for k, ev := range all {
		rp.byKey[k.key] = append(rp.byKey[k.key], ev)
		for i := range watches {
			if k.rev <= complete[i] && !seen[i][k] {
				report("watch %d, complete up to %d, never delivered %s@%d (delete=%v) another watch delivered", i, complete[i], k.key, k.rev, ev.Delete)
			}
		}
	}
	for key, evs := range rp.byKey {
		sort.Slice(evs, func(a, b int) bool { return evs[a].KV.Mod < evs[b].KV.Mod })
		rp.keys = append(rp.keys, key)
	}
	sort.Strings(rp.keys)
	return rp, errs
}

// at is key's version at rev, if it existed.
func (rp *replay) at(key string, rev int64) (kv, bool) {
	evs := rp.byKey[key]
	i := sort.Search(len(evs), func(i int) bool { return evs[i].KV.Mod > rev })
	if i == 0 || evs[i-1].Delete {
		return kv{}, false
	}
	return evs[i-1].KV, true
}

// changedIn says whether key was written at a revision in (from, to].
func (rp *replay) changedIn(key string, from, to int64) (event, bool) {
	evs := rp.byKey[key]
	i := sort.Search(len(evs), func(i int) bool { return evs[i].KV.Mod > from })
	if i < len(evs) && evs[i].KV.Mod <= to {
		return evs[i], true
	}
	return event{}, false
}

// checkReads checks every read against the replay: it returned exactly the
// state at its revision (every key, value, create and mod revision,
// version, lease; and the count), and a linearizable read missed nothing
// that committed before it began: no acknowledged write of its range
// returned before it was called is above its revision, and no write of
// its range lies between its revision and the revision at which an earlier
// read (returned before it was called) saw that key.
//
// The second rule is phrased per key, not as "revision at least the
// earlier read's": a read served by one region carries that region's last
// revision (docs/etcd-compatibility.md), below other regions' writes that
// it had no reason to wait for.
func checkReads(rp *replay, reads []readRecord, acks []ack) []error {
	var errs []error
	report := func(format string, args ...any) {
		if len(errs) < 30 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	// For each key, the revisions known committed by each time: acks and
	// what reads saw, ordered by when the test knew, with running maxima.
	type known struct {
		at, rev int64
		what    string
		ack     bool
	}
	byKey := map[string][]known{}
	keys := map[string]bool{}
	for _, k := range rp.keys {
		keys[k] = true
	}
	for _, a := range acks {
		keys[a.Key] = true
	}
	for _, a := range acks {
		byKey[a.Key] = append(byKey[a.Key], known{a.Return, a.Rev, fmt.Sprintf("a write acknowledged at %d", a.Rev), true})
	}
	for i, r := range reads {
		for k := range keys {
			if r.covers(k) {
				byKey[k] = append(byKey[k], known{r.Return, r.Rev, fmt.Sprintf("read %d (%s)", i, r), false})
			}
		}
	}
	for _, ks := range byKey {
		sort.Slice(ks, func(a, b int) bool { return ks[a].at < ks[b].at })
		for i := 1; i < len(ks); i++ {
			if ks[i].rev < ks[i-1].rev {
				ks[i].rev, ks[i].what, ks[i].ack = ks[i-1].rev, ks[i-1].what, ks[i-1].ack
			}
		}
	}
	for _, r := range reads {
		var want []kv
		for _, k := range rp.keys {
			if !r.covers(k) {
				continue
			}
			if v, ok := rp.at(k, r.Rev); ok {
				want = append(want, v)
			}
		}
		if d := diffKVs(r.KVs, want); d != "" {
			report("%s: %s", r, d)
		}
		if r.Count >= 0 && r.Count != int64(len(want)) {
			report("%s: count %d, the writes give %d keys", r, r.Count, len(want))
		}
		if !r.Linearizable {
			continue
		}
		for k := range keys {
			if !r.covers(k) {
				continue
			}
			ks := byKey[k]
			i := sort.Search(len(ks), func(i int) bool { return ks[i].at >= r.Call })
			if i == 0 || ks[i-1].rev <= r.Rev {
				continue
			}
			if e, ok := rp.changedIn(k, r.Rev, ks[i-1].rev); ok {
				report("%s is stale: %s@%d (delete=%v) committed before it began (%s)", r, k, e.KV.Mod, e.Delete, ks[i-1].what)
			} else if ks[i-1].ack {
				// The acknowledged write is above the read's revision
				// though no watch delivered it: stale all the same.
				report("%s is stale: %s (on %s) returned before it began", r, ks[i-1].what, k)
			}
		}
	}
	return errs
}

// diffKVs describes the first difference between what a read returned and
// what it should have, or "".
func diffKVs(got, want []kv) string {
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			return fmt.Sprintf("missing %s", want[i])
		case i >= len(want):
			return fmt.Sprintf("returned %s, which the writes do not give", got[i])
		case got[i].Key < want[i].Key:
			return fmt.Sprintf("returned %s, which the writes do not give", got[i])
		case got[i].Key > want[i].Key:
			return fmt.Sprintf("missing %s", want[i])
		case got[i] != want[i]:
			return fmt.Sprintf("returned %s, the writes give %s", got[i], want[i])
		}
	}
	return ""
}

// leaseEndMargin allows for the test's and PD's clocks being read at
// different moments (both are the machine's wall clock).
const leaseEndMargin = 100 * time.Millisecond

// checkLeaseDeletes checks that a leased key vanished (a delete event
// following its put with a lease) only after its lease could have ended:
// its TTL ran out from the grant's call, or a revoke was called. A
// revision's physical part is PD's clock when it was handed out, and the
// delete's revision is handed out after the lease ended, so it is at least
// that time.
func checkLeaseDeletes(rp *replay, leases map[int64]*leaseRecord) []error {
	var errs []error
	for _, key := range rp.keys {
		evs := rp.byKey[key]
		for i := 1; i < len(evs); i++ {
			prev, e := evs[i-1], evs[i]
			if !e.Delete || prev.Delete || prev.KV.Lease == 0 {
				continue
			}
			l, ok := leases[prev.KV.Lease]
			if !ok {
				errs = append(errs, fmt.Errorf("%s carries lease %x, which no client was granted", prev.KV, prev.KV.Lease))
				continue
			}
			end := l.earliestEnd()
			ms, _ := pd.ParseTS(uint64(e.KV.Mod))
			if deleted := time.UnixMilli(ms); deleted.Before(end.Add(-leaseEndMargin)) {
				errs = append(errs, fmt.Errorf("%s deleted at %d (%s) before its lease %x (TTL %d s, granted %s, renewed %s for %d s, revoked %s) could end",
					prev.KV, e.KV.Mod, deleted.Format("15:04:05.000"), l.ID, l.TTL, l.GrantCall.Format("15:04:05.000"),
					fmtTime(l.RenewCall), l.RenewTTL, fmtTime(l.RevokeCall)))
			}
		}
	}
	return errs
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format("15:04:05.000")
}
