package robustness

import (
	"context"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/tests/watchcheck"
)

// Multi-key writes: transactions that put and delete several keys at once,
// and range deletes. porcupine's model is single-key, so these are checked
// by replay (reads.go), for atomicity above all: every write of a
// transaction, and every key a range delete removed, at one revision and
// nothing else there.
//
// Two groups of keys. Group "m" lies in one region unless the nemesis
// splits it (it splits only at the other traffic keys, so it does not);
// group "x" straddles the presplit boundary at rob/e, so its transactions
// are refused as cross-region (FailedPrecondition, nothing applied) until a
// merge joins the two regions, and then commit.
var multiKeyGroups = [][]string{
	{"rob/m/0", "rob/m/1", "rob/m/2", "rob/m/3"},
	{"rob/d/x0", "rob/d/x1", "rob/e/x0", "rob/e/x1"},
}

// multiKeyDeletePrefixes are what the range deletes remove: the "m" group
// whole, or the "x" group's keys on one side of the boundary (a range
// delete over many regions is per-region atomic only, so each prefix
// here lies in one region).
var multiKeyDeletePrefixes = []string{"rob/m/", "rob/d/x", "rob/e/x"}

// multiTxn is one multi-key transaction as the client issued it and saw it
// end.
type multiTxn struct {
	Client int
	// If set: the transaction's compare, Value(CompareKey) = CompareValue.
	CompareKey, CompareValue string
	Puts                     map[string]string // key -> value (unique to the run)
	Deletes                  []string
	// Refused: a clear error (cross-region), so nothing was applied.
	Refused bool
	// Unknown: the call failed otherwise; it may or may not have applied.
	Unknown   bool
	Succeeded bool
	Rev       int64 // the response's revision
}

func (m multiTxn) String() string {
	keys := make([]string, 0, len(m.Puts))
	for k := range m.Puts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "txn by client %d", m.Client)
	if m.CompareKey != "" {
		fmt.Fprintf(&b, " if %s = %q", m.CompareKey, m.CompareValue)
	}
	for _, k := range keys {
		fmt.Fprintf(&b, " put %s=%q", k, m.Puts[k])
	}
	for _, k := range m.Deletes {
		fmt.Fprintf(&b, " delete %s", k)
	}
	switch {
	case m.Refused:
		b.WriteString(": refused")
	case m.Unknown:
		b.WriteString(": unknown outcome")
	default:
		fmt.Fprintf(&b, ": succeeded=%v at %d", m.Succeeded, m.Rev)
	}
	return b.String()
}

// rangeDelete is one acknowledged delete of a prefix, with the versions it
// removed (prev_kv).
type rangeDelete struct {
	Client  int
	Prefix  string
	Rev     int64
	Deleted int64
	Prev    []kv
}

func (d rangeDelete) String() string {
	return fmt.Sprintf("delete of prefix %s by client %d at %d (deleted %d)", d.Prefix, d.Client, d.Rev, d.Deleted)
}

// multiTxnOp issues one multi-key transaction: puts of two or three keys
// of one group, sometimes a delete of another, sometimes under a compare
// on a value this client wrote.
func (c *trafficClient) multiTxnOp(ctx context.Context, n int) {
	group := multiKeyGroups[c.rng.IntN(len(multiKeyGroups))]
	order := c.rng.Perm(len(group))
	m := multiTxn{Client: c.id, Puts: map[string]string{}}
	var ops []clientv3.Op
	for i, j := range order[:2+c.rng.IntN(2)] {
		key := group[j]
		value := fmt.Sprintf("c%d-%d-t%d", c.id, n, i)
		m.Puts[key] = value
		ops = append(ops, clientv3.OpPut(key, value))
	}
	if last := group[order[len(order)-1]]; m.Puts[last] == "" && c.rng.IntN(2) == 0 {
		m.Deletes = append(m.Deletes, last)
		ops = append(ops, clientv3.OpDelete(last))
	}
	if key := group[order[0]]; c.rng.IntN(2) == 0 && c.last[key] != "" {
		m.CompareKey, m.CompareValue = key, c.last[key]
	}
	tctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := c.cli.Txn(tctx).If(txnCompares(m)...).Then(ops...).Commit()
	switch {
	case err == nil:
		m.Succeeded, m.Rev = resp.Succeeded, resp.Header.Revision
		c.h.count(fmt.Sprintf("multi-key txn succeeded=%v", m.Succeeded))
	case status.Code(err) == codes.FailedPrecondition:
		m.Refused = true
		c.h.count("multi-key txn refused (cross-region)")
	default:
		// Also when the run ended under it: it may have been sent, and a
		// store may still apply it after the client gave up (the watches
		// then deliver it, and every event must match a write issued).
		m.Unknown = true
		c.h.count("multi-key txn unknown")
	}
	for key, value := range m.Puts {
		w := watchcheck.Write{Key: key, Value: value}
		if m.Succeeded {
			w.Rev = m.Rev
			c.last[key] = value
		} else if m.Unknown {
			c.last[key] = value
		}
		c.write(w)
	}
	for _, key := range m.Deletes {
		// Whether it removed anything the replay says; the watch checks
		// need only know it may have.
		c.write(watchcheck.Write{Key: key, Delete: true})
	}
	c.reads.mu.Lock()
	c.reads.txns = append(c.reads.txns, m)
	c.reads.mu.Unlock()
}

func txnCompares(m multiTxn) []clientv3.Cmp {
	if m.CompareKey == "" {
		return nil
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.Value(m.CompareKey), "=", m.CompareValue)}
}

// rangeDeleteOp deletes one of multiKeyDeletePrefixes with prev_kv.
func (c *trafficClient) rangeDeleteOp(ctx context.Context) {
	prefix := multiKeyDeletePrefixes[c.rng.IntN(len(multiKeyDeletePrefixes))]
	dctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := c.cli.Delete(dctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV())
	if err != nil {
		// Also when the run ended under it (see multiTxnOp).
		c.h.count("range delete unknown")
		for _, group := range multiKeyGroups {
			for _, key := range group {
				if strings.HasPrefix(key, prefix) {
					c.write(watchcheck.Write{Key: key, Delete: true})
				}
			}
		}
		return
	}
	c.h.count("range delete ok")
	d := rangeDelete{Client: c.id, Prefix: prefix, Rev: resp.Header.Revision, Deleted: resp.Deleted}
	for _, p := range resp.PrevKvs {
		d.Prev = append(d.Prev, fromEtcd(p))
		c.write(watchcheck.Write{Key: string(p.Key), Delete: true, Rev: d.Rev})
	}
	c.reads.mu.Lock()
	c.reads.rangeDeletes = append(c.reads.rangeDeletes, d)
	c.reads.mu.Unlock()
}

// checkMultiKey checks the multi-key writes against the replay:
//   - a transaction that succeeded wrote exactly its puts, and deleted
//     those of its deletes that existed, all at its revision, and nothing
//     else was written there; its compare held just before;
//   - one whose compare failed held no such state at its revision, and
//     none of its values was ever written; nor were those of one refused;
//   - one of unknown outcome wrote all its values at one revision, as one
//     that succeeded would have, or none of them;
//   - a range delete removed exactly the keys of its prefix that existed
//     just before its revision, as they were (prev_kv), and its count says
//     so.
func checkMultiKey(rp *replay, txns []multiTxn, deletes []rangeDelete) []error {
	var errs []error
	report := func(format string, args ...any) {
		if len(errs) < 30 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	// Every event by revision, and every put by its value (unique to the
	// run).
	byRev := map[int64][]event{}
	byValue := map[string]event{}
	for _, key := range rp.keys {
		for _, e := range rp.byKey[key] {
			byRev[e.KV.Mod] = append(byRev[e.KV.Mod], e)
			if !e.Delete {
				byValue[e.KV.Value] = e
			}
		}
	}
	// applied checks that rev holds exactly what m would write there.
	applied := func(m multiTxn, rev int64) string {
		want := map[string]bool{}
		for key, value := range m.Puts {
			want[key] = true
			e, ok := rp.changedIn(key, rev-1, rev)
			if !ok || e.Delete || e.KV.Value != value || e.KV.Mod != rev {
				return fmt.Sprintf("%s@%d is not %q", key, rev, value)
			}
		}
		for _, key := range m.Deletes {
			_, existed := rp.at(key, rev-1)
			e, changed := rp.changedIn(key, rev-1, rev)
			switch {
			case existed && (!changed || !e.Delete):
				return fmt.Sprintf("%s existed before %d and was not deleted there", key, rev)
			case !existed && changed:
				return fmt.Sprintf("%s did not exist before %d and was written there", key, rev)
			}
			want[key] = existed
		}
		for _, e := range byRev[rev] {
			if !want[e.KV.Key] {
				return fmt.Sprintf("%s (delete=%v) was written at the same revision", e.KV.Key, e.Delete)
			}
		}
		if m.CompareKey != "" {
			if v, ok := rp.at(m.CompareKey, rev-1); !ok || v.Value != m.CompareValue {
				return fmt.Sprintf("its compare did not hold before %d (%s was %q, exists=%v)", rev, m.CompareKey, v.Value, ok)
			}
		}
		return ""
	}
	for _, m := range txns {
		// Where its values landed, if anywhere.
		revs := map[int64]bool{}
		for _, value := range m.Puts {
			if e, ok := byValue[value]; ok {
				revs[e.KV.Mod] = true
			}
		}
		switch {
		case m.Succeeded:
			if why := applied(m, m.Rev); why != "" {
				report("%s: %s", m, why)
			}
		case m.Refused || !m.Unknown:
			if len(revs) > 0 {
				report("%s: its values were written at %v", m, keysOf(revs))
			}
			if !m.Refused && m.CompareKey != "" {
				if v, ok := rp.at(m.CompareKey, m.Rev); ok && v.Value == m.CompareValue {
					report("%s: its compare held at %d (%s)", m, m.Rev, v)
				}
			}
		case len(revs) > 1:
			report("%s: its values were written at several revisions, %v", m, keysOf(revs))
		case len(revs) == 1:
			rev := keysOf(revs)[0]
			if why := applied(m, rev); why != "" {
				report("%s: applied at %d, but %s", m, rev, why)
			}
		}
	}
	for _, d := range deletes {
		var want []kv
		before := d.Rev - 1
		if d.Deleted == 0 {
			// Nothing deleted, so possibly no revision of its own: the
			// prefix was empty at the revision it read.
			before = d.Rev
		}
		for _, key := range rp.keys {
			if strings.HasPrefix(key, d.Prefix) {
				if v, ok := rp.at(key, before); ok {
					want = append(want, v)
				}
			}
		}
		sort.Slice(d.Prev, func(i, j int) bool { return d.Prev[i].Key < d.Prev[j].Key })
		if diff := diffKVs(d.Prev, want); diff != "" {
			report("%s: prev_kv %s", d, diff)
		}
		if d.Deleted != int64(len(want)) {
			report("%s: %d keys existed before it", d, len(want))
		}
		if d.Deleted == 0 {
			continue
		}
		gone := map[string]bool{}
		for _, v := range want {
			gone[v.Key] = true
		}
		for _, e := range byRev[d.Rev] {
			if !e.Delete || !gone[e.KV.Key] {
				report("%s: %s (delete=%v) was written at the same revision", d, e.KV.Key, e.Delete)
			}
			delete(gone, e.KV.Key)
		}
		for key := range gone {
			report("%s: %s was not deleted at its revision", d, key)
		}
	}
	return errs
}

func keysOf(m map[int64]bool) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
