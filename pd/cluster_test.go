package pd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
)

func firstRegion(id uint64, peers ...*metapb.Peer) *metapb.Region {
	return &metapb.Region{Id: id, RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1}, Peers: peers}
}

func bootstrapCluster(t *testing.T, cl *pdclient.Client) (*metapb.Store, *metapb.Region) {
	t.Helper()
	ctx := context.Background()
	ok, err := cl.IsBootstrapped(ctx)
	if err != nil || ok {
		t.Fatalf("fresh cluster: bootstrapped=%v err=%v", ok, err)
	}
	ids, err := cl.AllocID(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	st := &metapb.Store{Id: ids, Address: "127.0.0.1:1001"}
	r := firstRegion(ids+1, &metapb.Peer{Id: ids + 2, StoreId: st.Id})
	if err := cl.Bootstrap(ctx, st, r); err != nil {
		t.Fatal(err)
	}
	return st, r
}

func TestBootstrapAndStores(t *testing.T) {
	p := newTestPD(t, 1)
	cl := p.client()
	ctx := context.Background()
	if err := cl.PutStore(ctx, &metapb.Store{Id: 9, Address: "x:1"}); !errors.Is(err, pdclient.ErrNotBootstrapped) {
		t.Fatalf("put store before bootstrap: %v", err)
	}
	// A bad bootstrap request is refused and changes nothing.
	if err := cl.Bootstrap(ctx, &metapb.Store{Id: 1, Address: "a:1"}, &metapb.Region{Id: 2, StartKey: []byte("a")}); !errors.Is(err, pdclient.ErrInvalidArgument) {
		t.Fatalf("bad bootstrap: %v", err)
	}
	st, r := bootstrapCluster(t, cl)
	if ok, _ := cl.IsBootstrapped(ctx); !ok {
		t.Fatal("not bootstrapped after Bootstrap")
	}
	if err := cl.Bootstrap(ctx, st, r); !errors.Is(err, pdclient.ErrAlreadyBootstrapped) {
		t.Fatalf("second bootstrap: %v", err)
	}
	got, err := cl.GetRegion(ctx, []byte("anything"))
	if err != nil || got.GetRegion().GetId() != r.GetId() {
		t.Fatalf("first region: %v %v", got, err)
	}
	// Stores: register, refuse a duplicate address, heartbeat.
	if err := cl.PutStore(ctx, &metapb.Store{Id: 50, Address: "127.0.0.1:1002"}); err != nil {
		t.Fatal(err)
	}
	if err := cl.PutStore(ctx, &metapb.Store{Id: 51, Address: "127.0.0.1:1002"}); !errors.Is(err, pdclient.ErrInvalidArgument) {
		t.Fatalf("duplicate address: %v", err)
	}
	if err := cl.StoreHeartbeat(ctx, &pdpb.StoreStats{StoreId: 50, Capacity: 100}); err != nil {
		t.Fatal(err)
	}
	if err := cl.StoreHeartbeat(ctx, &pdpb.StoreStats{StoreId: 77}); !errors.Is(err, pdclient.ErrStoreNotFound) {
		t.Fatalf("heartbeat of an unknown store: %v", err)
	}
	stores, err := cl.GetAllStores(ctx, true)
	if err != nil || len(stores) != 2 {
		t.Fatalf("stores: %v %v", stores, err)
	}
	if cid := cl.ClusterID(); cid == 0 {
		t.Fatal("no cluster ID")
	}
}

// heartbeater sends region heartbeats on one stream and collects answers.
type heartbeater struct {
	stream pdpb.PD_RegionHeartbeatClient
	resps  chan *pdpb.RegionHeartbeatResponse
}

func newHeartbeater(t *testing.T, addr string) *heartbeater {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Close() })
	stream, err := pdpb.NewPDClient(cc).RegionHeartbeat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := &heartbeater{stream: stream, resps: make(chan *pdpb.RegionHeartbeatResponse, 1024)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				close(h.resps)
				return
			}
			h.resps <- r
		}
	}()
	return h
}

func (h *heartbeater) beat(t *testing.T, r *metapb.Region, leader *metapb.Peer) {
	t.Helper()
	if err := h.stream.Send(&pdpb.RegionHeartbeatRequest{Region: r, Leader: leader, ApproximateSize: 1}); err != nil {
		t.Fatal(err)
	}
}

// The region cache only moves forward: a heartbeat with an older epoch is
// refused and leaves the cache as it was; a split's halves replace their
// parent.
func TestRegionCacheOnlyTakesNewerEpochs(t *testing.T) {
	p := newTestPD(t, 1)
	cl := p.client()
	st, r := bootstrapCluster(t, cl)
	leader := r.Peers[0]
	h := newHeartbeater(t, p.server(p.leader()).ClientAddr())
	ctx := context.Background()

	// Split: the parent keeps [m, ∞) at version 2; region 100 takes [, m).
	right := &metapb.Region{Id: r.Id, StartKey: []byte("m"), RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 2}, Peers: r.Peers}
	left := &metapb.Region{Id: 100, EndKey: []byte("m"), RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 2},
		Peers: []*metapb.Peer{{Id: 101, StoreId: st.Id}}}
	h.beat(t, right, leader)
	h.beat(t, left, left.Peers[0])
	waitFor(t, "the split to show", 10*time.Second, func() bool {
		g, err := cl.GetRegion(ctx, []byte("a"))
		return err == nil && g.GetRegion().GetId() == 100
	})
	// A stale heartbeat of the parent (version 1) is refused...
	h.beat(t, r, leader)
	select {
	case resp := <-h.resps:
		if resp.GetHeader().GetError().GetType() != pdpb.ErrorType_STALE_REGION {
			t.Fatalf("stale heartbeat answered %v", resp)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to a stale heartbeat")
	}
	// ... and changes nothing.
	g, err := cl.GetRegion(ctx, []byte("a"))
	if err != nil || g.GetRegion().GetId() != 100 {
		t.Fatalf("stale heartbeat changed the cache: %v %v", g, err)
	}
	g, _ = cl.GetRegion(ctx, []byte("z"))
	if g.GetRegion().GetRegionEpoch().GetVersion() != 2 {
		t.Fatalf("right half: %v", g.GetRegion())
	}
	regions, err := cl.ScanRegions(ctx, nil, nil, 0)
	if err != nil || len(regions) != 2 {
		t.Fatalf("scan: %v %v", regions, err)
	}
	// The persisted descriptors follow (through Raft).
	s := p.server(p.leader())
	waitFor(t, "descriptors persisted", 10*time.Second, func() bool { return len(s.fsm.persistedRegions()) == 2 })
}

func TestAllocIDUniqueAcrossRestarts(t *testing.T) {
	p := newTestPD(t, 1)
	seen := map[uint64]bool{}
	for round := 0; round < 3; round++ {
		cl := p.client()
		for i := 0; i < 50; i++ {
			id, err := cl.AllocID(context.Background(), 7)
			if err != nil {
				t.Fatal(err)
			}
			for j := uint64(0); j < 7; j++ {
				if seen[id+j] {
					t.Fatalf("ID %d allocated twice", id+j)
				}
				seen[id+j] = true
			}
		}
		cl.Close()
		p.stop("pd1")
		p.start("pd1")
	}
}

// A three-member PD keeps serving every call with one member down, whichever
// it is.
func TestThreeMembersSurviveOneKilled(t *testing.T) {
	p := newTestPD(t, 3)
	cl := p.client()
	bootstrapCluster(t, cl)
	ctx := context.Background()
	for _, victimIsLeader := range []bool{true, false} {
		victim := p.leader()
		if !victimIsLeader {
			for _, n := range p.names {
				if n != victim && p.server(n) != nil {
					victim = n
					break
				}
			}
		}
		p.stop(victim)
		if _, err := cl.GetTS(ctx); err != nil {
			t.Fatalf("TSO with %s down: %v", victim, err)
		}
		if _, err := cl.AllocID(ctx, 1); err != nil {
			t.Fatalf("AllocID with %s down: %v", victim, err)
		}
		if err := cl.PutStore(ctx, &metapb.Store{Id: 300, Address: fmt.Sprintf("127.0.0.1:%d", 2000)}); err != nil {
			t.Fatalf("PutStore with %s down: %v", victim, err)
		}
		if g, err := cl.GetRegion(ctx, []byte("k")); err != nil || g.GetRegion() == nil {
			t.Fatalf("GetRegion with %s down: %v %v", victim, g, err)
		}
		p.start(victim)
	}
	// Every member published its client address.
	waitFor(t, "all members published", 10*time.Second, func() bool {
		m, err := cl.Members(ctx)
		if err != nil {
			return false
		}
		for _, x := range m.GetMembers() {
			if x.GetClientAddr() == "" {
				return false
			}
		}
		return len(m.GetMembers()) == 3 && m.GetLeader() != nil
	})
}

// Five members keep serving with two down, the leader among them, stop
// handing out timestamps with three down (no quorum) once the leader's
// lease has run out, and never hand out one below those given before once
// a quorum is back.
func TestFiveMembersSurviveTwoKilled(t *testing.T) {
	p := newTestPD(t, 5)
	cl := p.client()
	bootstrapCluster(t, cl)
	ctx := context.Background()
	last, err := cl.GetTS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var down []string
	leader := p.leader()
	p.stop(leader)
	down = append(down, leader)
	for _, n := range p.names {
		if n != leader {
			p.stop(n)
			down = append(down, n)
			break
		}
	}
	ts, err := cl.GetTS(ctx)
	if err != nil || ts <= last {
		t.Fatalf("TSO with %v down: %d (after %d) %v", down, ts, last, err)
	}
	last = ts
	if _, err := cl.AllocID(ctx, 1); err != nil {
		t.Fatalf("AllocID with %v down: %v", down, err)
	}
	if g, err := cl.GetRegion(ctx, []byte("k")); err != nil || g.GetRegion() == nil {
		t.Fatalf("GetRegion with %v down: %v %v", down, g, err)
	}
	// A third down: no quorum, no timestamps.
	for _, n := range p.names {
		if p.server(n) != nil {
			p.stop(n)
			down = append(down, n)
			break
		}
	}
	// The leader may serve until its lease, renewed by the last quorum it
	// heard, runs out (no other leader can exist meanwhile); then it stops.
	waitFor(t, "timestamps to stop with three of five down", 30*time.Second, func() bool {
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		ts, err := cl.GetTS(short)
		if err == nil {
			last = ts
		}
		return err != nil
	})
	for _, n := range down {
		p.start(n)
	}
	waitFor(t, "a timestamp once every member is back", 30*time.Second, func() bool {
		ts, err := cl.GetTS(ctx)
		if err != nil {
			return false
		}
		if ts <= last {
			t.Fatalf("timestamp %d after a quorum came back, not above %d", ts, last)
		}
		return true
	})
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTPAPI(t *testing.T) {
	p := newTestPD(t, 3)
	cl := p.client()
	st, r := bootstrapCluster(t, cl)
	leader := p.server(p.leader())
	base := "http://" + leader.ClientAddr() + "/pd/api/v1"
	h := newHeartbeater(t, leader.ClientAddr())
	h.beat(t, r, r.Peers[0])

	var code int
	var body string
	waitFor(t, "every member healthy in /health", 10*time.Second, func() bool {
		code, body = httpGet(t, base+"/health")
		return code == 200 && strings.Count(body, `"health": true`) == 3
	})
	code, body = httpGet(t, base+"/members")
	if code != 200 || !strings.Contains(body, `"leader"`) {
		t.Fatalf("members: %d %s", code, body)
	}
	code, body = httpGet(t, base+"/stores")
	if code != 200 || !strings.Contains(body, st.Address) {
		t.Fatalf("stores: %d %s", code, body)
	}
	waitFor(t, "the region in the API", 10*time.Second, func() bool {
		code, body = httpGet(t, base+"/regions/key/abc")
		return code == 200 && strings.Contains(body, fmt.Sprintf(`"id": %d`, r.Id))
	})
	// Schedulers: add, list, remove; an unknown name is refused.
	if code, body = httpDo(t, "POST", base+"/schedulers", `{"name":"evict-leader-7"}`); code != 200 {
		t.Fatalf("add scheduler: %d %s", code, body)
	}
	if code, body = httpDo(t, "POST", base+"/schedulers", `{"name":"teleport"}`); code != 400 {
		t.Fatalf("unknown scheduler: %d %s", code, body)
	}
	if code, body = httpGet(t, base+"/schedulers"); !strings.Contains(body, "evict-leader-7") {
		t.Fatalf("schedulers: %s", body)
	}
	if code, body = httpDo(t, "DELETE", base+"/schedulers/evict-leader-7", ""); code != 200 || strings.Contains(body, "evict-leader-7") {
		t.Fatalf("remove scheduler: %d %s", code, body)
	}
	// Config: change a field, refuse garbage, and the change survives a
	// leader change (it went through Raft).
	if code, body = httpDo(t, "POST", base+"/config", `{"max-store-down-time":"7s"}`); code != 200 {
		t.Fatalf("set config: %d %s", code, body)
	}
	if code, _ = httpDo(t, "POST", base+"/config", `{"max-replicas":0}`); code != 400 {
		t.Fatalf("invalid config accepted: %d", code)
	}
	if code, _ = httpDo(t, "POST", base+"/config", `{"no-such-field":1}`); code != 400 {
		t.Fatalf("unknown field accepted: %d", code)
	}
	// Operators: an admin operator on a region, listed, then canceled.
	if code, body = httpDo(t, "POST", base+"/operators", fmt.Sprintf(`{"name":"remove-peer","region_id":%d,"store_id":999}`, r.Id)); code != 400 {
		t.Fatalf("bad operator: %d %s", code, body)
	}
	if code, body = httpDo(t, "POST", base+"/operators", fmt.Sprintf(`{"name":"split-region","region_id":%d,"keys":["m"]}`, r.Id)); code != 200 {
		t.Fatalf("split operator: %d %s", code, body)
	}
	if _, body = httpGet(t, base+"/operators"); !strings.Contains(body, "admin split") {
		t.Fatalf("operators: %s", body)
	}
	if code, _ = httpDo(t, "DELETE", base+fmt.Sprintf("/operators/%d", r.Id), ""); code != 200 {
		t.Fatalf("cancel operator: %d", code)
	}
	// A follower redirects leader-only calls.
	for _, n := range p.names {
		s := p.server(n)
		if s == leader {
			continue
		}
		code, body = httpGet(t, "http://"+s.ClientAddr()+"/pd/api/v1/config")
		var cfg ScheduleConfig
		if code != 200 || json.Unmarshal([]byte(body), &cfg) != nil || cfg.MaxStoreDownTime.Duration != 7*time.Second {
			t.Fatalf("config through a follower: %d %s", code, body)
		}
		break
	}
	old := p.leader()
	p.stop(old)
	nl := p.server(p.leader())
	waitFor(t, "the new leader to load the config", 10*time.Second, func() bool {
		return nl.cluster.config().MaxStoreDownTime.Duration == 7*time.Second
	})
}

func TestWatchRegions(t *testing.T) {
	p := newTestPD(t, 1)
	cl := p.client()
	_, r := bootstrapCluster(t, cl)
	leader := p.server(p.leader())
	cc, err := grpc.NewClient(leader.ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := pdpb.NewPDClient(cc).WatchRegions(ctx, &pdpb.WatchRegionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := w.Recv(); err != nil || len(first.GetChanged()) != 0 {
		t.Fatalf("first watch message: %v %v", first, err)
	}
	h := newHeartbeater(t, leader.ClientAddr())
	h.beat(t, r, r.Peers[0])
	ev, err := w.Recv()
	if err != nil || len(ev.GetChanged()) != 1 || ev.GetChanged()[0].GetRegion().GetId() != r.Id || ev.GetChanged()[0].GetLeader().GetId() != r.Peers[0].Id {
		t.Fatalf("watch event: %v %v", ev, err)
	}
}

// A leader that steps down but stays reachable ends its routing
// subscriptions with NOT_LEADER, so subscribers move to the new leader
// instead of waiting on a member that publishes nothing.
func TestWatchRegionsEndsWhenTheLeaderStepsDown(t *testing.T) {
	p := newTestPD(t, 3)
	cl := p.client()
	bootstrapCluster(t, cl)
	old := p.leader()
	cc, err := grpc.NewClient(p.server(old).ClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// Long enough for an election on a loaded machine; without the step-down
	// handling Recv below blocks until this deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := pdpb.NewPDClient(cc).WatchRegions(ctx, &pdpb.WatchRegionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := w.Recv(); err != nil || first.GetHeader().GetError() != nil {
		t.Fatalf("first watch message: %v %v", first, err)
	}
	var next string
	for _, n := range p.names {
		if n != old {
			next = n
			break
		}
	}
	// A transfer, not a kill: the old leader stays up and reachable.
	waitFor(t, next+" to take the lead", 20*time.Second, func() bool {
		if p.server(next).IsLeader() {
			return true
		}
		if st := p.server(old).store.RegionStatus(pdRegionID); st != nil && st.IsLeader() {
			_ = p.server(old).store.TransferLeader(ctx, pdRegionID, st.Region.GetRegionEpoch(), p.server(next).MemberID())
		}
		return false
	})
	resp, err := w.Recv()
	if err != nil {
		t.Fatalf("the old leader's subscription ended with %v, want a NOT_LEADER answer", err)
	}
	if e := resp.GetHeader().GetError(); e.GetType() != pdpb.ErrorType_NOT_LEADER {
		t.Fatalf("the old leader's subscription got %v, want NOT_LEADER", resp)
	}
	if p.server(old).IsLeader() {
		t.Fatalf("%s still leads", old)
	}
	// A new subscription at the old leader is refused at once.
	w2, err := pdpb.NewPDClient(cc).WatchRegions(ctx, &pdpb.WatchRegionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := w2.Recv(); err != nil || resp.GetHeader().GetError().GetType() != pdpb.ErrorType_NOT_LEADER {
		t.Fatalf("a subscription at the deposed leader: %v %v, want NOT_LEADER", resp, err)
	}
}
