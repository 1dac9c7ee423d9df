package pd

import (
	"fmt"
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
			m, ok := op.steps[0].(mergeRegion)
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
