package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// splitReq is a split of a 3-replica region at key into region newID.
func splitReq(key string, newID uint64) *raftcmdpb.SplitRequest {
	return &raftcmdpb.SplitRequest{SplitKey: []byte(key), NewRegionId: newID,
		NewPeerIds: []uint64{newID*100 + 1, newID*100 + 2, newID*100 + 3}}
}

func (c *testCluster) split(regionID uint64, reqs ...*raftcmdpb.SplitRequest) []*metapb.Region {
	c.t.Helper()
	for {
		l := c.leader(regionID)
		st := l.st.RegionStatus(regionID)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		regions, err := l.st.Split(ctx, regionID, st.Region.GetRegionEpoch(), reqs)
		cancel()
		if err == nil {
			return regions
		}
		if !errors.Is(err, region.ErrNotLeader) && !errors.Is(err, region.ErrStaleCommand) {
			c.t.Fatalf("split: %v", err)
		}
	}
}

// everyStoreAgrees waits until every listed store holds the same descriptor
// of every listed region.
func (c *testCluster) everyStoreAgrees(regions []*metapb.Region, storeIDs ...uint64) {
	c.t.Helper()
	waitFor(c.t, "every replica to have the split's descriptors", 20*time.Second, func() bool {
		for _, id := range storeIDs {
			for _, r := range regions {
				st := c.store(id).st.RegionStatus(r.GetId())
				if st == nil || !st.Initialized || !proto.Equal(st.Region, r) {
					return false
				}
			}
		}
		return true
	})
}

func TestSplit(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	for _, k := range []string{"a", "f", "m", "t", "z"} {
		c.put(1, k, "v-"+k)
	}
	regions := c.split(1, splitReq("f", 2), splitReq("m", 3))
	if len(regions) != 3 {
		t.Fatalf("split made %d regions", len(regions))
	}
	want := [][2]string{{"", "f"}, {"f", "m"}, {"m", ""}}
	for i, r := range regions {
		if string(r.GetStartKey()) != want[i][0] || string(r.GetEndKey()) != want[i][1] || r.GetRegionEpoch().GetVersion() != 3 {
			t.Fatalf("region %d: %v", i, r)
		}
	}
	if regions[0].GetId() != 1 || regions[1].GetId() != 2 || regions[2].GetId() != 3 {
		t.Fatalf("the parent should keep the leftmost range, new regions follow: %v", regions)
	}
	c.everyStoreAgrees(regions, 1, 2, 3)
	// Each new region gets a leader and takes writes in its range.
	c.put(1, "b", "new")
	c.put(2, "g", "new")
	c.put(3, "x", "new")
	c.waitReplicated("g", "new", 1, 2, 3)
	c.waitReplicated("b", "new", 1, 2, 3)
	// The old data stays where it was: the split moved nothing.
	for _, k := range []string{"a", "f", "m", "t", "z"} {
		if v, _ := c.store(2).localGet(k); v != "v-"+k {
			t.Fatalf("%s after the split: %q", k, v)
		}
	}
	// A write with the parent's old epoch is refused; a key outside a
	// region is refused by the state machine.
	l := c.leader(1)
	_, err := l.st.Propose(context.Background(), 1, &metapb.RegionEpoch{ConfVer: 1, Version: 1}, encodePut([]byte("b"), []byte("old")))
	if !errors.Is(err, region.ErrEpochNotMatch) {
		t.Fatalf("stale epoch after split: %v", err)
	}
	res, err := l.st.Propose(context.Background(), 1, l.st.RegionStatus(1).Region.GetRegionEpoch(), encodePut([]byte("z"), []byte("wrong region")))
	if err != nil || !errors.Is(res.(error), region.ErrKeyNotInRegion) {
		t.Fatalf("write to a key the region gave away: %v %v", res, err)
	}
	// Bad splits are refused and change nothing.
	st := l.st.RegionStatus(1)
	if _, err := l.st.Split(context.Background(), 1, st.Region.GetRegionEpoch(), []*raftcmdpb.SplitRequest{splitReq("x", 9)}); !errors.Is(err, ErrBadSplit) {
		t.Fatalf("split outside the region: %v", err)
	}
	if _, err := l.st.Split(context.Background(), 1, &metapb.RegionEpoch{ConfVer: 1, Version: 1}, []*raftcmdpb.SplitRequest{splitReq("c", 9)}); !errors.Is(err, region.ErrEpochNotMatch) {
		t.Fatalf("split with a stale epoch: %v", err)
	}
	if !proto.Equal(l.st.RegionStatus(1).Region, st.Region) {
		t.Fatal("a refused split changed the region")
	}
}

// A replica cut off during the split catches up afterwards: it creates the
// new regions from the parent's log even though the new regions' leaders
// already reached it (and made uninitialized replicas there).
func TestSplitReachesLaggingReplica(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	c.put(1, "a", "1")
	c.put(1, "z", "1")
	c.waitReplicated("a", "1", 1, 2, 3)
	l := c.leader(1)
	var lag uint64
	for _, id := range c.ids {
		if id != l.id {
			lag = id
			break
		}
	}
	// Drop only what the parent's replicas send to the lagging store, so
	// the new region's messages reach it first.
	c.net.partition([]uint64{lag}, nil)
	c.net.mu.Lock()
	for _, id := range c.ids {
		if id != lag {
			c.net.dropped[link{id, lag}] = true
		}
	}
	c.net.mu.Unlock()
	regions := c.split(1, splitReq("m", 2))
	c.put(2, "p", "2")
	c.net.heal()
	c.everyStoreAgrees(regions, 1, 2, 3)
	c.waitReplicated("p", "2", 1, 2, 3)
	for _, id := range c.ids {
		if n := len(c.store(id).st.Regions()); n != 2 {
			t.Fatalf("store %d has %d regions, want 2", id, n)
		}
	}
	// Everything still works after a restart.
	fs := c.stopStore(lag)
	c.restartStore(lag, fs)
	c.everyStoreAgrees(regions, 1, 2, 3)
	c.put(1, "c", "3")
	c.put(2, "n", "3")
	c.waitReplicated("c", "3", 1, 2, 3)
	c.waitReplicated("n", "3", 1, 2, 3)
}

// Many splits in a row, each new region split again.
func TestRepeatedSplits(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	// Followers may lag; the split's answer is the authority.
	regions := map[uint64]*metapb.Region{1: c.store(1).st.RegionStatus(1).Region}
	find := func(key string) uint64 {
		for id, r := range regions {
			if region.ContainsKey(r, []byte(key)) {
				return id
			}
		}
		t.Fatalf("no region holds %q", key)
		return 0
	}
	next := uint64(2)
	for i := 0; i < 8; i++ {
		key := fmt.Sprintf("k%d", i+1) // split the rightmost region each time
		for _, r := range c.split(find(key), splitReq(key, next)) {
			regions[r.GetId()] = r
		}
		next++
	}
	waitFor(t, "9 regions on every store", 20*time.Second, func() bool {
		for _, id := range c.ids {
			if len(c.store(id).st.Regions()) != 9 {
				return false
			}
		}
		return true
	})
	for i := 0; i <= 8; i++ {
		key := fmt.Sprintf("k%d-x", i)
		c.put(find(key), key, "v")
		c.waitReplicated(key, "v", c.ids...)
	}
}

// A power loss right after a split: every store comes back with either the
// whole parent (and replays the split from its log) or the parent narrowed
// and its children created, never a child overlapping a wide parent, and the
// stores converge on the split.
func TestSplitSurvivesPowerLoss(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	c.put(1, "a", "1")
	c.put(1, "x", "1")
	regions := c.split(1, splitReq("f", 2), splitReq("p", 3))
	c.put(2, "g", "2")
	crashed := map[uint64]*vfs.MemFS{}
	for _, id := range c.ids {
		crashed[id] = c.crashStore(id)
	}
	for _, id := range c.ids {
		c.restartStore(id, crashed[id])
	}
	c.everyStoreAgrees(regions, 1, 2, 3)
	c.waitReplicated("g", "2", 1, 2, 3)
	c.put(1, "b", "3")
	c.put(3, "y", "3")
	c.waitReplicated("b", "3", 1, 2, 3)
	c.waitReplicated("y", "3", 1, 2, 3)
}

// Between the moment a split narrows the parent's range on a store and the
// moment it creates the children there, no snapshot may claim a child's
// range: an uninitialized replica of the child (made by a message from a
// faster store) would take it, acknowledge it, and then be replaced by the
// split's fresh replica at the initial log index, leaving its leader
// counting entries the store no longer has (a store crashed on exactly
// that: "tocommit(13) is out of range [lastIndex(5)]").
func TestSplitChildRangeStaysClaimed(t *testing.T) {
	var mu sync.Mutex
	var claimable []string
	testHookSplitNarrowed = func(s *Store, children []*metapb.Region) {
		for _, nr := range children {
			if _, ok := s.canTakeRange(nr.GetId(), nr); ok {
				mu.Lock()
				claimable = append(claimable, fmt.Sprintf("store %d region %d by a snapshot", s.cfg.StoreID, nr.GetId()))
				mu.Unlock()
			}
			// A heartbeat from the child's leader elsewhere must not
			// create a replica here either.
			self := region.FindPeer(nr, s.cfg.StoreID)
			var from *metapb.Peer
			for _, p := range nr.GetPeers() {
				if p.GetStoreId() != s.cfg.StoreID {
					from = p
				}
			}
			rm := &rspb.RaftMessage{RegionId: nr.GetId(), FromPeer: from, ToPeer: self, RegionEpoch: nr.GetRegionEpoch(),
				StartKey: nr.GetStartKey(), EndKey: nr.GetEndKey(),
				Message: &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(from.GetId()), To: new(self.GetId()), Term: new(uint64(initLogTerm))}}
			// (One a message made before the split began, with no state
			// yet, is returned as it is; the split replaces it.)
			before := s.getPeer(nr.GetId())
			if p := s.maybeCreatePeer(rm); p != nil && p != before {
				mu.Lock()
				claimable = append(claimable, fmt.Sprintf("store %d region %d by a message", s.cfg.StoreID, nr.GetId()))
				mu.Unlock()
			}
		}
	}
	// Registered before the cluster's own cleanup, so it runs after the
	// stores stopped.
	t.Cleanup(func() { testHookSplitNarrowed = nil })
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	c.put(1, "a", "1")
	c.waitReplicated("a", "1", 1, 2, 3)
	regions := c.split(1, splitReq("m", 2), splitReq("t", 3))
	c.everyStoreAgrees(regions, 1, 2, 3)
	mu.Lock()
	defer mu.Unlock()
	if len(claimable) > 0 {
		t.Fatalf("a snapshot could have claimed a child before the split created it: %v", claimable)
	}
	// Once created, the children take their own snapshots as usual.
	for _, id := range c.ids {
		for _, nr := range regions[1:] {
			if _, ok := c.store(id).st.canTakeRange(nr.GetId(), nr); !ok {
				t.Fatalf("store %d: region %d cannot take its own range after the split", id, nr.GetId())
			}
		}
	}
}

// An uninitialized replica (made by a message for a region this store does
// not hold yet) writes nothing to disk, its term included: a split that
// replaces it while one of its rounds is in flight writes the new
// replica's hard state, which a late write of the old one's would undo.
func TestUninitializedReplicaPersistsNothing(t *testing.T) {
	c := newTestCluster(t, 2, testConfig())
	c.bootstrap(1, "a", "m", 1, 2)
	s := c.store(1).st
	// A heartbeat in term 7 from the leader of a region [x, z) store 2
	// holds (as if store 1 had not applied the split that made it).
	const regionID = 9
	rm := &rspb.RaftMessage{RegionId: regionID, FromPeer: &metapb.Peer{Id: 902, StoreId: 2}, ToPeer: &metapb.Peer{Id: 901, StoreId: 1},
		RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1}, StartKey: []byte("x"), EndKey: []byte("z"),
		Message: &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(uint64(902)), To: new(uint64(901)), Term: new(uint64(7))}}
	s.HandleRaftMessage(rm)
	waitFor(t, "the uninitialized replica to take term 7", 10*time.Second, func() bool {
		st := s.RegionStatus(regionID)
		return st != nil && st.Term == 7
	})
	// The term is published at the end of the round that took it, after
	// that round's batch committed.
	for _, key := range [][]byte{hardStateKey(regionID), regionStateKey(regionID), applyStateKey(regionID), truncatedStateKey(regionID)} {
		if _, closer, err := s.Engine().DB.Get(key); err == nil {
			closer.Close()
			t.Fatalf("the uninitialized replica wrote %x", key)
		}
	}

	// The split arrives: it writes the region's initial state (as
	// applySplit does) and replaces the uninitialized replica. The new one
	// starts at term 7 and has that term on disk, not only in memory.
	desc := &metapb.Region{Id: regionID, StartKey: []byte("x"), EndKey: []byte("z"), RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1},
		Peers: []*metapb.Peer{{Id: 901, StoreId: 1}, {Id: 902, StoreId: 2}}}
	wb := s.Engine().DB.NewBatch()
	mustSetProto(wb, regionStateKey(regionID), &rspb.RegionLocalState{State: rspb.PeerState_Normal, Region: desc, ConfState: confStateOf(desc)})
	mustSetProto(wb, hardStateKey(regionID), &pb.HardState{Term: new(uint64(initLogTerm)), Commit: new(uint64(initLogIndex))})
	mustSetProto(wb, truncatedStateKey(regionID), &rspb.RaftTruncatedState{Index: initLogIndex, Term: initLogTerm})
	mustSetProto(wb, applyStateKey(regionID), &rspb.RaftApplyState{AppliedIndex: initLogIndex, AppliedTerm: initLogTerm})
	mustCommit(wb, pebble.Sync)
	if err := s.createSplitPeer(desc, desc.Peers[0], nil, false); err != nil {
		t.Fatal(err)
	}
	if st := s.RegionStatus(regionID); st == nil || !st.Initialized || st.Term != 7 {
		t.Fatalf("after the split the replica is %+v, want initialized at term 7", st)
	}
	var hs pb.HardState
	if ok, err := getProto(s.Engine().DB, hardStateKey(regionID), &hs); err != nil || !ok || hs.GetTerm() != 7 {
		t.Fatalf("on disk after the split: term %d (found %v, %v), want 7", hs.GetTerm(), ok, err)
	}
}
