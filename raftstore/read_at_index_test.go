package raftstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// A follower handed the leader's read index (ReadAtIndex) waits until it
// applied that index, and then holds every write acknowledged before the
// leader granted the index, with no ReadIndex round of its own.
func TestReadAtIndexWaitsForTheLeadersIndex(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	l := c.leader(1)
	var f *testStore
	for _, id := range c.ids {
		if id != l.id {
			f = c.store(id)
			break
		}
	}
	c.put(1, "k", "v1")
	c.waitReplicated("k", "v1", c.ids...)
	// The follower hears of the next write only 300 ms late.
	c.net.setDelay(l.id, f.id, 300*time.Millisecond)
	before := f.st.Stats().ReadIndexes.Load()
	c.put(1, "k", "v2")
	lg := c.readIndex(l, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g, err := f.st.ReadAtIndex(ctx, 1, f.st.RegionStatus(1).Region.GetRegionEpoch(), lg.Index)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := f.localGet("k"); got != "v2" {
		t.Fatalf("the follower read %q under the leader's index %d, want v2", got, lg.Index)
	}
	if g.Index != lg.Index || g.Check() != nil {
		t.Fatalf("guard index %d (want %d), check %v", g.Index, lg.Index, g.Check())
	}
	if n := f.st.Stats().ReadIndexes.Load() - before; n != 0 {
		t.Fatalf("the follower ran %d ReadIndex rounds of its own", n)
	}
	c.net.heal()
	if _, err := f.st.ReadAtIndex(ctx, 1, &metapb.RegionEpoch{Version: 0, ConfVer: 1}, lg.Index); !errors.Is(err, region.ErrEpochNotMatch) {
		t.Fatalf("a stale epoch: %v, want EpochNotMatch", err)
	}
}
