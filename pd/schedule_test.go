package pd

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/basaltdb/basalt/pd/sim"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

func fastSchedule() ScheduleConfig {
	return ScheduleConfig{
		MaxReplicas:          3,
		PatrolRegionInterval: Duration{20 * time.Millisecond},
		StoreDisconnectTime:  Duration{time.Second},
		MaxStoreDownTime:     Duration{30 * time.Minute},
		LeaderScheduleLimit:  8,
		StoreLimit:           16,
		Schedulers:           []string{"balance-leader", "balance-region"},
	}
}

func newSim(t *testing.T, p *testPD) *sim.Cluster {
	t.Helper()
	p.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := sim.New(ctx, p.endpoints(), sim.Options{HeartbeatInterval: 100 * time.Millisecond, SnapshotDelay: 50 * time.Millisecond,
		RegionSize: 1 << 20, RegionKeys: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// startSim starts a one-member PD with sc and a simulator bootstrapped with
// regions regions on one store (labelled firstLabels when given), running.
func startSim(t *testing.T, sc ScheduleConfig, regions int, firstLabels map[string]string) (*testPD, *sim.Cluster, uint64) {
	t.Helper()
	p := newTestPDWithSchedule(t, 1, sc)
	c := newSim(t, p)
	ctx := context.Background()
	first, err := c.Bootstrap(ctx, regions)
	if err != nil {
		t.Fatal(err)
	}
	if firstLabels != nil {
		if err := c.SetStoreLabels(ctx, first, firstLabels); err != nil {
			t.Fatal(err)
		}
	}
	c.Start()
	return p, c, first
}

// addStores adds n unlabelled stores.
func addStores(t *testing.T, c *sim.Cluster, n int) {
	t.Helper()
	for range n {
		if _, err := c.AddStore(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func describeCounts(cs []sim.StoreCount) string {
	s := ""
	for _, c := range cs {
		s += fmt.Sprintf(" s%d:%d/%d", c.StoreID, c.Regions, c.Leaders)
		if c.Down {
			s += "(down)"
		}
	}
	return s
}

// every voter set complete: max-replicas voters, no learners, on live stores.
func fullyReplicated(c *sim.Cluster, want int, down map[uint64]bool) bool {
	for _, r := range c.Regions() {
		voters := 0
		for _, p := range r.GetPeers() {
			if p.GetRole() != metapb.PeerRole_Voter || down[p.GetStoreId()] {
				return false
			}
			voters++
		}
		if voters != want {
			return false
		}
	}
	return true
}

func within(cs []sim.StoreCount, regionsLo, regionsHi, leadersLo, leadersHi int) bool {
	for _, c := range cs {
		if c.Down {
			continue
		}
		if c.Regions < regionsLo || c.Regions > regionsHi || c.Leaders < leadersLo || c.Leaders > leadersHi {
			return false
		}
	}
	return true
}

// Regions created on one store spread to three replicas each and an even
// number of leaders once two more stores join; two more stores later get
// their share of replicas.
func TestSchedulingSpreadsRegions(t *testing.T) {
	_, c, _ := startSim(t, fastSchedule(), 60, nil)
	addStores(t, c, 2)
	waitFor(t, "three replicas per region and 20 leaders per store", 60*time.Second, func() bool {
		return fullyReplicated(c, 3, nil) && within(c.Counts(), 60, 60, 19, 21)
	})
	addStores(t, c, 2)
	// 180 replicas over 5 stores: 36 each; 60 leaders: 12 each.
	var last []sim.StoreCount
	waitFor(t, "36±2 replicas and 12±1 leaders per store", 60*time.Second, func() bool {
		last = c.Counts()
		return len(last) == 5 && fullyReplicated(c, 3, nil) && within(last, 34, 38, 11, 13)
	})
	t.Logf("balanced:%s", describeCounts(last))
	checkNoChurn(t, c)
}

// checkNoChurn fails when a region went through far more membership
// changes than moving it around needs: operators fighting each other.
func checkNoChurn(t *testing.T, c *sim.Cluster) {
	t.Helper()
	worst := uint64(0)
	for _, r := range c.Regions() {
		worst = max(worst, r.GetRegionEpoch().GetConfVer())
	}
	if worst > 30 {
		t.Fatalf("a region went through %d membership changes", worst)
	}
	t.Logf("most membership changes of one region: %d", worst)
}

// A store that stays down longer than max-store-down-time has its replicas
// re-created on the other stores.
func TestDownStoreReplicasRecreated(t *testing.T) {
	sc := fastSchedule()
	sc.MaxStoreDownTime = Duration{2 * time.Second}
	p, c, _ := startSim(t, sc, 30, nil)
	addStores(t, c, 3)
	waitFor(t, "three replicas per region", 60*time.Second, func() bool { return fullyReplicated(c, 3, nil) })
	var victim uint64
	for _, sc := range c.Counts() {
		if sc.Regions > 0 {
			victim = sc.StoreID
			break
		}
	}
	c.KillStore(victim)
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	for !fullyReplicated(c, 3, map[uint64]bool{victim: true}) {
		if time.Now().After(deadline) {
			s := p.server(p.leader())
			running, recent := s.cluster.ops.list()
			for _, op := range running {
				t.Logf("running: %s (step %d)", op.String(), op.Current)
			}
			for _, op := range recent[max(0, len(recent)-10):] {
				t.Logf("recent: %s: %s", op.String(), op.Status)
			}
			for _, r := range c.Regions() {
				if region.FindPeer(r, victim) != nil || len(r.GetPeers()) != 3 {
					t.Logf("region %v", r)
				}
			}
			t.Fatalf("timed out waiting for store %d's replicas to be re-created:%s", victim, describeCounts(c.Counts()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The store's last heartbeat was up to one interval before the kill.
	if d := time.Since(start); d < 2*time.Second-200*time.Millisecond {
		t.Fatalf("replicas replaced after %v, before max-store-down-time", d)
	}
	t.Logf("replaced in %v:%s", time.Since(start).Round(time.Millisecond), describeCounts(c.Counts()))
	checkNoChurn(t, c)
}

// hot-region moves the leaders of regions hot from reads (bytes and keys
// read count as much as written) off the store serving them all, until
// no move would leave the source cooler than the target.
func TestHotRegionSpreadsReadHotLeaders(t *testing.T) {
	sc := fastSchedule()
	sc.Schedulers = []string{"balance-region", "hot-region"} // no balance-leader: leaders stay put unless hot
	_, c, _ := startSim(t, sc, 6, nil)
	addStores(t, c, 2)
	waitFor(t, "three replicas per region", 60*time.Second, func() bool { return fullyReplicated(c, 3, nil) })
	regions := c.Regions()
	first := c.LeaderStore(regions[0].GetId())
	for _, r := range regions {
		if c.LeaderStore(r.GetId()) != first {
			t.Fatalf("leaders moved before any region was hot:%s", describeCounts(c.Counts()))
		}
	}
	// Four regions read-hot: 4 MiB and 4,000 keys a second each (heat 8
	// against the defaults of 1 MiB/s and 1,000 keys/s), nothing written.
	hot := regions[:4]
	for _, r := range hot {
		c.SetRead(r.GetId(), 4<<20, 4000)
	}
	spread := func() map[uint64]int {
		n := map[uint64]int{}
		for _, r := range hot {
			n[c.LeaderStore(r.GetId())]++
		}
		return n
	}
	waitFor(t, "the hot leaders on all three stores", 30*time.Second, func() bool { return len(spread()) == 3 })
	t.Logf("hot leaders per store: %v", spread())
}

// evict-leader drains a store of its leaders, and balance-leader, which
// would otherwise see it as the store with the fewest, leaves it drained.
func TestEvictLeaderDrainsAStore(t *testing.T) {
	p, c, _ := startSim(t, fastSchedule(), 30, nil)
	addStores(t, c, 2)
	waitFor(t, "three replicas per region and 10 leaders per store", 60*time.Second, func() bool {
		return fullyReplicated(c, 3, nil) && within(c.Counts(), 30, 30, 9, 11)
	})
	victim := c.Counts()[1].StoreID
	code, body := httpDo(t, "POST", "http://"+p.server(p.leader()).ClientAddr()+"/pd/api/v1/schedulers",
		fmt.Sprintf(`{"name": "evict-leader-%d"}`, victim))
	if code != 200 {
		t.Fatalf("add evict-leader-%d: %d %s", victim, code, body)
	}
	leadersOn := func(id uint64) int {
		for _, sc := range c.Counts() {
			if sc.StoreID == id {
				return sc.Leaders
			}
		}
		return -1
	}
	srv := p.server(p.leader())
	// Drained, and no operator left that balance-leader made before the
	// scheduler was added (one could still move a leader back once).
	waitFor(t, fmt.Sprintf("store %d drained of leaders", victim), 30*time.Second, func() bool {
		running, _ := srv.cluster.ops.list()
		return leadersOn(victim) == 0 && len(running) == 0
	})
	// Many scheduling rounds (20 ms patrols, 100 ms heartbeats) later it
	// is still drained: balance-leader does not move leaders back.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n := leadersOn(victim); n != 0 {
			t.Fatalf("store %d leads %d regions again while being drained:%s", victim, n, describeCounts(c.Counts()))
		}
	}
	t.Logf("drained:%s", describeCounts(c.Counts()))
}

// With location-labels [zone], every region's three replicas end up in
// three zones: replicas added while only one zone had room move once the
// other zones' stores join, and balancing never puts two in one zone.
func TestReplicasSpreadOverZones(t *testing.T) {
	sc := fastSchedule()
	sc.LocationLabels = []string{"zone"}
	p, c, first := startSim(t, sc, 12, map[string]string{"zone": "a"})
	ctx := context.Background()
	zoneOf := map[uint64]string{first: "a"}
	// Zone a fills first: the regions get their second and third replicas
	// there, the only place there is.
	for _, z := range []string{"a", "a", "b", "b", "c"} {
		id, err := c.AddStoreWithLabels(ctx, map[string]string{"zone": z, "host": fmt.Sprint("h", len(zoneOf))})
		if err != nil {
			t.Fatal(err)
		}
		zoneOf[id] = z
		if len(zoneOf) == 3 {
			waitFor(t, "three replicas per region in zone a", 30*time.Second, func() bool { return fullyReplicated(c, 3, nil) })
		}
	}
	spread := func() bool {
		if !fullyReplicated(c, 3, nil) {
			return false
		}
		for _, r := range c.Regions() {
			zones := map[string]bool{}
			for _, p := range r.GetPeers() {
				zones[zoneOf[p.GetStoreId()]] = true
			}
			if len(zones) != 3 {
				return false
			}
		}
		return true
	}
	waitFor(t, "every region in zones a, b and c", 60*time.Second, spread)
	// A sixth store, in zone c: balancing moves replicas onto it, but
	// never at the cost of a region's spread over the three zones.
	id, err := c.AddStoreWithLabels(ctx, map[string]string{"zone": "c", "host": "h6"})
	if err != nil {
		t.Fatal(err)
	}
	zoneOf[id] = "c"
	defer func() {
		if t.Failed() {
			t.Logf("counts:%s", describeCounts(c.Counts()))
			running, _ := p.server(p.leader()).cluster.ops.list()
			t.Logf("operators: %v", running)
		}
	}()
	waitFor(t, "replicas on the sixth store", 30*time.Second, func() bool {
		for _, sc := range c.Counts() {
			if sc.StoreID == id {
				return sc.Regions > 0
			}
		}
		return false
	})
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, r := range c.Regions() {
			zones := map[string]int{}
			for _, p := range r.GetPeers() {
				if p.GetRole() == metapb.PeerRole_Voter {
					zones[zoneOf[p.GetStoreId()]]++
				}
			}
			// A move within a zone has two voters there for a moment (the
			// new one is promoted before the old one leaves); a region
			// must never be left in fewer than three zones.
			if len(zones) < 3 {
				t.Fatalf("region %d's voters are in %d zones while balancing: %v", r.GetId(), len(zones), r.GetPeers())
			}
		}
	}
	t.Logf("spread:%s", describeCounts(c.Counts()))
	checkNoChurn(t, c)
}

// The split checker asks the leader of a region larger than
// region-max-size to split it; PD learns the halves and splits them again
// while they are still too large: a 4 MiB region under a 1.5 MiB limit
// becomes four of 1 MiB, which tile the key space, and no more.
func TestSplitCheckerSplitsOversizedRegions(t *testing.T) {
	sc := fastSchedule()
	sc.MaxReplicas = 1
	sc.Schedulers = []string{}
	sc.RegionMaxSize = 3 << 19 // 1.5 MiB
	p := newTestPDWithSchedule(t, 1, sc)
	c := newSim(t, p)
	ctx := context.Background()
	if _, err := c.Bootstrap(ctx, 1); err != nil {
		t.Fatal(err)
	}
	c.SetSize(c.Regions()[0].GetId(), 4<<20)
	c.Start()
	srv := p.server(p.leader())
	waitFor(t, "PD to know four regions tiling the key space", 30*time.Second, func() bool {
		rs := srv.cluster.scanRegions(nil, nil, 0)
		if len(rs) != 4 || len(c.Regions()) != 4 {
			return false
		}
		var prev []byte
		for i, r := range rs {
			if i == 0 && len(r.GetRegion().GetStartKey()) != 0 || i > 0 && string(r.GetRegion().GetStartKey()) != string(prev) {
				return false
			}
			prev = r.GetRegion().GetEndKey()
		}
		return len(prev) == 0
	})
	// And stay four: 1 MiB pieces are under the limit.
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n := len(c.Regions()); n != 4 {
			t.Fatalf("%d regions: pieces under the limit were split", n)
		}
	}
}

// zonesOf counts each region's voters per zone.
func zonesOf(c *sim.Cluster, zoneOf map[uint64]string) []map[string]int {
	var out []map[string]int
	for _, r := range c.Regions() {
		zones := map[string]int{}
		for _, p := range r.GetPeers() {
			if p.GetRole() == metapb.PeerRole_Voter {
				zones[zoneOf[p.GetStoreId()]]++
			}
		}
		out = append(out, zones)
	}
	return out
}

// addZonedStores adds stores in the zones given, in order.
func addZonedStores(t *testing.T, c *sim.Cluster, zoneOf map[uint64]string, zones ...string) {
	t.Helper()
	for _, z := range zones {
		id, err := c.AddStoreWithLabels(context.Background(), map[string]string{"zone": z})
		if err != nil {
			t.Fatal(err)
		}
		zoneOf[id] = z
	}
}

// With five replicas over zones of six, two and two stores, no region
// keeps three voters in one zone (losing that zone would lose a quorum):
// isolation counts how many voters share a zone, not only whether one does.
func TestFiveReplicasNeverPutAMajorityInOneZone(t *testing.T) {
	sc := fastSchedule()
	sc.MaxReplicas = 5
	sc.LocationLabels = []string{"zone"}
	_, c, first := startSim(t, sc, 20, map[string]string{"zone": "a"})
	zoneOf := map[uint64]string{first: "a"}
	addZonedStores(t, c, zoneOf, "a", "a", "a", "a", "a", "b", "b", "c", "c")
	waitFor(t, "five voters per region, at most two in a zone", 60*time.Second, func() bool {
		if !fullyReplicated(c, 5, nil) {
			return false
		}
		for _, zs := range zonesOf(c, zoneOf) {
			if zs["a"] > 2 || zs["b"] > 2 || zs["c"] > 2 {
				return false
			}
		}
		return true
	})
}

// A store holding a replica of every region that no other store may take
// (the only one in its zone) does not stop balancing: a store added to a
// crowded zone still gets replicas from its zone's others.
func TestBalanceGoesOnPastAStuckStore(t *testing.T) {
	sc := fastSchedule()
	sc.LocationLabels = []string{"zone"}
	_, c, first := startSim(t, sc, 30, map[string]string{"zone": "a"})
	zoneOf := map[uint64]string{first: "a"}
	addZonedStores(t, c, zoneOf, "a", "a", "b", "b", "b", "c")
	waitFor(t, "every region in zones a, b and c", 60*time.Second, func() bool {
		if !fullyReplicated(c, 3, nil) {
			return false
		}
		for _, zs := range zonesOf(c, zoneOf) {
			if len(zs) != 3 {
				return false
			}
		}
		return true
	})
	addZonedStores(t, c, zoneOf, "a")
	var added uint64
	for id, z := range zoneOf {
		if z == "a" && id > added {
			added = id
		}
	}
	waitFor(t, "replicas on the fourth zone-a store", 30*time.Second, func() bool {
		for _, sc := range c.Counts() {
			if sc.StoreID == added {
				return sc.Regions > 0
			}
		}
		return false
	})
	t.Logf("counts:%s", describeCounts(c.Counts()))
}
