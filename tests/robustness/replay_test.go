package robustness

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/tests/procs"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

// checkReplay ends the run's replay checks, once the traffic stopped: it
// waits until no leased key is left (every lease ended), lists the prefix
// once more (so the final state is checked too), waits until every watch
// delivered everything up to the last read's revision, then checks every
// read and every leased key's end against the watches' events.
func checkReplay(t *testing.T, seed uint64, cli *clientv3.Client, watches []*recordedWatch, l *readLog) {
	// The longest lease is 5 s; a leader change hands a lease a full TTL
	// again, so allow a few.
	deadline := time.Now().Add(30 * time.Second)
	var final readRecord
	for {
		rec := readRecord{What: "final list", Client: -1, Key: listPrefix, End: clientv3.GetPrefixRangeEnd(listPrefix),
			Count: -1, Linearizable: true, Call: l.h.now()}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		resp, err := cli.Get(ctx, listPrefix, clientv3.WithPrefix())
		cancel()
		if err == nil {
			rec.Rev, rec.Count, rec.Return = resp.Header.Revision, resp.Count, l.h.now()
			for _, k := range resp.Kvs {
				rec.KVs = append(rec.KVs, fromEtcd(k))
			}
			final = rec
			leased := 0
			for _, k := range rec.KVs {
				if k.Lease != 0 {
					leased++
				}
			}
			if leased == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("seed %d: leased keys still there 30 s after the traffic stopped: %v (err %v)", seed, rec.KVs, err)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The compactions took effect: the first revisions are gone.
	l.h.mu.Lock()
	compacted := l.h.counts["compact ok"] > 0
	l.h.mu.Unlock()
	if compacted {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		_, err := cli.Get(ctx, listPrefix, clientv3.WithPrefix(), clientv3.WithRev(1))
		cancel()
		if !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("seed %d: a read at revision 1 after the run's compactions: %v, want ErrCompacted", seed, err)
		}
	}
	l.mu.Lock()
	if final.Rev != 0 {
		l.reads = append(l.reads, final)
	}
	reads := append([]readRecord(nil), l.reads...)
	acks := append([]ack(nil), l.acks...)
	leases := map[int64]*leaseRecord{}
	for id, r := range l.leases {
		c := *r
		leases[id] = &c
	}
	errs := append([]error(nil), l.errs...)
	k8s := append([]k8sWrite(nil), l.k8s...)
	txns := append([]multiTxn(nil), l.txns...)
	rangeDeletes := append([]rangeDelete(nil), l.rangeDeletes...)
	l.mu.Unlock()

	var until int64
	for _, r := range reads {
		until = max(until, r.Rev)
	}
	deadline = time.Now().Add(time.Minute)
	for i, w := range watches {
		for w.lastRevision() < until {
			if time.Now().After(deadline) {
				t.Fatalf("seed %d: watch %d reached revision %d, the last read was at %d", seed, i, w.lastRevision(), until)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var all [][]watchcheck.Response
	var complete []int64
	for _, w := range watches {
		resps := w.responses()
		var last int64
		for _, r := range resps {
			for _, e := range r.Events {
				last = max(last, e.GetKv().GetModRevision())
			}
			if r.Progress {
				last = max(last, r.Revision)
			}
		}
		all = append(all, resps)
		complete = append(complete, last)
	}
	rp, werrs := newReplay(all, complete)
	errs = append(errs, werrs...)
	errs = append(errs, checkReads(rp, reads, acks)...)
	errs = append(errs, checkLeaseDeletes(rp, leases)...)
	errs = append(errs, checkK8s(rp, k8s, acks)...)
	errs = append(errs, checkMultiKey(rp, txns, rangeDeletes)...)
	for _, err := range errs {
		t.Errorf("seed %d: %v", seed, err)
	}
	kinds := map[string]int{}
	keys := 0
	for _, r := range reads {
		kinds[r.What]++
		keys += len(r.KVs)
	}
	t.Logf("replay: %d reads checked (%s; %d keys in all) against %d keys' writes, %d leases, %d conditional writes of the Kubernetes-like objects, %d multi-key transactions, %d range deletes",
		len(reads), summary(kinds), keys, len(rp.keys), len(leases), len(k8s), len(txns), len(rangeDeletes))
}

// checkReflectorWatches checks every reflector's watch on its own
// (checkReflections), once the traffic stopped and every write is logged.
func checkReflectorWatches(t *testing.T, seed uint64, wlog *watchcheck.Log, l *readLog) {
	l.mu.Lock()
	rs := append([]reflection(nil), l.reflections...)
	l.mu.Unlock()
	for _, err := range checkReflections(wlog.All(), rs) {
		t.Errorf("seed %d: %v", seed, err)
	}
	events, progress := 0, 0
	for _, r := range rs {
		for _, resp := range r.Resps {
			events += len(resp.Events)
			if resp.Progress {
				progress++
			}
		}
	}
	t.Logf("reflectors: %d watches checked from their lists' revisions (%d events, %d progress notifications)", len(rs), events, progress)
}

// presplit cuts the traffic's prefix into four regions before the run, so
// lists span several from the start, the reflectors' lists of the
// Kubernetes-like objects two (the nemesis splits and merges them
// further).
func presplit(t *testing.T, c cluster, pd *pdclient.Client) {
	t.Helper()
	out, err := c.split("rob/c", "rob/e", k8sPrefix+"c")
	if err != nil {
		t.Fatalf("split rob/c rob/e %sc: %v: %s", k8sPrefix, err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := procs.WaitSettled(ctx, pd, []byte(listPrefix), []byte(clientv3.GetPrefixRangeEnd(listPrefix)), 3); err != nil {
		t.Fatal(err)
	}
}

// leaseKeysOf are the keys put with leases: one beside each single-key
// key, so they are spread over the same regions.
func leaseKeysOf(keys []string) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k+"/lease")
	}
	return out
}
