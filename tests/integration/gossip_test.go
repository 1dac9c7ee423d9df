package integration

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/tests/procs"
)

// When the store leading a region dies, the other stores learn it through
// gossip and the region elects a new leader without any client request
// (an idle region's followers hibernate and would not notice by
// themselves).
func TestDeadLeaderDetectedByGossip(t *testing.T) {
	// Info logs: a failure prints their tails (gossip, elections).
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3, StoreArgs: []string{"--log-level", "info"}})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	put(t, cl, "k", "v")
	// Asleep first (every replica hibernating, as /debug/regions shows),
	// so only the gossip can wake the followers: a kill of an awake leader
	// is noticed by their election timeout alone.
	waitHibernating(t, c)
	dead := leaderStore(t, c, pd)
	c.Signal(dead, syscall.SIGKILL)
	killed := time.Now()
	deadline := killed.Add(60 * time.Second)
	for {
		if time.Now().After(deadline) {
			c.DumpState(t, 6000)
			t.Fatal("no new leader and no gossip report within 60 s of the leader's death")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := pd.GetRegion(ctx, []byte("k"))
		cancel()
		reported := false
		for _, p := range c.Stores {
			if p != dead && strings.Contains(c.Log(p), "store left the gossip") {
				reported = true
			}
		}
		if err == nil && reported {
			st, err := pd.GetStore(context.Background(), r.GetLeader().GetStoreId())
			if err == nil && st.GetAddress() != dead.Addr {
				t.Logf("new leader on store %d known to PD %v after the kill", st.GetId(), time.Since(killed).Round(time.Millisecond))
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitHibernating waits until every store's every replica hibernates.
func waitHibernating(t *testing.T, c *procs.Cluster) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		asleep := true
		for _, p := range c.Stores {
			regions, err := c.RegionStates(p)
			if err != nil || len(regions) == 0 {
				asleep = false
				break
			}
			for _, r := range regions {
				asleep = asleep && r.Hibernating
			}
		}
		if asleep {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range c.Stores {
				t.Logf("%s regions: %s", p.Name, c.Regions(p))
			}
			t.Fatal("the replicas did not all hibernate within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
