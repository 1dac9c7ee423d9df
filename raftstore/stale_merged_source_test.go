package raftstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	"github.com/basaltdb/basalt/region"
)

// A store cut off while both halves of a split move off it and then merge
// keeps a leftover of each. The surviving region's members tell its
// leftover to go (isStaleSender); the merged-away region has no member
// left, only tombstones, which now say the same (collectFromTombstone).
// Before, that leftover stayed forever and refused every snapshot of the
// region now covering its range here, so a replica added back on the store
// stayed empty (robustness seed 10208391737992355121: a merge froze
// waiting for such a replica, and the region stopped taking writes).
//
// Asleep: store 3's replicas hibernate before the cut, so the leftovers
// never campaign on their own; the refused snapshot wakes the one in the
// way (canTakeRange).
func TestLeftoverOfAMergedRegionIsCollected(t *testing.T) {
	for _, asleep := range []bool{false, true} {
		t.Run(map[bool]string{false: "awake", true: "asleep"}[asleep], func(t *testing.T) { leftoverOfAMergedRegion(t, asleep) })
	}
}

func leftoverOfAMergedRegion(t *testing.T, asleep bool) {
	c := newTestCluster(t, 4, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	regions := c.split(1, splitReq("m", 2))
	c.everyStoreAgrees(regions, 1, 2, 3)
	c.put(1, "a", "1")
	c.put(2, "x", "2")
	c.waitReplicated("x", "2", 1, 2, 3)
	// Store 3 must not lead either region when it is cut off.
	for _, rid := range []uint64{1, 2} {
		waitFor(t, "store 1 to lead region", 20*time.Second, func() bool {
			if st := c.store(1).st.RegionStatus(rid); st != nil && st.IsLeader() {
				return true
			}
			_ = c.store(1).st.RequestLeadership(rid)
			return false
		})
	}
	if asleep {
		waitFor(t, "store 3's replicas to hibernate", 20*time.Second, func() bool {
			for _, rid := range []uint64{1, 2} {
				if st := c.store(3).st.RegionStatus(rid); st == nil || !st.Hibernating {
					return false
				}
			}
			return true
		})
	}
	c.net.isolate(3, c.ids)
	ctx := context.Background()
	moveOff3 := func(rid uint64) {
		l := c.leader(rid)
		epoch := func() *metapb.RegionEpoch { return l.st.RegionStatus(rid).Region.GetRegionEpoch() }
		np := &metapb.Peer{Id: rid*100 + 4, StoreId: 4}
		if _, err := l.st.ChangePeers(ctx, rid, epoch(), []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_AddLearnerNode, Peer: np}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the learner on store 4", 20*time.Second, func() bool {
			st := c.store(4).st.RegionStatus(rid)
			return st != nil && st.Initialized
		})
		if _, err := l.st.ChangePeers(ctx, rid, epoch(), []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_AddNode, Peer: np}}); err != nil {
			t.Fatal(err)
		}
		removeReplica(t, l, rid, 3)
	}
	moveOff3(1)
	moveOff3(2)
	l := c.leader(2)
	// The replica just added on store 4 may not be caught up yet.
	var pm *PreparedMerge
	waitFor(t, "region 2's leader to prepare the merge", 20*time.Second, func() bool {
		var err error
		pm, err = l.st.PrepareMerge(ctx, 2, l.st.RegionStatus(2).Region.GetRegionEpoch(), c.leader(1).st.RegionStatus(1).Region)
		if err != nil && !errors.Is(err, ErrMergeReplicaBehind) {
			t.Fatal(err)
		}
		return err == nil
	})
	waitFor(t, "the prepare on stores 1, 2 and 4", 20*time.Second, func() bool {
		for _, id := range []uint64{1, 2, 4} {
			if st := c.store(id).st.RegionStatus(2); st == nil || st.Merge == nil || st.Applied < pm.Commit {
				return false
			}
		}
		return true
	})
	if _, err := c.commitMerge(l, pm); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "region 2 merged away on stores 1, 2 and 4", 20*time.Second, func() bool {
		for _, id := range []uint64{1, 2, 4} {
			if c.store(id).st.RegionStatus(2) != nil {
				return false
			}
		}
		return true
	})
	c.net.heal()

	// A replica of the merged region 1 goes back on store 3.
	l1 := c.leader(1)
	np := &metapb.Peer{Id: 1003, StoreId: 3}
	if _, err := l1.st.ChangePeers(ctx, 1, l1.st.RegionStatus(1).Region.GetRegionEpoch(),
		[]*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_AddLearnerNode, Peer: np}}); err != nil {
		t.Fatal(err)
	}
	s3 := c.store(3).st
	waitFor(t, "store 3's new replica of region 1, with both halves' data", 30*time.Second, func() bool {
		st := s3.RegionStatus(1)
		return st != nil && st.Initialized && region.FindPeerByID(st.Region, 1003) != nil
	})
	if st := s3.RegionStatus(2); st != nil {
		t.Fatalf("store 3 still holds the leftover of merged region 2: %v", st.Region)
	}
	for k, want := range map[string]string{"a": "1", "x": "2"} {
		if got, _ := c.store(3).localGet(k); got != want {
			t.Fatalf("store 3 reads %s=%q, want %q", k, got, want)
		}
	}
}
