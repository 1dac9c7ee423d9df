package raftstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// prepareMerge freezes source for a merge into target through source's
// leader, and waits until every replica of the source applied it.
func (c *testCluster) prepareMerge(sourceID, targetID uint64) (*testStore, *PreparedMerge) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		l := c.leader(sourceID)
		src := l.st.RegionStatus(sourceID).Region
		tgt := c.leader(targetID).st.RegionStatus(targetID).Region
		pm, err := l.st.PrepareMerge(ctx, sourceID, src.GetRegionEpoch(), tgt)
		if err == nil {
			waitFor(c.t, "every source replica to apply PrepareMerge", 20*time.Second, func() bool {
				for _, id := range c.ids {
					st := c.store(id).st.RegionStatus(sourceID)
					if st == nil || st.Applied < pm.Commit || st.Merge == nil {
						return false
					}
				}
				return true
			})
			return l, pm
		}
		// A replica of the new source may not have caught up yet.
		if !errors.Is(err, region.ErrNotLeader) && !errors.Is(err, ErrMergeReplicaBehind) || ctx.Err() != nil {
			c.t.Fatalf("prepare merge: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// commitMerge commits a prepared merge through the target's leader, after
// moving the target's leadership to the store given.
func (c *testCluster) commitMerge(on *testStore, pm *PreparedMerge) (*metapb.Region, error) {
	c.t.Helper()
	tid := pm.Target.GetId()
	waitFor(c.t, "the target's leadership to come to the merging store", 20*time.Second, func() bool {
		if st := on.st.RegionStatus(tid); st != nil && st.IsLeader() {
			return true
		}
		_ = on.st.RequestLeadership(tid)
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return on.st.CommitMerge(ctx, tid, pm.Target.GetRegionEpoch(), pm.Source, pm.Commit)
}

// newSplitPair starts three stores holding region 1 [, m) and region 2
// [m, ), split from one region, on all three.
func newSplitPair(t *testing.T, cfg Config) (*testCluster, []*metapb.Region) {
	c := newTestCluster(t, 3, cfg)
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	regions := c.split(1, splitReq("m", 2))
	c.everyStoreAgrees(regions, 1, 2, 3)
	return c, regions
}

func TestMerge(t *testing.T) {
	c, _ := newSplitPair(t, testConfig())
	c.put(1, "a", "1")
	c.put(2, "x", "2")
	c.waitReplicated("x", "2", 1, 2, 3)

	l, pm := c.prepareMerge(2, 1)
	if pm.Source.GetRegionEpoch().GetVersion() != 3 || pm.Source.GetRegionEpoch().GetConfVer() != 2 {
		t.Fatalf("PrepareMerge should bump both parts of the source's epoch: %v", pm.Source.GetRegionEpoch())
	}
	// A merge source takes no writes and serves no reads.
	_, err := l.st.Propose(context.Background(), 2, pm.Source.GetRegionEpoch(), encodePut([]byte("y"), []byte("no")))
	if !errors.Is(err, region.ErrProposalInMergingMode) {
		t.Fatalf("write to a merge source: %v", err)
	}
	if _, err := l.st.ReadIndex(context.Background(), 2, pm.Source.GetRegionEpoch()); !errors.Is(err, region.ErrProposalInMergingMode) {
		t.Fatalf("read from a merge source: %v", err)
	}
	// Nor a second merge or a split.
	if _, err := l.st.PrepareMerge(context.Background(), 2, pm.Source.GetRegionEpoch(), pm.Target); !errors.Is(err, region.ErrProposalInMergingMode) {
		t.Fatalf("second prepare: %v", err)
	}

	merged, err := c.commitMerge(l, pm)
	if err != nil {
		t.Fatal(err)
	}
	if merged.GetId() != 1 || len(merged.GetStartKey()) != 0 || len(merged.GetEndKey()) != 0 || merged.GetRegionEpoch().GetVersion() != 4 {
		t.Fatalf("merged target: %v", merged)
	}
	c.everyStoreAgrees([]*metapb.Region{merged}, 1, 2, 3)
	waitFor(t, "the source to leave every store", 10*time.Second, func() bool {
		for _, id := range c.ids {
			if c.store(id).st.RegionStatus(2) != nil || len(c.store(id).st.Regions()) != 1 {
				return false
			}
		}
		return true
	})
	// The source's data is the target's now, and the target writes there.
	for _, id := range c.ids {
		if v, _ := c.store(id).localGet("x"); v != "2" {
			t.Fatalf("store %d lost the source's data: %q", id, v)
		}
	}
	c.put(1, "y", "3")
	c.waitReplicated("y", "3", 1, 2, 3)
	// The target's state machine state counts both regions' writes.
	// a and y on the target, x on the source.
	if n := stateCount(c.leader(1).smState(t, 1)); n != 3 {
		t.Fatalf("merged state machine state counts %d writes, want 3", n)
	}
	// A restart keeps the merge: the source stays a tombstone.
	fs := c.stopStore(3)
	c.restartStore(3, fs)
	c.everyStoreAgrees([]*metapb.Region{merged}, 3)
	if c.store(3).st.RegionStatus(2) != nil {
		t.Fatal("the merged source came back after a restart")
	}
	c.put(1, "z", "4")
	c.waitReplicated("z", "4", 1, 2, 3)
}

// A source with a replica cut off from its leader is not frozen: the
// PrepareMerge is refused, naming the replica, and the source goes on
// taking writes. Once the replica catches up, the merge goes through and
// the writes made meanwhile are in the target.
func TestPrepareMergeWaitsForLaggingReplica(t *testing.T) {
	cfg := testConfig()
	cfg.MergeMaxLogGap = 4
	c, _ := newSplitPair(t, cfg)
	c.put(2, "x", "0")
	c.waitReplicated("x", "0", 1, 2, 3)
	l := c.leader(2)
	var behind uint64
	for _, id := range c.ids {
		if id != l.id {
			behind = id
			break
		}
	}
	c.net.partition([]uint64{l.id}, []uint64{behind})
	for i := 1; i <= 10; i++ {
		c.put(2, "x", fmt.Sprint(i))
	}
	if l2 := c.leader(2); l2 != l {
		t.Fatalf("leadership of region 2 moved from store %d to %d under a one-link cut", l.id, l2.id)
	}
	src := l.st.RegionStatus(2).Region
	tgt := c.leader(1).st.RegionStatus(1).Region
	_, err := l.st.PrepareMerge(context.Background(), 2, src.GetRegionEpoch(), tgt)
	if !errors.Is(err, ErrMergeReplicaBehind) || !errors.Is(err, ErrBadMerge) {
		t.Fatalf("PrepareMerge with a replica cut off: %v, want ErrMergeReplicaBehind", err)
	}
	if want := fmt.Sprintf("on store %d ", behind); !strings.Contains(err.Error(), want) {
		t.Fatalf("the refusal %q does not name the replica %q", err, want)
	}
	// Nothing was frozen.
	if st := l.st.RegionStatus(2); st.Merge != nil || !region.EpochEqual(st.Region.GetRegionEpoch(), src.GetRegionEpoch()) {
		t.Fatalf("a refused PrepareMerge changed the source: merge %v, epoch %v", st.Merge, st.Region.GetRegionEpoch())
	}
	c.put(2, "x", "11")

	c.net.heal()
	c.waitReplicated("x", "11", behind)
	on, pm := c.prepareMerge(2, 1)
	merged, err := c.commitMerge(on, pm)
	if err != nil {
		t.Fatal(err)
	}
	c.everyStoreAgrees([]*metapb.Region{merged}, 1, 2, 3)
	for _, id := range c.ids {
		waitFor(t, fmt.Sprintf("store %d to hold the source's last write in the target", id), 10*time.Second, func() bool {
			v, _ := c.store(id).localGet("x")
			return v == "11" && c.store(id).st.RegionStatus(2) == nil
		})
	}
}

// The target changed after PrepareMerge: CommitMerge cannot apply, and
// RollbackMerge gives the source back its writes under a new version.
func TestMergeRollback(t *testing.T) {
	c, _ := newSplitPair(t, testConfig())
	// Source 1 [, m) into target 2 [m, ).
	l, pm := c.prepareMerge(1, 2)
	c.split(2, splitReq("t", 3)) // the target changes
	if _, err := c.commitMerge(l, pm); !errors.Is(err, region.ErrEpochNotMatch) {
		t.Fatalf("commit into a changed target: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	back, err := c.leader(1).st.RollbackMerge(ctx, 1, pm.Source.GetRegionEpoch(), pm.Commit)
	if err != nil {
		t.Fatal(err)
	}
	if back.GetRegionEpoch().GetVersion() != pm.Source.GetRegionEpoch().GetVersion()+1 {
		t.Fatalf("rollback epoch: %v", back.GetRegionEpoch())
	}
	c.everyStoreAgrees([]*metapb.Region{back}, 1, 2, 3)
	for _, id := range c.ids {
		if st := c.store(id).st.RegionStatus(1); st.Merge != nil {
			t.Fatalf("store %d still merging after the rollback", id)
		}
	}
	c.put(1, "a", "after rollback")
	c.waitReplicated("a", "after rollback", 1, 2, 3)
	// A rollback with the wrong commit index is refused.
	if _, err := c.leader(1).st.RollbackMerge(ctx, 1, back.GetRegionEpoch(), pm.Commit); !errors.Is(err, ErrBadMerge) {
		t.Fatalf("rollback of no merge: %v", err)
	}
}

func TestMergeRefusesBadPairs(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	regions := c.split(1, splitReq("g", 2), splitReq("p", 3)) // 1 [,g) 2 [g,p) 3 [p,)
	c.everyStoreAgrees(regions, 1, 2, 3)
	l := c.leader(1)
	src := l.st.RegionStatus(1).Region
	tgt3 := c.leader(3).st.RegionStatus(3).Region
	if _, err := l.st.PrepareMerge(context.Background(), 1, src.GetRegionEpoch(), tgt3); !errors.Is(err, ErrBadMerge) {
		t.Fatalf("merge of regions that are not adjacent: %v", err)
	}
	moved := proto.Clone(c.leader(2).st.RegionStatus(2).Region).(*metapb.Region)
	moved.Peers[0].StoreId = 9
	if _, err := l.st.PrepareMerge(context.Background(), 1, src.GetRegionEpoch(), moved); !errors.Is(err, ErrBadMerge) {
		t.Fatalf("merge of regions on different stores: %v", err)
	}
	if !proto.Equal(l.st.RegionStatus(1).Region, src) {
		t.Fatal("a refused merge changed the source")
	}
}

// A power loss right after the merge committed: every store comes back
// with the merge applied or replays it from the target's log; the source's
// state was made durable before the commit.
func TestMergeSurvivesPowerLoss(t *testing.T) {
	c, _ := newSplitPair(t, testConfig())
	c.put(2, "x", "1")
	l, pm := c.prepareMerge(2, 1)
	for _, id := range c.ids {
		if err := c.store(id).st.SyncApplied(); err != nil {
			t.Fatal(err)
		}
	}
	merged, err := c.commitMerge(l, pm)
	if err != nil {
		t.Fatal(err)
	}
	crashed := map[uint64]*vfs.MemFS{}
	for _, id := range c.ids {
		crashed[id] = c.crashStore(id)
	}
	for _, id := range c.ids {
		c.restartStore(id, crashed[id])
	}
	c.everyStoreAgrees([]*metapb.Region{merged}, 1, 2, 3)
	c.waitReplicated("x", "1", 1, 2, 3)
	c.put(1, "y", "2")
	c.waitReplicated("y", "2", 1, 2, 3)
	for _, id := range c.ids {
		if c.store(id).st.RegionStatus(2) != nil {
			t.Fatalf("store %d still has the merged source", id)
		}
	}
}

// smState reads a region's persisted state-machine state on a store.
func (ts *testStore) smState(t *testing.T, regionID uint64) []byte {
	var as rspb.RaftApplyState
	if _, err := getProto(ts.eng.DB, applyStateKey(regionID), &as); err != nil {
		t.Fatal(err)
	}
	return as.GetStateMachine()
}

// A target replica cut off during the commit catches up by a snapshot of
// the merged target; the source replica it overlaps (prepared, waiting)
// is absorbed, not left to block the snapshot forever.
func TestMergedTargetSnapshotAbsorbsWaitingSource(t *testing.T) {
	cfg := testConfig()
	cfg.LogGCThreshold = 20
	cfg.LogMaxLagEntries = 30
	c, _ := newSplitPair(t, cfg)
	c.put(2, "x", "source data")
	c.waitReplicated("x", "source data", 1, 2, 3)
	l, pm := c.prepareMerge(2, 1)
	var lagger uint64
	for _, id := range c.ids {
		if id != l.id {
			lagger = id
			break
		}
	}
	c.net.isolate(lagger, c.ids)
	merged, err := c.commitMerge(l, pm)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		c.put(1, fmt.Sprintf("k%03d", i), "v")
	}
	c.net.heal()
	c.everyStoreAgrees([]*metapb.Region{merged}, c.ids...)
	waitFor(t, "the lagging store to drop the source", 10*time.Second, func() bool {
		return c.store(lagger).st.RegionStatus(2) == nil
	})
	if c.store(lagger).st.Stats().SnapshotsApplied.Load() == 0 {
		t.Fatal("the lagging store caught up without a snapshot; the test did not test it")
	}
	if v, _ := c.store(lagger).localGet("x"); v != "source data" {
		t.Fatalf("the source's data on the lagging store: %q", v)
	}
	// After a restart the source stays gone.
	fs := c.stopStore(lagger)
	c.restartStore(lagger, fs)
	if c.store(lagger).st.RegionStatus(2) != nil {
		t.Fatal("the absorbed source came back after a restart")
	}
}
