package robustness

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

// The Kubernetes-like profile: a few objects under k8sPrefix, written only
// the way an API server writes them (a create if the key does not exist,
// an update or a delete if its mod revision is still the one the writer
// saw), read the way informers read them: a reflector lists the prefix at
// one revision, watches from the revision after it, and lists again.
//
// The objects live under the traffic's prefix, so the run's watches and
// lists cover them and what the replay check (reads.go) already does
// applies to them too: every write is logged for the watch checks, every
// read is checked against the replay.
//
// The conditional writes are checked by replay as well, not by porcupine.
// Its model (model.go) tracks a key's value only, and a compare on the mod
// revision needs the revision each write got: known for an acknowledged
// write, but not for one whose call failed, so the model would have to
// guess it (a nondeterministic state per unknown write). The watches' events
// carry every committed write with its revision, acknowledged or not, and
// the values are unique to the run, so each committed put names the write
// that made it and its condition can be checked against the event before
// it: a create must find the key absent, an update the mod revision it
// compared. A write that failed its compare must have failed on the state
// at its response's revision, where the transaction read the key
// (checkK8s).
const k8sPrefix = listPrefix + "k8s/"

// k8sKeysOf are the objects: few, so writers conflict.
func k8sKeysOf() []string {
	var out []string
	for _, n := range []string{"a", "b", "c", "d"} {
		out = append(out, k8sPrefix+n)
	}
	return out
}

// k8sWrite is one conditional write and what its response said.
type k8sWrite struct {
	Kind   string // "create", "update", "delete"
	Client int
	Key    string
	Value  string // create, update: the value put (unique to the run)
	Seen   int64  // update, delete: the mod revision compared
	// Unknown: the call failed, so it may or may not have taken effect.
	Unknown   bool
	Succeeded bool
	// Rev is the response's revision: the write's if it succeeded; if its
	// compare failed, the revision it was evaluated at (nothing written).
	Rev int64
	// Call is when the transaction was sent (history time).
	Call int64
}

func (w k8sWrite) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s of %s by client %d", w.Kind, w.Key, w.Client)
	if w.Kind != "delete" {
		fmt.Fprintf(&b, " to %q", w.Value)
	}
	if w.Kind != "create" {
		fmt.Fprintf(&b, " if mod revision %d", w.Seen)
	}
	switch {
	case w.Unknown:
		b.WriteString(" (outcome unknown)")
	case w.Succeeded:
		fmt.Fprintf(&b, " (acknowledged at %d)", w.Rev)
	default:
		fmt.Fprintf(&b, " (compare failed at %d)", w.Rev)
	}
	return b.String()
}

// reflection is one reflector's watch: from Start (its list's revision + 1),
// vouched for up to Until (its last event or progress notification).
type reflection struct {
	Client       int
	Start, Until int64
	Resps        []watchcheck.Response
	Errs         []error
}

func (l *readLog) k8sWrite(w k8sWrite) {
	l.mu.Lock()
	l.k8s = append(l.k8s, w)
	l.mu.Unlock()
}

func (l *readLog) reflected(r reflection) {
	l.mu.Lock()
	l.reflections = append(l.reflections, r)
	l.mu.Unlock()
}

// k8sOp is one write of an object, as an API server does it for a client:
// a create if the writer thinks the object absent, else an update or (one
// in five) a delete on the mod revision it saw. Half the time the writer
// works from what it last saw of the object, as a controller working from
// its informer's cache does (so it conflicts if someone wrote since); else
// it gets the object first.
func (c *trafficClient) k8sOp(ctx context.Context, n int) {
	key := c.k8sKeys[c.rng.IntN(len(c.k8sKeys))]
	seen, known := c.k8sSeen[key]
	if !known || c.rng.IntN(2) == 0 {
		rec, err := c.getOne(ctx, "k8s get", key, false)
		if err != nil {
			if ctx.Err() == nil {
				c.h.count("k8s get failed")
			}
			return
		}
		c.h.count("k8s get ok")
		c.reads.read(rec)
		seen = 0
		if len(rec.KVs) == 1 {
			seen = rec.KVs[0].Mod
		}
		c.k8sSeen[key] = seen
	}
	w := k8sWrite{Client: c.id, Key: key, Seen: seen}
	defer func() { c.reads.k8sWrite(w) }()
	var cmp clientv3.Cmp
	var then clientv3.Op
	switch {
	case seen == 0:
		w.Kind, w.Value, w.Seen = "create", fmt.Sprintf("c%d-k8s-%d", c.id, n), 0
		cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		then = clientv3.OpPut(key, w.Value)
	case c.rng.IntN(5) == 0:
		w.Kind = "delete"
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", seen)
		then = clientv3.OpDelete(key)
	default:
		w.Kind, w.Value = "update", fmt.Sprintf("c%d-k8s-%d", c.id, n)
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", seen)
		then = clientv3.OpPut(key, w.Value)
	}
	w.Call = c.h.now()
	tctx, cancel := context.WithTimeout(ctx, opTimeout)
	// The failure branch reads the object, as an API server does to tell
	// the client what it conflicted with.
	resp, err := c.cli.Txn(tctx).If(cmp).Then(then).Else(clientv3.OpGet(key)).Commit()
	cancel()
	switch {
	case err != nil:
		w.Unknown = true
		c.write(watchcheck.Write{Key: key, Value: w.Value, Delete: w.Kind == "delete"})
		delete(c.k8sSeen, key)
		c.h.count("k8s " + w.Kind + " unknown")
	case resp.Succeeded:
		w.Succeeded, w.Rev = true, resp.Header.Revision
		c.write(watchcheck.Write{Key: key, Value: w.Value, Delete: w.Kind == "delete", Rev: w.Rev})
		c.k8sSeen[key] = w.Rev
		if w.Kind == "delete" {
			c.k8sSeen[key] = 0
			// The compare held, so the key existed: exactly it went.
			if len(resp.Responses) != 1 || resp.Responses[0].GetResponseDeleteRange().GetDeleted() != 1 {
				c.reads.violation("%s deleted %v", w, resp.Responses)
			}
		}
		c.h.count("k8s " + w.Kind + " ok")
	default:
		w.Rev = resp.Header.Revision
		// What the failure branch read is a linearizable read of the key
		// at the revision the compare saw: checked like any other read.
		rec := readRecord{What: "k8s " + w.Kind + " conflict get", Client: c.id, Key: key, End: key + "\x00", Rev: w.Rev,
			Count: -1, Linearizable: true, Call: w.Call, Return: c.h.now()}
		if len(resp.Responses) != 1 || resp.Responses[0].GetResponseRange() == nil {
			c.reads.violation("%s: the failure branch answered %v, not one range", w, resp.Responses)
		} else {
			for _, k := range resp.Responses[0].GetResponseRange().Kvs {
				rec.KVs = append(rec.KVs, fromEtcd(k))
			}
			c.reads.read(rec)
		}
		c.k8sSeen[key] = 0
		if len(rec.KVs) == 1 {
			c.k8sSeen[key] = rec.KVs[0].Mod
		}
		c.h.count("k8s " + w.Kind + " conflict")
	}
}

// reflect runs a reflector until ctx ends: list the objects at one
// revision, watch from the revision after it for 0.5-2 s, list again.
func (c *trafficClient) reflect(ctx context.Context) {
	for ctx.Err() == nil {
		list, ok := c.k8sList(ctx)
		if !ok {
			// Not a wait for state: it keeps a store that refuses at once
			// from being asked in a tight loop.
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		c.k8sWatch(ctx, list)
	}
}

// k8sList lists the objects as the traffic's lists do (reads.go), in pages
// of 2-3 at the first page's revision, linearizable as a reflector's list
// is; a list meeting a compaction starts over.
func (c *trafficClient) k8sList(ctx context.Context) (readRecord, bool) {
	limit := int64(2 + c.rng.IntN(2))
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		rec, err := c.listOnce(ctx, k8sPrefix, "k8s list", false, limit, 0)
		switch {
		case err == nil:
			c.h.count("k8s list ok")
			c.reads.read(rec)
			return rec, true
		case errors.Is(err, rpctypes.ErrCompacted):
			c.h.count("k8s list compacted")
		case ctx.Err() != nil:
			return readRecord{}, false
		default:
			c.h.count("k8s list failed")
			return readRecord{}, false
		}
	}
	return readRecord{}, false
}

// k8sWatch watches the objects from the list's revision + 1 for 0.5-2 s and
// records what it delivered. The compactor does not wait for these
// watches, so the list's revision may be compacted before the watch
// starts, or while the watch resumes after a fault: it is then cancelled
// with the compaction's revision, and the reflector lists again, as
// Kubernetes' does. Its cache (the list with the events applied) must be
// the state at the last revision the watch vouched for, and each event's
// prev_kv what the cache held: both checked (reflectEvents, checkReads).
func (c *trafficClient) k8sWatch(ctx context.Context, list readRecord) {
	start := list.Rev + 1
	w := &recordedWatch{start: start}
	wctx, cancel := context.WithTimeout(ctx, time.Duration(500+c.rng.IntN(1500))*time.Millisecond)
	defer cancel()
	ch := c.cli.Watch(wctx, k8sPrefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(start), clientv3.WithProgressNotify())
	compacted := false
	for resp := range ch {
		if resp.CompactRevision != 0 {
			compacted = true
			cancel() // and drain what is left
			continue
		}
		// The end this watch chose is not a failure.
		w.record(resp, wctx.Err() == nil)
	}
	if compacted {
		c.h.count("k8s watch compacted")
	} else if ctx.Err() == nil {
		c.h.count("k8s watch ok")
	}
	w.mu.Lock()
	werrs := append([]error(nil), w.errs...)
	w.mu.Unlock()
	resps := w.responses()
	until := w.lastRevision()
	c.reads.reflected(reflection{Client: c.id, Start: start, Until: until, Resps: resps, Errs: werrs})
	cache, errs := reflectEvents(list.KVs, resps)
	for _, err := range errs {
		c.reads.violation("reflector %d's watch from %d (after %s): %v", c.id, start, list, err)
	}
	if until > list.Rev {
		// Serializable: a watch's state need not be the latest; it must be
		// exactly one revision's.
		c.reads.read(readRecord{What: "k8s reflector cache", Client: c.id, Key: k8sPrefix, End: clientv3.GetPrefixRangeEnd(k8sPrefix),
			Rev: until, KVs: cache, Count: -1, Call: list.Call, Return: c.h.now()})
	}
}

// reflectEvents applies a watch's events to the list it started after, as
// a reflector's cache does, and checks each event's prev_kv against the
// cache: the list at R and the watch from R+1 must tell one story. It
// returns the cache, in key order.
func reflectEvents(list []kv, resps []watchcheck.Response) ([]kv, []error) {
	var errs []error
	cache := map[string]kv{}
	for _, k := range list {
		cache[k.Key] = k
	}
	for _, r := range resps {
		for _, e := range r.Events {
			key := string(e.GetKv().GetKey())
			had, ok := cache[key]
			var prev kv
			if e.GetPrevKv() != nil {
				prev = fromEvent(e.GetPrevKv())
			}
			if ok != (e.GetPrevKv() != nil) || prev != had {
				if len(errs) < 10 {
					errs = append(errs, fmt.Errorf("event %s %s@%d has prev_kv %v, the list and the events before it hold %v (present %v)",
						e.GetType(), key, e.GetKv().GetModRevision(), prev, had, ok))
				}
			}
			if e.GetType() == kvpb.Event_DELETE {
				delete(cache, key)
			} else {
				cache[key] = fromEvent(e.GetKv())
			}
		}
	}
	out := make([]kv, 0, len(cache))
	for _, k := range cache {
		out = append(out, k)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Key < out[b].Key })
	return out, errs
}

// checkReflections checks each reflector's watch with tests/watchcheck, as
// a watch of the objects alone from its list's revision + 1: ordered,
// unique, atomic, bookmarkable, prev_kv right between its events, nothing
// never written, and every acknowledged write of the objects from its
// start to the revision it vouched for delivered.
func checkReflections(writes []watchcheck.Write, rs []reflection) []error {
	var errs []error
	var objects []watchcheck.Write
	for _, w := range writes {
		if strings.HasPrefix(w.Key, k8sPrefix) {
			objects = append(objects, w)
		}
	}
	hist := watchcheck.NewHistory(objects)
	for _, r := range rs {
		for _, err := range r.Errs {
			errs = append(errs, fmt.Errorf("reflector %d's watch from %d: %v", r.Client, r.Start, err))
		}
		for _, err := range watchcheck.Check(hist, r.Start, r.Until, true, r.Resps) {
			errs = append(errs, fmt.Errorf("reflector %d's watch from %d to %d: %v", r.Client, r.Start, r.Until, err))
		}
	}
	return errs
}

// checkK8s checks the conditional writes against the replay. Every
// committed write of an object must be one a client issued and may have
// taken effect, made where its condition held: a put's previous version
// (the event before it) absent for a create, at the compared mod revision
// for an update, so nothing else wrote the key between what the writer saw
// and its write; a delete's previous version at the mod revision some
// delete compared (the acknowledged one at that revision, if any; an
// unknown one otherwise, as a delete event does not name its writer). An
// acknowledged write must be in the replay at its revision, above every
// write of its key acknowledged before it was sent (a write whose compare
// failed is a read at its revision, which checkReads holds to the same),
// and a write whose compare failed must have failed on the state at its
// response's revision.
func checkK8s(rp *replay, writes []k8sWrite, acks []ack) []error {
	var errs []error
	report := func(format string, args ...any) {
		if len(errs) < 30 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	type at struct {
		key string
		rev int64
	}
	puts := map[string]k8sWrite{} // by value, unique to the run
	acked := map[at]k8sWrite{}    // deletes acknowledged, by revision
	unknown := map[at]bool{}      // deletes of unknown outcome, by revision compared
	for _, w := range writes {
		switch {
		case w.Kind != "delete":
			puts[w.Value] = w
		case w.Succeeded:
			acked[at{w.Key, w.Rev}] = w
		case w.Unknown:
			unknown[at{w.Key, w.Seen}] = true
		}
	}
	for _, key := range rp.keys {
		if !strings.HasPrefix(key, k8sPrefix) {
			continue
		}
		evs := rp.byKey[key]
		for i, e := range evs {
			var before int64 // the previous version's mod revision; 0: absent
			if i > 0 && !evs[i-1].Delete {
				before = evs[i-1].KV.Mod
			}
			if e.Delete {
				w, ok := acked[at{key, e.KV.Mod}]
				switch {
				case before == 0:
					report("%s@%d: a delete event where the key did not exist", key, e.KV.Mod)
				case ok && w.Seen != before:
					report("%s deleted the key at %d, whose mod revision was %d, not the one compared", w, e.KV.Mod, before)
				case !ok && !unknown[at{key, before}]:
					report("%s@%d: deleted, but no delete that compared its mod revision %d may have taken effect", key, e.KV.Mod, before)
				}
				continue
			}
			w, ok := puts[e.KV.Value]
			switch {
			case !ok || w.Key != key:
				report("%s: no conditional write put it", e.KV)
				continue
			case !w.Unknown && !w.Succeeded:
				report("%s took effect at %d, though its response said the compare failed", w, e.KV.Mod)
			case w.Succeeded && w.Rev != e.KV.Mod:
				report("%s was written at %d", w, e.KV.Mod)
			}
			switch {
			case w.Kind == "create" && before != 0:
				report("%s took effect at %d, though the key existed (mod revision %d)", w, e.KV.Mod, before)
			case w.Kind == "update" && before != w.Seen:
				report("%s took effect at %d, though the key's version before it had mod revision %d (0: absent): another write came between",
					w, e.KV.Mod, before)
			}
		}
	}
	for _, w := range writes {
		switch {
		case w.Unknown:
		case w.Succeeded:
			e, ok := rp.changedIn(w.Key, w.Rev-1, w.Rev)
			if !ok || e.Delete != (w.Kind == "delete") || (!e.Delete && e.KV.Value != w.Value) {
				report("%s: the watches have no such write at %d", w, w.Rev)
			}
			for _, a := range acks {
				if a.Key == w.Key && a.Return < w.Call && a.Rev >= w.Rev {
					report("%s, at or below the write of its key acknowledged at %d before it was sent", w, a.Rev)
					break
				}
			}
		default:
			cur, exists := rp.at(w.Key, w.Rev)
			switch {
			case w.Kind == "create" && !exists:
				report("%s, though the key did not exist at %d", w, w.Rev)
			case w.Kind != "create" && exists && cur.Mod == w.Seen:
				report("%s, though the key's mod revision at %d was the one compared", w, w.Rev)
			}
		}
	}
	return errs
}
