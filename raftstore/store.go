package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// Store is the multi-Raft engine of one store process: every region replica
// it hosts, one pebble engine, a fixed worker pool, and a transport.
//
// Lock order: Store.mu → peer.mu → scheduler.mu (a leaf); Store.awakeMu and
// Store.snapMu are leaves.
type Store struct {
	cfg   Config
	eng   *Engine
	sm    StateMachine
	trans Transport
	log   *slog.Logger
	cache *entryCache

	onRoleChange func(regionID uint64, isLeader bool, term uint64)

	mu         sync.RWMutex
	peers      map[uint64]*peer
	tombstones map[uint64]tombstone
	// ranges indexes this store's initialized regions by key, to refuse a
	// snapshot or a new peer whose range overlaps a live region.
	ranges *region.RegionTree
	// splitting: regions a split applied on this store is creating. From
	// the moment the parent's narrowed range is indexed until the split
	// creates the child's replica, no snapshot may claim the child's range
	// and no message may create a replica of it: either would let a
	// replica acknowledge entries (a snapshot's, or appends to the log the
	// split's batch already wrote) and then be replaced by the split's
	// fresh replica at the initial log index, leaving the leader counting
	// entries the store no longer has.
	splitting map[uint64]bool

	awakeMu sync.Mutex
	awake   map[uint64]*peer

	sched *scheduler

	snaps     snapRegistry
	snapDir   string
	snapSem   chan struct{}
	snapSeq   atomic.Uint64
	snapMu    sync.Mutex
	recvSnaps map[uint64]*recvSnap

	proposalSeq atomic.Uint64

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
	stopped bool
	// voteFence: until this monotonic time the store grants no votes (see
	// stepMessage). Set before the workers start.
	voteFence int64

	stats   Stats
	metrics roundMetrics
}

type tombstone struct {
	peerID uint64
	// region is the descriptor the replica had when it ended: a merge
	// source's last (it takes no membership change once merging), or what
	// a removed replica knew.
	region *metapb.Region
}

// Options are what a Store is built from.
type Options struct {
	Config
	Engine       *Engine
	StateMachine StateMachine
	Transport    Transport
	Logger       *slog.Logger
	// OnRoleChange, if set, is called from the worker whenever a replica on
	// this store becomes or stops being leader. It must not block.
	OnRoleChange func(regionID uint64, isLeader bool, term uint64)
}

// NewStore opens a store on an engine and brings back every region replica
// the engine holds, finishing snapshot applications a crash interrupted. It
// does not start processing until Start.
func NewStore(opts Options) (*Store, error) {
	cfg := opts.Config
	cfg.fillDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if opts.Engine == nil || opts.StateMachine == nil || opts.Transport == nil {
		return nil, errors.New("raftstore: Engine, StateMachine and Transport are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg:          cfg,
		eng:          opts.Engine,
		sm:           opts.StateMachine,
		trans:        opts.Transport,
		log:          log.With("store", cfg.StoreID),
		cache:        newEntryCache(cfg.EntryCacheBytes),
		onRoleChange: opts.OnRoleChange,
		peers:        make(map[uint64]*peer),
		tombstones:   make(map[uint64]tombstone),
		ranges:       region.NewRegionTree(),
		splitting:    make(map[uint64]bool),
		metrics:      newRoundMetrics(),
		awake:        make(map[uint64]*peer),
		sched:        newScheduler(),
		snapDir:      opts.Engine.FS.PathJoin(opts.Engine.Dir, "snap"),
		snapSem:      make(chan struct{}, cfg.MaxConcurrentSnapshots),
		recvSnaps:    make(map[uint64]*recvSnap),
		ctx:          ctx,
		cancel:       cancel,
	}
	// Proposal IDs only need to be unique among this store's in-flight
	// proposals, but seeding from the clock keeps a restarted store from
	// reusing the IDs of entries it proposed before the restart.
	s.proposalSeq.Store(uint64(time.Now().UnixNano()))
	if err := mkdirAllDurable(s.eng.FS, s.snapDir); err != nil {
		cancel()
		return nil, err
	}
	if err := s.load(); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// load recreates peers from the region states in pebble.
func (s *Store) load() error {
	sp := regionMetaSpan()
	it, err := s.eng.DB.NewIter(&pebble.IterOptions{LowerBound: sp.Start, UpperBound: sp.End})
	if err != nil {
		return err
	}
	var states []*rspb.RegionLocalState
	var ids []uint64
	for valid := it.First(); valid; valid = it.Next() {
		id, ok := regionIDFromStateKey(it.Key())
		if !ok {
			continue
		}
		rs := &rspb.RegionLocalState{}
		if err := proto.Unmarshal(it.Value(), rs); err != nil {
			it.Close()
			return fmt.Errorf("raftstore: region %d: bad region state: %w", id, err)
		}
		states = append(states, rs)
		ids = append(ids, id)
	}
	if err := it.Close(); err != nil {
		return err
	}
	for i, rs := range states {
		id := ids[i]
		switch rs.GetState() {
		case rspb.PeerState_Tombstone:
			s.tombstones[id] = tombstone{peerID: rs.GetTombstonePeerId(), region: rs.GetRegion()}
			if err := s.sweepRaftState(id); err != nil {
				return err
			}
			continue
		case rspb.PeerState_Applying:
			s.log.Info("finishing interrupted snapshot", "region", id, "index", rs.GetApplyingSnapshot().GetIndex())
			wb := s.eng.DB.NewBatch()
			for _, dsp := range s.sm.DataSpans(rs.GetRegion().GetStartKey(), rs.GetRegion().GetEndKey()) {
				mustDeleteRange(wb, dsp)
			}
			mustCommit(wb, pebble.Sync)
			s.finishApplyingSnapshot(id, rs)
			rs = afterSnapshot(rs)
		}
		self := region.FindPeer(rs.GetRegion(), s.cfg.StoreID)
		if self == nil {
			return fmt.Errorf("raftstore: region %d: this store is not in its descriptor", id)
		}
		p, err := s.newPeer(id, self.GetId(), rs)
		if err != nil {
			return err
		}
		s.peers[id] = p
		if p.isInitialized() {
			if _, err := s.ranges.Update(p.region); err != nil {
				return fmt.Errorf("raftstore: region %d overlaps another region on this store: %w", id, err)
			}
		}
	}
	return s.removeSnapshotFiles()
}

// removeSnapshotFiles deletes every snapshot file. Called once every region
// that was applying a snapshot finished: whatever is left (received data
// never applied, a half-made ingestion link) belongs to nobody.
func (s *Store) removeSnapshotFiles() error {
	names, err := s.eng.FS.List(s.snapDir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".sst") || strings.HasSuffix(n, ".ingest") {
			_ = s.eng.FS.Remove(s.eng.FS.PathJoin(s.snapDir, n))
		}
	}
	return nil
}

// newPeer builds a peer from its region state; rs is nil for a new,
// uninitialized peer.
func (s *Store) newPeer(regionID, peerID uint64, rs *rspb.RegionLocalState) (*peer, error) {
	return s.newPeerAtTerm(regionID, peerID, rs, 0)
}

// newPeerAtTerm is newPeer with raft's term raised to at least termFloor.
func (s *Store) newPeerAtTerm(regionID, peerID uint64, rs *rspb.RegionLocalState, termFloor uint64) (*peer, error) {
	if rs == nil {
		rs = &rspb.RegionLocalState{Region: &metapb.Region{Id: regionID, Peers: []*metapb.Peer{{Id: peerID, StoreId: s.cfg.StoreID}}}}
	}
	st, err := loadPeerStorage(s.eng.DB, s.cache, regionID, rs)
	if err != nil {
		return nil, err
	}
	if termFloor > st.hardState.GetTerm() && st.hardState != nil {
		// The replica a split replaces kept its term in memory only; the
		// new one starts there and writes it down before raft can act on
		// it: raft emits no hard state until the term, vote or commit
		// changes, so entries it acknowledges at this term would otherwise
		// sit on disk under an older term. Unsynced is enough: the WAL is
		// ordered, and every acknowledgement follows a synced round.
		st.hardState.Term = new(termFloor)
		wb := s.eng.DB.NewBatch()
		mustSetProto(wb, hardStateKey(regionID), st.hardState)
		mustCommit(wb, pebble.NoSync)
	}
	p := &peer{
		store:       s,
		regionID:    regionID,
		peerID:      peerID,
		storage:     st,
		region:      rs.GetRegion(),
		peerState:   rs.GetState(),
		peerCache:   make(map[uint64]*metapb.Peer),
		pendingByID: make(map[uint64]*proposal),
		closed:      make(chan struct{}),
	}
	st.snapshot = p.generateSnapshot
	if err := p.newRawNode(); err != nil {
		return nil, err
	}
	p.appliedIdx.Store(st.appliedIndex)
	p.commitIdx.Store(st.hardState.GetCommit())
	p.publishStatus()
	return p, nil
}

// Start begins processing: the workers, and the ticker that drives every
// awake region.
func (s *Store) Start() {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return
	}
	s.started = true
	s.voteFence = monoNow() + int64(s.cfg.leaseDuration())
	ps := make([]*peer, 0, len(s.peers))
	for _, p := range s.peers {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	for _, p := range ps {
		s.setAwake(p, true)
		if p.isInitialized() {
			s.sm.RegionChanged(p.regionID, p.region, p.storage.smState)
		}
	}
	for i := 0; i < s.cfg.Workers; i++ {
		s.wg.Add(1)
		go s.runWorker()
	}
	s.wg.Add(1)
	go s.runTicker()
}

// Stop stops processing and fails everything waiting. It does not close the
// engine or the transport, which belong to the caller.
func (s *Store) Stop() {
	s.cancel()
	s.sched.stop()
	s.wg.Wait()
	s.mu.Lock()
	s.stopped = true
	ps := make([]*peer, 0, len(s.peers))
	for _, p := range s.peers {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	stopped := errors.New("raftstore: store stopped")
	for _, p := range ps {
		p.mu.Lock()
		mb := p.mb
		p.mb = mailbox{destroyed: true}
		p.mu.Unlock()
		for _, pr := range mb.props {
			pr.finish(nil, stopped)
		}
		for _, r := range mb.reads {
			r.finish(nil, stopped)
		}
		p.failAllProposals(stopped, stopped)
		p.failAllReads(stopped)
		p.close()
	}
	s.snaps.gc(0)
}

func (s *Store) runTicker() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	gcEvery := max(1, int(time.Minute/s.cfg.TickInterval))
	var ps []*peer
	for n := 1; ; n++ {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.stats.TickerFires.Add(1)
		ps = ps[:0]
		s.awakeMu.Lock()
		for _, p := range s.awake {
			ps = append(ps, p)
		}
		s.awakeMu.Unlock()
		for _, p := range ps {
			p.push(func(mb *mailbox) { mb.ticks++ })
		}
		if n%gcEvery == 0 {
			s.snaps.gc(s.cfg.SnapshotTTL)
			s.gcRecvSnaps(s.cfg.SnapshotTTL)
		}
	}
}

func (s *Store) setAwake(p *peer, awake bool) {
	s.awakeMu.Lock()
	if awake {
		s.awake[p.regionID] = p
	} else if s.awake[p.regionID] == p {
		delete(s.awake, p.regionID)
	}
	s.awakeMu.Unlock()
}

func (s *Store) getPeer(regionID uint64) *peer {
	s.mu.RLock()
	p := s.peers[regionID]
	s.mu.RUnlock()
	return p
}

func (s *Store) nextProposalID() uint64 { return s.proposalSeq.Add(1) }

// indexRegion updates the store's key index for p's descriptor. Called from
// the worker; takes Store.mu.
func (s *Store) indexRegion(p *peer) {
	if !p.isInitialized() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peers[p.regionID] != p {
		return
	}
	if _, err := s.ranges.Update(p.region); err != nil {
		panic(fmt.Sprintf("raftstore: region %d: %v", p.regionID, err))
	}
}

// canTakeRange reports whether region regionID may cover reg's range on this
// store: no other initialized region overlaps it, except merge sources
// waiting for regionID that reg (newer) already absorbed; those are
// returned.
func (s *Store) canTakeRange(regionID uint64, reg *metapb.Region) (absorbed []*metapb.Region, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.splitting[regionID] {
		return nil, false // the split that creates it goes first
	}
	for _, o := range s.ranges.Overlapping(reg.GetStartKey(), reg.GetEndKey()) {
		if o.GetId() == regionID {
			continue
		}
		var st *RegionStatus
		if op := s.peers[o.GetId()]; op != nil {
			st = op.status.Load()
		}
		if st == nil || st.Merge == nil || st.Merge.Target.GetId() != regionID ||
			st.Region.GetRegionEpoch().GetVersion() >= reg.GetRegionEpoch().GetVersion() {
			if op := s.peers[o.GetId()]; op != nil && st != nil && st.Initialized &&
				st.Region.GetRegionEpoch().GetVersion() < reg.GetRegionEpoch().GetVersion() {
				// An older region in the way: if it is a leftover, removed
				// while this store was away, waking it makes it campaign,
				// and its former peers then tell it to go
				// (collectFromTombstone, isStaleSender). A hibernating one
				// would otherwise sleep on and block this range for good.
				op.pushOp(func(p *peer) { p.wake() })
			}
			return nil, false
		}
		absorbed = append(absorbed, st.Region)
	}
	return absorbed, true
}

// BootstrapRegion creates this store's replica of a new region whose log
// starts empty at initLogIndex, with desc as its descriptor. Every store in
// desc bootstraps the same descriptor (or the region starts with one replica
// and grows by ChangePeers). desc's epoch must be at least 1/1.
func (s *Store) BootstrapRegion(desc *metapb.Region) error {
	return s.BootstrapRegions([]*metapb.Region{desc})
}

// BootstrapRegions bootstraps several regions with one synced write. Nothing
// is created unless every descriptor is valid.
func (s *Store) BootstrapRegions(descs []*metapb.Region) error {
	type boot struct {
		rs   *rspb.RegionLocalState
		self *metapb.Peer
	}
	var boots []boot
	check := region.NewRegionTree()
	for _, desc := range descs {
		rs, self, err := s.bootstrapState(desc)
		if err != nil {
			return err
		}
		if _, err := check.Update(desc); err != nil || check.Len() != len(boots)+1 {
			return fmt.Errorf("raftstore: bootstrap: region %d overlaps another region being bootstrapped", desc.GetId())
		}
		boots = append(boots, boot{rs, self})
	}
	s.mu.Lock()
	var created []*peer
	defer func() {
		s.mu.Unlock()
		// Outside Store.mu: the state machine may call back into the store.
		for _, p := range created {
			s.sm.RegionChanged(p.regionID, p.region, p.storage.smState)
			s.sched.enqueue(p)
		}
	}()
	for _, b := range boots {
		reg := b.rs.GetRegion()
		if s.peers[reg.GetId()] != nil {
			return fmt.Errorf("raftstore: bootstrap: region %d already exists", reg.GetId())
		}
		if len(s.ranges.Overlapping(reg.GetStartKey(), reg.GetEndKey())) > 0 {
			return fmt.Errorf("raftstore: bootstrap: region %d overlaps an existing region", reg.GetId())
		}
	}
	wb := s.eng.DB.NewBatch()
	for _, b := range boots {
		id := b.rs.GetRegion().GetId()
		mustSetProto(wb, regionStateKey(id), b.rs)
		mustSetProto(wb, hardStateKey(id), &pb.HardState{Term: new(uint64(initLogTerm)), Commit: new(uint64(initLogIndex))})
		mustSetProto(wb, truncatedStateKey(id), &rspb.RaftTruncatedState{Index: initLogIndex, Term: initLogTerm})
		mustSetProto(wb, applyStateKey(id), &rspb.RaftApplyState{AppliedIndex: initLogIndex, AppliedTerm: initLogTerm})
	}
	mustCommit(wb, pebble.Sync)
	for _, b := range boots {
		id := b.rs.GetRegion().GetId()
		p, err := s.newPeer(id, b.self.GetId(), b.rs)
		if err != nil {
			return err
		}
		s.peers[id] = p
		if _, err := s.ranges.Update(p.region); err != nil {
			panic(err)
		}
		delete(s.tombstones, id)
		if s.started {
			s.setAwake(p, true)
			created = append(created, p)
		}
	}
	return nil
}

// bootstrapState validates a bootstrap descriptor and builds its state.
func (s *Store) bootstrapState(desc *metapb.Region) (*rspb.RegionLocalState, *metapb.Peer, error) {
	if desc.GetRegionEpoch().GetConfVer() == 0 || desc.GetRegionEpoch().GetVersion() == 0 {
		return nil, nil, errors.New("raftstore: bootstrap: region epoch must be at least conf_ver 1, version 1")
	}
	if !region.ValidRange(desc.GetStartKey(), desc.GetEndKey()) {
		return nil, nil, errors.New("raftstore: bootstrap: start key must be below end key")
	}
	self := region.FindPeer(desc, s.cfg.StoreID)
	if self == nil {
		return nil, nil, fmt.Errorf("raftstore: bootstrap: store %d is not in region %d", s.cfg.StoreID, desc.GetId())
	}
	cs := &pb.ConfState{}
	for _, m := range desc.GetPeers() {
		switch m.GetRole() {
		case metapb.PeerRole_Voter:
			cs.Voters = append(cs.Voters, m.GetId())
		case metapb.PeerRole_Learner:
			cs.Learners = append(cs.Learners, m.GetId())
		default:
			return nil, nil, errors.New("raftstore: bootstrap: peers must be voters or learners")
		}
	}
	if len(cs.Voters) == 0 {
		return nil, nil, errors.New("raftstore: bootstrap: region needs a voter")
	}
	return &rspb.RegionLocalState{State: rspb.PeerState_Normal, Region: proto.Clone(desc).(*metapb.Region), ConfState: cs}, self, nil
}

// HandleRaftMessage delivers a message from another store to the addressed
// replica, creating an uninitialized replica when a leader or candidate
// reaches a region this store does not have yet.
func (s *Store) HandleRaftMessage(rm *rspb.RaftMessage) {
	if rm.GetToPeer().GetStoreId() != s.cfg.StoreID {
		return
	}
	s.stats.MsgsReceived.Add(1)
	p := s.getPeer(rm.GetRegionId())
	if p == nil && s.collectFromTombstone(rm) {
		return
	}
	if p == nil || p.peerID != rm.GetToPeer().GetId() {
		if p = s.maybeCreatePeer(rm); p == nil {
			return
		}
	}
	p.push(func(mb *mailbox) { mb.msgs = append(mb.msgs, rm) })
}

// collectFromTombstone answers a message to a replica this store no longer
// has, from a replica that was removed from the region before this store's
// replica ended, with GcPeer: the sender destroys itself, as it would on
// hearing from a live member (isStaleSender). A region merged away has no
// live member left to say so, and the leftover replica's range would
// otherwise block, forever, the replicas of the regions that now cover it
// on its store (canTakeRange refuses their snapshots).
func (s *Store) collectFromTombstone(rm *rspb.RaftMessage) bool {
	s.mu.RLock()
	t, ok := s.tombstones[rm.GetRegionId()]
	s.mu.RUnlock()
	if !ok || rm.GetToPeer().GetId() > t.peerID || !staleSender(t.region, rm) {
		return false
	}
	if rm.GetExtra().GetType() == rspb.ExtraMessageType_GcPeer {
		return true // never answer an answer
	}
	s.stats.MsgsSent.Add(1)
	s.trans.Send(rm.GetFromPeer().GetStoreId(), &rspb.RaftMessage{
		RegionId:    rm.GetRegionId(),
		FromPeer:    &metapb.Peer{Id: t.peerID, StoreId: s.cfg.StoreID},
		ToPeer:      rm.GetFromPeer(),
		RegionEpoch: t.region.GetRegionEpoch(),
		StartKey:    t.region.GetStartKey(),
		EndKey:      t.region.GetEndKey(),
		Extra:       &rspb.ExtraMessage{Type: rspb.ExtraMessageType_GcPeer},
	})
	return true
}

// maybeCreatePeer decides what to do with a message for a replica this store
// does not have (or has under another peer ID).
func (s *Store) maybeCreatePeer(rm *rspb.RaftMessage) *peer {
	regionID, to := rm.GetRegionId(), rm.GetToPeer()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.stopped {
		return nil
	}
	if p := s.peers[regionID]; p != nil {
		switch {
		case p.peerID == to.GetId():
			return p
		case p.peerID < to.GetId():
			// The region removed our old replica and added a new one here:
			// the old one is stale. Destroy it; the sender retries.
			p.pushOp(func(p *peer) { p.destroy("replaced by a newer peer") })
		}
		return nil
	}
	if t, ok := s.tombstones[regionID]; ok && to.GetId() <= t.peerID {
		return nil
	}
	if s.splitting[regionID] {
		// A split applying here creates this replica in a moment, from the
		// state its batch writes. A replica made now could load that state
		// half-made (the log at the split's initial index, no range),
		// accept entries, acknowledge them and then be replaced by the
		// split's: the sender retries instead.
		return nil
	}
	if rm.GetExtra().GetType() != rspb.ExtraMessageType_None || rm.GetMessage() == nil {
		return nil
	}
	switch rm.GetMessage().GetType() {
	case pb.MsgVote, pb.MsgPreVote, pb.MsgApp, pb.MsgHeartbeat, pb.MsgSnap:
	default:
		return nil
	}
	// A message from a region whose range a newer local region already
	// holds is from a stale replica.
	for _, o := range s.ranges.Overlapping(rm.GetStartKey(), rm.GetEndKey()) {
		if o.GetRegionEpoch().GetVersion() > rm.GetRegionEpoch().GetVersion() {
			return nil
		}
	}
	p, err := s.newPeer(regionID, to.GetId(), nil)
	if err != nil {
		s.log.Error("creating peer", "region", regionID, "err", err)
		return nil
	}
	s.peers[regionID] = p
	delete(s.tombstones, regionID)
	s.setAwake(p, true)
	s.stats.PeersCreated.Add(1)
	return p
}

// destroy removes the replica from this store: its data and raft state are
// deleted and a tombstone remembers it, so stale messages cannot revive it.
// Runs on the worker. The replica stops serving (lease revoked, read guards
// invalid, status uninitialized) before anything is deleted.
func (p *peer) destroy(reason string) { p.destroyWith(reason, false) }

// destroyWith ends the replica. Unless merged it also removes its data and
// writes its tombstone (a merge wrote the source's already, and its data
// stays with the target).
func (p *peer) destroyWith(reason string, merged bool) {
	if p.destroyed {
		return
	}
	s := p.store
	s.log.Info("destroying peer", "region", p.regionID, "peer", p.peerID, "reason", reason)
	p.mu.Lock()
	mb := p.mb
	p.mb = mailbox{destroyed: true}
	p.mu.Unlock()
	p.destroyed = true
	p.revokeLease()
	p.dataGen.Add(1)
	if st := p.status.Load(); st != nil {
		unpublished := *st
		unpublished.Initialized = false
		p.status.Store(&unpublished)
	}
	gone := region.RegionNotFound(p.regionID)
	for _, pr := range mb.props {
		pr.finish(nil, gone)
	}
	for _, r := range mb.reads {
		r.finish(nil, gone)
	}
	// A command in the log may yet be committed by the other replicas,
	// except a merge source's: every replica applied the PrepareMerge, so
	// nothing after it ever applies anywhere.
	inLog := ErrOutcomeUnknown
	if merged {
		inLog = gone
	}
	p.failAllProposals(gone, inLog)
	p.failAllReads(gone)
	p.dropClaimedSnap()
	p.close()

	if !merged {
		wb := s.eng.DB.NewBatch()
		p.writeTombstone(wb)
		mustCommit(wb, pebble.Sync)
	}

	s.mu.Lock()
	if s.peers[p.regionID] == p {
		delete(s.peers, p.regionID)
		s.ranges.Remove(p.regionID)
	}
	s.tombstones[p.regionID] = tombstone{peerID: p.peerID, region: p.region}
	s.mu.Unlock()
	s.setAwake(p, false)
	s.cache.drop(p.regionID)
	s.stats.PeersDestroyed.Add(1)
	s.sm.RegionChanged(p.regionID, nil, nil)
}

// sweepRaftState removes raft state left under a tombstone: a merge
// source's replica can still write some (a hard state from a message it
// was handling) between the merge's batch and its own end.
func (s *Store) sweepRaftState(regionID uint64) error {
	sp := raftLocalSpan(regionID)
	it, err := s.eng.DB.NewIter(&pebble.IterOptions{LowerBound: sp.Start, UpperBound: sp.End})
	if err != nil {
		return err
	}
	stray := it.First()
	if err := it.Close(); err != nil {
		return err
	}
	if !stray {
		return nil
	}
	wb := s.eng.DB.NewBatch()
	mustDeleteRange(wb, sp)
	mustCommit(wb, pebble.NoSync)
	return nil
}

// writeTombstone writes into wb the removal of everything the replica holds
// and the tombstone that replaces it.
func (p *peer) writeTombstone(wb *pebble.Batch) {
	if p.isInitialized() {
		for _, sp := range p.store.sm.DataSpans(p.region.GetStartKey(), p.region.GetEndKey()) {
			mustDeleteRange(wb, sp)
		}
	}
	mustDeleteRange(wb, raftLocalSpan(p.regionID))
	mustSetProto(wb, regionStateKey(p.regionID), &rspb.RegionLocalState{
		State: rspb.PeerState_Tombstone, Region: p.region, TombstonePeerId: p.peerID})
}

// RegionStatus returns the published status of this store's replica of
// regionID, or nil.
func (s *Store) RegionStatus(regionID uint64) *RegionStatus {
	p := s.getPeer(regionID)
	if p == nil {
		return nil
	}
	return p.status.Load()
}

// TombstoneEpoch returns the epoch regionID had when its replica on this
// store was removed or merged away, or nil when the store has no tombstone
// for it.
func (s *Store) TombstoneEpoch(regionID uint64) *metapb.RegionEpoch {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if t, ok := s.tombstones[regionID]; ok {
		return t.region.GetRegionEpoch()
	}
	return nil
}

// Regions returns the status of every replica on this store.
func (s *Store) Regions() []*RegionStatus {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*RegionStatus, 0, len(s.peers))
	for _, p := range s.peers {
		out = append(out, p.status.Load())
	}
	return out
}

// LeaderStats is what a region's leader reports about its replicas.
type LeaderStats struct {
	Region *metapb.Region
	Leader *metapb.Peer
	Term   uint64
	// DownPeers: not heard from for DownPeerTicks; DownFor is how long.
	DownPeers []*metapb.Peer
	DownFor   []time.Duration
	// PendingPeers: behind the leader's commit index (catching up).
	PendingPeers []*metapb.Peer
}

// LeaderStats returns the replica health of regionID, if this store leads it.
func (s *Store) LeaderStats(ctx context.Context, regionID uint64) (*LeaderStats, error) {
	p := s.getPeer(regionID)
	if p == nil {
		return nil, region.RegionNotFound(regionID)
	}
	ch := make(chan *LeaderStats, 1)
	if !p.pushOp(func(p *peer) { ch <- p.leaderStats() }) {
		return nil, region.RegionNotFound(regionID)
	}
	select {
	case ls := <-ch:
		if ls == nil {
			return nil, region.NotLeader(regionID, nil)
		}
		return ls, nil
	case <-p.closed:
		return nil, region.RegionNotFound(regionID)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *peer) leaderStats() *LeaderStats {
	if !p.isLeader() {
		return nil
	}
	st := p.rn.Status()
	ls := &LeaderStats{Region: p.region, Leader: p.selfPeer(), Term: st.GetTerm()}
	tick := p.store.cfg.TickInterval
	for id, pr := range st.Progress {
		if id == p.peerID {
			continue
		}
		m := region.FindPeerByID(p.region, id)
		if m == nil {
			continue
		}
		heard, known := p.hib.lastHeard[id]
		if since := p.hib.ticks - heard; !known || since >= uint64(p.store.cfg.DownPeerTicks) {
			ls.DownPeers = append(ls.DownPeers, m)
			ls.DownFor = append(ls.DownFor, time.Duration(since)*tick)
			continue
		}
		if pr.Match < st.GetCommit() {
			ls.PendingPeers = append(ls.PendingPeers, m)
		}
	}
	return ls
}

// StoreID returns this store's ID.
func (s *Store) StoreID() uint64 { return s.cfg.StoreID }

// Engine returns the store's engine.
func (s *Store) Engine() *Engine { return s.eng }

// Stats returns the store's counters.
func (s *Store) Stats() *Stats { return &s.stats }

// Stats counts what a store did since it started.
type Stats struct {
	Rounds, Syncs, Proposals, Applied, Ticks, TickerFires          atomic.Uint64
	MsgsSent, MsgsReceived, MsgsDropped                            atomic.Uint64
	ReadIndexes, LeaseReads                                        atomic.Uint64
	SnapshotsGenerated, SnapshotsSent, SnapshotSendFailures        atomic.Uint64
	SnapshotsReceived, SnapshotsApplied                            atomic.Uint64
	Hibernations, Wakes, PeersCreated, PeersDestroyed, Truncations atomic.Uint64
	Splits                                                         atomic.Uint64
	MergesPrepared, MergesCommitted, MergesRolledBack              atomic.Uint64
}

// RegionIDByKey returns the ID of this store's initialized region holding
// key, or 0 when none here does.
func (s *Store) RegionIDByKey(key []byte) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.ranges.Search(key)
	if r == nil || !region.ContainsKey(r, key) {
		return 0
	}
	return r.GetId()
}
