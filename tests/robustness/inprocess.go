package robustness

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/internal/faultfs"
	"github.com/basaltdb/basalt/pd"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/storenode"
)

// inprocCluster is TestRobustnessInProcessCrash's cluster: one PD member
// and four stores (three replicas; the fourth leaves room for replica
// moves, as in TestRobustness) in the test's own process, each store on a
// pebble crashable in-memory file system (vfs.NewCrashableMem) behind
// faultfs (stall-disk), all on loopback ports picked at run time.
//
// Every byte into or out of a store goes through the suite's proxies
// (netproxy.go), so a crash can cut it off completely:
//
//   - its clients (the suite's etcd clients, the splits' client) dial the
//     store's published address, which is its own proxy (node
//     clientNode → the store): the address stays the same across
//     incarnations, while the store itself listens on a new port each
//     time;
//   - it dials the other stores (raft, snapshots, forwarded requests)
//     through a proxy per pair, and PD (heartbeats, timestamps, IDs,
//     routing; its PD client's and its router's) through a proxy of its
//     own (→ pdNode), by storenode.Config.PeerAddrMap, which maps the
//     other stores' published addresses and PD's client address;
//   - its dials to its own published address go straight to its own
//     listener (PeerAddrMap again), so they stay inside the incarnation.
//
// Not cut: the liveness gossip (memberlist, UDP and TCP at addresses it
// learns from the gossip; PeerAddrMap does not map it). It carries only
// alive, suspect, dead and leave, never data or an acknowledgement, so
// the old incarnation's gossip after a crash (until it is closed, and its
// leave message on close) can at most make the others notice the crash
// sooner, as a real one's silence would a little later. In-process shared
// state: the stores share nothing but the process (each has its own
// engine, file system, registries and clients; the package-level loggers
// are only loggers).
type inprocCluster struct {
	t      *testing.T
	dir    string
	pd     *pd.Server
	pdAddr string
	net    *network
	// pdNode and clientNode are the network's nodes for PD and for the
	// clients (the stores are nodes 0 to 3).
	pdNode, clientNode int
	stores             []*inprocStore
	// admin splits regions, as ctl does.
	admin *client.Client
	logs  []*os.File
}

// inprocStore is one store across its incarnations.
type inprocStore struct {
	name string
	// addr is the address it publishes: its clients' proxy.
	addr string
	mem  *vfs.MemFS
	ffs  *faultfs.FS
	srv  *storenode.Server
	log  *os.File
	// incarnation counts its starts.
	incarnation int
}

const inprocStoreCount = 4

// inprocFaults is TestRobustnessInProcessCrash's list: the crashes
// (crash-store three times, crash-two-stores, crash-stalled-store,
// crash-in-move and crash-in-merge, so seven faults in seventeen are
// crashes that lose unsynced data; crash-two-stores crashes two stores at
// once, leaving some regions without a quorum until they are back;
// crash-stalled-store crashes a store whose fsyncs are stalled, so much
// more of what it wrote is unsynced; the last two crash a store in the
// middle of a replica move or a merge), kill-store (a
// crash that keeps everything, as a SIGKILL does), and the faults of
// TestRobustness that need no process: leader transfers, splits, merges,
// replica moves, the proxies' network faults between stores, stall-disk.
var inprocFaults = []string{"crash-store", "crash-store", "crash-store", "crash-two-stores", "crash-stalled-store", "crash-in-move", "crash-in-merge", "kill-store",
	"transfer-leader", "split", "merge", "move-replica", "partition-store", "partition-pair", "one-way", "delay-store", "stall-disk"}

// startInProcess starts the in-process cluster; everything stops when
// the test ends.
func startInProcess(t *testing.T) (cluster, faultNet) {
	c := &inprocCluster{t: t, dir: t.TempDir(), pdNode: inprocStoreCount, clientNode: inprocStoreCount + 1}
	// The engine's raft and pebble messages go to the package-level
	// default logger: to a file, not the test's output.
	plog := c.logFile("process")
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(plog, &slog.HandlerOptions{Level: slog.LevelWarn})))
	t.Cleanup(func() { slog.SetDefault(prev) })
	c.net = emptyNetwork(t)
	t.Cleanup(c.stop) // before the network's close: the stores stop first

	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clientLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sc := pd.DefaultScheduleConfig()
	sc.MaxReplicas = 3
	if c.pd, err = pd.NewServer(pd.Config{Name: "pd1", DataDir: "/pd", InitialCluster: "pd1=" + peer.Addr().String(),
		ClientListener: clientLis, PeerListener: peer, Schedule: sc, FS: vfs.NewMem(), Logger: c.logger(c.logFile("pd1"))}); err != nil {
		t.Fatalf("start PD: %v", err)
	}
	c.pdAddr = c.pd.ClientAddr()
	c.net.targets[c.pdNode] = c.pdAddr

	listeners := make([]net.Listener, inprocStoreCount)
	for i := range inprocStoreCount {
		mem := vfs.NewCrashableMem()
		st := &inprocStore{name: fmt.Sprintf("store%d", i+1), mem: mem, ffs: faultfs.New(mem)}
		st.log = c.logFile(st.name)
		st.addr = c.net.addProxy(t, c.clientNode, i)
		c.stores = append(c.stores, st)
		listeners[i] = c.listen(i)
	}
	for i := range inprocStoreCount {
		c.startStore(i, listeners[i])
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c.admin, err = client.New(ctx, []string{c.pdAddr}, client.Options{}); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, st := range c.stores {
		fmt.Fprintf(&b, " %s=%s (store %d)", st.name, st.addr, st.srv.StoreID())
	}
	t.Logf("in process: pd1=%s;%s; logs in %s", c.pdAddr, b.String(), c.dir)
	return c, faultNet{proxies: c.net}
}

func (c *inprocCluster) logFile(name string) *os.File {
	f, err := os.Create(filepath.Join(c.dir, name+".log"))
	if err != nil {
		c.t.Fatal(err)
	}
	c.logs = append(c.logs, f)
	return f
}

func (c *inprocCluster) logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// listen opens store i's listener for its next incarnation, on a new
// port, and points the proxies into it there.
func (c *inprocCluster) listen(i int) net.Listener {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	c.net.retarget(i, lis.Addr().String())
	return lis
}

// startStore starts store i's next incarnation on its file system as it
// is, listening on lis, with new proxies for its own connections.
func (c *inprocCluster) startStore(i int, lis net.Listener) {
	st := c.stores[i]
	st.incarnation++
	peerMap := map[string]string{st.addr: lis.Addr().String(), c.pdAddr: c.net.addProxy(c.t, i, c.pdNode)}
	for j, o := range c.stores {
		if j != i {
			peerMap[o.addr] = c.net.addProxy(c.t, i, j)
		}
	}
	fmt.Fprintf(st.log, "--- %s incarnation %d at %s, listening on %s\n", st.name, st.incarnation, time.Now().Format(time.RFC3339Nano), lis.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := storenode.Start(ctx, storenode.Config{
		DataDir: "/store", Addr: lis.Addr().String(), AdvertiseAddr: st.addr, PD: []string{c.pdAddr},
		Raft: raftstore.Config{TickInterval: 50 * time.Millisecond}, StoreHeartbeat: time.Second, RegionHeartbeat: time.Second,
		EtcdProgressNotifyInterval: 300 * time.Millisecond, PeerAddrMap: peerMap, Listener: lis, FS: st.ffs, Logger: c.logger(st.log),
	})
	if err != nil {
		c.t.Fatalf("start %s (incarnation %d): %v", st.name, st.incarnation, err)
	}
	st.srv = srv
}

// crash crashes store i: the old incarnation is cut off from everything
// first (no client, store or PD hears from it again), then its file
// system is cloned as a crash at that moment would leave it (everything
// synced, and keep percent of what was not, vfs.CrashCloneCfg), then it
// is stopped (what it writes meanwhile goes to the old file system and is
// lost with it). After down, a new incarnation starts on the clone,
// behind the same addresses, and the network heals.
func (c *inprocCluster) crash(ctx context.Context, i, keep int, rng *rand.Rand, down time.Duration) {
	c.crashStores(ctx, []int{i}, keep, rng, down)
}

// crashStores crashes the stores together: each is cut off, then its file
// system is cloned as a crash leaves it, before any of them is closed, so
// none syncs anything after another crashed. They come back together.
func (c *inprocCluster) crashStores(ctx context.Context, idx []int, keep int, rng *rand.Rand, down time.Duration) {
	for _, i := range idx {
		c.net.crash(i)
	}
	clones := make([]*vfs.MemFS, len(idx))
	for k, i := range idx {
		clones[k] = c.stores[i].mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: keep, RNG: rng})
	}
	for _, i := range idx {
		st := c.stores[i]
		st.ffs.SetSyncDelay(0) // a sync stalled in the old incarnation returns, to let it close
		fmt.Fprintf(st.log, "--- %s crashed at %s, keeping %d%% of its unsynced data\n", st.name, time.Now().Format(time.RFC3339Nano), keep)
		st.srv.Close()
		st.srv = nil
	}
	sleep(ctx, down)
	lis := make([]net.Listener, len(idx))
	for k, i := range idx {
		st := c.stores[i]
		st.mem, st.ffs = clones[k], faultfs.New(clones[k])
		lis[k] = c.listen(i)
	}
	// The old incarnations are gone and their connections with them: the
	// links open for the new ones.
	c.net.heal()
	for k, i := range idx {
		c.startStore(i, lis[k])
	}
}

func (c *inprocCluster) storeCount() int         { return len(c.stores) }
func (c *inprocCluster) storeName(i int) string  { return c.stores[i].name }
func (c *inprocCluster) clientAddr(i int) string { return c.stores[i].addr }
func (c *inprocCluster) pdEndpoints() []string   { return []string{c.pdAddr} }

func (c *inprocCluster) split(keys ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bs := make([][]byte, len(keys))
	for i, k := range keys {
		bs[i] = []byte(k)
	}
	rs, err := c.admin.SplitRegions(ctx, bs)
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "region %d [%q, %q) version %d\n", r.GetId(), r.GetStartKey(), r.GetEndKey(), r.GetRegionEpoch().GetVersion())
	}
	return b.String(), err
}

// transferLeader does what ctl region transfer-leader does: PD's
// operator, then a wait (10 s at most) until PD sees the leader there.
func (c *inprocCluster) transferLeader(region, store uint64) (string, error) {
	body := fmt.Sprintf(`{"name": "transfer-leader", "region_id": %d, "to_store_id": %d}`, region, store)
	resp, err := pdHTTP.Post("http://"+c.pdAddr+"/pd/api/v1/operators", "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return string(msg), fmt.Errorf("PD refused the transfer: %s", resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if r, err := c.admin.PD().GetRegionByID(ctx, region); err == nil && r.GetLeader().GetStoreId() == store {
			return "", nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("region %d is not led from store %d after 10s", region, store)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// killStore is a crash that keeps all the unsynced data: what a SIGKILL
// leaves (the kernel's page cache survives the process).
func (c *inprocCluster) killStore(ctx context.Context, i int, down time.Duration) {
	c.t.Logf("kill-store: %s crashed, keeping all its unsynced data, down %v", c.stores[i].name, down)
	c.crash(ctx, i, 100, rand.New(rand.NewPCG(1, 2)), down)
}

func (c *inprocCluster) stallDisk(i int, delay time.Duration) error {
	c.stores[i].ffs.SetSyncDelay(delay)
	return nil
}

// dumpState logs the tail of each log, each store's regions, and the
// process's goroutines that run Basalt's code.
func (c *inprocCluster) dumpState(t testing.TB, tail int) {
	t.Helper()
	for _, f := range c.logs {
		b, _ := os.ReadFile(f.Name())
		t.Logf("%s: %s", filepath.Base(f.Name()), b[max(0, len(b)-tail):])
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	for _, st := range c.stores {
		if st.srv == nil {
			continue
		}
		resp, err := hc.Get("http://" + st.addr + "/debug/regions")
		if err != nil {
			t.Logf("%s regions: %v", st.name, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("%s regions: %s", st.name, b)
	}
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var b strings.Builder
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/basaltdb/basalt/") && !strings.Contains(g, "/tests/robustness.") {
			b.WriteString("\n")
			b.WriteString(g)
			b.WriteString("\n")
		}
	}
	t.Logf("goroutines in Basalt's code: %s", b.String())
}

// stop closes the stores, PD and the admin client, then the logs.
func (c *inprocCluster) stop() {
	if c.admin != nil {
		c.admin.Close()
	}
	for _, st := range c.stores {
		if st.srv != nil {
			st.srv.Close()
			st.srv = nil
		}
	}
	if c.pd != nil {
		c.pd.Close()
	}
	for _, f := range c.logs {
		_ = f.Close()
	}
}

// injectInProcess runs the faults only an in-process cluster takes
// (true), or does nothing (false), drawing nothing from the seed then.
func (n *nemesis) injectInProcess(ctx context.Context, f string, si int, hold time.Duration) bool {
	c, ok := n.cl.(*inprocCluster)
	if !ok {
		return false
	}
	switch f {
	case "crash-store":
		// Lose what the store did not sync: keep 0, 25, 50 or 75 % of it.
		keep := 25 * n.rng.IntN(4)
		rng := rand.New(rand.NewPCG(n.rng.Uint64(), 13))
		n.t.Logf("%s: %s crashed, keeping %d%% of its unsynced data, down %v", f, c.stores[si].name, keep, hold)
		c.crash(ctx, si, keep, rng, hold)
	case "crash-two-stores":
		// Two stores at once: the regions with replicas on both lose their
		// quorum until they come back, and every write acknowledged before
		// must be in what the two synced, if they were two of the three
		// that acknowledged it.
		sj := n.other(si)
		keep := 25 * n.rng.IntN(4)
		rng := rand.New(rand.NewPCG(n.rng.Uint64(), 13))
		n.t.Logf("%s: %s and %s crashed together, keeping %d%% of their unsynced data, down %v", f, c.stores[si].name, c.stores[sj].name, keep, hold)
		c.crashStores(ctx, []int{si, sj}, keep, rng, hold)
	case "crash-stalled-store":
		// The same with every fsync of the store stalled 0.2–1.5 s for
		// 0.5–1.5 s before the crash: its raft rounds wait in their sync,
		// so more of what it wrote is unsynced when it crashes.
		delay := time.Duration(200+n.rng.IntN(1301)) * time.Millisecond
		stalled := time.Duration(500+n.rng.IntN(1001)) * time.Millisecond
		keep := 25 * n.rng.IntN(4)
		rng := rand.New(rand.NewPCG(n.rng.Uint64(), 13))
		_ = c.stallDisk(si, delay)
		sleep(ctx, stalled)
		n.t.Logf("%s: %s crashed after its syncs stalled %v each for %v, keeping %d%% of its unsynced data, down %v",
			f, c.stores[si].name, delay, stalled, keep, hold)
		c.crash(ctx, si, keep, rng, hold)
	case "crash-in-move":
		// A replica added to a store that had none, and that store
		// crashed 0–1 s later: often while the snapshot it is sent is
		// being received or ingested, or before the new replica's first
		// appends are synced.
		rs := n.trafficRegions(ctx)
		if len(rs) == 0 {
			n.counts[f+" skipped"]++
			return true
		}
		r := rs[n.rng.IntN(len(rs))].GetRegion()
		to := -1
		for k, st := range c.stores {
			if region.FindPeer(r, st.srv.StoreID()) == nil {
				to = k
			}
		}
		after := time.Duration(n.rng.IntN(1000)) * time.Millisecond
		keep := 25 * n.rng.IntN(4)
		rng := rand.New(rand.NewPCG(n.rng.Uint64(), 13))
		if to < 0 {
			n.counts[f+" skipped"]++
			return true
		}
		n.operator(f, fmt.Sprintf(`{"name": "add-peer", "region_id": %d, "store_id": %d}`, r.GetId(), c.stores[to].srv.StoreID()))
		sleep(ctx, after)
		n.t.Logf("%s: %s crashed %v after region %d was given a replica there, keeping %d%% of its unsynced data, down %v",
			f, c.stores[to].name, after, r.GetId(), keep, hold)
		c.crash(ctx, to, keep, rng, hold)
	case "crash-in-merge":
		// A merge of two neighbouring regions of the traffic's, and a
		// store crashed 0–1 s later: often one holding their replicas
		// while PD aligns them or the merge's prepare and commit apply.
		rs := n.trafficRegions(ctx)
		if len(rs) < 2 {
			n.counts[f+" skipped"]++
			return true
		}
		i := n.rng.IntN(len(rs) - 1)
		after := time.Duration(n.rng.IntN(1000)) * time.Millisecond
		keep := 25 * n.rng.IntN(4)
		rng := rand.New(rand.NewPCG(n.rng.Uint64(), 13))
		n.operator(f, fmt.Sprintf(`{"name": "merge-region", "source_region_id": %d, "target_region_id": %d}`,
			rs[i+1].GetRegion().GetId(), rs[i].GetRegion().GetId()))
		sleep(ctx, after)
		n.t.Logf("%s: %s crashed %v after regions %d and %d were to merge, keeping %d%% of its unsynced data, down %v",
			f, c.stores[si].name, after, rs[i+1].GetRegion().GetId(), rs[i].GetRegion().GetId(), keep, hold)
		c.crash(ctx, si, keep, rng, hold)
	default:
		return false
	}
	return true
}
