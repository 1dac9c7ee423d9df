package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/tests/procs"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

// settings reads the run's knobs: BASALT_ROBUSTNESS_SEED (default: the
// clock) and BASALT_ROBUSTNESS_DURATION (default 20 s, CI's short run).
func settings(t *testing.T) (seed uint64, d time.Duration) {
	seed, d = uint64(time.Now().UnixNano()), 20*time.Second
	if s := os.Getenv("BASALT_ROBUSTNESS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BASALT_ROBUSTNESS_SEED: %v", err)
		}
		seed = v
	}
	if s := os.Getenv("BASALT_ROBUSTNESS_DURATION"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("BASALT_ROBUSTNESS_DURATION: %v", err)
		}
		d = v
	}
	return seed, d
}

// waitServing waits until the first region has three voters and a leader.
func waitServing(t *testing.T, c cluster) *pdclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pd, err := pdclient.New(ctx, c.pdEndpoints(), pdclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pd.Close)
	if err := procs.WaitVoters(ctx, pd, []byte("rob/"), 3); err != nil {
		t.Fatal(err)
	}
	return pd
}

// Randomized etcd-API traffic (get, put, delete, compare-and-set) from
// clients each bound to one store, while a nemesis kills, pauses and
// restarts stores and PD, transfers leaders, splits and merges regions,
// moves replicas, and cuts or slows the network between stores; the
// history must be linearizable. A failure names the seed and leaves the
// history's visualization behind.
func TestRobustness(t *testing.T) {
	runRobustness(t, faults, startProxied)
}

// TestRobustnessFullPartitions is TestRobustness's traffic and checks
// with every store and PD member in a network namespace of its own
// (tests/netns), so the network faults cut everything a real partition
// would: a store isolated from clients, PD, the gossip and the other
// stores at once; a PD member, the leader among them, isolated; a store
// cut from the other stores (gossip included) or from PD while its
// clients still reach it; two stores cut apart; everything a store sends
// lost. The other faults that need no proxies run too (nsFaults).
func TestRobustnessFullPartitions(t *testing.T) {
	runRobustness(t, nsFaults, startNamespaced)
}

// startProxied runs TestRobustness's cluster on loopback, the stores
// reaching each other through the proxies. The stores' addresses are
// picked first: the proxies between the stores must listen before the
// stores start dialing each other.
func startProxied(t *testing.T) (cluster, faultNet) {
	const stores = 4
	var addrs []string
	for range stores {
		addrs = append(addrs, procs.FreeAddr(t))
	}
	netw := newNetwork(t, addrs)
	c := procs.Start(t, procs.Options{PDs: 3, Stores: stores, StoreAddrs: addrs, StoreArgs: storeArgs,
		StoreArgsFor: func(i int) []string { return []string{"--peer-addr-map", netw.peerAddrMap(i, addrs)} }})
	return procCluster{t: t, Cluster: c}, faultNet{proxies: netw}
}

// runRobustness is the suite: a cluster from startCluster, the traffic, watches
// and compactor, a nemesis drawing from faults, and every check. Its
// draws from the seed come in the same order whatever the faults, so
// TestRobustness's seeds keep their schedules.
func runRobustness(t *testing.T, faults []string, startCluster func(t *testing.T) (cluster, faultNet)) {
	seed, duration := settings(t)
	t.Logf("seed %d, duration %v (BASALT_ROBUSTNESS_SEED=%d replays the schedule)", seed, duration, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	c, fnet := startCluster(t)
	stores := c.storeCount()
	pd := waitServing(t, c)
	presplit(t, c, pd)

	keys := []string{"rob/a", "rob/b", "rob/c", "rob/d", "rob/e", "rob/f"}
	k8sKeys := k8sKeysOf()
	h := newHistory()
	wlog := &watchcheck.Log{}
	reads := newReadLog(h)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // a failure before the traffic stops
	const clients = 6
	var clis []*clientv3.Client
	for i := 0; i < clients; i++ {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.clientAddr(i % stores)}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		clis = append(clis, cli)
	}
	// One watch of the traffic's keys through each store, from before the
	// first write.
	first, err := clis[0].Get(context.Background(), "rob/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	start := first.Header.Revision + 1
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	var watches []*recordedWatch
	for i := range stores {
		watches = append(watches, watchPrefix(wctx, clis[i], "rob/", start))
	}
	// And one that keeps restarting from where it got to, and clients
	// asking for bookmarks now and then: resumption and progress are
	// checked under the faults too.
	watches = append(watches, resumingWatch(wctx, clis[stores], "rob/", start, rand.New(rand.NewPCG(rng.Uint64(), 3))))
	// And two with etcd's filters, one without puts and one without
	// deletes, compared with the first watch at the end.
	filtered := []*recordedWatch{filteredWatch(wctx, clis[1], "rob/", start, true), filteredWatch(wctx, clis[2], "rob/", start, false)}
	progressDone := make(chan struct{})
	defer func() { wcancel(); <-progressDone }()
	go func() {
		defer close(progressDone)
		for wctx.Err() == nil {
			sleep(wctx, 400*time.Millisecond)
			for _, cli := range clis[:stores] {
				rctx, cancel := context.WithTimeout(wctx, time.Second)
				_ = cli.RequestProgress(rctx)
				cancel()
			}
		}
	}()
	for i, cli := range clis {
		tc := &trafficClient{id: i, cli: cli, keys: keys, rng: rand.New(rand.NewPCG(rng.Uint64(), uint64(i))), h: h, log: wlog, last: map[string]string{},
			reads: reads, leaseKeys: leaseKeysOf(keys), k8sKeys: k8sKeys, k8sSeen: map[string]int64{}}
		wg.Add(1)
		go func() { defer wg.Done(); tc.run(ctx) }()
	}
	// Four reflectors of the Kubernetes-like objects (k8s.go), one through
	// each store, so that, with the writes the traffic clients make now
	// and then, about four in five of the profile's requests are lists,
	// watches and gets. Their seeds are not drawn from rng: the nemesis
	// keeps its schedule.
	const reflectors = 4
	for i := range reflectors {
		rc := &trafficClient{id: clients + i, cli: clis[(2+i)%len(clis)], rng: rand.New(rand.NewPCG(seed, 20+uint64(i))), h: h, log: wlog, reads: reads}
		wg.Add(1)
		go func() { defer wg.Done(); rc.reflect(ctx) }()
	}
	compactRng := rand.New(rand.NewPCG(seed, 11)) // not from rng: the nemesis keeps its schedule
	wg.Add(1)
	go func() {
		defer wg.Done()
		compact(ctx, clis, append(append([]*recordedWatch(nil), watches...), filtered...), compactRng, h)
	}()

	n := &nemesis{t: t, cl: c, pd: pd, faults: faults, net: fnet.proxies, ns: fnet.ns, rng: rand.New(rand.NewPCG(rng.Uint64(), 7)),
		keys: append(append([]string(nil), keys...), k8sKeys...), counts: map[string]int{}, dropped: map[string]uint64{}, h: h}
	if pc, ok := c.(procCluster); ok {
		n.c = pc.Cluster
	}
	deadline := time.Now().Add(duration)
	for time.Now().Before(deadline) {
		sleep(ctx, time.Duration(500+n.rng.IntN(1500))*time.Millisecond)
		n.inject(ctx)
	}
	// A quiet tail: every fault healed, the last operations settle.
	sleep(ctx, 2*time.Second)
	cancel()
	wg.Wait()

	t.Logf("faults: %s", summary(n.counts))
	t.Logf("operations: %s", summary(h.counts))
	if h.counts["get ok"] == 0 || h.counts["put ok"] == 0 {
		t.Fatalf("the traffic did not get through: %s", summary(h.counts))
	}
	if fnet.proxies != nil {
		checkProxied(t, fnet.proxies, stores)
	}
	if fnet.ns != nil {
		checkCuts(t, n)
		logCutWindows(t, n)
	}
	checkWatches(t, seed, c, watches, wlog, start)
	checkFilteredWatches(t, seed, c, watches[0], filtered)
	checkReplay(t, seed, clis[0], watches, reads)
	checkReflectorWatches(t, seed, wlog, reads)
	wcancel()
	<-progressDone
	for _, w := range append(watches, filtered...) {
		<-w.done
	}

	checkStart := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, h.ops, 2*time.Minute)
	switch res {
	case porcupine.Ok:
		t.Logf("linearizable: %d operations checked in %v", len(h.ops), time.Since(checkStart).Round(time.Millisecond))
	case porcupine.Unknown:
		t.Logf("porcupine timed out on %d operations: no violation found in the time given", len(h.ops))
	default:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("basalt-robustness-%d.html", seed))
		if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
			t.Logf("visualize: %v", err)
		}
		t.Fatalf("NOT LINEARIZABLE (seed %d): the history is drawn in %s", seed, path)
	}
}

func summary(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, m[k])
	}
	return b.String()
}

// checkWatches waits until every watch delivered the last acknowledged
// write, then checks each against the writes: ordered, unique, atomic,
// reliable, prev_kv right (tests/watchcheck).
func checkWatches(t *testing.T, seed uint64, c cluster, watches []*recordedWatch, wlog *watchcheck.Log, start int64) {
	writes := wlog.All()
	var until int64
	for _, w := range writes {
		until = max(until, w.Rev)
	}
	began := time.Now()
	deadline := began.Add(time.Minute)
	for i, w := range watches {
		for w.lastRevision() < until {
			if time.Now().After(deadline) {
				c.dumpState(t, 8000)
				t.Fatalf("seed %d: watch %d reached revision %d, the last acknowledged write is at %d", seed, i, w.lastRevision(), until)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	caughtUp := time.Since(began)
	hist := watchcheck.NewHistory(writes)
	events, bookmarks, restarts := 0, 0, 0
	for i, w := range watches {
		w.mu.Lock()
		resps := append([]watchcheck.Response(nil), w.resps...)
		werrs := append([]error(nil), w.errs...)
		restarts += w.restarts
		w.mu.Unlock()
		for _, e := range werrs {
			t.Errorf("seed %d: watch %d: %v", seed, i, e)
		}
		for _, e := range watchcheck.Check(hist, start, until, true, resps) {
			t.Errorf("seed %d: watch %d: %v", seed, i, e)
		}
		for _, r := range resps {
			events += len(r.Events)
			if r.Progress {
				bookmarks++
			}
		}
	}
	t.Logf("watches: %d events and %d progress notifications checked in %d watches (one restarted %d times; all caught up %v after the traffic stopped)",
		events, bookmarks, len(watches), restarts, caughtUp.Round(time.Millisecond))
}

// checkFilteredWatches compares each filtered watch with the unfiltered
// reference (checked by checkWatches already), once both reached the
// reference's last revision.
func checkFilteredWatches(t *testing.T, seed uint64, c cluster, ref *recordedWatch, filtered []*recordedWatch) {
	until := ref.lastRevision()
	deadline := time.Now().Add(time.Minute)
	events := 0
	for i, w := range filtered {
		for w.lastRevision() < until && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		w.mu.Lock()
		for _, e := range w.errs {
			t.Errorf("seed %d: filtered watch %d: %v", seed, i, e)
		}
		w.mu.Unlock()
		if last := w.lastRevision(); last < until {
			c.dumpState(t, 8000)
			t.Fatalf("seed %d: filtered watch %d reached revision %d, the reference %d", seed, i, last, until)
		}
		resps := w.responses()
		for _, r := range resps {
			events += len(r.Events)
		}
		for _, err := range watchcheck.CheckFiltered(ref.responses(), resps, i == 0, i == 1) {
			t.Errorf("seed %d: %v", seed, err)
		}
	}
	t.Logf("filtered watches: %d events checked against the first watch's (one without puts, one without deletes)", events)
}

// checkProxied fails the run if a store reached the others around the
// proxies: the network faults would then have cut nothing. Every store
// talks to some other (raft, or the writes it forwards to leaders).
func checkProxied(t *testing.T, netw *network, stores int) {
	var b strings.Builder
	for i := range stores {
		var sum int64
		for j := range stores {
			if j != i {
				sum += netw.bytes(i, j)
				fmt.Fprintf(&b, " %v %d", link{i, j}, netw.bytes(i, j))
			}
		}
		if sum == 0 {
			t.Errorf("store %d sent nothing through its proxies to the other stores", i+1)
		}
	}
	t.Logf("bytes through the store-to-store proxies:%s", b.String())
}
