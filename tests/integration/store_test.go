package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/proto/errorpb"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
	"github.com/basaltdb/basalt/tests/procs"
)

// put writes k=v. The client reports a write that may or may not have
// applied (the connection broke after sending it) as an error; these
// writes are idempotent (same key, same value), so the test sends it again.
func put(t *testing.T, cl *client.Client, k, v string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte(k), Value: []byte(v)})
		if err == nil {
			return
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
}

func get(t *testing.T, cl *client.Client, k string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cl.Range(ctx, &kvpb.RangeRequest{Key: []byte(k)})
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	if len(resp.GetKvs()) == 0 {
		return "", false
	}
	return string(resp.GetKvs()[0].GetValue()), true
}

// fullyReplicated waits until PD shows the first region with three voters
// and a leader.
func waitReplicated(t testing.TB, c *procs.Cluster) *pdclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pd, err := pdclient.New(ctx, strings.Split(c.PDEndpoints(), ","), pdclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pd.Close)
	err = procs.WaitVoters(ctx, pd, []byte("a"), 3)
	if err == nil {
		return pd
	}
	if r, err := http.Get("http://" + c.PDs[0].Addr + "/pd/api/v1/operators"); err == nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		t.Logf("PD's operators: %.4000s", b)
	}
	if r, err := http.Get("http://" + c.PDs[0].Addr + "/pd/api/v1/regions"); err == nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		t.Logf("PD's regions: %.4000s", b)
	}
	for _, p := range append(append([]*procs.Proc{}, c.PDs...), c.Stores...) {
		l := c.Log(p)
		t.Logf("%s log: %s", p.Name, l[max(0, len(l)-4000):])
	}
	t.Fatalf("the first region never had three voters: %v", err)
	return nil
}

func leaderStore(t *testing.T, c *procs.Cluster, pd *pdclient.Client) *procs.Proc {
	t.Helper()
	return leaderStoreOf(t, c, pd, []byte("a"))
}

// removeSchedulers stops PD's schedulers named, for a test whose leaders
// must stay where it put them.
func removeSchedulers(t *testing.T, c *procs.Cluster, names ...string) {
	t.Helper()
	for _, name := range names {
		req, err := http.NewRequest(http.MethodDelete, "http://"+c.PDs[0].Addr+"/pd/api/v1/schedulers/"+name, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("removing scheduler %s: %s", name, resp.Status)
		}
	}
}

// leaderStoreOf returns the store PD names as the leader of key's region.
func leaderStoreOf(t *testing.T, c *procs.Cluster, pd *pdclient.Client, key []byte) *procs.Proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := pd.GetRegion(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := pd.GetStore(ctx, r.GetLeader().GetStoreId())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range c.Stores {
		if p.Addr == st.GetAddress() {
			return p
		}
	}
	t.Fatalf("leader store %s is not ours", st.GetAddress())
	return nil
}

// A store restarted on its data directory brings back everything.
func TestStoreRestart(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	for i := 0; i < 50; i++ {
		put(t, cl, fmt.Sprintf("k%02d", i), "v")
	}
	for _, graceful := range []bool{true, false} {
		l := leaderStore(t, c, pd)
		sig := syscall.SIGKILL
		if graceful {
			sig = syscall.SIGTERM
		}
		c.Signal(l, sig)
		put(t, cl, fmt.Sprintf("while-%v", graceful), "down")
		c.Restart(l)
	}
	for i := 0; i < 50; i++ {
		if v, ok := get(t, cl, fmt.Sprintf("k%02d", i)); !ok || v != "v" {
			t.Fatalf("k%02d after restarts: %q %v", i, v, ok)
		}
	}
	// Every replica, the restarted ones too, still serves: kill each other
	// store in turn and read everything through the remaining two.
	for _, victim := range c.Stores {
		c.Signal(victim, syscall.SIGTERM)
		if v, ok := get(t, cl, "while-false"); !ok || v != "down" {
			t.Fatalf("with %s down: %q %v", victim.Name, v, ok)
		}
		c.Restart(victim)
		waitReplicated(t, c)
	}
}

// A store stopped gracefully hands its leaderships over even when the
// voter it asks first is down: raft abandons that transfer after an
// election timeout and the store asks the region's next voter. Before, it
// asked the first other voter in the descriptor only, waited out its 10 s
// shutdown deadline and exited still leading (this test failed so when
// that voter was the one down, as it is for an even region ID).
func TestGracefulShutdownSkipsADownVoter(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	// The leader must be where the test finds it when the store stops: a
	// balance-leader move just before once left PD naming a store that no
	// longer led, which then had nothing to hand over (CI).
	removeSchedulers(t, c, "balance-leader", "hot-region")
	put(t, cl, "a", "1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var leader *procs.Proc
	var r *pdpb.GetRegionResponse
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if r, err = pd.GetRegion(ctx, []byte("a")); err != nil {
			t.Fatal(err)
		}
		leader = leaderStore(t, c, pd)
		// PD's leader is the one the store itself reports.
		states, err := c.RegionStates(leader)
		if err == nil && slices.ContainsFunc(states, func(s procs.RegionState) bool {
			return s.RegionID == r.GetRegion().GetId() && s.RaftState == "StateLeader"
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s, which PD names, does not lead region %d", leader.Name, r.GetRegion().GetId())
		}
	}
	addrOf := map[uint64]string{}
	for _, p := range r.GetRegion().GetPeers() {
		st, err := pd.GetStore(ctx, p.GetStoreId())
		if err != nil {
			t.Fatal(err)
		}
		addrOf[p.GetStoreId()] = st.GetAddress()
	}
	// The voter the store asks first is down: the other voters in
	// descriptor order, from the region ID modulo their count
	// (transferLeadersAway spreads its first asks so).
	var others []*metapb.Peer
	for _, p := range r.GetRegion().GetPeers() {
		if addrOf[p.GetStoreId()] != leader.Addr {
			others = append(others, p)
		}
	}
	if len(others) != 2 {
		t.Fatalf("region %v: want two other voters", r.GetRegion())
	}
	first := int(r.GetRegion().GetId() % 2)
	procOf := func(storeID uint64) *procs.Proc {
		for _, sp := range c.Stores {
			if sp.Addr == addrOf[storeID] {
				return sp
			}
		}
		t.Fatalf("store %d is not ours", storeID)
		return nil
	}
	down, next, nextID := procOf(others[first].GetStoreId()), procOf(others[1-first].GetStoreId()), others[1-first].GetStoreId()
	c.Signal(down, syscall.SIGSTOP)
	defer c.Signal(down, syscall.SIGCONT)
	c.Signal(leader, syscall.SIGTERM) // waits for the exit
	// The store that took over told PD; it stays the last leader PD heard
	// of, since without the other two it cannot hold or win an election.
	deadline := time.Now().Add(15 * time.Second)
	for {
		g, err := pd.GetRegion(ctx, []byte("a"))
		if err == nil && g.GetLeader().GetStoreId() == nextID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PD names %v as the leader after %s stopped (%s paused), want %s's store %d", g.GetLeader(), leader.Name, down.Name, next.Name, nextID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill -9 of the leading store while clients write: every acknowledged
// write is still there afterwards.
func TestKill9WhileWriting(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				k := fmt.Sprintf("w%d-%d", w, i)
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := cl.Put(pctx, &kvpb.PutRequest{Key: []byte(k), Value: []byte("x")})
				pcancel()
				if err == nil {
					mu.Lock()
					acked[k] = true
					mu.Unlock()
				}
			}
		}(w)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	deadline := time.Now().Add(60 * time.Second)
	for count() < 200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	victim := leaderStore(t, c, pd)
	c.Signal(victim, syscall.SIGKILL)
	before := count()
	for count() < before+200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if count() < before+200 {
		t.Fatalf("writes stopped after the leader was killed (%d acknowledged)", count())
	}
	c.Restart(victim)
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for k := range acked {
		if v, ok := get(t, cl, k); !ok || v != "x" {
			t.Fatalf("acknowledged write %s lost after kill -9 (%d acknowledged)", k, len(acked))
		}
	}
}

// A raw gRPC caller sees typed region errors that say how to fix its
// routing, and nothing changes.
func TestRegionErrorsForRawCallers(t *testing.T) {
	// The request limits set lower than their defaults, through the flags.
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3,
		StoreArgs: []string{"--max-key-size", "1KiB", "--max-request-bytes", "64KiB", "--max-txn-ops", "4"}})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The test talks to one region's leader throughout: no balance-leader,
	// which would move one of the two regions' leaders after the split.
	removeSchedulers(t, c, "balance-leader")
	// A boundary at "m", for a key outside the region below.
	if _, err := cl.SplitRegions(ctx, [][]byte{[]byte("m")}); err != nil {
		t.Fatal(err)
	}
	kvOn := func(p *procs.Proc) kvpb.KVClient {
		cc, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return kvpb.NewKVClient(cc)
	}
	// Stale epoch: the error carries the current region. It is asked of
	// the store PD names the leader until that store is it (the region
	// below the split may still be electing, or PD not yet told).
	var reg *metapb.Region
	var leader *metapb.Peer
	var l *procs.Proc
	var kv kvpb.KVClient
	ctxFor := func(epoch *metapb.RegionEpoch) *kvpb.Context {
		return &kvpb.Context{RegionId: reg.GetId(), RegionEpoch: epoch, Peer: leader}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r, err := pd.GetRegion(ctx, []byte("a"))
		if err != nil {
			t.Fatal(err)
		}
		reg, leader = r.GetRegion(), r.GetLeader()
		l = leaderStore(t, c, pd)
		kv = kvOn(l)
		stale := &metapb.RegionEpoch{ConfVer: reg.GetRegionEpoch().GetConfVer(), Version: reg.GetRegionEpoch().GetVersion() + 5}
		resp, err := kv.Put(ctx, &kvpb.PutRequest{Key: []byte("b"), Value: []byte("1"), Context: ctxFor(stale)})
		enm := resp.GetHeader().GetRegionError().GetEpochNotMatch()
		if err == nil && enm != nil && len(enm.GetCurrentRegions()) > 0 && enm.GetCurrentRegions()[0].GetId() == reg.GetId() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale epoch: %v %v", resp, err)
		}
	}
	// Unknown region.
	resp, err := kv.Put(ctx, &kvpb.PutRequest{Key: []byte("x"), Value: []byte("1"), Context: &kvpb.Context{RegionId: 999}})
	if err != nil || resp.GetHeader().GetRegionError().GetRegionNotFound() == nil {
		t.Fatalf("unknown region: %v %v", resp, err)
	}
	// The wrong store.
	resp, err = kv.Put(ctx, &kvpb.PutRequest{Key: []byte("b"), Value: []byte("1"),
		Context: &kvpb.Context{RegionId: reg.GetId(), RegionEpoch: reg.GetRegionEpoch(), Peer: &metapb.Peer{Id: 1, StoreId: 424242}}})
	if err != nil || resp.GetHeader().GetRegionError().GetStoreNotMatch() == nil {
		t.Fatalf("wrong store: %v %v", resp, err)
	}
	// A follower answers NotLeader with the leader.
	for _, p := range c.Stores {
		if p == l {
			continue
		}
		// PD counts a voter once the membership change applied; the replica
		// on the follower's store may still wait for its snapshot.
		fkv := kvOn(p)
		var fr *kvpb.PutResponse
		for {
			fr, err = fkv.Put(ctx, &kvpb.PutRequest{Key: []byte("b"), Value: []byte("1"), Context: &kvpb.Context{RegionId: reg.GetId(), RegionEpoch: reg.GetRegionEpoch()}})
			re := fr.GetHeader().GetRegionError()
			if err != nil || (re.GetRegionNotFound() == nil && re.GetRegionNotInitialized() == nil) || ctx.Err() != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		var nl *errorpb.NotLeader
		if fr != nil {
			nl = fr.GetHeader().GetRegionError().GetNotLeader()
		}
		if err != nil || nl == nil || nl.GetLeader().GetStoreId() != leader.GetStoreId() {
			t.Fatalf("follower %s: %v %v", p.Name, fr, err)
		}
		break
	}
	// A key outside the region: the error carries the region.
	resp, err = kv.Put(ctx, &kvpb.PutRequest{Key: []byte("x"), Value: []byte("1"), Context: ctxFor(reg.GetRegionEpoch())})
	if knr := resp.GetHeader().GetRegionError().GetKeyNotInRegion(); err != nil || knr == nil || string(knr.GetEndKey()) != "m" {
		t.Fatalf("key outside the region: %v %v", resp, err)
	}
	// Bad input: a clear gRPC error, nothing written.
	_, err = kv.Put(ctx, &kvpb.PutRequest{Key: nil, Context: ctxFor(reg.GetRegionEpoch())})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty key: %v", err)
	}
	_, err = kv.Put(ctx, &kvpb.PutRequest{Key: append([]byte("b"), make([]byte, 1<<10)...), Context: ctxFor(reg.GetRegionEpoch())})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a key over --max-key-size: %v", err)
	}
	_, err = kv.Put(ctx, &kvpb.PutRequest{Key: []byte("b"), Value: make([]byte, 65<<10), Context: ctxFor(reg.GetRegionEpoch())})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a request over --max-request-bytes: %v", err)
	}
	var ops []*kvpb.RequestOp
	for i := range 5 {
		ops = append(ops, &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte{'b', byte('0' + i)}, Value: []byte("v")}}})
	}
	_, err = kv.Txn(ctx, &kvpb.TxnRequest{Success: ops, Context: ctxFor(reg.GetRegionEpoch())})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a transaction over --max-txn-ops: %v", err)
	}
	if _, err = kv.Txn(ctx, &kvpb.TxnRequest{Success: ops[:4], Context: ctxFor(reg.GetRegionEpoch())}); err != nil {
		t.Fatalf("a transaction at --max-txn-ops: %v", err)
	}
	_, err = kv.Range(ctx, &kvpb.RangeRequest{Key: []byte("b"), RangeEnd: []byte("a"), Context: ctxFor(reg.GetRegionEpoch())})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("start > end: %v", err)
	}
	_, err = kv.Range(ctx, &kvpb.RangeRequest{Key: []byte("a"), Revision: 1 << 62, Context: ctxFor(reg.GetRegionEpoch())})
	if status.Code(err) != codes.OutOfRange {
		t.Fatalf("future revision: %v", err)
	}
	rr, err := kv.Range(ctx, &kvpb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c"), Context: ctxFor(reg.GetRegionEpoch())})
	if err != nil || len(rr.GetKvs()) != 4 || string(rr.GetKvs()[0].GetKey()) != "b0" {
		t.Fatalf("want only the accepted transaction's 4 keys, got %v %v", rr, err)
	}
}

var _ = errors.New
