package raftstore

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// waitTickerFires waits until every running store's ticker fired n more times.
func (c *testCluster) waitTickerFires(n uint64) {
	c.t.Helper()
	start := map[uint64]uint64{}
	for _, id := range c.running() {
		start[id] = c.store(id).st.Stats().TickerFires.Load()
	}
	waitFor(c.t, fmt.Sprintf("%d ticker fires", n), 20*time.Second, func() bool {
		for id, s := range start {
			if c.store(id).st.Stats().TickerFires.Load() < s+n {
				return false
			}
		}
		return true
	})
}

func (c *testCluster) running() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []uint64
	for _, id := range c.ids {
		if c.stores[id] != nil {
			ids = append(ids, id)
		}
	}
	return ids
}

func (c *testCluster) allAsleep(regions []uint64, storeIDs []uint64) bool {
	for _, id := range storeIDs {
		for _, r := range regions {
			st := c.store(id).st.RegionStatus(r)
			if st == nil || !st.Hibernating {
				return false
			}
		}
	}
	return true
}

func totalTicks(c *testCluster, storeIDs []uint64) uint64 {
	var n uint64
	for _, id := range storeIDs {
		n += c.store(id).st.Stats().Ticks.Load()
	}
	return n
}

func TestHibernateAndWake(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	var regions []uint64
	for i := uint64(1); i <= 20; i++ {
		c.bootstrap(i, fmt.Sprintf("r%02d", i), fmt.Sprintf("r%02d", i+1), 1, 2, 3)
		_ = c.store(1 + i%3).st.Campaign(i)
		regions = append(regions, i)
	}
	for _, r := range regions {
		c.put(r, fmt.Sprintf("r%02d-k", r), "v")
	}
	waitFor(t, "every replica to hibernate", 20*time.Second, func() bool { return c.allAsleep(regions, c.ids) })

	// Asleep means no ticks at all.
	before := totalTicks(c, c.ids)
	c.waitTickerFires(20)
	if after := totalTicks(c, c.ids); after != before {
		t.Fatalf("hibernating regions ticked %d times", after-before)
	}

	// A write wakes its region (and only its region) and succeeds.
	c.put(5, "r05-z", "w")
	c.waitReplicated("r05-z", "w", c.ids...)
	for _, r := range regions {
		if r == 5 {
			continue
		}
		for _, id := range c.ids {
			if !c.store(id).st.RegionStatus(r).Hibernating {
				t.Fatalf("region %d on store %d woke up for a write to region 5", r, id)
			}
		}
	}
	// A read wakes it too and sees the write.
	l := c.leader(7)
	if _, err := l.st.ReadIndex(context.Background(), 7, l.st.RegionStatus(7).Region.GetRegionEpoch()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "regions 5 and 7 to hibernate again", 20*time.Second, func() bool { return c.allAsleep([]uint64{5, 7}, c.ids) })
}

// A follower that is down does not keep its regions awake.
func TestHibernateWithDownFollower(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	c.put(1, "k", "v")
	c.waitReplicated("k", "v", 1, 2, 3)
	l := c.leader(1)
	var down uint64
	var live []uint64
	for _, id := range c.ids {
		if id != l.id && down == 0 {
			down = id
		} else {
			live = append(live, id)
		}
	}
	fs := c.stopStore(down)
	c.put(1, "k2", "v2")
	waitFor(t, "the live replicas to hibernate with a follower down", 20*time.Second, func() bool {
		return c.allAsleep([]uint64{1}, live)
	})
	// When the follower returns it catches up (it campaigns, which wakes
	// the leader) and everyone goes back to sleep.
	c.restartStore(down, fs)
	c.waitReplicated("k2", "v2", c.ids...)
	waitFor(t, "all replicas to hibernate again", 20*time.Second, func() bool { return c.allAsleep([]uint64{1}, c.ids) })
}

// When the leader's store dies while the region sleeps, the followers do
// not notice by themselves; ReportStoreUnreachable wakes them and they
// elect a new leader.
func TestDeadLeaderOfHibernatingRegion(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	c.put(1, "k", "v")
	waitFor(t, "hibernation", 20*time.Second, func() bool { return c.allAsleep([]uint64{1}, c.ids) })
	l := c.leader(1)
	c.stopStore(l.id)
	for _, id := range c.running() {
		c.store(id).st.ReportStoreUnreachable(l.id)
	}
	nl := c.leader(1)
	if nl.id == l.id {
		t.Fatal("the dead store still leads")
	}
	c.put(1, "k2", "v2")
}

// A merge source does not hibernate while its merge is pending (its target
// does): a follower that missed the PrepareMerge must still hear from the
// leader, or the merge waits for it forever.
func TestMergeSourceStaysAwake(t *testing.T) {
	c, _ := newSplitPair(t, testConfig())
	c.prepareMerge(1, 2)
	waitFor(t, "the target to hibernate", 20*time.Second, func() bool { return c.allAsleep([]uint64{2}, c.ids) })
	// The target slept after HibernateTicks; the source, awake as long,
	// must not have.
	before := totalTicks(c, c.ids)
	c.waitTickerFires(uint64(2 * c.cfg.HibernateTicks))
	for _, id := range c.ids {
		if st := c.store(id).st.RegionStatus(1); st.Hibernating {
			t.Fatalf("merge source asleep on store %d", id)
		}
	}
	if after := totalTicks(c, c.ids); after == before {
		t.Fatal("the merge source stopped ticking")
	}
}
