package pd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
	"github.com/basaltdb/basalt/region"
)

// regionInfo is what the leader knows of a region: its descriptor (stores
// are the source of truth; heartbeats carry it) and its latest statistics.
// A regionInfo is immutable once in the maps: a heartbeat replaces it, so a
// reader holding one sees a consistent snapshot without the lock.
type regionInfo struct {
	meta          *metapb.Region
	leader        *metapb.Peer
	downPeers     []*pdpb.PeerStats
	pendingPeers  []*metapb.Peer
	bytesWritten  uint64
	keysWritten   uint64
	bytesRead     uint64
	keysRead      uint64
	interval      uint64
	approxSize    uint64
	approxKeys    uint64
	lastHeartbeat time.Time
	// versionChangedAt: when a split or merge last changed the range.
	versionChangedAt time.Time
}

func (r *regionInfo) isPending(peerID uint64) bool {
	for _, p := range r.pendingPeers {
		if p.GetId() == peerID {
			return true
		}
	}
	return false
}

func (r *regionInfo) isDown(peerID uint64) bool {
	for _, p := range r.downPeers {
		if p.GetPeer().GetId() == peerID {
			return true
		}
	}
	return false
}

// writeFlow is bytes written per second over the last heartbeat interval.
func (r *regionInfo) writeFlow() float64 {
	if r.interval == 0 {
		return 0
	}
	return float64(r.bytesWritten) / float64(r.interval)
}

// keyRate is keys read and written per second over the last heartbeat
// interval.
func (r *regionInfo) keyRate() float64 {
	if r.interval == 0 {
		return 0
	}
	return float64(r.keysRead+r.keysWritten) / float64(r.interval)
}

// heat is the load a region's leader serves, as a multiple of the hot
// thresholds: bytes read and written per second over HotRegionMinFlow plus
// keys read and written per second over HotRegionMinKeyRate. A region at
// 1 or more is hot. Reads count as much as writes: a leader serves both
// (replica reads aside), so moving it moves both.
func (r *regionInfo) heat(cfg ScheduleConfig) float64 {
	if r.interval == 0 {
		return 0
	}
	secs := float64(r.interval)
	return float64(r.bytesWritten+r.bytesRead)/secs/float64(max(cfg.HotRegionMinFlow, 1)) +
		float64(r.keysWritten+r.keysRead)/secs/float64(max(cfg.HotRegionMinKeyRate, 1))
}

// busy: the region writes or serves enough that the merge checker leaves
// it alone.
func (r *regionInfo) busy(cfg ScheduleConfig) bool {
	return r.writeFlow() >= float64(cfg.HotRegionMinFlow) || r.keyRate() >= float64(cfg.HotRegionMinKeyRate)
}

type storeInfo struct {
	meta          *metapb.Store
	stats         *pdpb.StoreStats
	lastHeartbeat time.Time
	regionCount   int
	leaderCount   int
	regionSize    uint64
}

// StoreState is a store's liveness as PD sees it.
type StoreState string

const (
	StoreUp           StoreState = "Up"
	StoreDisconnected StoreState = "Disconnected"
	StoreDown         StoreState = "Down"
	StoreOffline      StoreState = "Offline"
	StoreTombstone    StoreState = "Tombstone"
)

// cluster is the leader's runtime view of stores and regions.
//
// Lock order: cluster.mu before opController.mu.
type cluster struct {
	s *Server

	mu             sync.RWMutex
	loaded         bool
	cfg            ScheduleConfig
	tree           *region.RegionTree
	regions        map[uint64]*regionInfo
	stores         map[uint64]*storeInfo
	peersByStore   map[uint64]map[uint64]*regionInfo
	leadersByStore map[uint64]map[uint64]*regionInfo
	dirty          map[uint64]*metapb.Region
	removed        map[uint64]struct{}
	streams        map[uint64]*heartbeatStream
	patrolKey      []byte

	ops *opController
	// heartbeats counts region heartbeats handled (for benchmarks).
	heartbeats uint64
	// unhealthySet: stores not Up, refreshed every schedule tick, read on
	// every heartbeat without the lock.
	unhealthySet atomic.Pointer[map[uint64]bool]
}

// unhealthy reports whether a store was not Up at the last schedule tick.
func (c *cluster) unhealthy(storeID uint64) bool {
	m := c.unhealthySet.Load()
	return m != nil && (*m)[storeID]
}

func (c *cluster) refreshUnhealthy(now time.Time) {
	m := map[uint64]bool{}
	c.mu.RLock()
	for id, si := range c.stores {
		if c.stateLocked(si, now) != StoreUp {
			m[id] = true
		}
	}
	c.mu.RUnlock()
	c.unhealthySet.Store(&m)
}

func newCluster(s *Server) *cluster {
	c := &cluster{s: s}
	c.ops = newOpController(c)
	c.resetLocked()
	return c
}

func (c *cluster) resetLocked() {
	c.loaded = false
	c.tree = region.NewRegionTree()
	c.regions = make(map[uint64]*regionInfo)
	c.stores = make(map[uint64]*storeInfo)
	c.peersByStore = make(map[uint64]map[uint64]*regionInfo)
	c.leadersByStore = make(map[uint64]map[uint64]*regionInfo)
	c.dirty = make(map[uint64]*metapb.Region)
	c.removed = make(map[uint64]struct{})
	c.streams = make(map[uint64]*heartbeatStream)
	c.patrolKey = nil
}

func (c *cluster) reset() {
	c.mu.Lock()
	c.resetLocked()
	c.mu.Unlock()
	c.ops.reset()
}

// load fills the view from the persisted state when this member becomes
// leader. Every store gets a fresh heartbeat time: it has a full
// disconnect period to report to the new leader before it counts as gone.
func (c *cluster) load() {
	cfg := c.s.cfg.Schedule
	if raw := c.s.fsm.getConfig(); len(raw) > 0 {
		var persisted ScheduleConfig
		if err := json.Unmarshal(raw, &persisted); err == nil {
			cfg = persisted
		}
	}
	cfg.fill()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resetLocked()
	c.cfg = cfg
	now := time.Now()
	for _, st := range c.s.fsm.getStores() {
		c.stores[st.GetId()] = &storeInfo{meta: st, lastHeartbeat: now}
	}
	for _, r := range c.s.fsm.persistedRegions() {
		if _, err := c.tree.Update(r); err != nil {
			continue
		}
		ri := &regionInfo{meta: r, versionChangedAt: now}
		c.regions[r.GetId()] = ri
		c.indexLocked(ri)
	}
	c.loaded = true
}

func (c *cluster) config() ScheduleConfig {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cfg
}

// setConfig validates, persists and installs a new configuration. It takes
// the values as given: a zero is refused, not replaced by a default.
func (c *cluster) setConfig(ctx context.Context, cfg ScheduleConfig) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	if _, err := c.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_SetConfig{SetConfig: &pdpb.ConfigCommand{Json: raw}}}); err != nil {
		return err
	}
	c.mu.Lock()
	c.cfg = cfg
	c.mu.Unlock()
	return nil
}

func (c *cluster) storeLocked(id uint64) *storeInfo {
	si := c.stores[id]
	if si == nil {
		// A region names a store PD has not seen register (yet): track its
		// counts; it is Down until it heartbeats.
		si = &storeInfo{meta: &metapb.Store{Id: id}}
		c.stores[id] = si
	}
	return si
}

// indexLocked adds a region's contribution to the per-store counts.
func (c *cluster) indexLocked(ri *regionInfo) {
	for _, p := range ri.meta.GetPeers() {
		sid := p.GetStoreId()
		m := c.peersByStore[sid]
		if m == nil {
			m = make(map[uint64]*regionInfo)
			c.peersByStore[sid] = m
		}
		m[ri.meta.GetId()] = ri
		si := c.storeLocked(sid)
		si.regionCount++
		si.regionSize += ri.approxSize
	}
	if l := ri.leader; l != nil {
		m := c.leadersByStore[l.GetStoreId()]
		if m == nil {
			m = make(map[uint64]*regionInfo)
			c.leadersByStore[l.GetStoreId()] = m
		}
		m[ri.meta.GetId()] = ri
		c.storeLocked(l.GetStoreId()).leaderCount++
	}
}

func (c *cluster) unindexLocked(ri *regionInfo) {
	for _, p := range ri.meta.GetPeers() {
		sid := p.GetStoreId()
		delete(c.peersByStore[sid], ri.meta.GetId())
		if si := c.stores[sid]; si != nil {
			si.regionCount--
			si.regionSize -= ri.approxSize
		}
	}
	if l := ri.leader; l != nil {
		delete(c.leadersByStore[l.GetStoreId()], ri.meta.GetId())
		if si := c.stores[l.GetStoreId()]; si != nil {
			si.leaderCount--
		}
	}
}

func (c *cluster) removeRegionLocked(id uint64) {
	ri := c.regions[id]
	if ri == nil {
		return
	}
	c.unindexLocked(ri)
	delete(c.regions, id)
	delete(c.dirty, id)
	c.tree.Remove(id)
	c.removed[id] = struct{}{}
}

// errNotLeader: this member is not the serving PD leader.
var errNotLeader = errors.New("pd: not the leader")

var errStaleRegion = errors.New("pd: region descriptor is older than the one PD has")

// handleRegionHeartbeat records what a region's leader reported and returns
// the operator step for it, if any.
func (c *cluster) handleRegionHeartbeat(req *pdpb.RegionHeartbeatRequest) (*pdpb.RegionHeartbeatResponse, error) {
	r := req.GetRegion()
	if r.GetId() == 0 || r.GetRegionEpoch() == nil {
		return nil, errors.New("pd: region heartbeat without region ID or epoch")
	}
	if l := req.GetLeader(); l == nil || region.FindPeerByID(r, l.GetId()) == nil {
		return nil, errors.New("pd: region heartbeat leader is not a peer of the region")
	}
	now := time.Now()
	c.mu.Lock()
	if !c.loaded {
		c.mu.Unlock()
		return nil, errNotLeader
	}
	c.heartbeats++
	ri := c.regions[r.GetId()]
	if ri != nil && region.IsStale(r.GetRegionEpoch(), ri.meta.GetRegionEpoch()) {
		c.mu.Unlock()
		return nil, errStaleRegion
	}
	descChanged := ri == nil || !region.EpochEqual(r.GetRegionEpoch(), ri.meta.GetRegionEpoch()) ||
		!bytes.Equal(r.GetStartKey(), ri.meta.GetStartKey()) || !bytes.Equal(r.GetEndKey(), ri.meta.GetEndKey())
	leaderChanged := ri == nil || ri.leader.GetId() != req.GetLeader().GetId()
	var removedIDs []uint64
	if descChanged {
		var err error
		if removedIDs, err = c.installLocked(r); err != nil {
			c.mu.Unlock()
			return nil, errStaleRegion
		}
	}
	old := ri
	ri = &regionInfo{
		meta: r, leader: req.GetLeader(), downPeers: req.GetDownPeers(), pendingPeers: req.GetPendingPeers(),
		bytesWritten: req.GetBytesWritten(), keysWritten: req.GetKeysWritten(),
		bytesRead: req.GetBytesRead(), keysRead: req.GetKeysRead(), interval: req.GetIntervalSeconds(),
		approxSize: req.GetApproximateSize(), approxKeys: req.GetApproximateKeys(),
		lastHeartbeat: now, versionChangedAt: now,
	}
	if old != nil {
		c.unindexLocked(old)
		if old.meta.GetRegionEpoch().GetVersion() == r.GetRegionEpoch().GetVersion() {
			ri.versionChangedAt = old.versionChangedAt
		}
	}
	c.regions[r.GetId()] = ri
	c.indexLocked(ri)
	c.mu.Unlock()

	if descChanged || leaderChanged {
		c.published(r, req.GetLeader(), removedIDs)
	}
	return c.ops.onHeartbeat(ri), nil
}

// installLocked puts a newer descriptor in the tree, drops the regions it
// now overlaps, and queues it for persistence. It returns the dropped
// regions' IDs.
func (c *cluster) installLocked(r *metapb.Region) ([]uint64, error) {
	removed, err := c.tree.Update(r)
	if err != nil {
		return nil, err
	}
	var removedIDs []uint64
	for _, o := range removed {
		if o.GetId() != r.GetId() {
			c.removeRegionLocked(o.GetId())
			removedIDs = append(removedIDs, o.GetId())
		}
	}
	c.dirty[r.GetId()] = r
	delete(c.removed, r.GetId())
	return removedIDs, nil
}

// published tells routing subscribers about a changed region and ends the
// operators of the regions it replaced. Called without c.mu.
func (c *cluster) published(r *metapb.Region, leader *metapb.Peer, removedIDs []uint64) {
	c.s.watch.publish(&pdpb.WatchRegionsResponse{
		Changed: []*pdpb.RegionInfo{{Region: r, Leader: leader}},
		Removed: removedIDs,
	})
	for _, id := range removedIDs {
		c.ops.regionGone(id)
	}
}

// reportSplit records the regions a split made, before their leaders'
// heartbeats arrive. A descriptor PD already has at the same or a newer
// epoch is left as it is; the new regions' leaders are taken to be their
// replicas on the reporting store (where the split ran and the new regions
// campaign first) until a heartbeat says otherwise. Statistics wait for
// the heartbeats: the merge checker ignores a region PD has not heard from.
func (c *cluster) reportSplit(regions []*metapb.Region, storeID uint64) error {
	for _, r := range regions {
		if r.GetId() == 0 || r.GetRegionEpoch() == nil || len(r.GetPeers()) == 0 || !region.ValidRange(r.GetStartKey(), r.GetEndKey()) {
			return fmt.Errorf("%w: a split report needs regions with an ID, an epoch, peers and a valid range", errInvalidArgument)
		}
	}
	now := time.Now()
	for _, r := range regions {
		c.mu.Lock()
		if !c.loaded {
			c.mu.Unlock()
			return errNotLeader
		}
		old := c.regions[r.GetId()]
		if old != nil && !region.IsStale(old.meta.GetRegionEpoch(), r.GetRegionEpoch()) {
			c.mu.Unlock()
			continue
		}
		removedIDs, err := c.installLocked(r)
		if err != nil {
			c.mu.Unlock()
			continue
		}
		ri := &regionInfo{meta: r, versionChangedAt: now}
		if old != nil {
			// The parent keeps its statistics (they overstate it now, which
			// only delays a merge) until its next heartbeat.
			c.unindexLocked(old)
			cp := *old
			ri = &cp
			ri.meta, ri.versionChangedAt = r, now
			if l := old.leader; l != nil && region.FindPeerByID(r, l.GetId()) == nil {
				ri.leader = nil
			}
		}
		if ri.leader == nil {
			ri.leader = region.FindPeer(r, storeID)
		}
		c.regions[r.GetId()] = ri
		c.indexLocked(ri)
		c.mu.Unlock()
		c.published(r, ri.leader, removedIDs)
	}
	return nil
}

// persistLoop writes changed descriptors through Raft in batches.
func (c *cluster) persistLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		var put []*metapb.Region
		for _, r := range c.dirty {
			put = append(put, r)
		}
		var del []uint64
		for id := range c.removed {
			del = append(del, id)
		}
		c.dirty = make(map[uint64]*metapb.Region)
		c.removed = make(map[uint64]struct{})
		c.mu.Unlock()
		if len(del) > 0 {
			if _, err := c.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_RemoveRegions{RemoveRegions: &pdpb.RemoveRegionsCommand{RegionIds: del}}}); err != nil {
				c.requeue(nil, del)
			}
		}
		for len(put) > 0 {
			n := min(len(put), 4096)
			if _, err := c.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_PutRegions{PutRegions: &pdpb.PutRegionsCommand{Regions: put[:n]}}}); err != nil {
				c.requeue(put, nil)
				break
			}
			put = put[n:]
		}
	}
}

// requeue puts back what could not be persisted, unless newer news arrived.
func (c *cluster) requeue(put []*metapb.Region, del []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range put {
		if _, ok := c.dirty[r.GetId()]; !ok {
			if cur := c.regions[r.GetId()]; cur != nil {
				c.dirty[r.GetId()] = cur.meta
			}
		}
	}
	for _, id := range del {
		if c.regions[id] == nil {
			c.removed[id] = struct{}{}
		}
	}
}

// ---- stores ----

func (c *cluster) stateLocked(si *storeInfo, now time.Time) StoreState {
	switch si.meta.GetState() {
	case metapb.StoreState_Tombstone:
		return StoreTombstone
	case metapb.StoreState_Offline:
		return StoreOffline
	}
	if si.lastHeartbeat.IsZero() {
		return StoreDown
	}
	since := now.Sub(si.lastHeartbeat)
	switch {
	case since > c.cfg.MaxStoreDownTime.Duration:
		return StoreDown
	case since > c.cfg.StoreDisconnectTime.Duration:
		return StoreDisconnected
	}
	return StoreUp
}

var errStoreNotFound = errors.New("pd: store not found")

func (c *cluster) putStore(ctx context.Context, st *metapb.Store) error {
	if st.GetId() == 0 || st.GetAddress() == "" {
		return errors.New("pd: a store needs an ID and an address")
	}
	c.mu.RLock()
	for _, o := range c.stores {
		if o.meta.GetId() != st.GetId() && o.meta.GetAddress() == st.GetAddress() && o.meta.GetState() != metapb.StoreState_Tombstone {
			c.mu.RUnlock()
			return fmt.Errorf("pd: address %s is already used by store %d", st.GetAddress(), o.meta.GetId())
		}
	}
	if old := c.stores[st.GetId()]; old != nil && old.meta.GetState() == metapb.StoreState_Tombstone {
		c.mu.RUnlock()
		return fmt.Errorf("pd: store %d is a tombstone", st.GetId())
	}
	c.mu.RUnlock()
	if _, err := c.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_PutStore{PutStore: st}}); err != nil {
		return err
	}
	c.mu.Lock()
	si := c.storeLocked(st.GetId())
	si.meta = st
	if si.lastHeartbeat.IsZero() {
		si.lastHeartbeat = time.Now()
	}
	c.mu.Unlock()
	return nil
}

func (c *cluster) handleStoreHeartbeat(stats *pdpb.StoreStats) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded {
		return errNotLeader
	}
	si := c.stores[stats.GetStoreId()]
	if si == nil || si.meta.GetAddress() == "" {
		return errStoreNotFound
	}
	if si.meta.GetState() == metapb.StoreState_Tombstone {
		return fmt.Errorf("pd: store %d is a tombstone", stats.GetStoreId())
	}
	si.stats = stats
	si.lastHeartbeat = time.Now()
	return nil
}

// setStoreState moves a store to Offline (drain) or back to Up, or to
// Tombstone once it holds no replicas.
func (c *cluster) setStoreState(ctx context.Context, id uint64, state metapb.StoreState) error {
	c.mu.RLock()
	si := c.stores[id]
	if si == nil || si.meta.GetAddress() == "" {
		c.mu.RUnlock()
		return errStoreNotFound
	}
	if state == metapb.StoreState_Tombstone && si.regionCount > 0 {
		c.mu.RUnlock()
		return fmt.Errorf("pd: store %d still holds %d replicas; set it Offline and wait", id, si.regionCount)
	}
	st := cloneStore(si.meta)
	c.mu.RUnlock()
	st.State = state
	if _, err := c.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_PutStore{PutStore: st}}); err != nil {
		return err
	}
	c.mu.Lock()
	c.storeLocked(id).meta = st
	c.mu.Unlock()
	return nil
}

// StoreStatus is one store as the API shows it.
type StoreStatus struct {
	Store         *metapb.Store    `json:"store"`
	State         StoreState       `json:"state"`
	Stats         *pdpb.StoreStats `json:"stats,omitempty"`
	LastHeartbeat time.Time        `json:"last_heartbeat"`
	RegionCount   int              `json:"region_count"`
	LeaderCount   int              `json:"leader_count"`
	RegionSize    uint64           `json:"region_size"`
}

func (c *cluster) storeStatuses() []StoreStatus {
	c.mu.RLock()
	defer c.mu.RUnlock()
	now := time.Now()
	var out []StoreStatus
	for _, si := range c.stores {
		if si.meta.GetAddress() == "" {
			continue
		}
		out = append(out, StoreStatus{Store: si.meta, State: c.stateLocked(si, now), Stats: si.stats,
			LastHeartbeat: si.lastHeartbeat, RegionCount: si.regionCount, LeaderCount: si.leaderCount, RegionSize: si.regionSize})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Store.GetId() < out[j].Store.GetId() })
	return out
}

func (c *cluster) getStore(id uint64) (*metapb.Store, *pdpb.StoreStats, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	si := c.stores[id]
	if si == nil || si.meta.GetAddress() == "" {
		return nil, nil, errStoreNotFound
	}
	return si.meta, si.stats, nil
}

// ---- routing queries ----

func (c *cluster) regionByKey(key []byte) *regionInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if r := c.tree.Search(key); r != nil {
		return c.regions[r.GetId()]
	}
	return nil
}

func (c *cluster) prevRegion(key []byte) *regionInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if r := c.tree.SearchPrev(key); r != nil {
		return c.regions[r.GetId()]
	}
	return nil
}

// leaderStoreOf returns the store of a region's leader, or 0.
func (c *cluster) leaderStoreOf(id uint64) uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if ri := c.regions[id]; ri != nil {
		return ri.leader.GetStoreId()
	}
	return 0
}

func (c *cluster) regionByID(id uint64) *regionInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.regions[id]
}

func (c *cluster) scanRegions(start, end []byte, limit int) []*pdpb.RegionInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*pdpb.RegionInfo
	for _, r := range c.tree.Overlapping(start, end) {
		if limit > 0 && len(out) >= limit {
			break
		}
		out = append(out, &pdpb.RegionInfo{Region: r, Leader: c.regions[r.GetId()].leader})
	}
	return out
}

// heartbeatCount returns how many region heartbeats this leader handled.
func (c *cluster) heartbeatCount() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.heartbeats
}

func (c *cluster) regionCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.regions)
}

// ---- heartbeat streams (for pushing operator steps) ----

func (c *cluster) bindStream(storeID uint64, hs *heartbeatStream) {
	c.mu.Lock()
	c.streams[storeID] = hs
	c.mu.Unlock()
}

func (c *cluster) unbindStream(storeID uint64, hs *heartbeatStream) {
	c.mu.Lock()
	if c.streams[storeID] == hs {
		delete(c.streams, storeID)
	}
	c.mu.Unlock()
}

// pushStep sends an operator's current step to the region's leader now,
// instead of at its next heartbeat.
func (c *cluster) pushStep(resp *pdpb.RegionHeartbeatResponse, leaderStore uint64) {
	c.mu.RLock()
	hs := c.streams[leaderStore]
	c.mu.RUnlock()
	if hs != nil {
		_ = hs.send(resp)
	}
}

func cloneStore(s *metapb.Store) *metapb.Store { return proto.Clone(s).(*metapb.Store) }
