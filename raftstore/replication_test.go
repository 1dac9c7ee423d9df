package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	"github.com/basaltdb/basalt/region"
)

func TestElectionAndReplication(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	if err := c.store(1).st.Campaign(1); err != nil {
		t.Fatal(err)
	}
	l := c.leader(1)
	for i := 0; i < 100; i++ {
		c.put(1, fmt.Sprintf("k%03d", i), fmt.Sprintf("v%d", i))
	}
	c.waitReplicated("k099", "v99", 1, 2, 3)
	for _, id := range c.ids {
		got := c.store(id).dataOf("", "")
		if len(got) != 100 {
			t.Fatalf("store %d holds %d keys, want 100", id, len(got))
		}
		for i := 0; i < 100; i++ {
			if v := got[fmt.Sprintf("k%03d", i)]; v != fmt.Sprintf("v%d", i) {
				t.Fatalf("store %d: k%03d=%q", id, i, v)
			}
		}
	}
	if l.st.Stats().Syncs.Load() == 0 {
		t.Fatal("leader never synced")
	}
}

// A partitioned leader loses its region; the majority elects a new leader and
// keeps accepting writes; after healing, the old leader catches up.
func TestLeaderFailoverUnderPartition(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	old := c.leader(1)
	c.put(1, "a", "1")
	c.net.isolate(old.id, c.ids)
	var nl *testStore
	waitFor(t, "a new leader in the majority", 20*time.Second, func() bool {
		for _, id := range c.ids {
			if id == old.id {
				continue
			}
			if st := c.store(id).st.RegionStatus(1); st.IsLeader() {
				nl = c.store(id)
				return true
			}
		}
		return false
	})
	// The old leader cannot commit anything while isolated.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := old.st.Propose(ctx, 1, old.st.RegionStatus(1).Region.GetRegionEpoch(), encodePut([]byte("lost"), []byte("x")))
	cancel()
	if err == nil {
		t.Fatal("an isolated old leader committed a write")
	}
	c.put(1, "b", "2")
	c.net.heal()
	c.waitReplicated("b", "2", 1, 2, 3)
	waitFor(t, "the old leader to follow", 10*time.Second, func() bool {
		st := old.st.RegionStatus(1)
		return !st.IsLeader() && st.Leader.GetStoreId() == nl.id || st.IsLeader()
	})
	// The isolated leader's entry never reached a majority, so the new
	// leader's log replaced it everywhere.
	for _, id := range c.ids {
		if _, ok := c.store(id).localGet("lost"); ok {
			t.Fatalf("store %d applied a write that only the isolated old leader had", id)
		}
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "m", 1, 2, 3)
	c.bootstrap(2, "m", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	_ = c.store(2).st.Campaign(2)
	for i := 0; i < 50; i++ {
		c.put(1, fmt.Sprintf("a%02d", i), "x")
		c.put(2, fmt.Sprintf("n%02d", i), "y")
	}
	c.waitReplicated("n49", "y", 1, 2, 3)
	var fss []*vfs.MemFS
	for _, id := range c.ids {
		fss = append(fss, c.stopStore(id))
	}
	for i, id := range c.ids {
		c.restartStore(id, fss[i])
	}
	for _, id := range c.ids {
		if got := c.store(id).dataOf("", ""); len(got) != 100 {
			t.Fatalf("store %d has %d keys after restart, want 100", id, len(got))
		}
		for _, r := range []uint64{1, 2} {
			if st := c.store(id).st.RegionStatus(r); st == nil || !st.Initialized {
				t.Fatalf("store %d lost region %d", id, r)
			}
		}
	}
	c.put(1, "after", "restart")
	c.put(2, "zz", "restart")
	c.waitReplicated("zz", "restart", 1, 2, 3)
}

// A follower cut off while the log is truncated catches up by snapshot.
func TestSnapshotToLaggingFollower(t *testing.T) {
	cfg := testConfig()
	cfg.LogGCThreshold = 20
	cfg.LogMaxLagEntries = 30
	c := newTestCluster(t, 3, cfg)
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	c.put(1, "first", "1")
	c.waitReplicated("first", "1", 1, 2, 3)
	l := c.leader(1)
	var lagger uint64
	for _, id := range c.ids {
		if id != l.id {
			lagger = id
			break
		}
	}
	c.net.isolate(lagger, c.ids)
	for i := 0; i < 200; i++ {
		c.put(1, fmt.Sprintf("k%03d", i), fmt.Sprintf("v%d", i))
	}
	if l.st.Stats().Truncations.Load() == 0 {
		t.Fatal("the leader never truncated its log")
	}
	c.net.heal()
	c.waitReplicated("k199", "v199", c.ids...)
	waitFor(t, "the lagging follower's snapshot to finish", 10*time.Second, func() bool {
		return c.store(lagger).st.Stats().SnapshotsApplied.Load() > 0
	})
	want := l.dataOf("", "")
	waitFor(t, "identical data on the lagger", 10*time.Second, func() bool {
		return len(c.store(lagger).dataOf("", "")) == len(want)
	})
	for k, v := range want {
		if got, _ := c.store(lagger).localGet(k); got != v {
			t.Fatalf("lagger: %s=%q want %q", k, got, v)
		}
	}
}

// A new replica is added as a learner, receives a snapshot, is promoted, and
// an old replica is removed and garbage-collected.
func TestAddPromoteRemoveReplica(t *testing.T) {
	c := newTestCluster(t, 4, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	for i := 0; i < 30; i++ {
		c.put(1, fmt.Sprintf("k%02d", i), "v")
	}
	l := c.leader(1)
	ctx := context.Background()
	epoch := func() *metapb.RegionEpoch { return l.st.RegionStatus(1).Region.GetRegionEpoch() }

	newPeer := &metapb.Peer{Id: 104, StoreId: 4}
	reg, err := l.st.ChangePeers(ctx, 1, epoch(), []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_AddLearnerNode, Peer: newPeer}})
	if err != nil {
		t.Fatal(err)
	}
	if p := region.FindPeer(reg, 4); p == nil || p.GetRole() != metapb.PeerRole_Learner {
		t.Fatalf("store 4 should be a learner: %v", reg)
	}
	c.waitReplicated("k29", "v", 4)
	waitFor(t, "the learner's snapshot to finish", 10*time.Second, func() bool {
		return c.store(4).st.Stats().SnapshotsApplied.Load() > 0
	})
	// A second membership change with a stale conf_ver is refused.
	if _, err := l.st.ChangePeers(ctx, 1, reg.GetRegionEpoch(), nil); err == nil {
		t.Fatal("an empty change was accepted")
	}
	stale := &metapb.RegionEpoch{ConfVer: 1, Version: 1}
	if _, err := l.st.ChangePeers(ctx, 1, stale, []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_AddNode, Peer: newPeer}}); !errors.Is(err, region.ErrEpochNotMatch) {
		t.Fatalf("stale epoch: got %v", err)
	}
	reg, err = l.st.ChangePeers(ctx, 1, epoch(), []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_AddNode, Peer: newPeer}})
	if err != nil {
		t.Fatal(err)
	}
	if p := region.FindPeer(reg, 4); p.GetRole() != metapb.PeerRole_Voter {
		t.Fatalf("store 4 should be a voter: %v", reg)
	}
	// Remove a follower (never the leader: that needs a transfer first).
	var victim uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != l.id {
			victim = id
			break
		}
	}
	vp := region.FindPeer(reg, victim)
	if _, err := l.st.ChangePeers(ctx, 1, epoch(), []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_RemoveNode, Peer: vp}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed replica to be destroyed", 10*time.Second, func() bool {
		return c.store(victim).st.RegionStatus(1) == nil
	})
	if got := c.store(victim).dataOf("", ""); len(got) != 0 {
		t.Fatalf("removed replica left %d keys behind", len(got))
	}
	c.put(1, "after", "remove")
	var rest []uint64
	for _, id := range c.ids {
		if id != victim {
			rest = append(rest, id)
		}
	}
	c.waitReplicated("after", "remove", rest...)
	// The tombstone survives a restart and the replica does not come back.
	fs := c.stopStore(victim)
	c.restartStore(victim, fs)
	if c.store(victim).st.RegionStatus(1) != nil {
		t.Fatal("a destroyed replica came back after restart")
	}
}

// Moving a replica with joint consensus: promote the new learner and demote
// the old voter in one change; raft leaves the joint state on its own.
func TestJointConsensusMove(t *testing.T) {
	c := newTestCluster(t, 4, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	c.put(1, "k", "v")
	l := c.leader(1)
	ctx := context.Background()
	epoch := func() *metapb.RegionEpoch { return l.st.RegionStatus(1).Region.GetRegionEpoch() }
	var from uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != l.id {
			from = id
			break
		}
	}
	np := &metapb.Peer{Id: 104, StoreId: 4}
	if _, err := l.st.ChangePeers(ctx, 1, epoch(), []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_AddLearnerNode, Peer: np}}); err != nil {
		t.Fatal(err)
	}
	c.waitReplicated("k", "v", 4)
	old := region.FindPeer(l.st.RegionStatus(1).Region, from)
	reg, err := l.st.ChangePeers(ctx, 1, epoch(), []*raftcmdpb.ChangePeer{
		{ChangeType: raftcmdpb.ChangePeerType_AddNode, Peer: np},
		{ChangeType: raftcmdpb.ChangePeerType_AddLearnerNode, Peer: old},
	})
	if err != nil {
		t.Fatal(err)
	}
	if region.FindPeer(reg, 4).GetRole() != metapb.PeerRole_IncomingVoter || region.FindPeer(reg, from).GetRole() != metapb.PeerRole_DemotingVoter {
		t.Fatalf("joint state not reflected in the descriptor: %v", reg)
	}
	waitFor(t, "leaving the joint state", 10*time.Second, func() bool {
		r := l.st.RegionStatus(1).Region
		return region.FindPeer(r, 4).GetRole() == metapb.PeerRole_Voter && region.FindPeer(r, from).GetRole() == metapb.PeerRole_Learner
	})
	if _, err := l.st.ChangePeers(ctx, 1, epoch(), []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_RemoveNode, Peer: old}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old replica to go", 10*time.Second, func() bool { return c.store(from).st.RegionStatus(1) == nil })
	// Every replica agrees on the final descriptor.
	var rest []uint64
	for _, id := range c.ids {
		if id != from {
			rest = append(rest, id)
		}
	}
	c.put(1, "moved", "yes")
	c.waitReplicated("moved", "yes", rest...)
	want := l.st.RegionStatus(1).Region
	waitFor(t, "every replica to apply the final descriptor", 10*time.Second, func() bool {
		for _, id := range rest {
			if !proto.Equal(c.store(id).st.RegionStatus(1).Region, want) {
				return false
			}
		}
		return true
	})
}

// newFourReplicaRegion starts four stores holding region 1 (everything),
// led from store 1, with k=v written on all four.
func newFourReplicaRegion(t *testing.T) *testCluster {
	c := newTestCluster(t, 4, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3, 4)
	_ = c.store(1).st.Campaign(1)
	c.put(1, "k", "v")
	c.waitReplicated("k", "v", 1, 2, 3, 4)
	return c
}

// removeReplica removes the replica on storeID from regionID through its
// leader l.
func removeReplica(t *testing.T, l *testStore, regionID, storeID uint64) {
	t.Helper()
	desc := l.st.RegionStatus(regionID).Region
	if _, err := l.st.ChangePeers(context.Background(), regionID, desc.GetRegionEpoch(),
		[]*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_RemoveNode, Peer: region.FindPeer(desc, storeID)}}); err != nil {
		t.Fatal(err)
	}
}

// A replica removed while partitioned learns of it from the others when the
// partition heals, and destroys itself.
func TestRemovedPartitionedPeerIsCollected(t *testing.T) {
	c := newFourReplicaRegion(t)
	l := c.leader(1)
	var victim uint64
	for _, id := range c.ids {
		if id != l.id {
			victim = id
			break
		}
	}
	c.net.isolate(victim, c.ids)
	removeReplica(t, l, 1, victim)
	c.net.heal()
	waitFor(t, "the stale replica to be collected", 20*time.Second, func() bool {
		return c.store(victim).st.RegionStatus(1) == nil
	})
}

func TestLeaderTransfer(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	c.put(1, "k", "v")
	for round := 0; round < 4; round++ {
		l := c.leader(1)
		st := l.st.RegionStatus(1)
		var target *metapb.Peer
		for _, p := range st.Region.GetPeers() {
			if p.GetStoreId() != l.id {
				target = p
				break
			}
		}
		if err := l.st.TransferLeader(context.Background(), 1, st.Region.GetRegionEpoch(), target.GetId()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("store %d to lead", target.GetStoreId()), 10*time.Second, func() bool {
			return c.store(target.GetStoreId()).st.RegionStatus(1).IsLeader()
		})
		// The old leader gave up its lease before the transferee could
		// campaign.
		if exp := l.st.getPeer(1).leaseExpiry.Load(); exp != 0 {
			t.Fatalf("old leader on store %d kept its lease", l.id)
		}
		c.put(1, fmt.Sprintf("after%d", round), "v")
	}
	// Transfer to a non-member is refused.
	l := c.leader(1)
	if err := l.st.TransferLeader(context.Background(), 1, l.st.RegionStatus(1).Region.GetRegionEpoch(), 999); err == nil {
		t.Fatal("transfer to a non-member accepted")
	}
}

// Reads through ReadIndex on any replica observe every acknowledged write;
// the leader serves most reads from its lease.
func TestLinearizableReads(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	l := c.leader(1)
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		v := fmt.Sprint(i)
		c.put(1, "k", v)
		for _, id := range c.ids {
			ts := c.store(id)
			guard := c.readIndex(ts, 1)
			if got, _ := ts.localGet("k"); got != v {
				t.Fatalf("store %d read %q after %q was acknowledged", id, got, v)
			}
			if err := guard.Check(); err != nil {
				t.Fatal(err)
			}
		}
	}
	var leaseReads uint64
	for _, id := range c.ids {
		leaseReads += c.store(id).st.Stats().LeaseReads.Load()
	}
	if leaseReads == 0 {
		t.Fatal("no leader ever served a read from its lease")
	}
	// Leadership may have moved (a slow race build can miss a heartbeat).
	l = c.leader(1)
	// A stale epoch is refused.
	if _, err := l.st.ReadIndex(ctx, 1, &metapb.RegionEpoch{Version: 0, ConfVer: 1}); !errors.Is(err, region.ErrEpochNotMatch) {
		t.Fatalf("stale epoch read: %v", err)
	}
	if _, err := l.st.ReadIndex(ctx, 42, nil); !errors.Is(err, region.ErrRegionNotFound) {
		t.Fatalf("unknown region read: %v", err)
	}
}

// Writes that arrive in the same round share one raft entry; each proposer
// must still get its own write's result. Concurrent puts of one key each
// see a distinct previous value, and together with the final value the
// previous values account for every write exactly once.
func TestBatchedProposalsGetTheirOwnResults(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	l := c.leader(1)
	epoch := l.st.RegionStatus(1).Region.GetRegionEpoch()
	const n = 200
	prevs := make(chan string, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			res, err := l.st.Propose(context.Background(), 1, epoch, encodePut([]byte("k"), []byte(fmt.Sprint(i))))
			if err != nil {
				errs <- err
				return
			}
			prevs <- string(res.([]byte))
		}(i)
	}
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		select {
		case err := <-errs:
			t.Fatal(err)
		case p := <-prevs:
			seen[p]++
		}
	}
	final, _ := l.localGet("k")
	seen[final]++
	if seen[""] != 1 {
		t.Fatalf("%d writes saw no previous value, want exactly 1", seen[""])
	}
	for i := 0; i < n; i++ {
		if seen[fmt.Sprint(i)] != 1 {
			t.Fatalf("value %d seen %d times as a previous or final value", i, seen[fmt.Sprint(i)])
		}
	}
	if l.st.Stats().Applied.Load() >= n {
		t.Logf("note: %d entries applied for %d writes (no batching happened)", l.st.Stats().Applied.Load(), n)
	}
}

func TestRenewLeaseAndLeaseRemaining(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	l := c.leader(1)
	ctx := context.Background()
	if err := l.st.RenewLease(ctx, 1); err != nil {
		t.Fatalf("leader could not renew: %v", err)
	}
	rem := l.st.LeaseRemaining(1)
	if rem <= 0 || rem > l.st.cfg.leaseDuration() {
		t.Fatalf("lease remaining %v, want in (0, %v]", rem, l.st.cfg.leaseDuration())
	}
	for _, id := range c.ids {
		if id == l.id {
			continue
		}
		if err := c.store(id).st.RenewLease(ctx, 1); !errors.Is(err, region.ErrNotLeader) {
			t.Fatalf("follower renewed a lease: %v", err)
		}
		if c.store(id).st.LeaseRemaining(1) != 0 {
			t.Fatal("follower holds a lease")
		}
	}
	// Isolated, the leader's lease runs out and cannot be renewed.
	c.net.isolate(l.id, c.ids)
	waitFor(t, "the isolated leader's lease to expire", 10*time.Second, func() bool { return l.st.LeaseRemaining(1) == 0 })
	rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := l.st.RenewLease(rctx, 1); err == nil {
		t.Fatal("an isolated leader renewed its lease")
	}
}

func TestOnRoleChange(t *testing.T) {
	c := newTestCluster(t, 3, testConfig())
	var mu sync.Mutex
	leaders := map[uint64]bool{}
	for _, id := range c.ids {
		id := id
		c.store(id).st.onRoleChange = func(regionID uint64, isLeader bool, term uint64) {
			mu.Lock()
			leaders[id] = isLeader
			mu.Unlock()
		}
	}
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(2).st.Campaign(1)
	l := c.leader(1)
	waitFor(t, "the callback to report the leader", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return leaders[l.id]
	})
	st := l.st.RegionStatus(1)
	var target uint64
	for _, p := range st.Region.GetPeers() {
		if p.GetStoreId() != l.id {
			target = p.GetId()
		}
	}
	if err := l.st.TransferLeader(context.Background(), 1, st.Region.GetRegionEpoch(), target); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the callback to report the old leader stepping down", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !leaders[l.id]
	})
}

// The state machine's per-region state is persisted with the applied
// index, survives a restart, and reaches a lagging replica in a snapshot.
func TestStateMachineStateTravels(t *testing.T) {
	cfg := testConfig()
	cfg.LogGCThreshold = 20
	cfg.LogMaxLagEntries = 30
	c := newTestCluster(t, 3, cfg)
	c.bootstrap(1, "", "", 1, 2, 3)
	_ = c.store(1).st.Campaign(1)
	l := c.leader(1)
	var lagger uint64
	for _, id := range c.ids {
		if id != l.id {
			lagger = id
			break
		}
	}
	c.put(1, "a", "1")
	c.waitReplicated("a", "1", c.ids...)
	c.net.isolate(lagger, c.ids)
	for i := 0; i < 100; i++ {
		c.put(1, fmt.Sprintf("k%03d", i), "v")
	}
	c.net.heal()
	c.waitReplicated("k099", "v", c.ids...)
	count := func(id uint64) uint64 {
		ch := make(chan uint64, 1)
		c.store(id).st.getPeer(1).pushOp(func(p *peer) { ch <- stateCount(p.storage.smState) })
		return <-ch
	}
	waitFor(t, "every replica to count 101 puts", 10*time.Second, func() bool {
		for _, id := range c.ids {
			if count(id) != 101 {
				return false
			}
		}
		return true
	})
	waitFor(t, "the lagger's snapshot", 10*time.Second, func() bool {
		return c.store(lagger).st.Stats().SnapshotsApplied.Load() > 0
	})
	fs := c.stopStore(lagger)
	c.restartStore(lagger, fs)
	if n := count(lagger); n != 101 {
		t.Fatalf("after restart the lagger counts %d puts, want 101", n)
	}
}

// A replica destroyed after a write entered its log cannot say the write
// failed: the other replicas may commit it. Its caller gets
// ErrOutcomeUnknown, never a region error (which clients retry, and a
// retried put that had applied would apply twice).
func TestDestroyedLeaderLeavesLoggedWritesUndecided(t *testing.T) {
	c := newFourReplicaRegion(t)
	old := c.leader(1)
	before := old.st.RegionStatus(1)
	c.net.isolate(old.id, c.ids)
	pending, err := old.st.ProposeAsync(1, before.Region.GetRegionEpoch(), encodePut([]byte("undecided"), []byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the write in the isolated leader's log", 10*time.Second, func() bool {
		return old.st.RegionStatus(1).LastIndex > before.LastIndex
	})
	var nl *testStore
	waitFor(t, "a new leader in the majority", 20*time.Second, func() bool {
		for _, id := range c.ids {
			if st := c.store(id).st.RegionStatus(1); id != old.id && st.IsLeader() {
				nl = c.store(id)
				return true
			}
		}
		return false
	})
	removeReplica(t, nl, 1, old.id)
	c.net.heal()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = pending.Wait(ctx)
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("the removed leader's logged write ended with %v, want ErrOutcomeUnknown", err)
	}
	// The proposal ends before the replica leaves the store's map.
	waitFor(t, "the removed replica to go", 10*time.Second, func() bool { return old.st.RegionStatus(1) == nil })
}
