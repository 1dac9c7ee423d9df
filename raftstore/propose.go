package raftstore

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// ErrMembershipChangeInProgress rejects a membership change while another
// one has not applied yet or the region is still in a joint configuration.
var ErrMembershipChangeInProgress = errors.New("raftstore: another membership change of this region is in progress")

// ErrOutcomeUnknown ends a proposal that reached the region's log here
// when this replica went away before applying it (removed, replaced or
// garbage-collected): the region's other replicas may still commit and
// apply it, so the caller must not assume it failed, and must not send it
// again as if it had (a retried put would apply twice).
var ErrOutcomeUnknown = errors.New("raftstore: the replica went away after the command entered the region's log; the command may or may not apply")

// proposal is one command waiting to be proposed, committed and applied.
type proposal struct {
	kind    byte
	epoch   *metapb.RegionEpoch
	payload []byte
	changes []*raftcmdpb.ChangePeer // for cmdChangePeers
	admin   *raftcmdpb.AdminRequest // for cmdAdmin
	subs    []*proposal             // for cmdUserBatch: the writes it carries

	id          uint64
	index, term uint64
	proposeTime int64
	// leaderTerm, when set, is the term in which the caller saw this
	// replica lead; the proposal is refused if the replica no longer leads
	// in that term (see ProposeAsyncInTerm).
	leaderTerm uint64

	done   chan struct{}
	result any
	err    error
	// finished is set by the worker when done is closed.
	finished bool
}

func newProposal(kind byte, epoch *metapb.RegionEpoch, payload []byte) *proposal {
	return &proposal{kind: kind, epoch: epoch, payload: payload, done: make(chan struct{})}
}

func (pr *proposal) finish(result any, err error) {
	if pr.finished {
		return
	}
	pr.finished = true
	if pr.kind == cmdUserBatch {
		// A batch has no result of its own: on success apply finishes each
		// write it carries; otherwise they share the batch's fate.
		for _, sub := range pr.subs {
			sub.finish(nil, err)
		}
		return
	}
	pr.result, pr.err = result, err
	close(pr.done)
}

func (pr *proposal) wait(ctx context.Context) (any, error) {
	select {
	case <-pr.done:
		return pr.result, pr.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Propose replicates data through regionID's log and returns what the state
// machine's Apply returned for it on this store. epoch is the region epoch the
// caller routed by; a write whose region split or merged since fails with
// EpochNotMatch. Errors are region errors (retryable after a cache update),
// or the context's error, in which case the command may or may not apply.
func (s *Store) Propose(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch, data []byte) (any, error) {
	pd, err := s.ProposeAsync(regionID, epoch, data)
	if err != nil {
		return nil, err
	}
	return pd.Wait(ctx)
}

// Pending is a proposal handed to a region, waiting to apply.
type Pending struct{ pr *proposal }

// Wait returns what Propose would. It returns the context's error if ctx
// ends first; the proposal may still apply later.
func (p *Pending) Wait(ctx context.Context) (any, error) { return p.pr.wait(ctx) }

// Done is closed once the proposal applied or certainly will not.
func (p *Pending) Done() <-chan struct{} { return p.pr.done }

// ProposeAsync hands data to regionID's replica on this store and returns
// at once. Proposals made by one goroutine reach the log in the order they
// were made (the sequencer relies on this to keep revisions in order).
func (s *Store) ProposeAsync(regionID uint64, epoch *metapb.RegionEpoch, data []byte) (*Pending, error) {
	return s.ProposeAsyncInTerm(regionID, epoch, 0, data)
}

// ProposeAsyncInTerm is ProposeAsync for a command built while this
// replica led regionID in term leaderTerm (RegionStatus.Term): it fails
// with NotLeader unless the replica still leads in that very term when the
// command reaches the log. A command whose content depends on what was
// true while the caller saw this replica lead (a revision chosen after
// leadership began) thereby never lands in a later term, after another
// leader may have promised something about it.
func (s *Store) ProposeAsyncInTerm(regionID uint64, epoch *metapb.RegionEpoch, leaderTerm uint64, data []byte) (*Pending, error) {
	if len(data)+envelopeLen > s.cfg.MaxEntryBytes {
		return nil, region.RaftEntryTooLarge(regionID, uint64(len(data)))
	}
	p := s.getPeer(regionID)
	if p == nil {
		return nil, region.RegionNotFound(regionID)
	}
	pr := newProposal(cmdUser, epoch, data)
	pr.leaderTerm = leaderTerm
	if !p.push(func(mb *mailbox) { mb.props = append(mb.props, pr) }) {
		return nil, region.RegionNotFound(regionID)
	}
	return &Pending{pr: pr}, nil
}

// ChangePeers changes regionID's membership: one change is applied as a
// simple raft conf change; several enter joint consensus, which raft leaves
// on its own. To move a replica, add the new peer as a learner, wait for it to
// catch up, then ChangePeers(promote new, demote old) and remove the old
// learner. It returns the region descriptor after the change applied here.
func (s *Store) ChangePeers(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch, changes []*raftcmdpb.ChangePeer) (*metapb.Region, error) {
	if len(changes) == 0 {
		return nil, errors.New("raftstore: ChangePeers needs at least one change")
	}
	p := s.getPeer(regionID)
	if p == nil {
		return nil, region.RegionNotFound(regionID)
	}
	payload, err := proto.Marshal(&raftcmdpb.ChangePeers{Changes: changes})
	if err != nil {
		return nil, err
	}
	pr := newProposal(cmdChangePeers, epoch, payload)
	pr.changes = changes
	if !p.push(func(mb *mailbox) { mb.props = append(mb.props, pr) }) {
		return nil, region.RegionNotFound(regionID)
	}
	res, err := pr.wait(ctx)
	if err != nil {
		return nil, err
	}
	return res.(*metapb.Region), nil
}

// TransferLeader asks regionID's leader on this store to hand leadership to
// peer toPeerID. It returns once the transfer started; raft abandons it after
// an election timeout if the target does not catch up.
func (s *Store) TransferLeader(ctx context.Context, regionID uint64, epoch *metapb.RegionEpoch, toPeerID uint64) error {
	p := s.getPeer(regionID)
	if p == nil {
		return region.RegionNotFound(regionID)
	}
	errc := make(chan error, 1)
	if !p.pushOp(func(p *peer) { errc <- p.transferLeader(epoch, toPeerID) }) {
		return region.RegionNotFound(regionID)
	}
	select {
	case err := <-errc:
		return err
	case <-p.closed:
		return region.RegionNotFound(regionID)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *peer) transferLeader(epoch *metapb.RegionEpoch, to uint64) error {
	if !p.isLeader() {
		return region.NotLeader(p.regionID, p.leaderPeer())
	}
	if !region.CheckEpoch(region.CmdTransferLeader, epoch, p.region.GetRegionEpoch()) {
		return region.EpochNotMatch(p.region)
	}
	target := region.FindPeerByID(p.region, to)
	if target == nil || !region.IsVoter(target) {
		return fmt.Errorf("raftstore: region %d: peer %d is not a voter", p.regionID, to)
	}
	if to == p.peerID {
		return nil
	}
	// The transferee campaigns without waiting for an election timeout, so
	// our lease must end before it can win.
	p.revokeLease()
	p.activity()
	p.rn.TransferLeader(to)
	return nil
}

// Campaign makes this store's replica of regionID start an election now
// instead of after an election timeout (used right after bootstrap and split
// so a region gets a leader at once).
func (s *Store) Campaign(regionID uint64) error {
	p := s.getPeer(regionID)
	if p == nil {
		return region.RegionNotFound(regionID)
	}
	p.pushOp(func(p *peer) {
		p.activity()
		_ = p.rn.Campaign()
	})
	return nil
}

// propose validates and proposes one command. Runs on the worker.
func (p *peer) propose(pr *proposal) {
	p.activity()
	if !p.isInitialized() {
		pr.finish(nil, region.RegionNotInitialized(p.regionID))
		return
	}
	if !p.isLeader() || (pr.leaderTerm != 0 && pr.leaderTerm != p.term) {
		pr.finish(nil, region.NotLeader(p.regionID, p.leaderPeer()))
		return
	}
	if p.peerState == rspb.PeerState_Merging && pr.admin.GetRollbackMerge() == nil {
		// A merge source takes nothing but the rollback of its merge.
		pr.finish(nil, region.ProposalInMergingMode(p.regionID))
		return
	}
	kind := region.CmdWrite
	if pr.kind == cmdChangePeers {
		kind = region.CmdChangePeer
	}
	if !region.CheckEpoch(kind, pr.epoch, p.region.GetRegionEpoch()) {
		pr.finish(nil, region.EpochNotMatch(p.region))
		return
	}
	switch pr.kind {
	case cmdUser:
		// Batched: flushProposals puts the round's writes into as few raft
		// entries as the size limit allows and steps them as one MsgProp, so
		// raft appends, sends and persists per round, not per write.
		p.batch = append(p.batch, pr)
	case cmdAdmin:
		// Flush first: the command must follow the writes proposed before it.
		p.flushProposals()
		if result, err := p.checkAdmin(pr); err != nil || result != nil {
			pr.finish(result, err)
			return
		}
		pr.id = p.store.nextProposalID()
		pr.proposeTime = monoNow()
		p.proposedOrFailed(pr, p.rn.Propose(encodeEnvelope(cmdAdmin, pr.id, pr.epoch, pr.payload)))
	case cmdChangePeers:
		// Flush first: the conf change must follow the writes proposed before it.
		p.flushProposals()
		pr.id = p.store.nextProposalID()
		pr.proposeTime = monoNow()
		cc, err := p.validateChangePeers(pr.changes)
		if err == nil {
			cc.Context = encodeEnvelope(pr.kind, pr.id, pr.epoch, pr.payload)
			err = p.rn.ProposeConfChange(cc)
		}
		p.proposedOrFailed(pr, err)
	default:
		panic(fmt.Sprintf("raftstore: unknown proposal kind %d", pr.kind))
	}
}

// maxBatchEntryBytes bounds the payload of one cmdUserBatch entry.
const maxBatchEntryBytes = 256 << 10

// flushProposals proposes the round's batched writes as one raft message.
func (p *peer) flushProposals() {
	if len(p.batch) == 0 {
		return
	}
	now := monoNow()
	epoch := p.region.GetRegionEpoch()
	var entries []*pb.Entry
	var props []*proposal
	for start := 0; start < len(p.batch); {
		end, size := start, 0
		for end < len(p.batch) && (end == start || size+len(p.batch[end].payload) <= maxBatchEntryBytes) {
			size += len(p.batch[end].payload) + 4
			end++
		}
		var pr *proposal
		var data []byte
		if end-start == 1 {
			pr = p.batch[start]
			pr.id = p.store.nextProposalID()
			data = encodeEnvelope(cmdUser, pr.id, epoch, pr.payload)
		} else {
			pr = &proposal{kind: cmdUserBatch, subs: append([]*proposal(nil), p.batch[start:end]...), id: p.store.nextProposalID()}
			payload := make([]byte, 0, size)
			for _, sub := range pr.subs {
				payload = appendBatchItem(payload, sub.payload)
			}
			data = encodeEnvelope(cmdUserBatch, pr.id, epoch, payload)
		}
		pr.proposeTime = now
		entries = append(entries, &pb.Entry{Data: data})
		props = append(props, pr)
		start = end
	}
	err := p.rn.Step(&pb.Message{Type: pb.MsgProp.Enum(), From: new(p.peerID), Entries: entries})
	for _, pr := range props {
		p.proposedOrFailed(pr, err)
	}
	clear(p.batch)
	p.batch = p.batch[:0]
}

func (p *peer) proposedOrFailed(pr *proposal, err error) {
	if err != nil {
		pr.finish(nil, p.proposeError(err))
		return
	}
	if pr.kind == cmdUserBatch {
		p.store.stats.Proposals.Add(uint64(len(pr.subs)))
	} else {
		p.store.stats.Proposals.Add(1)
	}
	p.proposed = append(p.proposed, pr)
	p.pendingByID[pr.id] = pr
}

func (p *peer) proposeError(err error) error {
	if !errors.Is(err, raft.ErrProposalDropped) {
		return err
	}
	st := p.rn.BasicStatus()
	if st.RaftState == raft.StateLeader && st.LeadTransferee == 0 {
		// Still leader and not transferring: the uncommitted log is full.
		return region.ServerBusy("raft log has too many uncommitted entries", 50)
	}
	return region.NotLeader(p.regionID, nil)
}

// validateChangePeers checks changes against the current membership and
// builds the raft conf change.
func (p *peer) validateChangePeers(changes []*raftcmdpb.ChangePeer) (*pb.ConfChangeV2, error) {
	if p.pendingConfIndex > p.storage.appliedIndex {
		return nil, ErrMembershipChangeInProgress
	}
	for _, m := range p.region.GetPeers() {
		if r := m.GetRole(); r == metapb.PeerRole_IncomingVoter || r == metapb.PeerRole_DemotingVoter {
			return nil, ErrMembershipChangeInProgress
		}
	}
	joint := len(changes) > 1
	cc := &pb.ConfChangeV2{}
	if joint {
		cc.Transition = pb.ConfChangeTransitionAuto.Enum()
	}
	seen := map[uint64]bool{}
	for _, c := range changes {
		np := c.GetPeer()
		if np.GetId() == 0 || np.GetStoreId() == 0 {
			return nil, fmt.Errorf("raftstore: change peer needs a peer ID and a store ID")
		}
		if seen[np.GetId()] {
			return nil, fmt.Errorf("raftstore: peer %d changed twice in one request", np.GetId())
		}
		seen[np.GetId()] = true
		cur := region.FindPeerByID(p.region, np.GetId())
		if cur == nil {
			if other := region.FindPeer(p.region, np.GetStoreId()); other != nil {
				return nil, fmt.Errorf("raftstore: store %d already has peer %d of region %d", np.GetStoreId(), other.GetId(), p.regionID)
			}
		} else if cur.GetStoreId() != np.GetStoreId() {
			return nil, fmt.Errorf("raftstore: peer %d is on store %d, not %d", np.GetId(), cur.GetStoreId(), np.GetStoreId())
		}
		var t pb.ConfChangeType
		switch c.GetChangeType() {
		case raftcmdpb.ChangePeerType_AddNode:
			if cur != nil && cur.GetRole() == metapb.PeerRole_Voter {
				return nil, fmt.Errorf("raftstore: peer %d is already a voter", np.GetId())
			}
			t = pb.ConfChangeAddNode
		case raftcmdpb.ChangePeerType_AddLearnerNode:
			if cur != nil && cur.GetRole() == metapb.PeerRole_Learner {
				return nil, fmt.Errorf("raftstore: peer %d is already a learner", np.GetId())
			}
			if cur != nil && np.GetId() == p.peerID {
				return nil, fmt.Errorf("raftstore: cannot demote the leader; transfer leadership first")
			}
			t = pb.ConfChangeAddLearnerNode
		case raftcmdpb.ChangePeerType_RemoveNode:
			if cur == nil {
				return nil, fmt.Errorf("raftstore: peer %d is not in region %d", np.GetId(), p.regionID)
			}
			if np.GetId() == p.peerID {
				return nil, fmt.Errorf("raftstore: cannot remove the leader; transfer leadership first")
			}
			if joint && region.IsVoter(cur) {
				return nil, fmt.Errorf("raftstore: a joint change cannot remove voter %d; demote it to a learner first", np.GetId())
			}
			t = pb.ConfChangeRemoveNode
		default:
			return nil, fmt.Errorf("raftstore: unknown change type %v", c.GetChangeType())
		}
		cc.Changes = append(cc.Changes, &pb.ConfChangeSingle{Type: t.Enum(), NodeId: new(np.GetId())})
	}
	// At least one voter must remain.
	voters := 0
	for _, m := range p.region.GetPeers() {
		if region.IsVoter(m) {
			voters++
		}
	}
	for _, c := range changes {
		cur := region.FindPeerByID(p.region, c.GetPeer().GetId())
		wasVoter := cur != nil && region.IsVoter(cur)
		switch c.GetChangeType() {
		case raftcmdpb.ChangePeerType_AddNode:
			if !wasVoter {
				voters++
			}
		default:
			if wasVoter {
				voters--
			}
		}
	}
	if voters < 1 {
		return nil, fmt.Errorf("raftstore: change would leave region %d without voters", p.regionID)
	}
	return cc, nil
}

// assignIndexes records the log position of this round's proposals from the
// Ready's new entries. A proposal raft accepted but that is not among them
// was replaced (raft turns a refused conf change into an empty entry) and is
// failed as stale.
func (p *peer) assignIndexes(ents []*pb.Entry) {
	if len(p.proposed) == 0 {
		return
	}
	for _, e := range ents {
		var id uint64
		var ok bool
		switch e.GetType() {
		case pb.EntryNormal:
			id, ok = peekProposalID(e.GetData())
		case pb.EntryConfChangeV2:
			var cc pb.ConfChangeV2
			if proto.Unmarshal(e.GetData(), &cc) == nil {
				id, ok = peekProposalID(cc.GetContext())
			}
		}
		if !ok {
			continue
		}
		if pr := p.pendingByID[id]; pr != nil && pr.index == 0 {
			pr.index, pr.term = e.GetIndex(), e.GetTerm()
			if pr.kind == cmdChangePeers {
				p.pendingConfIndex = pr.index
			}
		}
	}
	for _, pr := range p.proposed {
		if pr.index == 0 {
			delete(p.pendingByID, pr.id)
			pr.finish(nil, region.StaleCommand())
			continue
		}
		p.pending = append(p.pending, pr)
	}
	clear(p.proposed)
	p.proposed = p.proposed[:0]
}

// takeProposal returns the pending proposal that entry (index, term, id) is,
// if it was proposed here.
func (p *peer) takeProposal(index, term, id uint64) *proposal {
	pr := p.pendingByID[id]
	if pr == nil || pr.index != index || pr.term != term {
		return nil
	}
	delete(p.pendingByID, id)
	return pr
}

// failStaleProposals fails pending proposals whose index was applied with a
// different entry: a leader change overwrote them, so they never apply.
func (p *peer) failStaleProposals() {
	applied := p.storage.appliedIndex
	n := 0
	for n < len(p.pending) && p.pending[n].index <= applied {
		pr := p.pending[n]
		if !pr.finished {
			delete(p.pendingByID, pr.id)
			pr.finish(nil, region.StaleCommand())
		}
		p.pending[n] = nil
		n++
	}
	if n > 0 {
		p.pending = p.pending[n:]
		if len(p.pending) == 0 {
			p.pending = nil
		}
	}
}

// failAllProposals ends every waiting proposal (the peer is going away):
// those raft never saw in a Ready (never sent, so never committed) with
// err, those in the log with inLog.
func (p *peer) failAllProposals(err, inLog error) {
	for _, pr := range p.proposed {
		pr.finish(nil, err)
	}
	for _, pr := range p.pending {
		pr.finish(nil, inLog)
	}
	p.proposed, p.pending = nil, nil
	clear(p.pendingByID)
}
