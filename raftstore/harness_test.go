package raftstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc"

	"github.com/basaltdb/basalt/proto/metapb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// ---- a tiny replicated KV used as the state machine in raftstore tests ----

// kvSM stores key → value under 'z'+key. A command is a put: uvarint(len(key))
// key value. Apply returns the previous value (nil if none), or an error
// value for a key outside the region.
type kvSM struct {
	mu      sync.Mutex
	changes map[uint64]int
	// blind skips reading the previous value (benchmarks measure the
	// engine, not a read-before-write state machine).
	blind bool
}

func newKVSM() *kvSM { return &kvSM{changes: make(map[uint64]int)} }

func kvDataKey(k []byte) []byte { return append([]byte{'z'}, k...) }

func stateCount(st []byte) uint64 {
	if len(st) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(st)
}

func (*kvSM) DataSpans(start, end []byte) []Span {
	sp := Span{Start: kvDataKey(start), End: []byte{'z' + 1}}
	if len(end) > 0 {
		sp.End = kvDataKey(end)
	}
	return []Span{sp}
}

func encodePut(key, value []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

func (sm *kvSM) Apply(ab *ApplyBatch, cmd Command) any {
	// The per-region state counts applied puts.
	*cmd.State = binary.BigEndian.AppendUint64(nil, stateCount(*cmd.State)+1)
	kl, n := binary.Uvarint(cmd.Data)
	key, value := cmd.Data[n:n+int(kl)], cmd.Data[n+int(kl):]
	if !region.ContainsKey(cmd.Region, key) {
		return region.KeyNotInRegion(key, cmd.Region)
	}
	if sm.blind {
		if err := ab.Set(kvDataKey(key), value, nil); err != nil {
			panic(err)
		}
		return nil
	}
	var prev []byte
	if v, closer, err := ab.Get(kvDataKey(key)); err == nil {
		prev = append([]byte(nil), v...)
		closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		panic(err)
	}
	if err := ab.Set(kvDataKey(key), value, nil); err != nil {
		panic(err)
	}
	return prev
}

// MergeState: the test state machine keeps a write count per region;
// a merged region counts both.
func (sm *kvSM) MergeState(target, source []byte) []byte {
	return binary.BigEndian.AppendUint64(nil, stateCount(target)+stateCount(source))
}

func (sm *kvSM) RegionChanged(regionID uint64, _ *metapb.Region, _ []byte) {
	sm.mu.Lock()
	sm.changes[regionID]++
	sm.mu.Unlock()
}

// ---- faults ----

type link struct{ from, to uint64 }

// faultNet decides the fate of every message between two stores.
type faultNet struct {
	mu      sync.Mutex
	dropped map[link]bool
	delays  map[link]time.Duration
	pending sync.WaitGroup
}

func newFaultNet() *faultNet {
	return &faultNet{dropped: make(map[link]bool), delays: make(map[link]time.Duration)}
}

func (n *faultNet) fate(from, to uint64) (drop bool, delay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dropped[link{from, to}], n.delays[link{from, to}]
}

// partition cuts every link between a and b (both directions).
func (n *faultNet) partition(a, b []uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.dropped[link{x, y}] = true
			n.dropped[link{y, x}] = true
		}
	}
}

// isolate cuts a store off from every other.
func (n *faultNet) isolate(id uint64, all []uint64) {
	var others []uint64
	for _, o := range all {
		if o != id {
			others = append(others, o)
		}
	}
	n.partition([]uint64{id}, others)
}

func (n *faultNet) setDelay(from, to uint64, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.delays[link{from, to}] = d
}

func (n *faultNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.dropped)
	clear(n.delays)
}

// faultTransport is one store's view of the network: the real gRPC
// transport behind the fault rules.
type faultTransport struct {
	from  uint64
	net   *faultNet
	inner *GRPCTransport
}

func (t *faultTransport) Send(to uint64, m *rspb.RaftMessage) {
	drop, delay := t.net.fate(t.from, to)
	switch {
	case drop:
	case delay > 0:
		t.net.pending.Add(1)
		time.AfterFunc(delay, func() {
			defer t.net.pending.Done()
			t.inner.Send(to, m)
		})
	default:
		t.inner.Send(to, m)
	}
}

func (t *faultTransport) OpenSnapshotStream(ctx context.Context, to uint64) (SnapshotSender, error) {
	if drop, _ := t.net.fate(t.from, to); drop {
		return nil, errors.New("partitioned")
	}
	return t.inner.OpenSnapshotStream(ctx, to)
}

// ---- the cluster ----

type testStore struct {
	id    uint64
	fs    *vfs.MemFS
	eng   *Engine
	sm    *kvSM
	st    *Store
	trans *GRPCTransport
	srv   *grpc.Server
}

type testCluster struct {
	t     testing.TB
	cfg   Config
	blind bool
	// diskDir, when set, puts stores on the real disk (benchmarks).
	diskDir string
	net     *faultNet
	mu      sync.Mutex
	addrs   map[uint64]string
	stores  map[uint64]*testStore
	ids     []uint64
}

// testConfig is fast enough for tests and slow enough for the race
// detector on two cores.
func testConfig() Config {
	return Config{
		TickInterval:   20 * time.Millisecond,
		ElectionTicks:  10,
		HeartbeatTicks: 2,
		HibernateTicks: 10,
		DownPeerTicks:  30,
		Workers:        2,
	}
}

func newTestCluster(t testing.TB, n int, cfg Config) *testCluster {
	return newCluster(t, n, cfg, "")
}

// newDiskCluster runs the stores on the real file system under dir, with
// real fsyncs.
func newDiskCluster(t testing.TB, n int, cfg Config, dir string) *testCluster {
	return newCluster(t, n, cfg, dir, true)
}

func newCluster(t testing.TB, n int, cfg Config, diskDir string, blind ...bool) *testCluster {
	c := &testCluster{t: t, cfg: cfg, diskDir: diskDir, net: newFaultNet(), addrs: make(map[uint64]string), stores: make(map[uint64]*testStore)}
	c.blind = len(blind) > 0 && blind[0]
	for i := 1; i <= n; i++ {
		c.ids = append(c.ids, uint64(i))
		if diskDir != "" {
			c.startStore(uint64(i), nil)
		} else {
			c.startStore(uint64(i), vfs.NewCrashableMem())
		}
	}
	t.Cleanup(c.close)
	return c
}

func (c *testCluster) resolve(id uint64) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.addrs[id]
	if !ok {
		return "", fmt.Errorf("store %d unknown", id)
	}
	return a, nil
}

func (c *testCluster) startStore(id uint64, fs *vfs.MemFS) *testStore {
	c.t.Helper()
	dir := "/store"
	var vfsFS vfs.FS = fs
	if fs == nil {
		dir = fmt.Sprintf("%s/store%d", c.diskDir, id)
		vfsFS = vfs.Default
	}
	eng, err := OpenEngine(dir, vfsFS)
	if err != nil {
		c.t.Fatalf("store %d: open engine: %v", id, err)
	}
	ts := &testStore{id: id, fs: fs, eng: eng, sm: newKVSM()}
	ts.sm.blind = c.blind
	ts.trans = NewGRPCTransport(GRPCTransportOptions{
		Resolver: ResolverFunc(c.resolve),
		OnUnreachable: func(to uint64, msgs []*rspb.RaftMessage) {
			if ts.st != nil {
				ts.st.ReportUnreachable(to, msgs)
			}
		},
	})
	cfg := c.cfg
	cfg.StoreID = id
	st, err := NewStore(Options{Config: cfg, Engine: eng, StateMachine: ts.sm,
		Transport: &faultTransport{from: id, net: c.net, inner: ts.trans}})
	if err != nil {
		c.t.Fatalf("store %d: %v", id, err)
	}
	ts.st = st
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	ts.srv = grpc.NewServer(append(ServerOptions(), grpc.InitialWindowSize(16<<20), grpc.InitialConnWindowSize(32<<20))...)
	rspb.RegisterRaftTransportServer(ts.srv, NewRaftServer(st))
	go func() { _ = ts.srv.Serve(lis) }()
	c.mu.Lock()
	c.addrs[id] = lis.Addr().String()
	c.stores[id] = ts
	c.mu.Unlock()
	st.Start()
	return ts
}

// stopStore shuts a store down; its file system keeps everything written.
func (c *testCluster) stopStore(id uint64) *vfs.MemFS {
	c.mu.Lock()
	ts := c.stores[id]
	delete(c.stores, id)
	c.mu.Unlock()
	if ts == nil {
		return nil
	}
	ts.srv.Stop()
	ts.st.Stop()
	ts.trans.Close()
	if err := ts.eng.Close(); err != nil {
		c.t.Fatalf("store %d: close engine: %v", id, err)
	}
	return ts.fs
}

// crashStore stops a store and returns a file system holding only what it
// had synced: what a power loss would leave.
func (c *testCluster) crashStore(id uint64) *vfs.MemFS {
	c.mu.Lock()
	ts := c.stores[id]
	delete(c.stores, id)
	c.mu.Unlock()
	ts.srv.Stop()
	ts.st.Stop()
	crashed := ts.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	ts.trans.Close()
	_ = ts.eng.Close()
	return crashed
}

func (c *testCluster) restartStore(id uint64, fs *vfs.MemFS) *testStore {
	return c.startStore(id, fs)
}

func (c *testCluster) close() {
	c.mu.Lock()
	ids := make([]uint64, 0, len(c.stores))
	for id := range c.stores {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.stopStore(id)
	}
	c.net.pending.Wait()
}

func (c *testCluster) store(id uint64) *testStore {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.stores[id]
	if ts == nil {
		c.t.Fatalf("store %d is not running", id)
	}
	return ts
}

// bootstrap creates region id over [start, end) with one voter on each of
// the given stores (peer IDs id*100+store).
func (c *testCluster) bootstrap(id uint64, start, end string, storeIDs ...uint64) *metapb.Region {
	c.t.Helper()
	desc := &metapb.Region{Id: id, StartKey: []byte(start), EndKey: []byte(end),
		RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1}}
	for _, s := range storeIDs {
		desc.Peers = append(desc.Peers, &metapb.Peer{Id: id*100 + s, StoreId: s})
	}
	for _, s := range storeIDs {
		if err := c.store(s).st.BootstrapRegion(desc); err != nil {
			c.t.Fatalf("bootstrap region %d on store %d: %v", id, s, err)
		}
	}
	return desc
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leader returns the store leading regionID, waiting for one to exist and be
// known by a running store.
func (c *testCluster) leader(regionID uint64) *testStore {
	c.t.Helper()
	var l *testStore
	waitFor(c.t, fmt.Sprintf("a leader of region %d", regionID), 20*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		// An isolated leader that hibernated still believes it leads (it
		// does not tick, so it never checks its quorum): the leader of the
		// highest term is the one that can commit.
		var term uint64
		l = nil
		for _, ts := range c.stores {
			if st := ts.st.RegionStatus(regionID); st != nil && st.IsLeader() && st.Term > term {
				l, term = ts, st.Term
			}
		}
		return l != nil
	})
	return l
}

// put writes key=value through regionID's leader, retrying region errors
// until it is acknowledged.
func (c *testCluster) put(regionID uint64, key, value string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lastErr error
	for {
		l := c.leader(regionID)
		st := l.st.RegionStatus(regionID)
		res, err := l.st.Propose(ctx, regionID, st.Region.GetRegionEpoch(), encodePut([]byte(key), []byte(value)))
		if err == nil {
			if e, ok := res.(error); ok {
				c.t.Fatalf("put %q: %v", key, e)
			}
			return
		}
		var re *region.Error
		if !errors.As(err, &re) {
			c.t.Fatalf("put %q: %v (last region error: %v)\n%s", key, err, lastErr, c.describe(regionID))
		}
		if ctx.Err() != nil {
			c.t.Fatalf("put %q: gave up: %v\n%s", key, err, c.describe(regionID))
		}
		lastErr = err
		time.Sleep(10 * time.Millisecond)
	}
}

// readIndex runs a linearizable read barrier on ts, retrying while the
// region is between leaders (an election a slow race build can cause).
// Any other error fails the test.
func (c *testCluster) readIndex(ts *testStore, regionID uint64) *ReadGuard {
	c.t.Helper()
	var guard *ReadGuard
	waitFor(c.t, fmt.Sprintf("a read barrier of region %d on store %d", regionID, ts.id), 20*time.Second, func() bool {
		var err error
		guard, err = ts.st.ReadIndex(context.Background(), regionID, ts.st.RegionStatus(regionID).Region.GetRegionEpoch())
		if err != nil && !errors.Is(err, region.ErrNotLeader) {
			c.t.Fatalf("read on store %d: %v", ts.id, err)
		}
		return err == nil
	})
	return guard
}

// describe prints every running store's view of regionID, for failures.
func (c *testCluster) describe(regionID uint64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, id := range c.ids {
		ts := c.stores[id]
		if ts == nil {
			fmt.Fprintf(&b, "store %d: down\n", id)
			continue
		}
		st := ts.st.RegionStatus(regionID)
		if st == nil {
			fmt.Fprintf(&b, "store %d: no replica\n", id)
			continue
		}
		fmt.Fprintf(&b, "store %d: peer %d %v term %d commit %d applied %d last %d leader %v hibernating %v merge %v region %v\n",
			id, st.PeerID, st.RaftState, st.Term, st.Commit, st.Applied, st.LastIndex, st.Leader, st.Hibernating, st.Merge != nil, st.Region)
	}
	return b.String()
}

// localGet reads key from a store's pebble directly.
func (ts *testStore) localGet(key string) (string, bool) {
	v, closer, err := ts.eng.DB.Get(kvDataKey([]byte(key)))
	if errors.Is(err, pebble.ErrNotFound) {
		return "", false
	}
	if err != nil {
		panic(err)
	}
	defer closer.Close()
	return string(v), true
}

// waitReplicated waits until every listed store holds key=value.
func (c *testCluster) waitReplicated(key, value string, storeIDs ...uint64) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("%q=%q on stores %v", key, value, storeIDs), 20*time.Second, func() bool {
		for _, id := range storeIDs {
			if v, ok := c.store(id).localGet(key); !ok || v != value {
				return false
			}
		}
		return true
	})
}

// dataOf returns every key=value a store holds in [start, end).
func (ts *testStore) dataOf(start, end string) map[string]string {
	out := map[string]string{}
	sp := (&kvSM{}).DataSpans([]byte(start), []byte(end))[0]
	it, err := ts.eng.DB.NewIter(&pebble.IterOptions{LowerBound: sp.Start, UpperBound: sp.End})
	if err != nil {
		panic(err)
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		out[string(bytes.TrimPrefix(it.Key(), []byte{'z'}))] = string(it.Value())
	}
	return out
}
