package pd

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// scheduler proposes operators that improve the cluster's balance.
type scheduler interface {
	name() string
	schedule(c *cluster, now time.Time) []*operator
}

func parseSchedulerName(name string) (scheduler, error) {
	switch {
	case name == "balance-leader":
		return balanceLeader{}, nil
	case name == "balance-region":
		return balanceRegion{}, nil
	case name == "hot-region":
		return hotRegion{}, nil
	case strings.HasPrefix(name, "evict-leader-"):
		id, err := strconv.ParseUint(strings.TrimPrefix(name, "evict-leader-"), 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("pd: scheduler %q: evict-leader needs a store ID, as evict-leader-4", name)
		}
		return evictLeader{storeID: id}, nil
	}
	return nil, fmt.Errorf("pd: unknown scheduler %q (known: balance-leader, balance-region, hot-region, evict-leader-<store-id>)", name)
}

// patrolBatch is how many regions the checkers look at per patrol tick.
const patrolBatch = 1024

// scheduleLoop runs the checkers over every region, a batch per tick, and
// the schedulers, while this member leads.
func (c *cluster) scheduleLoop(ctx context.Context) {
	t := time.NewTicker(c.config().PatrolRegionInterval.Duration)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		cfg := c.config()
		c.refreshUnhealthy(now)
		for _, op := range c.patrol(now) {
			_ = c.ops.add(op)
		}
		for _, name := range cfg.Schedulers {
			sch, err := parseSchedulerName(name)
			if err != nil {
				continue
			}
			for _, op := range sch.schedule(c, now) {
				if c.underLimit(op.Kind, cfg) {
					_ = c.ops.add(op)
				}
			}
		}
	}
}

func (c *cluster) underLimit(kind opKind, cfg ScheduleConfig) bool {
	return c.underLimitPlus(kind, cfg, 0)
}

// underLimitPlus is underLimit counting extra operators not registered yet.
func (c *cluster) underLimitPlus(kind opKind, cfg ScheduleConfig, extra int) bool {
	n := c.ops.count(kind) + extra
	switch kind {
	case opLeader:
		return n < cfg.LeaderScheduleLimit
	case opRegion:
		return n < cfg.RegionScheduleLimit
	case opReplica:
		return n < cfg.ReplicaScheduleLimit
	case opMerge:
		return n < cfg.MergeScheduleLimit
	}
	return true
}

// patrol runs the checkers over the next batch of regions.
func (c *cluster) patrol(now time.Time) []*operator {
	c.mu.Lock()
	var batch []*regionInfo
	c.tree.Ascend(c.patrolKey, func(r *metapb.Region) bool {
		batch = append(batch, c.regions[r.GetId()])
		return len(batch) < patrolBatch
	})
	if len(batch) < patrolBatch || len(batch) == 0 {
		c.patrolKey = nil
	} else {
		last := batch[len(batch)-1].meta
		if len(last.GetEndKey()) == 0 {
			c.patrolKey = nil
		} else {
			c.patrolKey = last.GetEndKey()
		}
	}
	c.mu.Unlock()

	cfg := c.config()
	var ops []*operator
	// Regions an operator made in this pass touches: the operators are
	// only registered after the pass.
	taken := map[uint64]bool{}
	merges, replicas := 0, 0
	for _, ri := range batch {
		if ri == nil || ri.leader == nil || taken[ri.meta.GetId()] || c.ops.has(ri.meta.GetId()) {
			continue
		}
		if op := c.checkReplicas(ri, now, cfg); op != nil {
			// Counting this pass's too: a pass may find a thousand
			// regions to fix at once (a zone joined, with location labels).
			if c.underLimitPlus(opReplica, cfg, replicas) {
				ops = append(ops, op)
				replicas++
			}
			continue
		}
		if op := c.checkSplit(ri, cfg); op != nil {
			ops = append(ops, op)
			continue
		}
		if c.ops.involved(ri.meta.GetId()) {
			continue
		}
		if op := c.checkMerge(ri, now, cfg, taken); op != nil && c.underLimitPlus(opMerge, cfg, merges) {
			ops = append(ops, op)
			merges++
			taken[ri.meta.GetId()] = true
			taken[mergeTarget(op)] = true
		}
	}
	return ops
}

// healthy reports whether a store can take a new replica or leader.
func (c *cluster) healthyLocked(storeID uint64, now time.Time) bool {
	si := c.stores[storeID]
	return si != nil && si.meta.GetAddress() != "" && c.stateLocked(si, now) == StoreUp
}

// lost reports whether a replica on the store should be replaced.
func (c *cluster) lostLocked(storeID uint64, now time.Time) bool {
	si := c.stores[storeID]
	if si == nil {
		return true
	}
	switch c.stateLocked(si, now) {
	case StoreDown, StoreOffline, StoreTombstone:
		return true
	}
	return false
}

// pickReceiver returns the healthy store with no replica of r that is best
// isolated from r's other voters (except the one on store except, which is
// leaving; placement.go), the lowest-scored among those, or 0. It also
// returns that store's sharing.
func (c *cluster) pickReceiverLocked(labels []string, r *metapb.Region, except uint64, full map[uint64]bool, now time.Time) (uint64, int64) {
	var best uint64
	bestScore, bestSharing := 0.0, int64(0)
	for id, si := range c.stores {
		if !c.healthyLocked(id, now) || region.FindPeer(r, id) != nil || full[id] {
			continue
		}
		sh := c.sharingLocked(labels, r, id, except)
		sc := c.regionScoreLocked(si)
		if best == 0 || sh < bestSharing || (sh == bestSharing && (sc < bestScore || (sc == bestScore && id < best))) {
			best, bestScore, bestSharing = id, sc, sh
		}
	}
	return best, bestSharing
}

// regionScoreLocked: the store's data size when regions report sizes, else
// its replica count.
func (c *cluster) regionScoreLocked(si *storeInfo) float64 {
	return float64(si.regionSize)/float64(1<<20) + float64(si.regionCount)
}

func (c *cluster) newPeer(storeID uint64) (*metapb.Peer, error) {
	ctx, cancel := context.WithTimeout(c.s.ctx, 5*time.Second)
	defer cancel()
	id, err := c.s.ids.alloc(ctx, 1)
	if err != nil {
		return nil, err
	}
	return &metapb.Peer{Id: id, StoreId: storeID, Role: metapb.PeerRole_Learner}, nil
}

// checkReplicas keeps max-replicas healthy voters: it replaces replicas on
// down, offline or tombstone stores, adds missing ones, removes extras.
func (c *cluster) checkReplicas(ri *regionInfo, now time.Time, cfg ScheduleConfig) *operator {
	c.mu.RLock()
	r := ri.meta
	var voters, healthyVoters, learners []*metapb.Peer
	var lost *metapb.Peer
	for _, p := range r.GetPeers() {
		switch p.GetRole() {
		case metapb.PeerRole_Voter:
			voters = append(voters, p)
			if c.lostLocked(p.GetStoreId(), now) {
				if lost == nil {
					lost = p
				}
			} else {
				healthyVoters = append(healthyVoters, p)
			}
		case metapb.PeerRole_Learner:
			learners = append(learners, p)
		default:
			c.mu.RUnlock()
			return nil // joint state: raft is finishing a change
		}
	}
	labels := cfg.LocationLabels
	receiver, _ := c.pickReceiverLocked(labels, r, lost.GetStoreId(), nil, now)
	// The voter to remove when there are too many: the least isolated,
	// then the busiest, never the leader.
	var busiest *metapb.Peer
	busiestScore, busiestSharing := -1.0, int64(-1)
	for _, p := range voters {
		if p.GetId() == ri.leader.GetId() {
			continue
		}
		sh := c.sharingLocked(labels, r, p.GetStoreId(), 0)
		if sc := c.regionScoreLocked(c.storeLocked(p.GetStoreId())); sh > busiestSharing || (sh == busiestSharing && sc > busiestScore) {
			busiest, busiestScore, busiestSharing = p, sc, sh
		}
	}
	// With location labels: the worst-placed voter, and a store it could
	// move to that is better isolated from the others.
	var misplaced *metapb.Peer
	var betterPlace uint64
	if len(labels) > 0 && lost == nil && len(learners) == 0 && len(voters) == cfg.MaxReplicas &&
		len(ri.downPeers) == 0 && len(ri.pendingPeers) == 0 {
		worst := int64(0)
		for _, p := range voters {
			if sh := c.sharingLocked(labels, r, p.GetStoreId(), 0); sh > worst {
				misplaced, worst = p, sh
			}
		}
		if misplaced != nil {
			if to, sh := c.pickReceiverLocked(labels, r, misplaced.GetStoreId(), c.ops.atLimit(cfg.StoreLimit), now); to != 0 && sh < worst {
				betterPlace = to
			} else {
				misplaced = nil
			}
		}
	}
	c.mu.RUnlock()

	// A leftover learner (an operator that did not finish): promote it if a
	// voter is missing, otherwise remove it.
	for _, l := range learners {
		if ri.isPending(l.GetId()) {
			continue
		}
		if len(healthyVoters) < cfg.MaxReplicas {
			return newOperator(r.GetId(), "promote learner", opReplica, promoteLearner{peer: l})
		}
		return newOperator(r.GetId(), "remove extra learner", opReplica, removePeer{peer: l})
	}
	if len(healthyVoters) < cfg.MaxReplicas && receiver != 0 {
		np, err := c.newPeer(receiver)
		if err != nil {
			return nil
		}
		steps := []opStep{addLearner{peer: np}, promoteLearner{peer: &metapb.Peer{Id: np.GetId(), StoreId: receiver}}}
		desc := "add missing replica"
		if lost != nil && len(voters) >= cfg.MaxReplicas {
			steps = append(steps, removePeer{peer: lost})
			desc = "replace replica on lost store"
		}
		return newOperator(r.GetId(), desc, opReplica, steps...)
	}
	if len(voters) > cfg.MaxReplicas {
		victim := lost
		if victim == nil {
			victim = busiest
		}
		if victim != nil {
			return newOperator(r.GetId(), "remove extra replica", opReplica, removePeer{peer: victim})
		}
	}
	if misplaced != nil && ri.leader != nil && !ri.isPending(misplaced.GetId()) {
		np, err := c.newPeer(betterPlace)
		if err != nil {
			return nil
		}
		steps := movePeerSteps(np, misplaced, misplaced.GetId() == ri.leader.GetId())
		return newOperator(r.GetId(), "move replica to a better-isolated store", opReplica, steps...)
	}
	return nil
}

func (c *cluster) checkSplit(ri *regionInfo, cfg ScheduleConfig) *operator {
	if ri.approxSize > cfg.RegionMaxSize || ri.approxKeys > cfg.RegionMaxKeys {
		return newOperator(ri.meta.GetId(), "split oversized region", opSplit,
			splitRegion{fromVersion: ri.meta.GetRegionEpoch().GetVersion()})
	}
	return nil
}

// checkMerge merges a small region into its right (or left) neighbour when
// both are small, idle, old enough, healthy, and have replicas on the same
// stores.
func (c *cluster) checkMerge(ri *regionInfo, now time.Time, cfg ScheduleConfig, taken map[uint64]bool) *operator {
	small := func(x *regionInfo) bool {
		return x != nil && x.leader != nil && !x.lastHeartbeat.IsZero() && !x.busy(cfg) &&
			x.approxSize < cfg.MaxMergeRegionSize && x.approxKeys < cfg.MaxMergeRegionKeys &&
			now.Sub(x.versionChangedAt) > cfg.SplitMergeInterval.Duration &&
			len(x.downPeers) == 0 && len(x.pendingPeers) == 0
	}
	if !small(ri) {
		return nil
	}
	c.mu.RLock()
	// Candidates: the right neighbour, then the left; one already on the
	// same stores first, since it needs no replica moves.
	var candidates []*regionInfo
	if end := ri.meta.GetEndKey(); len(end) > 0 {
		if n := c.tree.Search(end); n != nil {
			candidates = append(candidates, c.regions[n.GetId()])
		}
	}
	if p := c.tree.SearchPrev(ri.meta.GetStartKey()); p != nil {
		candidates = append(candidates, c.regions[p.GetId()])
	}
	var target *regionInfo
	var moves []storeMove
	for _, x := range candidates {
		if !small(x) || taken[x.meta.GetId()] || c.ops.involved(x.meta.GetId()) {
			continue
		}
		m, ok := c.alignmentLocked(ri, x.meta, now)
		if ok && (target == nil || len(m) < len(moves)) {
			target, moves = x, m
		}
	}
	c.mu.RUnlock()
	if target == nil {
		return nil
	}
	steps, err := c.moveSteps(ri, moves)
	if err != nil {
		return nil
	}
	desc := "merge small region"
	if len(moves) > 0 {
		desc = "align and merge small region"
	}
	return newOperator(ri.meta.GetId(), desc, opMerge, append(steps, mergeRegion{target: target.meta})...)
}

// storeMove moves a replica of a region from one store to another.
type storeMove struct {
	old      *metapb.Peer
	dstStore uint64
}

// alignmentLocked lists the moves that put the source's voters on the
// target's stores, so the two can merge; ok is false when they cannot be
// aligned (learners or joint configurations, different replica counts, a
// target store that is not up).
func (c *cluster) alignmentLocked(source *regionInfo, target *metapb.Region, now time.Time) ([]storeMove, bool) {
	if len(source.meta.GetPeers()) != len(target.GetPeers()) {
		return nil, false
	}
	var extra []*metapb.Peer
	for _, r := range []*metapb.Region{source.meta, target} {
		for _, p := range r.GetPeers() {
			if p.GetRole() != metapb.PeerRole_Voter {
				return nil, false
			}
		}
	}
	for _, p := range source.meta.GetPeers() {
		if region.FindPeer(target, p.GetStoreId()) == nil {
			extra = append(extra, p)
		}
	}
	var moves []storeMove
	for _, p := range target.GetPeers() {
		if region.FindPeer(source.meta, p.GetStoreId()) != nil {
			continue
		}
		if !c.healthyLocked(p.GetStoreId(), now) {
			return nil, false
		}
		moves = append(moves, storeMove{old: extra[len(moves)], dstStore: p.GetStoreId()})
	}
	return moves, true
}

// moveSteps builds the steps that carry out moves on region ri, one after
// the other: a learner on the new store, promoted in a joint swap with the
// old voter, which is then removed; a leader is first replaced as leader by
// the promoted replica, since it cannot demote itself.
func (c *cluster) moveSteps(ri *regionInfo, moves []storeMove) ([]opStep, error) {
	var steps []opStep
	for _, m := range moves {
		np, err := c.newPeer(m.dstStore)
		if err != nil {
			return nil, err
		}
		steps = append(steps, movePeerSteps(np, m.old, ri.leader.GetId() == m.old.GetId())...)
	}
	return steps, nil
}

func movePeerSteps(learner, old *metapb.Peer, oldLeads bool) []opStep {
	voter := &metapb.Peer{Id: learner.GetId(), StoreId: learner.GetStoreId()}
	if oldLeads {
		return []opStep{addLearner{peer: learner}, promoteLearner{peer: voter}, transferLeader{toStore: learner.GetStoreId()}, removePeer{peer: old}}
	}
	demote := &metapb.Peer{Id: old.GetId(), StoreId: old.GetStoreId(), Role: metapb.PeerRole_Learner}
	return []opStep{addLearner{peer: learner}, jointSwap{promote: voter, demote: old}, removePeer{peer: demote}}
}

type storeScore struct {
	id    uint64
	score float64
}

// upStoresLocked returns the healthy stores sorted by score, ascending.
func (c *cluster) upStoresLocked(now time.Time, score func(*storeInfo) float64) []storeScore {
	var out []storeScore
	for id, si := range c.stores {
		if c.healthyLocked(id, now) {
			out = append(out, storeScore{id, score(si)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].score != out[j].score {
			return out[i].score < out[j].score
		}
		return out[i].id < out[j].id
	})
	return out
}

// movable: a region whose replicas are all healthy and caught up, with no
// operator.
func (c *cluster) movableLocked(ri *regionInfo, cfg ScheduleConfig, now time.Time) bool {
	// involved, not has: a merge's target must keep its stores and
	// leader while the merge runs.
	if ri.leader == nil || len(ri.downPeers) > 0 || len(ri.pendingPeers) > 0 || c.ops.involved(ri.meta.GetId()) {
		return false
	}
	voters := 0
	for _, p := range ri.meta.GetPeers() {
		if p.GetRole() != metapb.PeerRole_Voter || !c.healthyLocked(p.GetStoreId(), now) {
			return false
		}
		voters++
	}
	return voters == cfg.MaxReplicas
}

// balanceLeader moves leaders from the store with the most to the one with
// the fewest.
type balanceLeader struct{}

func (balanceLeader) name() string { return "balance-leader" }

func (balanceLeader) schedule(c *cluster, now time.Time) []*operator {
	cfg := c.config()
	inf := c.ops.influence()
	c.mu.RLock()
	defer c.mu.RUnlock()
	stores := c.upStoresLocked(now, func(si *storeInfo) float64 {
		return float64(si.leaderCount + inf[si.meta.GetId()].leaders)
	})
	if len(stores) < 2 {
		return nil
	}
	src := stores[len(stores)-1]
	budget := cfg.LeaderScheduleLimit - c.ops.count(opLeader)
	evicting := evictedStores(cfg)
	var ops []*operator
	for _, dst := range stores {
		if budget <= 0 || src.score-dst.score <= 1 {
			break
		}
		if evicting[dst.id] {
			continue // being drained: never a leader's destination
		}
		moved := 0
		for _, ri := range c.leadersByStore[src.id] {
			if moved >= budget || src.score-dst.score-float64(2*moved) <= 1 {
				break
			}
			p := region.FindPeer(ri.meta, dst.id)
			if p == nil || p.GetRole() != metapb.PeerRole_Voter || !c.movableLocked(ri, cfg, now) {
				continue
			}
			ops = append(ops, newOperator(ri.meta.GetId(), "balance leader", opLeader, transferLeader{toStore: dst.id}))
			moved++
		}
		budget -= moved
	}
	return ops
}

// balanceRegion moves replicas from the store with the highest score to the
// one with the lowest.
type balanceRegion struct{}

func (balanceRegion) name() string { return "balance-region" }

func (balanceRegion) schedule(c *cluster, now time.Time) []*operator {
	cfg := c.config()
	inf := c.ops.influence()
	full := c.ops.atLimit(cfg.StoreLimit)
	budget := cfg.RegionScheduleLimit - c.ops.count(opRegion)
	type move struct {
		ri     *regionInfo
		old    *metapb.Peer
		dst    uint64
		leader bool
	}
	var moves []move
	c.mu.RLock()
	// Scores in replicas: each store's count plus what running operators
	// will add or take, so moves in flight are not scheduled twice.
	perRegion := map[uint64]float64{}
	score := func(si *storeInfo) float64 {
		id := si.meta.GetId()
		per := 1.0
		if si.regionCount > 0 {
			per = c.regionScoreLocked(si) / float64(si.regionCount)
		}
		perRegion[id] = per
		return c.regionScoreLocked(si) + per*float64(inf[id].regions)
	}
	stores := c.upStoresLocked(now, score)
	taken := map[uint64]bool{}
	incoming := map[uint64]int{}
	// exhausted: sources none of whose regions can move anywhere this
	// round (with location labels a store can hold a replica of every
	// region no other store may take); the next-highest is tried then.
	exhausted := map[uint64]bool{}
	for budget > 0 && len(stores) >= 2 {
		si := len(stores) - 1
		for si > 0 && exhausted[stores[si].id] {
			si--
		}
		if si == 0 {
			break
		}
		src := stores[si]
		avg := 0.0
		for _, s := range stores {
			avg += s.score
		}
		avg /= float64(len(stores))
		per := max(perRegion[src.id], 1)
		// The lowest-scored store that can still take one of src's
		// replicas: the lowest may hold a replica of each of src's
		// movable regions already or, with location labels, be in a zone
		// none of them may move to, and the next one not.
		var found *move
		di := -1
		for i, dst := range stores[:si] {
			if src.score-dst.score <= max(2*per, 0.05*avg) {
				break
			}
			if full[dst.id] || incoming[dst.id] >= cfg.StoreLimit {
				continue
			}
			for _, ri := range c.peersByStore[src.id] {
				if taken[ri.meta.GetId()] || region.FindPeer(ri.meta, dst.id) != nil || !c.movableLocked(ri, cfg, now) {
					continue
				}
				if labels := cfg.LocationLabels; len(labels) > 0 &&
					c.sharingLocked(labels, ri.meta, dst.id, src.id) > c.sharingLocked(labels, ri.meta, src.id, 0) {
					continue // the move would leave the region less isolated
				}
				old := region.FindPeer(ri.meta, src.id)
				found = &move{ri, old, dst.id, ri.leader.GetId() == old.GetId()}
				break
			}
			if found != nil {
				di = i
				break
			}
		}
		if found == nil {
			exhausted[src.id] = true
			continue
		}
		taken[found.ri.meta.GetId()] = true
		moves = append(moves, *found)
		budget--
		incoming[found.dst]++
		stores[si].score -= per
		stores[di].score += per
		sort.Slice(stores, func(i, j int) bool {
			if stores[i].score != stores[j].score {
				return stores[i].score < stores[j].score
			}
			return stores[i].id < stores[j].id
		})
	}
	c.mu.RUnlock()
	var ops []*operator
	for _, m := range moves {
		np, err := c.newPeer(m.dst)
		if err != nil {
			break
		}
		steps := movePeerSteps(np, m.old, m.leader)
		ops = append(ops, newOperator(m.ri.meta.GetId(), "balance region", opRegion, steps...))
	}
	return ops
}

// hotRegion moves the leadership of the hottest regions (by heat: bytes
// and keys, read and written) from the store whose leaders serve the most
// to voters on stores serving less. It moves leaders only: a leader serves
// the reads and sends the writes, while every replica applies the writes,
// so a store hot from applying writes is balance-region's to relieve.
type hotRegion struct{}

func (hotRegion) name() string { return "hot-region" }

func (hotRegion) schedule(c *cluster, now time.Time) []*operator {
	cfg := c.config()
	c.mu.RLock()
	defer c.mu.RUnlock()
	load := func(si *storeInfo) float64 {
		sum := 0.0
		for _, ri := range c.leadersByStore[si.meta.GetId()] {
			if h := ri.heat(cfg); h >= 1 {
				sum += h
			}
		}
		return sum
	}
	stores := c.upStoresLocked(now, load)
	if len(stores) < 2 {
		return nil
	}
	evicting := evictedStores(cfg)
	src := stores[len(stores)-1]
	if src.score == 0 || src.score < 1.3*stores[0].score+1 {
		return nil
	}
	var hottest *regionInfo
	var hottestHeat float64
	var target uint64
	for _, ri := range c.leadersByStore[src.id] {
		h := ri.heat(cfg)
		if h < 1 || (hottest != nil && h <= hottestHeat) || !c.movableLocked(ri, cfg, now) {
			continue
		}
		// The coolest store holding a voter of the region, if moving the
		// region there leaves it cooler than the source.
		for _, s := range stores {
			if s.id == src.id || s.score+h >= src.score-h || evicting[s.id] {
				continue
			}
			if p := region.FindPeer(ri.meta, s.id); p != nil && p.GetRole() == metapb.PeerRole_Voter {
				hottest, hottestHeat, target = ri, h, s.id
				break
			}
		}
	}
	if hottest == nil {
		return nil
	}
	return []*operator{newOperator(hottest.meta.GetId(), "move hot leader", opLeader, transferLeader{toStore: target})}
}

// evictedStores are the stores an evict-leader scheduler drains: the
// other schedulers never move a leader to one, or they would move leaders
// back as fast as it moves them off.
func evictedStores(cfg ScheduleConfig) map[uint64]bool {
	var out map[uint64]bool
	for _, name := range cfg.Schedulers {
		if sc, err := parseSchedulerName(name); err == nil {
			if e, ok := sc.(evictLeader); ok {
				if out == nil {
					out = map[uint64]bool{}
				}
				out[e.storeID] = true
			}
		}
	}
	return out
}

// evictLeader moves every leader off one store (to drain it for
// maintenance).
type evictLeader struct{ storeID uint64 }

func (e evictLeader) name() string { return fmt.Sprintf("evict-leader-%d", e.storeID) }

func (e evictLeader) schedule(c *cluster, now time.Time) []*operator {
	cfg := c.config()
	c.mu.RLock()
	defer c.mu.RUnlock()
	budget := cfg.LeaderScheduleLimit - c.ops.count(opLeader)
	evicting := evictedStores(cfg) // not onto a store another evict-leader drains
	var ops []*operator
	for _, ri := range c.leadersByStore[e.storeID] {
		if len(ops) >= budget {
			break
		}
		if c.ops.involved(ri.meta.GetId()) {
			continue
		}
		var best uint64
		bestCount := 0
		for _, p := range ri.meta.GetPeers() {
			if p.GetStoreId() == e.storeID || p.GetRole() != metapb.PeerRole_Voter || !c.healthyLocked(p.GetStoreId(), now) || evicting[p.GetStoreId()] {
				continue
			}
			if n := c.stores[p.GetStoreId()].leaderCount; best == 0 || n < bestCount {
				best, bestCount = p.GetStoreId(), n
			}
		}
		if best != 0 {
			ops = append(ops, newOperator(ri.meta.GetId(), "evict leader", opLeader, transferLeader{toStore: best}))
		}
	}
	return ops
}
