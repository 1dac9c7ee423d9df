package pd

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	"github.com/basaltdb/basalt/region"
)

// An operator changes one region through a list of steps. PD sends the
// current step to the region's leader (pushed when it is created, and again
// with every heartbeat until the heartbeats show it done), so a lost message
// costs one heartbeat interval, and a store sees each step as often as it
// takes: steps must be idempotent on the store (a repeated conf change fails
// its epoch check and changes nothing).
type opStep interface {
	// done reports whether the region's reported state shows the step
	// finished.
	done(r *regionInfo) bool
	// fill writes the store instruction into a heartbeat response.
	fill(r *regionInfo, resp *pdpb.RegionHeartbeatResponse)
	// receiver is the store that gets a new replica from this step, or 0.
	receiver() uint64
	// needs is the store that must be alive for the step to finish, or 0.
	needs() uint64
	String() string
}

type addLearner struct{ peer *metapb.Peer }

// done: the learner is in the region and has caught up. A learner the
// leader has not heard from yet is reported down, not pending (it has no
// Progress to be behind by); it holds no data, and promoting it would put
// an empty voter in the region: one more voter lost then stops the region
// until the empty one gets its snapshot, which may never come (a joint
// configuration whose incoming voter was uninitialized did so when another
// voter was cut off).
func (s addLearner) done(r *regionInfo) bool {
	return region.FindPeerByID(r.meta, s.peer.GetId()) != nil && !r.isPending(s.peer.GetId()) && !r.isDown(s.peer.GetId())
}
func (s addLearner) fill(_ *regionInfo, resp *pdpb.RegionHeartbeatResponse) {
	resp.ChangePeers = &pdpb.ChangePeers{Changes: []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_AddLearnerNode, Peer: s.peer}}}
}
func (s addLearner) needs() uint64    { return s.peer.GetStoreId() }
func (s addLearner) receiver() uint64 { return s.peer.GetStoreId() }
func (s addLearner) String() string {
	return fmt.Sprintf("add learner %d on store %d", s.peer.GetId(), s.peer.GetStoreId())
}

type promoteLearner struct{ peer *metapb.Peer }

func (s promoteLearner) done(r *regionInfo) bool {
	p := region.FindPeerByID(r.meta, s.peer.GetId())
	return p != nil && p.GetRole() == metapb.PeerRole_Voter
}
func (s promoteLearner) fill(_ *regionInfo, resp *pdpb.RegionHeartbeatResponse) {
	resp.ChangePeers = &pdpb.ChangePeers{Changes: []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_AddNode, Peer: s.peer}}}
}
func (s promoteLearner) needs() uint64    { return s.peer.GetStoreId() }
func (s promoteLearner) receiver() uint64 { return 0 }
func (s promoteLearner) String() string   { return fmt.Sprintf("promote learner %d", s.peer.GetId()) }

// jointSwap promotes one learner and demotes one voter in a single joint
// change; raft leaves the joint state on its own.
type jointSwap struct{ promote, demote *metapb.Peer }

func (s jointSwap) done(r *regionInfo) bool {
	p := region.FindPeerByID(r.meta, s.promote.GetId())
	d := region.FindPeerByID(r.meta, s.demote.GetId())
	return p != nil && p.GetRole() == metapb.PeerRole_Voter && (d == nil || d.GetRole() == metapb.PeerRole_Learner)
}
func (s jointSwap) fill(r *regionInfo, resp *pdpb.RegionHeartbeatResponse) {
	p := region.FindPeerByID(r.meta, s.promote.GetId())
	if p != nil && (p.GetRole() == metapb.PeerRole_IncomingVoter) {
		// Already joint: raft is leaving on its own; nothing to send.
		return
	}
	if r.leader.GetId() == s.demote.GetId() {
		// Leadership moved to the peer to demote since the operator was
		// made; a leader cannot demote itself. Move it first.
		leaderElsewhere(r, resp, s.demote.GetId())
		return
	}
	resp.ChangePeers = &pdpb.ChangePeers{Changes: []*raftcmdpb.ChangePeer{
		{ChangeType: raftcmdpb.ChangePeerType_AddNode, Peer: s.promote},
		{ChangeType: raftcmdpb.ChangePeerType_AddLearnerNode, Peer: s.demote},
	}}
}
func (s jointSwap) needs() uint64    { return s.promote.GetStoreId() }
func (s jointSwap) receiver() uint64 { return 0 }
func (s jointSwap) String() string {
	return fmt.Sprintf("promote %d and demote %d (joint)", s.promote.GetId(), s.demote.GetId())
}

type removePeer struct{ peer *metapb.Peer }

func (s removePeer) done(r *regionInfo) bool {
	return region.FindPeerByID(r.meta, s.peer.GetId()) == nil
}
func (s removePeer) fill(r *regionInfo, resp *pdpb.RegionHeartbeatResponse) {
	if r.leader.GetId() == s.peer.GetId() {
		leaderElsewhere(r, resp, s.peer.GetId())
		return
	}
	resp.ChangePeers = &pdpb.ChangePeers{Changes: []*raftcmdpb.ChangePeer{{ChangeType: raftcmdpb.ChangePeerType_RemoveNode, Peer: s.peer}}}
}
func (s removePeer) needs() uint64    { return 0 }
func (s removePeer) receiver() uint64 { return 0 }
func (s removePeer) String() string {
	return fmt.Sprintf("remove peer %d on store %d", s.peer.GetId(), s.peer.GetStoreId())
}

// leaderElsewhere asks the region to hand leadership from peer `from` to
// another voter that is not down or pending.
func leaderElsewhere(r *regionInfo, resp *pdpb.RegionHeartbeatResponse, from uint64) {
	for _, p := range r.meta.GetPeers() {
		if p.GetId() != from && p.GetRole() == metapb.PeerRole_Voter && !r.isDown(p.GetId()) && !r.isPending(p.GetId()) {
			resp.TransferLeader = &pdpb.TransferLeader{Peer: p}
			return
		}
	}
}

type transferLeader struct{ toStore uint64 }

func (s transferLeader) done(r *regionInfo) bool { return r.leader.GetStoreId() == s.toStore }
func (s transferLeader) fill(r *regionInfo, resp *pdpb.RegionHeartbeatResponse) {
	if p := region.FindPeer(r.meta, s.toStore); p != nil {
		resp.TransferLeader = &pdpb.TransferLeader{Peer: p}
	}
}
func (s transferLeader) needs() uint64    { return s.toStore }
func (s transferLeader) receiver() uint64 { return 0 }
func (s transferLeader) String() string   { return fmt.Sprintf("transfer leader to store %d", s.toStore) }

type splitRegion struct {
	fromVersion uint64
	keys        [][]byte
}

func (s splitRegion) done(r *regionInfo) bool {
	return r.meta.GetRegionEpoch().GetVersion() > s.fromVersion
}
func (s splitRegion) fill(_ *regionInfo, resp *pdpb.RegionHeartbeatResponse) {
	resp.SplitRegion = &pdpb.SplitRegion{Keys: s.keys}
}
func (s splitRegion) needs() uint64    { return 0 }
func (s splitRegion) receiver() uint64 { return 0 }
func (s splitRegion) String() string   { return fmt.Sprintf("split at %q", s.keys) }

// mergeRegion merges the operator's region (the source) into target; it is
// done when the source is gone (regionGone).
type mergeRegion struct{ target *metapb.Region }

func (s mergeRegion) done(*regionInfo) bool { return false }
func (s mergeRegion) fill(_ *regionInfo, resp *pdpb.RegionHeartbeatResponse) {
	resp.Merge = &pdpb.Merge{Target: s.target}
}
func (s mergeRegion) needs() uint64    { return 0 }
func (s mergeRegion) receiver() uint64 { return 0 }
func (s mergeRegion) String() string   { return fmt.Sprintf("merge into region %d", s.target.GetId()) }

// stepInfluence is what steps do to store counts, the leader being on
// leaderStore when they start.
func stepInfluence(steps []opStep, leaderStore uint64) map[uint64]storeInfluence {
	m := map[uint64]storeInfluence{}
	add := func(store uint64, regions, leaders int) {
		cur := m[store]
		cur.regions += regions
		cur.leaders += leaders
		m[store] = cur
	}
	for _, st := range steps {
		switch s := st.(type) {
		case addLearner:
			add(s.peer.GetStoreId(), 1, 0)
		case removePeer:
			add(s.peer.GetStoreId(), -1, 0)
		case transferLeader:
			if leaderStore != 0 && leaderStore != s.toStore {
				add(leaderStore, 0, -1)
				add(s.toStore, 0, 1)
				leaderStore = s.toStore
			}
		}
	}
	return m
}

// opKind classifies operators for the schedule limits.
type opKind string

const (
	opLeader  opKind = "leader"
	opRegion  opKind = "region"
	opReplica opKind = "replica"
	opSplit   opKind = "split"
	opMerge   opKind = "merge"
	opAdmin   opKind = "admin"
)

type operator struct {
	ID        uint64    `json:"id"`
	RegionID  uint64    `json:"region_id"`
	Desc      string    `json:"desc"`
	Kind      opKind    `json:"kind"`
	Steps     []string  `json:"steps"`
	Current   int       `json:"current_step"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`

	steps   []opStep
	timeout time.Duration
	// influence: replicas and leaders this operator adds to (or, negative,
	// takes from) each store once done.
	influence map[uint64]storeInfluence
}

type storeInfluence struct{ regions, leaders int }

func newOperator(regionID uint64, desc string, kind opKind, steps ...opStep) *operator {
	op := &operator{RegionID: regionID, Desc: desc, Kind: kind, steps: steps, Status: "running", CreatedAt: time.Now()}
	for _, s := range steps {
		op.Steps = append(op.Steps, s.String())
	}
	return op
}

func (op *operator) String() string {
	return fmt.Sprintf("%s region %d: %s", op.Desc, op.RegionID, strings.Join(op.Steps, " → "))
}

var (
	errOperatorExists = errors.New("pd: the region already has an operator running")
	errStoreLimit     = errors.New("pd: a store in this operator is at its limit")
)

// opController runs operators, at most one per region.
type opController struct {
	c *cluster

	mu       sync.Mutex
	nextID   uint64
	ops      map[uint64]*operator
	byKind   map[opKind]int
	incoming map[uint64]int // store → running operators adding a replica to it
	// mergeTargets: region → running merges into it (kept with ops so
	// involved, asked for every region the schedulers look at, is a lookup).
	mergeTargets map[uint64]int
	pending      map[uint64]storeInfluence
	history      []*operator
}

const opHistory = 256

func newOpController(c *cluster) *opController {
	oc := &opController{c: c}
	oc.resetLocked()
	return oc
}

func (oc *opController) resetLocked() {
	oc.ops = make(map[uint64]*operator)
	oc.byKind = make(map[opKind]int)
	oc.incoming = make(map[uint64]int)
	oc.mergeTargets = make(map[uint64]int)
	oc.pending = make(map[uint64]storeInfluence)
}

// mergeTarget returns the region op merges its region into, or 0.
func mergeTarget(op *operator) uint64 {
	for _, st := range op.steps {
		if m, ok := st.(mergeRegion); ok {
			return m.target.GetId()
		}
	}
	return 0
}

func (oc *opController) addInfluenceLocked(op *operator, sign int) {
	for s, inf := range op.influence {
		cur := oc.pending[s]
		cur.regions += sign * inf.regions
		cur.leaders += sign * inf.leaders
		oc.pending[s] = cur
	}
}

// atLimit returns the stores that cannot receive another replica now.
func (oc *opController) atLimit(limit int) map[uint64]bool {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	out := map[uint64]bool{}
	for s, n := range oc.incoming {
		if n >= limit {
			out[s] = true
		}
	}
	return out
}

// influence returns what running operators will add to each store.
func (oc *opController) influence() map[uint64]storeInfluence {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	out := make(map[uint64]storeInfluence, len(oc.pending))
	for s, inf := range oc.pending {
		out[s] = inf
	}
	return out
}

func (oc *opController) reset() {
	oc.mu.Lock()
	oc.resetLocked()
	oc.mu.Unlock()
}

func (oc *opController) receivers(op *operator) []uint64 {
	var out []uint64
	for _, s := range op.steps {
		if r := s.receiver(); r != 0 {
			out = append(out, r)
		}
	}
	return out
}

// add starts op unless the region is busy or a receiving store is at its
// limit. The first step goes to the leader at once.
func (oc *opController) add(op *operator) error {
	// What add needs of the cluster is read before oc.mu: the lock order
	// is cluster.mu before opController.mu, and a reader waiting here
	// behind a writer of cluster.mu while holding oc.mu would deadlock
	// with a checker holding cluster.mu.RLock and asking oc.involved.
	cfg := oc.c.config()
	leader := oc.c.leaderStoreOf(op.RegionID)
	storeLimit := cfg.StoreLimit
	oc.mu.Lock()
	if oc.ops[op.RegionID] != nil {
		oc.mu.Unlock()
		return errOperatorExists
	}
	for _, s := range oc.receivers(op) {
		if oc.incoming[s] >= storeLimit {
			oc.mu.Unlock()
			return errStoreLimit
		}
	}
	if op.influence == nil {
		op.influence = stepInfluence(op.steps, leader)
	}
	oc.nextID++
	op.ID = oc.nextID
	if op.timeout == 0 {
		op.timeout = cfg.OperatorTimeout.Duration
	}
	oc.ops[op.RegionID] = op
	oc.byKind[op.Kind]++
	if t := mergeTarget(op); t != 0 {
		oc.mergeTargets[t]++
	}
	oc.addInfluenceLocked(op, 1)
	for _, s := range oc.receivers(op) {
		oc.incoming[s]++
	}
	oc.mu.Unlock()
	oc.c.s.log.Debug("operator added", "op", op.String())
	if ri := oc.c.regionByID(op.RegionID); ri != nil && ri.leader != nil {
		if resp := oc.onHeartbeat(ri); resp != nil {
			oc.c.pushStep(resp, ri.leader.GetStoreId())
		}
	}
	return nil
}

func (oc *opController) count(kind opKind) int {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	return oc.byKind[kind]
}

func (oc *opController) has(regionID uint64) bool {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	return oc.ops[regionID] != nil
}

// involved reports whether regionID has an operator or is the target of a
// running merge. A region takes part in one merge at a time: two merges
// into one target, or two regions merging into each other, make all but
// one roll back.
func (oc *opController) involved(regionID uint64) bool {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	return oc.ops[regionID] != nil || oc.mergeTargets[regionID] > 0
}

func (oc *opController) endLocked(op *operator, status string) {
	delete(oc.ops, op.RegionID)
	oc.byKind[op.Kind]--
	if t := mergeTarget(op); t != 0 {
		if oc.mergeTargets[t]--; oc.mergeTargets[t] == 0 {
			delete(oc.mergeTargets, t)
		}
	}
	oc.addInfluenceLocked(op, -1)
	for _, s := range oc.receivers(op) {
		oc.incoming[s]--
	}
	op.Status, op.EndedAt = status, time.Now()
	oc.history = append(oc.history, op)
	if len(oc.history) > opHistory {
		oc.history = oc.history[len(oc.history)-opHistory:]
	}
}

// cancel ends a region's operator.
func (oc *opController) cancel(regionID uint64) bool {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	op := oc.ops[regionID]
	if op == nil {
		return false
	}
	oc.endLocked(op, "canceled")
	return true
}

// regionGone ends the operator of a region that no longer exists: a merge
// that finished, or anything else that lost its region.
func (oc *opController) regionGone(regionID uint64) {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if op := oc.ops[regionID]; op != nil {
		if _, ok := op.steps[op.Current].(mergeRegion); ok {
			oc.endLocked(op, "success")
		} else {
			oc.endLocked(op, "region gone")
		}
	}
}

// onHeartbeat advances the region's operator by what the heartbeat shows
// and returns the instruction for its current step, if any.
func (oc *opController) onHeartbeat(r *regionInfo) *pdpb.RegionHeartbeatResponse {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	op := oc.ops[r.meta.GetId()]
	if op == nil {
		return nil
	}
	for op.Current < len(op.steps) && op.steps[op.Current].done(r) {
		op.Current++
	}
	if op.Current == len(op.steps) {
		oc.endLocked(op, "success")
		return nil
	}
	if time.Since(op.CreatedAt) > op.timeout {
		oc.endLocked(op, "timeout")
		return nil
	}
	if need := op.steps[op.Current].needs(); need != 0 && oc.c.unhealthy(need) {
		// The step waits for a store that stopped answering: give the
		// region back to the checkers instead of waiting for the timeout.
		oc.endLocked(op, fmt.Sprintf("canceled: store %d is not healthy", need))
		return nil
	}
	resp := &pdpb.RegionHeartbeatResponse{
		RegionId: r.meta.GetId(), RegionEpoch: r.meta.GetRegionEpoch(), TargetPeer: r.leader, OperatorId: op.ID,
	}
	op.steps[op.Current].fill(r, resp)
	if resp.ChangePeers == nil && resp.TransferLeader == nil && resp.SplitRegion == nil && resp.Merge == nil {
		return nil
	}
	return resp
}

// list returns running operators and the recent history.
func (oc *opController) list() (running, recent []operator) {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	for _, op := range oc.ops {
		running = append(running, *op)
	}
	for _, op := range oc.history {
		recent = append(recent, *op)
	}
	return running, recent
}
