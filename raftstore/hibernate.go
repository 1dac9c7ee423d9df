package raftstore

import (
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/tracker"

	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
)

// Hibernation. A region with no traffic stops ticking, so 10,000 idle regions
// cost nothing. The leader decides: after HibernateTicks ticks in which
// nothing was pending and every live follower had the whole log and the
// commit index, it sends Hibernate{term, commit} to its followers and stops
// ticking. A follower whose raft state matches (same term and leader, commit
// known and applied) stops ticking too; one that does not match answers
// WakeUp, and the leader resumes heartbeats until the follower caught up.
//
// Anything wakes a peer: a raft message, a proposal, a read, an admin call,
// or ReportStoreUnreachable for the store of its leader. A follower that
// stopped answering for DownPeerTicks does not keep its leader awake; when it
// returns it campaigns (PreVote), which wakes the leader, whose heartbeats
// bring it back as a follower.
//
// Leases: a hibernating leader's lease is revoked, since its followers do not
// count down election timeouts while asleep and its lease evidence ages.
type hibernation struct {
	asleep bool
	// idle counts consecutive ticks with nothing to do.
	idle int
	// ticks this peer processed (advances only while awake).
	ticks uint64
	// lastHeard[peerID] = ticks when a message from that peer arrived.
	lastHeard map[uint64]uint64
	// announce: the leader went to sleep this round and tells its
	// followers once the round's other messages are out, so no heartbeat
	// overtakes the announcement and wakes them.
	announce bool
}

// heard records that a message from peer id arrived.
func (p *peer) heard(id uint64) {
	if p.hib.lastHeard == nil {
		p.hib.lastHeard = make(map[uint64]uint64)
	}
	p.hib.lastHeard[id] = p.hib.ticks
}

// activity records client work (a proposal, a read, an admin call): the
// region wakes and its idle count restarts. Raft traffic only wakes (see
// wake); its effects show in the log positions canHibernate checks.
func (p *peer) activity() {
	p.hib.idle = 0
	p.wake()
}

// wake makes the peer tick again.
func (p *peer) wake() {
	if !p.hib.asleep {
		return
	}
	p.hib.asleep = false
	p.store.stats.Wakes.Add(1)
	p.store.setAwake(p, true)
}

func (p *peer) sleep() {
	if p.hib.asleep {
		return
	}
	p.hib.asleep = true
	p.hib.idle = 0
	p.revokeLease()
	p.store.stats.Hibernations.Add(1)
	p.store.setAwake(p, false)
}

// tick advances raft's clock, unless a leader decides to hibernate instead.
func (p *peer) tick() {
	if p.hib.asleep {
		return
	}
	if p.isLeader() && p.leaderShouldSleep() {
		p.sleep()
		p.hib.announce = true
		return
	}
	p.hib.ticks++
	p.store.stats.Ticks.Add(1)
	p.rn.Tick()
	if p.hib.ticks%uint64(p.store.cfg.ElectionTicks) == 0 {
		p.retryReads(false)
	}
}

func (p *peer) leaderShouldSleep() bool {
	cfg := p.store.cfg
	if cfg.HibernateTicks <= 0 || !p.canHibernate() {
		p.hib.idle = 0
		return false
	}
	p.hib.idle++
	return p.hib.idle >= cfg.HibernateTicks
}

// announceHibernation tells the followers the leader sleeps. Called at the
// end of the round, after every other message of the round was sent.
func (p *peer) announceHibernation() {
	p.hib.announce = false
	if !p.hib.asleep || !p.isLeader() {
		return
	}
	st := p.rn.BasicStatus()
	for _, m := range p.region.GetPeers() {
		if m.GetId() == p.peerID {
			continue
		}
		p.sendExtra(m, &rspb.ExtraMessage{Type: rspb.ExtraMessageType_Hibernate, Term: st.GetTerm(), Commit: st.GetCommit()})
	}
}

// canHibernate: nothing pending, not a merge source, and every live
// follower has the whole log.
//
// A merge source stays awake until its merge ends: the merge waits for
// every replica to apply the PrepareMerge, and a follower the leader
// counts as down (it missed messages for DownPeerTicks, say under load)
// would otherwise never get it from a sleeping leader, nor ask for it while
// asleep itself. Awake, the leader's heartbeats reach it and wake it.
func (p *peer) canHibernate() bool {
	if len(p.pending) > 0 || len(p.proposed) > 0 || !p.reads.empty() || p.hasRd || p.isMerging() {
		return false
	}
	st := p.rn.BasicStatus()
	last := p.storage.lastIndex
	if st.LeadTransferee != 0 || st.GetCommit() != last || p.storage.appliedIndex != st.GetCommit() ||
		p.pendingConfIndex > p.storage.appliedIndex {
		return false
	}
	down := uint64(p.store.cfg.DownPeerTicks)
	ok := true
	p.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id == p.peerID || !ok {
			return
		}
		heardAt, known := p.hib.lastHeard[id]
		alive := known && p.hib.ticks-heardAt < down
		if alive && pr.Match != last {
			ok = false
		}
	})
	return ok
}

// onHibernate handles a leader's Hibernate on a follower.
func (p *peer) onHibernate(from uint64, m *rspb.ExtraMessage) {
	st := p.rn.BasicStatus()
	if st.RaftState == raft.StateFollower && st.Lead == from && st.GetTerm() == m.GetTerm() &&
		st.GetCommit() == m.GetCommit() && p.storage.appliedIndex == st.GetCommit() && !p.hasRd &&
		p.reads.empty() {
		p.sleep()
		return
	}
	if leader := p.findPeer(from); leader != nil {
		p.sendExtra(leader, &rspb.ExtraMessage{Type: rspb.ExtraMessageType_WakeUp})
	}
}

// ReportStoreUnreachable tells the store that storeID seems down: every
// region whose leader is there wakes, so its followers count down an
// election timeout and elect a new leader.
func (s *Store) ReportStoreUnreachable(storeID uint64) {
	s.mu.RLock()
	var ps []*peer
	for _, p := range s.peers {
		if st := p.status.Load(); st != nil && st.Leader.GetStoreId() == storeID {
			ps = append(ps, p)
		}
	}
	s.mu.RUnlock()
	for _, p := range ps {
		p.pushOp(func(p *peer) { p.wake() })
	}
}
