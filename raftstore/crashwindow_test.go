package raftstore

// Crash windows and races found in review (each of these failed before its
// fix). They drive the worker's steps directly on one store, on pebble's
// crashable in-memory FS, to put a crash exactly where it hurts.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

type nopTransport struct{}

func (nopTransport) Send(uint64, *rspb.RaftMessage) {}
func (nopTransport) OpenSnapshotStream(context.Context, uint64) (SnapshotSender, error) {
	return nil, errors.New("no transport")
}

type fakeSnapStream struct{ chunks []*rspb.SnapshotChunk }

func (f *fakeSnapStream) Recv() (*rspb.SnapshotChunk, error) {
	if len(f.chunks) == 0 {
		return nil, io.EOF
	}
	c := f.chunks[0]
	f.chunks = f.chunks[1:]
	return c, nil
}

// hookFS calls onRemove after every Remove (pebble's Ingest removes what it
// ingested once that is durable).
type hookFS struct {
	vfs.FS
	mu       sync.Mutex
	onRemove func(name string)
}

func (h *hookFS) Remove(name string) error {
	err := h.FS.Remove(name)
	h.mu.Lock()
	f := h.onRemove
	h.mu.Unlock()
	if f != nil {
		f(name)
	}
	return err
}

var cwDesc = &metapb.Region{Id: 1, RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1},
	Peers: []*metapb.Peer{{Id: 101, StoreId: 1}, {Id: 102, StoreId: 2}, {Id: 103, StoreId: 3}}}

// openCWStore opens store 2 (not started: the test is the worker).
func openCWStore(t *testing.T, fs vfs.FS, sm StateMachine) (*Store, *Engine, error) {
	t.Helper()
	eng, err := OpenEngine("/store", fs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.StoreID = 2
	if sm == nil {
		sm = newKVSM()
	}
	s, err := NewStore(Options{Config: cfg, Engine: eng, StateMachine: sm, Transport: nopTransport{}})
	if err != nil {
		_ = eng.Close()
	}
	return s, eng, err
}

func cwMsg(m *pb.Message) *rspb.RaftMessage {
	return &rspb.RaftMessage{RegionId: 1, FromPeer: &metapb.Peer{Id: 101, StoreId: 1},
		ToPeer: &metapb.Peer{Id: 102, StoreId: 2}, RegionEpoch: cwDesc.RegionEpoch, Message: m}
}

// receiveCWSnap runs the real receive path for a snapshot of region 1 at
// (index, term 6) holding k1=v1.
func receiveCWSnap(t *testing.T, s *Store, index uint64) {
	t.Helper()
	hdr, _ := proto.Marshal(&rspb.SnapshotHeader{Region: cwDesc, SnapshotId: 1, StoreId: 1})
	msnap := &pb.Message{Type: pb.MsgSnap.Enum(), From: new(uint64(101)), To: new(uint64(102)), Term: new(uint64(6)),
		Snapshot: &pb.Snapshot{Data: hdr, Metadata: &pb.SnapshotMetadata{Index: new(index), Term: new(uint64(6)),
			ConfState: &pb.ConfState{Voters: []uint64{101, 102, 103}}}}}
	st := &fakeSnapStream{chunks: []*rspb.SnapshotChunk{{Header: cwMsg(msnap)},
		{Data: appendKV(nil, kvDataKey([]byte("k1")), []byte("v1"))}}}
	if err := s.ReceiveSnapshot(st); err != nil {
		t.Fatal(err)
	}
}

func newUninitPeer(t *testing.T, s *Store) *peer {
	t.Helper()
	p, err := s.newPeer(1, 102, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.peers[1] = p
	return p
}

// A kill -9 right after pebble ingested a snapshot (and removed the file it
// ingested) but before the region left the Applying state: the restart
// finishes the application.
func TestCrashAfterSnapshotIngest(t *testing.T) {
	mem := vfs.NewCrashableMem()
	fs := &hookFS{FS: mem}
	s, eng, err := openCWStore(t, fs, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := newUninitPeer(t, s)
	receiveCWSnap(t, s, 10)
	var crashed *vfs.MemFS
	fs.onRemove = func(name string) {
		if crashed == nil && strings.Contains(name, "apply_") {
			// A process crash keeps the unlink pebble made.
			if err := syncDir(mem, mem.PathDir(name)); err != nil {
				t.Fatal(err)
			}
			crashed = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 2))})
		}
	}
	var mb mailbox
	p.handleInputs(&mb)
	rd := p.rn.Ready()
	if raft.IsEmptySnap(rd.Snapshot) {
		t.Fatal("raft did not accept the snapshot")
	}
	p.applySnapshot(rd.Snapshot, rd.HardState)
	_ = eng.Close()
	if crashed == nil {
		t.Fatal("the crash point was never reached")
	}
	s2, eng2, err := openCWStore(t, crashed, nil)
	if err != nil {
		t.Fatalf("store cannot restart after a crash between ingest and the end of the snapshot: %v", err)
	}
	defer eng2.Close()
	st := s2.RegionStatus(1)
	if st == nil || !st.Initialized || st.Applied != 10 {
		t.Fatalf("region after restart: %+v", st)
	}
	ts := &testStore{eng: eng2}
	if v, ok := ts.localGet("k1"); !ok || v != "v1" {
		t.Fatalf("snapshot data after restart: %q %v", v, ok)
	}
}

// A snapshot and the leader's next append in one Ready: the snapshot's
// synced step must not persist a commit index beyond the log on disk.
func TestCrashWithSnapshotAndEntriesInOneReady(t *testing.T) {
	mem := vfs.NewCrashableMem()
	s, eng, err := openCWStore(t, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := newUninitPeer(t, s)
	receiveCWSnap(t, s, 10)
	mapp := &pb.Message{Type: pb.MsgApp.Enum(), From: new(uint64(101)), To: new(uint64(102)), Term: new(uint64(6)),
		Index: new(uint64(10)), LogTerm: new(uint64(6)), Commit: new(uint64(12)),
		Entries: []*pb.Entry{{Term: new(uint64(6)), Index: new(uint64(11))}, {Term: new(uint64(6)), Index: new(uint64(12))}}}
	p.mu.Lock()
	p.mb.msgs = append(p.mb.msgs, cwMsg(mapp)) // the store is not started: deliver by hand
	p.mu.Unlock()
	var mb mailbox
	p.handleInputs(&mb)
	rd := p.rn.Ready()
	if raft.IsEmptySnap(rd.Snapshot) || len(rd.Entries) != 2 || rd.HardState.GetCommit() != 12 {
		t.Fatalf("scenario not reproduced: snap %v, %d entries, commit %d", !raft.IsEmptySnap(rd.Snapshot), len(rd.Entries), rd.HardState.GetCommit())
	}
	p.applySnapshot(rd.Snapshot, rd.HardState)
	crashed := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 2))})
	_ = eng.Close()
	_, eng2, err := openCWStore(t, crashed, nil)
	if err != nil {
		t.Fatalf("store cannot restart: %v", err)
	}
	_ = eng2.Close()
}

// A newer snapshot received while the worker is between stepping a MsgSnap
// and applying it must not take the accepted snapshot's data away.
func TestSnapshotReplacedWhileApplying(t *testing.T) {
	s, eng, err := openCWStore(t, vfs.NewCrashableMem(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	p := newUninitPeer(t, s)
	receiveCWSnap(t, s, 10)
	var mb mailbox
	p.handleInputs(&mb)     // raft accepts snapshot 10
	receiveCWSnap(t, s, 11) // a gRPC goroutine finishes a newer one
	rd := p.rn.Ready()
	p.applySnapshot(rd.Snapshot, rd.HardState)
	if p.storage.appliedIndex != 10 {
		t.Fatalf("applied %d, want 10", p.storage.appliedIndex)
	}
}

// TransferLeader returns when the store stops instead of waiting forever
// for an operation the stop discarded.
func TestTransferLeaderReturnsOnStop(t *testing.T) {
	s, eng, err := openCWStore(t, vfs.NewCrashableMem(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if err := s.BootstrapRegion(cwDesc); err != nil {
		t.Fatal(err)
	}
	p := s.getPeer(1)
	done := make(chan error, 1)
	go func() { done <- s.TransferLeader(context.Background(), 1, cwDesc.RegionEpoch, 101) }()
	waitFor(t, "the transfer to be queued", 5*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.mb.ops) > 0
	})
	s.Stop()
	select {
	case err := <-done:
		if !errors.Is(err, region.ErrRegionNotFound) {
			t.Fatalf("TransferLeader after Stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("TransferLeader never returned after Stop")
	}
}

// Ticks queued while a follower's worker was busy happened before the
// leader's message that follows them: counted after it, they would let the
// follower vote for another leader before the old leader's lease ends.
func TestQueuedTicksDoNotShortenTheLease(t *testing.T) {
	for _, queued := range []int{0, 2} {
		t.Run(fmt.Sprintf("queued=%d", queued), func(t *testing.T) {
			s, eng, err := openCWStore(t, vfs.NewCrashableMem(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer eng.Close()
			if err := s.BootstrapRegion(cwDesc); err != nil {
				t.Fatal(err)
			}
			p := s.getPeer(1)
			et := s.cfg.ElectionTicks
			drain := func() []*pb.Message {
				var out []*pb.Message
				for p.rn.HasReady() {
					rd := p.rn.Ready()
					out = append(out, rd.Messages...)
					p.rn.Advance(rd)
				}
				return out
			}
			hb := &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(uint64(101)), To: new(uint64(102)), Term: new(uint64(6))}
			p.mb.ticks = queued
			p.mb.msgs = append(p.mb.msgs, cwMsg(hb))
			var mb mailbox
			p.handleInputs(&mb)
			drain()
			// The lease is 0.8 election timeouts; by then the follower has
			// counted at most this many ticks.
			for i := 0; i < et-2; i++ {
				p.mb.ticks = 1
				p.handleInputs(&mb)
				drain()
			}
			pv := &pb.Message{Type: pb.MsgPreVote.Enum(), From: new(uint64(103)), To: new(uint64(102)), Term: new(uint64(7)),
				Index: new(uint64(initLogIndex)), LogTerm: new(uint64(initLogTerm))}
			rm := cwMsg(pv)
			rm.FromPeer = &metapb.Peer{Id: 103, StoreId: 3}
			p.mb.msgs = append(p.mb.msgs, rm)
			p.handleInputs(&mb)
			for _, m := range drain() {
				if m.GetType() == pb.MsgPreVoteResp && !m.GetReject() {
					t.Fatalf("follower granted a pre-vote %d ticks after hearing its leader", et-2)
				}
			}
		})
	}
}

type hookSM struct {
	*kvSM
	onChange func(regionID uint64, r *metapb.Region)
}

func (h *hookSM) RegionChanged(id uint64, r *metapb.Region, st []byte) {
	if h.onChange != nil {
		h.onChange(id, r)
	}
	h.kvSM.RegionChanged(id, r, st)
}

// The power fails after the entry removing this replica applied but before
// the worker destroyed it: the restart finds a tombstone, not a replica whose
// descriptor does not list it.
func TestCrashBeforeDestroyingRemovedReplica(t *testing.T) {
	mem := vfs.NewCrashableMem()
	sm := &hookSM{kvSM: newKVSM()}
	s, eng, err := openCWStore(t, mem, sm)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.BootstrapRegion(cwDesc); err != nil {
		t.Fatal(err)
	}
	p := s.getPeer(1)
	cps, _ := proto.Marshal(&raftcmdpb.ChangePeers{Changes: []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_RemoveNode, Peer: &metapb.Peer{Id: 102, StoreId: 2}}}})
	cc := &pb.ConfChangeV2{Changes: []*pb.ConfChangeSingle{{Type: pb.ConfChangeRemoveNode.Enum(), NodeId: new(uint64(102))}},
		Context: encodeEnvelope(cmdChangePeers, 77, cwDesc.RegionEpoch, cps)}
	data, _ := proto.Marshal(cc)
	mapp := &pb.Message{Type: pb.MsgApp.Enum(), From: new(uint64(101)), To: new(uint64(102)), Term: new(uint64(6)),
		Index: new(uint64(initLogIndex)), LogTerm: new(uint64(initLogTerm)), Commit: new(uint64(6)),
		Entries: []*pb.Entry{{Term: new(uint64(6)), Index: new(uint64(6)), Type: pb.EntryConfChangeV2.Enum(), Data: data}}}
	p.mb.msgs = append(p.mb.msgs, cwMsg(mapp))
	var crashed *vfs.MemFS
	sm.onChange = func(id uint64, r *metapb.Region) {
		if r != nil && crashed == nil {
			// After the apply batch, before destroy(): another worker's
			// round syncs the WAL, then the power fails.
			if err := eng.DB.LogData(nil, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			crashed = mem.CrashClone(vfs.CrashCloneCfg{})
		}
	}
	w := &worker{store: s, peers: []*peer{p}}
	w.round()
	_ = eng.Close()
	if crashed == nil {
		t.Fatal("the removal was not applied")
	}
	s2, eng2, err := openCWStore(t, crashed, nil)
	if err != nil {
		t.Fatalf("store cannot restart: %v", err)
	}
	defer eng2.Close()
	if s2.RegionStatus(1) != nil {
		t.Fatal("the removed replica came back")
	}
}

// A read guard taken before the replica's data was replaced by a snapshot
// fails its check.
func TestReadGuardFailsAfterSnapshotReplacesData(t *testing.T) {
	s, eng, err := openCWStore(t, vfs.NewCrashableMem(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if err := s.BootstrapRegion(cwDesc); err != nil {
		t.Fatal(err)
	}
	p := s.getPeer(1)
	g := &ReadGuard{Region: cwDesc, p: p, gen: p.dataGen.Load()}
	if err := g.Check(); err != nil {
		t.Fatalf("fresh guard: %v", err)
	}
	receiveCWSnap(t, s, 10)
	var mb mailbox
	p.handleInputs(&mb)
	if rd := p.rn.Ready(); !raft.IsEmptySnap(rd.Snapshot) {
		p.applySnapshot(rd.Snapshot, rd.HardState)
	} else {
		t.Fatal("raft did not take the snapshot")
	}
	if err := g.Check(); err == nil {
		t.Fatal("a guard taken before a snapshot replaced the data still passes")
	}
}

// A store that just started grants no votes for a lease duration: it may
// have promised a leader not to, before it restarted.
func TestRestartedStoreDoesNotVoteAtOnce(t *testing.T) {
	s, eng, err := openCWStore(t, vfs.NewCrashableMem(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if err := s.BootstrapRegion(cwDesc); err != nil {
		t.Fatal(err)
	}
	p := s.getPeer(1)
	preVote := func() bool {
		pv := &pb.Message{Type: pb.MsgPreVote.Enum(), From: new(uint64(103)), To: new(uint64(102)), Term: new(uint64(7)),
			Index: new(uint64(initLogIndex)), LogTerm: new(uint64(initLogTerm))}
		rm := cwMsg(pv)
		rm.FromPeer = &metapb.Peer{Id: 103, StoreId: 3}
		p.mb.msgs = append(p.mb.msgs, rm)
		var mb mailbox
		p.handleInputs(&mb)
		answered := false
		for p.rn.HasReady() {
			rd := p.rn.Ready()
			for _, m := range rd.Messages {
				answered = answered || m.GetType() == pb.MsgPreVoteResp
			}
			p.rn.Advance(rd)
		}
		return answered
	}
	s.voteFence = monoNow() + int64(time.Hour) // as if it had just started
	if preVote() {
		t.Fatal("a just-started store answered a pre-vote")
	}
	s.voteFence = 0
	if !preVote() {
		t.Fatal("a store past its fence ignored a pre-vote")
	}
}
