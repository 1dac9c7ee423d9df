package raftstore

import (
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/proto/metapb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// peer is one replica of a region on this store. Everything but the mailbox
// and the published status belongs to the worker currently processing the
// peer (the scheduler guarantees there is at most one).
type peer struct {
	store    *Store
	regionID uint64
	peerID   uint64

	// schedState is guarded by scheduler.mu.
	schedState uint8

	// mu guards mb and earlyVotes. Lock order: Store.mu before peer.mu.
	mu sync.Mutex
	mb mailbox
	// earlyVotes: the last vote requests this replica received while
	// uninitialized. A split that initializes it hands them to the
	// initialized replica (see createSplitPeer).
	earlyVotes []*rspb.RaftMessage

	// ---- worker-owned ----
	rn      *raft.RawNode
	storage *peerStorage
	// region is the descriptor as of the applied index; replaced, never
	// mutated, so it can be published.
	region    *metapb.Region
	peerState rspb.PeerState
	// peerCache knows peers of this region that are not (or not yet) in
	// region, learned from incoming messages, so replies can be routed.
	peerCache map[uint64]*metapb.Peer

	rd      raft.Ready
	hasRd   bool
	leader  uint64 // raft leader peer ID, 0 if unknown
	term    uint64
	role    raft.StateType
	leaderT int64 // monotonic time this peer last became leader

	// batch: this round's writes, proposed together by flushProposals.
	batch []*proposal
	// proposals proposed in the current round, waiting for their index.
	proposed []*proposal
	// pending proposals with an index, in proposal order, waiting for apply.
	pending     []*proposal
	pendingByID map[uint64]*proposal
	// pendingConfIndex is the index of the last conf change proposed here.
	pendingConfIndex uint64

	reads readState

	hib hibernation

	// What apply did this round, acted on after the apply batch commits.
	destroyAfterApply bool
	regionChanged     bool
	// termLeaseStarted: the lease was started from this term's first entry.
	termLeaseStarted bool
	// destroyed: the replica is gone; the worker skips it.
	destroyed bool

	// The last generated snapshot, reused while the applied index stands.
	lastSnap   *pb.Snapshot
	lastSnapID uint64
	// splitChildren: regions a split applied this round made, created on
	// this store once the apply batch committed; splitWasLeader: whether
	// this replica led the parent then (its children campaign at once).
	splitChildren  []*metapb.Region
	splitWasLeader bool
	// mergedSources: regions a CommitMerge applied this round absorbed;
	// their replicas here leave once the apply batch committed.
	mergedSources []*metapb.Region
	// mergedAway is set (by the target's worker) once this replica's
	// region was absorbed by a merge: it must write nothing more.
	mergedAway atomic.Bool
	// replacedBySplit is set (by the parent's worker) when a split
	// replaced this uninitialized replica with the one it created: from
	// its next round on it does nothing more. (It writes nothing to disk
	// in any round: see the Readies step of a round.)
	replacedBySplit atomic.Bool

	// claimedSnap: received snapshot data this peer stepped into raft.
	claimedSnap *recvSnap
	// applying: an apply batch with this peer's entries is not committed
	// yet, so pebble is behind the in-memory applied state.
	applying bool

	// ---- published for lock-free readers ----
	// closed is closed when the peer is destroyed or the store stops.
	closed    chan struct{}
	closeOnce sync.Once
	// dataGen changes whenever the replica's data is replaced or removed
	// (snapshot, destroy): a read that started before must not be trusted.
	dataGen     atomic.Uint64
	status      atomic.Pointer[RegionStatus]
	leaseExpiry atomic.Int64 // monotonic ns; a lease read is allowed before it
	appliedIdx  atomic.Uint64
	commitIdx   atomic.Uint64
}

// mailbox is what other goroutines hand a peer; the worker drains it each
// round.
type mailbox struct {
	msgs      []*rspb.RaftMessage
	props     []*proposal
	reads     []*readRequest
	ops       []func(*peer)
	ticks     int
	destroyed bool
}

// RegionStatus is a point-in-time view of a replica, published by its worker.
type RegionStatus struct {
	Region      *metapb.Region
	PeerID      uint64
	Leader      *metapb.Peer // nil when unknown
	Term        uint64
	Commit      uint64
	Applied     uint64
	LastIndex   uint64
	RaftState   raft.StateType
	Hibernating bool
	Initialized bool
	// Ticks counts raft ticks this replica has processed; a hibernating
	// replica's count stands still.
	Ticks uint64
	// Merge is set while the replica is a merge source in Merging state.
	Merge *PreparedMerge
}

// IsLeader reports whether the replica was leader when the status was taken.
func (s *RegionStatus) IsLeader() bool { return s.RaftState == raft.StateLeader }

// push hands work to the peer and schedules it. It reports false when the
// peer was destroyed.
func (p *peer) push(fn func(mb *mailbox)) bool {
	p.mu.Lock()
	if p.mb.destroyed {
		p.mu.Unlock()
		return false
	}
	fn(&p.mb)
	p.mu.Unlock()
	p.store.sched.enqueue(p)
	return true
}

// pushOp runs fn on the peer's worker. It reports false when the peer was
// destroyed.
func (p *peer) pushOp(fn func(*peer)) bool {
	return p.push(func(mb *mailbox) { mb.ops = append(mb.ops, fn) })
}

// close marks the peer gone for waiters.
func (p *peer) close() { p.closeOnce.Do(func() { close(p.closed) }) }

// takeMailbox swaps out the mailbox contents.
func (p *peer) takeMailbox(into *mailbox) {
	p.mu.Lock()
	*into, p.mb = p.mb, mailbox{
		msgs:  into.msgs[:0],
		props: into.props[:0],
		reads: into.reads[:0],
		ops:   into.ops[:0],
	}
	p.mu.Unlock()
}

func (p *peer) isLeader() bool { return p.role == raft.StateLeader }

func (p *peer) isInitialized() bool { return p.storage.isInitialized() }

// findPeer returns the metadata of peer id of this region.
func (p *peer) findPeer(id uint64) *metapb.Peer {
	if m := region.FindPeerByID(p.region, id); m != nil {
		return m
	}
	return p.peerCache[id]
}

func (p *peer) selfPeer() *metapb.Peer {
	if m := region.FindPeerByID(p.region, p.peerID); m != nil {
		return m
	}
	return &metapb.Peer{Id: p.peerID, StoreId: p.store.cfg.StoreID}
}

func (p *peer) leaderPeer() *metapb.Peer {
	if p.leader == 0 {
		return nil
	}
	return p.findPeer(p.leader)
}

// publishStatus refreshes the published status if anything changed.
func (p *peer) publishStatus() {
	old := p.status.Load()
	hs := p.rn.BasicStatus()
	if old != nil && old.Region == p.region && old.Term == hs.GetTerm() && old.Commit == hs.GetCommit() &&
		old.Applied == p.storage.appliedIndex && old.RaftState == hs.RaftState &&
		old.Leader.GetId() == hs.Lead && old.Hibernating == p.hib.asleep &&
		old.LastIndex == p.storage.lastIndex && old.Ticks == p.hib.ticks {
		return
	}
	var merge *PreparedMerge
	if ms := p.storage.regionState.GetMergeState(); p.isMerging() && ms != nil {
		merge = &PreparedMerge{Source: p.region, Target: ms.GetTarget(), Commit: ms.GetCommit()}
	}
	p.status.Store(&RegionStatus{
		Merge:       merge,
		Region:      p.region,
		PeerID:      p.peerID,
		Leader:      p.leaderPeer(),
		Term:        hs.GetTerm(),
		Commit:      hs.GetCommit(),
		Applied:     p.storage.appliedIndex,
		LastIndex:   p.storage.lastIndex,
		RaftState:   hs.RaftState,
		Hibernating: p.hib.asleep,
		Initialized: p.isInitialized(),
		Ticks:       p.hib.ticks,
	})
}

// newRawNode creates the raft instance for the peer from its storage.
func (p *peer) newRawNode() error {
	cfg := p.store.cfg
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        p.peerID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   p.storage,
		Applied:                   p.storage.appliedIndex,
		MaxSizePerMsg:             cfg.MaxSizePerMsg,
		MaxCommittedSizePerReady:  cfg.MaxSizePerMsg * 8,
		MaxUncommittedEntriesSize: cfg.MaxUncommittedBytes,
		MaxInflightMsgs:           cfg.MaxInflightMsgs,
		CheckQuorum:               true,
		PreVote:                   true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		// A follower answers proposals with NotLeader; forwarding would
		// let one command land at two indexes after a leader change.
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger,
	})
	if err != nil {
		return err
	}
	p.rn = rn
	st := rn.BasicStatus()
	p.term, p.leader, p.role = st.GetTerm(), st.Lead, st.RaftState
	return nil
}

// procStart anchors the monotonic clock used for leases.
var procStart = time.Now()

// monoNow is monotonic nanoseconds since process start.
func monoNow() int64 { return int64(time.Since(procStart)) }

// isEmptyMsg is true for a hard state that raft leaves nil.
func isEmptySnap(s *pb.Snapshot) bool { return raft.IsEmptySnap(s) }
