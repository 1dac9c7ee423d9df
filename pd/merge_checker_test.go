package pd

import (
	"fmt"
	"github.com/basaltdb/basalt/region"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
)

// The merge checker never puts one region in two merges: not two regions
// merging into each other (they would roll each other back forever), not
// two sources into one target, not a target that is itself a source; and
// it keeps to merge-schedule-limit, operators made in one pass included.
func TestMergeCheckerPairsEachRegionOnce(t *testing.T) {
	sc := fastSchedule()
	sc.MaxReplicas = 1
	sc.Schedulers = []string{}
	sc.SplitMergeInterval = Duration{time.Millisecond}
	sc.MergeScheduleLimit = 3
	p := newTestPDWithSchedule(t, 1, sc)
	cl := p.client()
	_, first := bootstrapCluster(t, cl)
	leader := first.Peers[0]
	h := newHeartbeater(t, p.server(p.leader()).ClientAddr())

	// Twelve small adjacent regions on one store.
	bounds := []string{""}
	for i := 1; i < 12; i++ {
		bounds = append(bounds, fmt.Sprintf("k%02d", i))
	}
	bounds = append(bounds, "")
	var regions []*metapb.Region
	for i := 0; i+1 < len(bounds); i++ {
		id := first.GetId()
		if i > 0 {
			id = uint64(1000 + i)
		}
		regions = append(regions, &metapb.Region{Id: id, StartKey: []byte(bounds[i]), EndKey: []byte(bounds[i+1]),
			RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 2},
			Peers:       []*metapb.Peer{{Id: id*10 + 1, StoreId: leader.GetStoreId()}}})
	}
	regions[0].Peers = first.Peers
	for _, r := range regions {
		if err := h.stream.Send(&pdpb.RegionHeartbeatRequest{Region: r, Leader: r.Peers[0], ApproximateSize: 1, ApproximateKeys: 1}); err != nil {
			t.Fatal(err)
		}
	}
	srv := p.server(p.leader())
	waitFor(t, "merge operators", 10*time.Second, func() bool {
		running, _ := srv.cluster.ops.list()
		return len(running) > 0
	})
	// Watch the running operators for a while: the invariant must hold
	// at every moment, and the limit too.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		running, _ := srv.cluster.ops.list()
		if len(running) > sc.MergeScheduleLimit {
			t.Fatalf("%d merges running, limit %d", len(running), sc.MergeScheduleLimit)
		}
		in := map[uint64]string{}
		for _, op := range running {
			m, ok := op.steps[len(op.steps)-1].(mergeRegion)
			if !ok {
				t.Fatalf("unexpected operator %v", op.Desc)
			}
			for _, part := range []struct {
				id   uint64
				role string
			}{{op.RegionID, "source"}, {m.target.GetId(), "target"}} {
				if prev, dup := in[part.id]; dup {
					t.Fatalf("region %d is a %s of one merge and a %s of another", part.id, prev, part.role)
				}
				in[part.id] = part.role
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Two small neighbours on different stores: the merge checker first moves
// the source's odd replica onto the target's store (learner, joint swap,
// removal), then merges.
func TestMergeCheckerAlignsReplicas(t *testing.T) {
	sc := fastSchedule()
	sc.Schedulers = []string{}
	sc.SplitMergeInterval = Duration{time.Millisecond}
	p := newTestPDWithSchedule(t, 1, sc)
	cl := p.client()
	st, first := bootstrapCluster(t, cl)
	ctx := t.Context()
	stores := []uint64{st.GetId()}
	for i := 0; i < 3; i++ {
		id, err := cl.AllocID(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.PutStore(ctx, &metapb.Store{Id: id, Address: fmt.Sprintf("127.0.0.1:%d", 2000+i)}); err != nil {
			t.Fatal(err)
		}
		stores = append(stores, id)
	}
	for _, id := range stores {
		if err := cl.StoreHeartbeat(ctx, &pdpb.StoreStats{StoreId: id, Capacity: 1 << 40, Available: 1 << 39}); err != nil {
			t.Fatal(err)
		}
	}
	peers := func(base uint64, ss ...uint64) []*metapb.Peer {
		var out []*metapb.Peer
		for i, s := range ss {
			out = append(out, &metapb.Peer{Id: base + uint64(i), StoreId: s})
		}
		return out
	}
	left := &metapb.Region{Id: first.GetId(), EndKey: []byte("m"), RegionEpoch: &metapb.RegionEpoch{ConfVer: 5, Version: 2},
		Peers: peers(5000, stores[0], stores[1], stores[2])}
	right := &metapb.Region{Id: 900, StartKey: []byte("m"), RegionEpoch: &metapb.RegionEpoch{ConfVer: 5, Version: 2},
		Peers: peers(6000, stores[0], stores[1], stores[3])}
	h := newHeartbeater(t, p.server(p.leader()).ClientAddr())
	for _, r := range []*metapb.Region{left, right} {
		if err := h.stream.Send(&pdpb.RegionHeartbeatRequest{Region: r, Leader: r.Peers[0], ApproximateSize: 1, ApproximateKeys: 1}); err != nil {
			t.Fatal(err)
		}
	}
	srv := p.server(p.leader())
	var op operator
	waitFor(t, "a merge operator", 10*time.Second, func() bool {
		running, _ := srv.cluster.ops.list()
		for _, o := range running {
			if o.Kind == opMerge {
				op = o
				return true
			}
		}
		return false
	})
	// left's replica on stores[2] moves to stores[3] (or right's on
	// stores[3] to stores[2]), then the merge.
	if len(op.steps) != 4 {
		t.Fatalf("operator %v: want learner, joint swap, removal, merge", op.Steps)
	}
	add, ok := op.steps[0].(addLearner)
	if !ok {
		t.Fatalf("first step %v", op.Steps[0])
	}
	src, tgt := left, right
	if op.RegionID == right.GetId() {
		src, tgt = right, left
	}
	if region.FindPeer(tgt, add.peer.GetStoreId()) == nil || region.FindPeer(src, add.peer.GetStoreId()) != nil {
		t.Fatalf("the learner goes to store %d; the target's stores are %v", add.peer.GetStoreId(), tgt.GetPeers())
	}
	if _, ok := op.steps[1].(jointSwap); !ok {
		t.Fatalf("second step %v", op.Steps[1])
	}
	if _, ok := op.steps[2].(removePeer); !ok {
		t.Fatalf("third step %v", op.Steps[2])
	}
	if m, ok := op.steps[3].(mergeRegion); !ok || m.target.GetId() != tgt.GetId() {
		t.Fatalf("last step %v", op.Steps[3])
	}
}

// The merge checker leaves busy regions alone, however small: a store may
// have split them for their load, and merging them back would undo it.
// Once they go quiet, they merge.
func TestMergeCheckerLeavesBusyRegions(t *testing.T) {
	sc := fastSchedule()
	sc.MaxReplicas = 1
	sc.Schedulers = []string{}
	sc.SplitMergeInterval = Duration{time.Millisecond}
	// The test runs the checkers itself.
	sc.PatrolRegionInterval = Duration{time.Hour}
	sc.HotRegionMinKeyRate = 100
	p := newTestPDWithSchedule(t, 1, sc)
	_, first := bootstrapCluster(t, p.client())
	leader := first.Peers[0]
	srv := p.server(p.leader())
	h := newHeartbeater(t, srv.ClientAddr())
	left := &metapb.Region{Id: first.GetId(), EndKey: []byte("m"), RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 2}, Peers: first.Peers}
	right := &metapb.Region{Id: 1001, StartKey: []byte("m"), RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 2},
		Peers: []*metapb.Peer{{Id: 10011, StoreId: leader.GetStoreId()}}}
	beat := func(keysRead uint64) {
		for _, r := range []*metapb.Region{left, right} {
			if err := h.stream.Send(&pdpb.RegionHeartbeatRequest{Region: r, Leader: r.Peers[0], ApproximateSize: 1, ApproximateKeys: 1,
				KeysRead: keysRead, IntervalSeconds: 10}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "both heartbeats", 10*time.Second, func() bool {
			srv.cluster.mu.RLock()
			defer srv.cluster.mu.RUnlock()
			for _, r := range []*metapb.Region{left, right} {
				ri := srv.cluster.regions[r.GetId()]
				if ri == nil || !region.EpochEqual(ri.meta.GetRegionEpoch(), r.GetRegionEpoch()) || ri.keysRead != keysRead {
					return false
				}
			}
			return true
		})
	}
	merges := func() int {
		n := 0
		for _, op := range srv.cluster.patrol(time.Now().Add(time.Second)) {
			if _, ok := op.steps[len(op.steps)-1].(mergeRegion); ok {
				n++
			}
		}
		return n
	}
	beat(10 * sc.HotRegionMinKeyRate * 2) // twice the busy rate over 10 s
	if n := merges(); n != 0 {
		t.Fatalf("%d merges of busy regions", n)
	}
	beat(10 * sc.HotRegionMinKeyRate / 2) // half of it
	if n := merges(); n != 1 {
		t.Fatalf("%d merges of two small quiet neighbours, want 1", n)
	}
}
