package raftstore

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/proto/metapb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// A worker runs rounds. One round serves a batch of regions:
//
//  1. step what arrived (messages, admin ops, proposals, reads, ticks);
//  2. take each region's Ready; send what may go before persisting (a
//     leader's appends and heartbeats, Raft thesis 10.2.1); put every
//     region's entries and hard state in one pebble batch;
//  3. commit that batch with one sync;
//  4. send what had to wait for it (append and vote responses);
//  5. apply every region's committed entries into one apply batch, commit it
//     unsynced, then complete proposals and reads;
//  6. Advance.
type worker struct {
	store   *Store
	peers   []*peer
	requeue []bool
	mb      mailbox
	results []applyResult
	truncs  []truncation
}

type truncation struct {
	p           *peer
	index, term uint64
}

func (s *Store) runWorker() {
	defer s.wg.Done()
	w := &worker{store: s}
	for {
		w.peers = s.sched.next(w.peers[:0], s.cfg.MaxRegionsPerRound)
		if w.peers == nil {
			return
		}
		w.round()
		w.requeue = w.requeue[:0]
		for _, p := range w.peers {
			w.requeue = append(w.requeue, !p.destroyed && p.rn.HasReady())
		}
		s.sched.done(w.peers, w.requeue)
		clear(w.peers)
	}
}

func (w *worker) round() {
	s := w.store
	s.stats.Rounds.Add(1)

	// 1. Inputs.
	for _, p := range w.peers {
		p.handleInputs(&w.mb)
	}

	// 2. Readies.
	wb := s.eng.DB.NewBatch()
	sync := false
	anyReady := false
	readyPeers, persisted, committed := 0, 0, 0
	for _, p := range w.peers {
		if p.destroyed || p.mergedAway.Load() || p.replacedBySplit.Load() || !p.rn.HasReady() {
			continue
		}
		anyReady = true
		p.rd = p.rn.Ready()
		p.hasRd = true
		readyPeers++
		persisted += len(p.rd.Entries)
		committed += len(p.rd.CommittedEntries)
		p.onSoftState(p.rd.SoftState)
		if hs := p.rd.HardState; hs != nil {
			// Published before any message of this Ready leaves, so a lease
			// read never misses a commit another replica already served.
			p.commitIdx.Store(hs.GetCommit())
			p.term = hs.GetTerm()
		}
		if !isEmptySnap(p.rd.Snapshot) {
			p.applySnapshot(p.rd.Snapshot, p.rd.HardState)
		}
		if p.isInitialized() {
			p.storage.append(wb, p.rd.Entries)
			p.storage.setHardState(wb, p.rd.HardState)
			sync = sync || p.rd.MustSync
		} else {
			if len(p.rd.Entries) > 0 {
				// Its log is empty and every leader's starts after the
				// initial index, so only a snapshot can give it entries.
				panic(fmt.Sprintf("raftstore: region %d: uninitialized replica got %d entries", p.regionID, len(p.rd.Entries)))
			}
			// An uninitialized replica persists nothing (a snapshot
			// applied above initialized it already). It grants no vote
			// (stepMessage) and acknowledges no entry (its log is
			// empty), so its term backs no promise and may be forgotten
			// in a crash; it is recreated by the next message after a
			// restart. And a split that replaces it while this round is
			// in flight writes the new replica's hard state: a late write
			// of this one's would overwrite it, and with it a vote the new
			// replica may have cast already.
			p.storage.noteHardState(p.rd.HardState)
		}
		p.assignIndexes(p.rd.Entries)
		p.sendMessages(p.rd.Messages, false)
	}
	if !anyReady {
		_ = wb.Close()
		w.finishRound()
		return
	}

	s.metrics.readyPeers.Observe(float64(readyPeers))
	if persisted > 0 {
		s.metrics.persistEntries.Observe(float64(persisted))
	}
	if committed > 0 {
		s.metrics.applyEntries.Observe(float64(committed))
	}

	// 3. Persist.
	if wb.Empty() {
		_ = wb.Close()
	} else {
		opts := pebble.NoSync
		if sync {
			opts = pebble.Sync
			s.stats.Syncs.Add(1)
		}
		start := time.Now()
		mustCommit(wb, opts)
		s.metrics.syncSeconds.Observe(time.Since(start).Seconds())
	}

	// 4. Messages that acknowledge persisted state.
	for _, p := range w.peers {
		if p.hasRd {
			p.sendMessages(p.rd.Messages, true)
		}
	}

	// 5. Apply.
	ab := &ApplyBatch{Batch: s.eng.DB.NewIndexedBatch()}
	results := w.results[:0]
	truncs := w.truncs[:0]
	for _, p := range w.peers {
		if !p.hasRd {
			continue
		}
		p.onReadStates()
		results = p.applyEntries(ab, p.rd.CommittedEntries, results)
		if len(p.rd.CommittedEntries) > 0 {
			if idx, term, ok := p.maybeTruncateLog(ab); ok {
				truncs = append(truncs, truncation{p: p, index: idx, term: term})
			}
		}
	}
	ab.Commit()
	for _, p := range w.peers {
		p.applying = false
	}
	for _, t := range truncs {
		t.p.storage.truncated(t.index, t.term)
		s.stats.Truncations.Add(1)
	}
	// Every descriptor or state change applied this round (a split, a
	// merge, a membership change, PrepareMerge, RollbackMerge) reaches the
	// state machine and the published status before its proposer hears
	// back: a request it then sends to a region a split made finds it on
	// this store, and the merge driver, which judges a merge by the status
	// right after PrepareMerge returns, never reads a source not yet
	// Merging as one rolled back. (A snapshot applied this round sets
	// regionChanged too.)
	for _, p := range w.peers {
		if !p.regionChanged {
			continue
		}
		p.regionChanged = false
		s.sm.RegionChanged(p.regionID, p.region, p.storage.smState)
		if len(p.splitChildren) > 0 {
			p.createSplitChildren()
		}
		if len(p.mergedSources) > 0 {
			p.absorbMerged()
		}
		p.publishStatus()
	}
	for _, r := range results {
		r.pr.finish(r.result, r.err)
	}
	clear(results)
	w.results = results[:0]
	clear(truncs)
	w.truncs = truncs[:0]

	// 6. Advance.
	for _, p := range w.peers {
		if !p.hasRd {
			continue
		}
		p.rn.Advance(p.rd)
		p.rd = raft.Ready{}
		p.hasRd = false
		p.appliedIdx.Store(p.storage.appliedIndex)
		p.failStaleProposals()
		p.serveApplied()
		if p.destroyAfterApply {
			p.destroy("removed from the region")
		}
	}
	w.finishRound()
}

func (w *worker) finishRound() {
	for _, p := range w.peers {
		if p.destroyed {
			continue
		}
		// Snapshot data stepped this round that raft did not take.
		p.dropClaimedSnap()
		if p.hib.announce {
			p.announceHibernation()
		}
		p.publishStatus()
	}
	if invariants {
		w.store.checkInvariants()
	}
}

// handleInputs steps everything in the peer's mailbox.
func (p *peer) handleInputs(mb *mailbox) {
	p.takeMailbox(mb)
	if p.destroyed {
		return
	}
	if p.mergedAway.Load() {
		// Absorbed by a merge: the target owns the data and the source's
		// tombstone is written; do nothing more.
		p.destroyMerged()
		p.failMailbox(mb)
		return
	}
	if p.replacedBySplit.Load() {
		p.destroyed = true
		p.failMailbox(mb)
		return
	}
	// Ticks first: they were queued before the messages arrived, and a tick
	// counted after a leader's message would shorten the election timeout
	// that leader leases rely on.
	for i := 0; i < min(mb.ticks, 2); i++ {
		p.tick()
	}
	for _, rm := range mb.msgs {
		p.stepMessage(rm)
		if p.destroyed {
			break
		}
	}
	for _, op := range mb.ops {
		if p.destroyed {
			break
		}
		op(p)
	}
	if p.destroyed {
		p.failMailbox(mb)
		return
	}
	for _, pr := range mb.props {
		p.propose(pr)
	}
	p.flushProposals()
	for _, r := range mb.reads {
		p.handleRead(r)
	}
	p.issueReadIndex()
	clearMailbox(mb)
}

// failMailbox answers what a destroyed peer's mailbox still held.
func (p *peer) failMailbox(mb *mailbox) {
	gone := region.RegionNotFound(p.regionID)
	for _, pr := range mb.props {
		pr.finish(nil, gone)
	}
	for _, r := range mb.reads {
		r.finish(nil, gone)
	}
	clearMailbox(mb)
}

func clearMailbox(mb *mailbox) {
	clear(mb.msgs)
	clear(mb.props)
	clear(mb.reads)
	clear(mb.ops)
	mb.msgs, mb.props, mb.reads, mb.ops = mb.msgs[:0], mb.props[:0], mb.reads[:0], mb.ops[:0]
	mb.ticks = 0
}

// stepMessage hands one message from another store to raft (or handles an
// extra message).
func (p *peer) stepMessage(rm *rspb.RaftMessage) {
	from := rm.GetFromPeer()
	if from != nil {
		if p.findPeer(from.GetId()) == nil {
			p.peerCache[from.GetId()] = from
		}
		p.heard(from.GetId())
	}
	switch rm.GetExtra().GetType() {
	case rspb.ExtraMessageType_None:
	case rspb.ExtraMessageType_Hibernate:
		p.onHibernate(from.GetId(), rm.GetExtra())
		return
	case rspb.ExtraMessageType_WakeUp:
		p.wake()
		return
	case rspb.ExtraMessageType_GcPeer:
		p.onGcPeer(rm)
		return
	}
	m := rm.GetMessage()
	if m == nil {
		return
	}
	// Responses need no clock (raft acts on them in the next Ready), and the
	// ones in flight when a leader went to sleep must not wake it again.
	if !raft.IsResponseMsg(m.GetType()) {
		p.wake()
	}
	if p.isInitialized() && p.isStaleSender(rm) {
		p.sendExtra(from, &rspb.ExtraMessage{Type: rspb.ExtraMessageType_GcPeer})
		return
	}
	if t := m.GetType(); (t == pb.MsgVote || t == pb.MsgPreVote) && !p.isInitialized() {
		// An uninitialized replica holds no log and no descriptor: it is
		// never needed to elect a leader (the initialized replicas of a
		// new region suffice), and not voting means it never has a vote a
		// split or snapshot initializing it could lose.
		p.keepEarlyVote(rm)
		return
	}
	if t := m.GetType(); (t == pb.MsgVote || t == pb.MsgPreVote) && monoNow() < p.store.voteFence {
		// Just (re)started: this store may have promised a leader before
		// the restart not to vote for an election timeout, and forgot. Keep
		// the promise by not voting for a lease duration.
		return
	}
	if m.GetType() == pb.MsgSnap && !p.checkSnapshot(rm) {
		return
	}
	if m.GetType() == pb.MsgTransferLeader && p.isLeader() {
		// A follower asks for leadership (RequestLeadership): the
		// transferee campaigns at once, so our lease ends now.
		p.revokeLease()
	}
	if err := p.rn.Step(m); err != nil {
		p.store.log.Debug("step", "region", p.regionID, "type", m.GetType(), "err", err)
	}
}

// maxEarlyVotes bounds the vote requests an uninitialized replica keeps.
const maxEarlyVotes = 4

// keepEarlyVote keeps a vote request that reached this replica before it
// was initialized. The usual sender is the first leader of a region a split
// just made, campaigning on the store that ran the split before this store
// applied it: replayed to the replica the split creates here, the request
// elects that leader at once instead of after an election timeout. (A
// delayed delivery, which raft tolerates like any other.)
func (p *peer) keepEarlyVote(rm *rspb.RaftMessage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.earlyVotes) == maxEarlyVotes {
		copy(p.earlyVotes, p.earlyVotes[1:])
		p.earlyVotes = p.earlyVotes[:maxEarlyVotes-1]
	}
	p.earlyVotes = append(p.earlyVotes, rm)
}

// isStaleSender: the sender is not in our region and its descriptor is older
// than ours, so it was removed and does not know.
func (p *peer) isStaleSender(rm *rspb.RaftMessage) bool { return staleSender(p.region, rm) }

// staleSender: rm's sender is not a member of reg and its own descriptor
// is older than reg, so it was removed and does not know. A peer ID is
// never reused: a peer removed and added again gets a new one, and a peer
// added after reg knows a newer configuration than reg.
func staleSender(reg *metapb.Region, rm *rspb.RaftMessage) bool {
	from := rm.GetFromPeer()
	if from == nil || region.FindPeerByID(reg, from.GetId()) != nil {
		return false
	}
	e := rm.GetRegionEpoch()
	// An uninitialized sender (no epoch yet) is a new peer we have not heard
	// of, not a removed one.
	return e.GetConfVer() > 0 && e.GetConfVer() < reg.GetRegionEpoch().GetConfVer()
}

// onGcPeer: a member of a newer configuration says we were removed.
func (p *peer) onGcPeer(rm *rspb.RaftMessage) {
	if !p.isInitialized() {
		return
	}
	e := rm.GetRegionEpoch()
	if e.GetConfVer() > p.region.GetRegionEpoch().GetConfVer() {
		p.destroy("a newer configuration no longer has this peer")
	}
}

// onSoftState reacts to leadership changes.
func (p *peer) onSoftState(ss *raft.SoftState) {
	if ss == nil {
		return
	}
	wasLeader := p.isLeader()
	leaderChanged := ss.Lead != p.leader
	p.leader, p.role = ss.Lead, ss.RaftState
	if p.isLeader() && !wasLeader {
		p.leaderT = monoNow()
		p.termLeaseStarted = false
		for _, m := range p.region.GetPeers() {
			p.heard(m.GetId())
		}
	}
	if wasLeader && !p.isLeader() {
		p.revokeLease()
	}
	if wasLeader != p.isLeader() {
		// Published before the callback, so whoever acts on the published
		// status after the callback ran sees the new role: a watcher
		// registered on a store that just lost leadership is either
		// canceled by the callback or refused by its re-check.
		p.publishStatus()
		if p.store.onRoleChange != nil {
			p.store.onRoleChange(p.regionID, p.isLeader(), p.rn.BasicStatus().GetTerm())
		}
	}
	if leaderChanged {
		p.retryReads(true)
		if p.leader == 0 {
			p.wake()
		}
	}
}

// sendMessages sends the Ready's messages of one kind: those that must wait
// until the Ready's entries and hard state are persisted (late), or the
// others.
func (p *peer) sendMessages(msgs []*pb.Message, late bool) {
	for _, m := range msgs {
		t := m.GetType()
		isLate := t == pb.MsgAppResp || t == pb.MsgVoteResp || t == pb.MsgPreVoteResp
		if isLate != late {
			continue
		}
		to := p.findPeer(m.GetTo())
		if to == nil {
			p.store.stats.MsgsDropped.Add(1)
			continue
		}
		rm := &rspb.RaftMessage{
			RegionId:    p.regionID,
			FromPeer:    p.selfPeer(),
			ToPeer:      to,
			Message:     m,
			RegionEpoch: p.region.GetRegionEpoch(),
			StartKey:    p.region.GetStartKey(),
			EndKey:      p.region.GetEndKey(),
		}
		if t == pb.MsgSnap {
			p.store.sendSnapshot(p, rm)
			continue
		}

		p.store.stats.MsgsSent.Add(1)
		p.store.trans.Send(to.GetStoreId(), rm)
	}
}

func (p *peer) sendExtra(to *metapb.Peer, extra *rspb.ExtraMessage) {
	if to == nil {
		return
	}
	p.store.stats.MsgsSent.Add(1)
	p.store.trans.Send(to.GetStoreId(), &rspb.RaftMessage{
		RegionId:    p.regionID,
		FromPeer:    p.selfPeer(),
		ToPeer:      to,
		RegionEpoch: p.region.GetRegionEpoch(),
		StartKey:    p.region.GetStartKey(),
		EndKey:      p.region.GetEndKey(),
		Extra:       extra,
	})
}
