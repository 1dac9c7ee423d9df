// Package sim is a scheduling simulator in the manner of tikv/pd's
// pd-simulator: fake stores, in this process, register with a real PD and
// send it store and region heartbeats over gRPC, and carry out the operator
// steps PD answers with on their simulated regions. It measures how PD
// schedules without running real stores.
package sim

import (
	"cmp"
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	"github.com/basaltdb/basalt/region"
)

// Options tune a simulated cluster.
type Options struct {
	// HeartbeatInterval between two rounds of store and region heartbeats.
	HeartbeatInterval time.Duration
	// SnapshotDelay: how long a new learner stays pending (catching up).
	SnapshotDelay time.Duration
	// RegionSize and RegionKeys every region reports.
	RegionSize, RegionKeys uint64
}

// Cluster is a set of simulated stores and regions.
type Cluster struct {
	opts Options
	pd   *pdclient.Client
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu         sync.Mutex
	stores     map[uint64]*store
	regions    map[uint64]*simRegion
	leaderAddr string

	// Heartbeats counts region heartbeats sent; Steps counts operator steps
	// carried out.
	Heartbeats atomic.Uint64
	Steps      atomic.Uint64
}

type store struct {
	id     uint64
	addr   string
	down   bool
	stream pdpb.PD_RegionHeartbeatClient
	sendMu sync.Mutex
	cc     *grpc.ClientConn
}

type simRegion struct {
	meta    *metapb.Region
	leader  *metapb.Peer
	pending map[uint64]time.Time // learner peer ID → caught up at
	written uint64
	// readBytes and readKeys: what it reports read per heartbeat.
	readBytes, readKeys uint64
	// size: its approximate size when set (SetSize), else the options'
	// RegionSize. A split halves a set size between the halves.
	size uint64
}

// New connects a simulator to PD.
func New(ctx context.Context, endpoints []string, opts Options) (*Cluster, error) {
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = time.Second
	}
	pd, err := pdclient.New(ctx, endpoints, pdclient.Options{})
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, pd: pd, stores: map[uint64]*store{}, regions: map[uint64]*simRegion{}}
	c.ctx, c.stop = context.WithCancel(context.Background())
	return c, nil
}

// Close stops every simulated store.
func (c *Cluster) Close() {
	c.stop()
	c.wg.Wait()
	c.mu.Lock()
	for _, s := range c.stores {
		if s.cc != nil {
			_ = s.cc.Close()
		}
	}
	c.mu.Unlock()
	c.pd.Close()
}

// Bootstrap creates the cluster with one store and n regions whose single
// replica lives on that store, as if the first region had split n-1 times.
func (c *Cluster) Bootstrap(ctx context.Context, n int) (uint64, error) {
	first, err := c.pd.AllocID(ctx, uint32(2+2*n))
	if err != nil {
		return 0, err
	}
	sid := first
	st := &metapb.Store{Id: sid, Address: fmt.Sprintf("sim-store-%d", sid)}
	regions := c.splitKeySpace(n, first+1, func(i int) []*metapb.Peer {
		return []*metapb.Peer{{Id: first + 1 + uint64(n) + uint64(i), StoreId: sid}}
	})
	boot := &metapb.Region{Id: regions[0].GetId(), RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1}, Peers: regions[0].GetPeers()}
	if err := c.pd.Bootstrap(ctx, st, boot); err != nil {
		return 0, err
	}
	if err := c.addStore(ctx, st); err != nil {
		return 0, err
	}
	c.mu.Lock()
	for _, r := range regions {
		c.regions[r.GetId()] = &simRegion{meta: r, leader: r.GetPeers()[0], pending: map[uint64]time.Time{}}
	}
	c.mu.Unlock()
	return sid, nil
}

// BootstrapSpread creates the cluster with nStores stores and nRegions
// regions of replicas replicas each, spread round-robin (an existing,
// balanced cluster).
func (c *Cluster) BootstrapSpread(ctx context.Context, nStores, nRegions, replicas int) error {
	first, err := c.pd.AllocID(ctx, uint32(nStores+nRegions*(1+replicas)))
	if err != nil {
		return err
	}
	var sts []*metapb.Store
	for i := 0; i < nStores; i++ {
		sts = append(sts, &metapb.Store{Id: first + uint64(i), Address: fmt.Sprintf("sim-store-%d", first+uint64(i))})
	}
	next := first + uint64(nStores) + uint64(nRegions)
	regions := c.splitKeySpace(nRegions, first+uint64(nStores), func(i int) []*metapb.Peer {
		var ps []*metapb.Peer
		for j := 0; j < replicas; j++ {
			ps = append(ps, &metapb.Peer{Id: next, StoreId: sts[(i+j)%nStores].GetId()})
			next++
		}
		return ps
	})
	boot := &metapb.Region{Id: regions[0].GetId(), RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1}, Peers: regions[0].GetPeers()}
	if err := c.pd.Bootstrap(ctx, sts[0], boot); err != nil {
		return err
	}
	for _, st := range sts {
		if err := c.addStore(ctx, st); err != nil {
			return err
		}
	}
	c.mu.Lock()
	for i, r := range regions {
		c.regions[r.GetId()] = &simRegion{meta: r, leader: r.GetPeers()[i%replicas], pending: map[uint64]time.Time{}}
	}
	c.mu.Unlock()
	return nil
}

func regionKey(i int) []byte { return []byte(fmt.Sprintf("k%09d", i)) }

// splitKeySpace cuts the key space into n regions with IDs from firstID.
func (c *Cluster) splitKeySpace(n int, firstID uint64, peers func(i int) []*metapb.Peer) []*metapb.Region {
	var out []*metapb.Region
	for i := 0; i < n; i++ {
		r := &metapb.Region{Id: firstID + uint64(i), RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1}, Peers: peers(i)}
		if i > 0 {
			r.StartKey = regionKey(i * 1000)
		}
		if i < n-1 {
			r.EndKey = regionKey((i + 1) * 1000)
		}
		if n > 1 {
			r.RegionEpoch.Version = 2
		}
		out = append(out, r)
	}
	return out
}

// AddStore registers one more store and returns its ID.
func (c *Cluster) AddStore(ctx context.Context) (uint64, error) {
	return c.AddStoreWithLabels(ctx, nil)
}

// AddStoreWithLabels registers one more store with labels (zone=a, ...),
// and returns its ID.
func (c *Cluster) AddStoreWithLabels(ctx context.Context, labels map[string]string) (uint64, error) {
	id, err := c.pd.AllocID(ctx, 1)
	if err != nil {
		return 0, err
	}
	st := &metapb.Store{Id: id, Address: fmt.Sprintf("sim-store-%d", id), Labels: storeLabels(labels)}
	// Known here before PD knows it: PD may send a replica to it at once,
	// and the simulator must find the store when it applies that.
	if err := c.addStore(ctx, st); err != nil {
		return 0, err
	}
	if err := c.pd.PutStore(ctx, st); err != nil {
		c.mu.Lock()
		delete(c.stores, id)
		c.mu.Unlock()
		return 0, err
	}
	return id, nil
}

// SetStoreLabels gives a store (one Bootstrap made) labels.
func (c *Cluster) SetStoreLabels(ctx context.Context, id uint64, labels map[string]string) error {
	return c.pd.PutStore(ctx, &metapb.Store{Id: id, Address: fmt.Sprintf("sim-store-%d", id), Labels: storeLabels(labels)})
}

func storeLabels(m map[string]string) []*metapb.StoreLabel {
	var out []*metapb.StoreLabel
	for k, v := range m {
		out = append(out, &metapb.StoreLabel{Key: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetKey() < out[j].GetKey() })
	return out
}

// StoreLabel returns a store's value for a label key, as registered.
func (c *Cluster) StoreLabel(ctx context.Context, id uint64, key string) (string, error) {
	st, err := c.pd.GetStore(ctx, id)
	if err != nil {
		return "", err
	}
	for _, l := range st.GetLabels() {
		if l.GetKey() == key {
			return l.GetValue(), nil
		}
	}
	return "", nil
}

func (c *Cluster) addStore(ctx context.Context, st *metapb.Store) error {
	s := &store{id: st.GetId(), addr: st.GetAddress()}
	c.mu.Lock()
	c.stores[s.id] = s
	c.mu.Unlock()
	return nil
}

// KillStore stops a store's heartbeats; its regions elect leaders elsewhere
// and report its replicas as down.
func (c *Cluster) KillStore(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.stores[id]; s != nil {
		s.down = true
	}
}

// Start begins the heartbeat rounds.
func (c *Cluster) Start() {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTicker(c.opts.HeartbeatInterval)
		defer t.Stop()
		for {
			c.round()
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Round sends one round of heartbeats now (benchmarks drive it directly).
func (c *Cluster) Round() { c.round() }

// round sends every live store's heartbeat and every region's heartbeat.
func (c *Cluster) round() {
	now := time.Now()
	c.mu.Lock()
	var live []*store
	byLeader := map[uint64][]*pdpb.RegionHeartbeatRequest{}
	counts := map[uint64]uint32{}
	for _, s := range c.stores {
		if !s.down {
			live = append(live, s)
		}
	}
	for _, r := range c.regions {
		c.electIfNeededLocked(r)
		if r.leader == nil {
			continue
		}
		for _, p := range r.meta.GetPeers() {
			counts[p.GetStoreId()]++
		}
		byLeader[r.leader.GetStoreId()] = append(byLeader[r.leader.GetStoreId()], c.heartbeatLocked(r, now))
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range live {
		wg.Add(1)
		go func(s *store) {
			defer wg.Done()
			_ = c.pd.StoreHeartbeat(c.ctx, &pdpb.StoreStats{StoreId: s.id, RegionCount: counts[s.id], Capacity: 1 << 40, Available: 1 << 39})
			for _, hb := range byLeader[s.id] {
				if c.send(s, hb) != nil {
					return
				}
			}
		}(s)
	}
	wg.Wait()
}

// electIfNeededLocked moves leadership off a dead store, as raft would.
func (c *Cluster) electIfNeededLocked(r *simRegion) {
	if r.leader != nil && !c.stores[r.leader.GetStoreId()].down {
		return
	}
	r.leader = nil
	for _, p := range r.meta.GetPeers() {
		if p.GetRole() == metapb.PeerRole_Voter && !c.stores[p.GetStoreId()].down {
			r.leader = p
			return
		}
	}
}

func (c *Cluster) heartbeatLocked(r *simRegion, now time.Time) *pdpb.RegionHeartbeatRequest {
	hb := &pdpb.RegionHeartbeatRequest{Region: r.meta, Leader: r.leader,
		ApproximateSize: cmp.Or(r.size, c.opts.RegionSize), ApproximateKeys: c.opts.RegionKeys,
		BytesWritten: r.written, BytesRead: r.readBytes, KeysRead: r.readKeys, IntervalSeconds: uint64(max(1, c.opts.HeartbeatInterval/time.Second))}
	for _, p := range r.meta.GetPeers() {
		if c.stores[p.GetStoreId()].down {
			hb.DownPeers = append(hb.DownPeers, &pdpb.PeerStats{Peer: p, DownSeconds: 1})
		} else if t, ok := r.pending[p.GetId()]; ok && now.Before(t) {
			hb.PendingPeers = append(hb.PendingPeers, p)
		}
	}
	return hb
}

// send delivers one region heartbeat on the store's stream, opening it
// (and its reader) on first use or after it broke.
func (c *Cluster) send(s *store, hb *pdpb.RegionHeartbeatRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.stream == nil {
		members, err := c.pd.Members(c.ctx)
		if err != nil {
			return err
		}
		if s.cc != nil {
			_ = s.cc.Close()
		}
		s.cc, err = grpc.NewClient(members.GetLeader().GetClientAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		s.stream, err = pdpb.NewPDClient(s.cc).RegionHeartbeat(c.ctx)
		if err != nil {
			s.stream = nil
			return err
		}
		c.wg.Add(1)
		go c.readResponses(s, s.stream)
	}
	if err := s.stream.Send(hb); err != nil {
		s.stream = nil
		return err
	}
	c.Heartbeats.Add(1)
	return nil
}

func (c *Cluster) readResponses(s *store, stream pdpb.PD_RegionHeartbeatClient) {
	defer c.wg.Done()
	for {
		resp, err := stream.Recv()
		if err != nil {
			return
		}
		if resp.GetHeader().GetError() != nil {
			continue
		}
		if c.apply(resp) {
			c.Steps.Add(1)
		}
	}
}

// apply carries out one operator step as a store would, then reports the
// region at once (a real store heartbeats right after a change).
func (c *Cluster) apply(resp *pdpb.RegionHeartbeatResponse) bool {
	c.mu.Lock()
	r := c.regions[resp.GetRegionId()]
	if r == nil || r.leader == nil || c.stores[r.leader.GetStoreId()].down {
		c.mu.Unlock()
		return false
	}
	if e := resp.GetRegionEpoch(); e != nil && !region.EpochEqual(e, r.meta.GetRegionEpoch()) {
		// A step repeated with a heartbeat that crossed its result (or
		// meant for an older epoch): done already, so a no-op. (Stricter
		// than a store, which checks the epoch of splits and merges only;
		// PD sends the current step again with the next heartbeat.)
		c.mu.Unlock()
		return false
	}
	changed := false
	switch {
	case resp.GetChangePeers() != nil:
		changed = c.changePeersLocked(r, resp.GetChangePeers().GetChanges())
	case resp.GetTransferLeader() != nil:
		to := region.FindPeerByID(r.meta, resp.GetTransferLeader().GetPeer().GetId())
		if to != nil && to.GetRole() == metapb.PeerRole_Voter && !c.stores[to.GetStoreId()].down {
			r.leader, changed = to, true
		}
	case resp.GetSplitRegion() != nil:
		changed = c.splitLocked(r)
	case resp.GetMerge() != nil:
		changed = c.mergeLocked(r, resp.GetMerge().GetTarget())
	}
	var hb *pdpb.RegionHeartbeatRequest
	var s *store
	if changed && r.leader != nil {
		hb = c.heartbeatLocked(r, time.Now())
		s = c.stores[r.leader.GetStoreId()]
	}
	c.mu.Unlock()
	if hb != nil {
		_ = c.send(s, hb)
	}
	return changed
}

func (c *Cluster) changePeersLocked(r *simRegion, changes []*raftcmdpb.ChangePeer) bool {
	meta := cloneRegion(r.meta)
	for _, ch := range changes {
		np := ch.GetPeer()
		cur := region.FindPeerByID(meta, np.GetId())
		switch ch.GetChangeType() {
		// Like a real store, refuse changes that change nothing (PD repeats
		// a step until heartbeats show it done) and changes to the leader.
		case raftcmdpb.ChangePeerType_AddLearnerNode:
			if cur == nil {
				if region.FindPeer(meta, np.GetStoreId()) != nil {
					return false
				}
				meta.Peers = append(meta.Peers, &metapb.Peer{Id: np.GetId(), StoreId: np.GetStoreId(), Role: metapb.PeerRole_Learner})
				r.pending[np.GetId()] = time.Now().Add(c.opts.SnapshotDelay)
			} else {
				if cur.GetId() == r.leader.GetId() || cur.GetRole() == metapb.PeerRole_Learner {
					return false
				}
				cur.Role = metapb.PeerRole_Learner
			}
		case raftcmdpb.ChangePeerType_AddNode:
			if cur == nil {
				meta.Peers = append(meta.Peers, &metapb.Peer{Id: np.GetId(), StoreId: np.GetStoreId()})
			} else {
				if cur.GetRole() == metapb.PeerRole_Voter {
					return false
				}
				cur.Role = metapb.PeerRole_Voter
			}
		case raftcmdpb.ChangePeerType_RemoveNode:
			if cur == nil || cur.GetId() == r.leader.GetId() {
				return false
			}
			for i, p := range meta.Peers {
				if p.GetId() == cur.GetId() {
					meta.Peers = append(meta.Peers[:i], meta.Peers[i+1:]...)
					break
				}
			}
			delete(r.pending, cur.GetId())
		}
	}
	// Each change bumps conf_ver; a joint change also leaves at once.
	bump := uint64(1)
	if len(changes) > 1 {
		bump = 2
	}
	meta.RegionEpoch = &metapb.RegionEpoch{ConfVer: meta.GetRegionEpoch().GetConfVer() + bump, Version: meta.GetRegionEpoch().GetVersion()}
	r.meta = meta
	return true
}

func (c *Cluster) splitLocked(r *simRegion) bool {
	start, end := r.meta.GetStartKey(), r.meta.GetEndKey()
	var lo, hi int
	fmt.Sscanf(string(start), "k%09d", &lo)
	if len(end) == 0 {
		hi = lo + 2000
	} else {
		fmt.Sscanf(string(end), "k%09d", &hi)
	}
	if hi-lo < 2 {
		return false
	}
	mid := regionKey((lo + hi) / 2)
	ids, err := c.pd.AskBatchSplit(c.ctx, r.meta, 1)
	if err != nil || len(ids) != 1 {
		return false
	}
	left := cloneRegion(r.meta)
	left.Id, left.EndKey = ids[0].GetNewRegionId(), mid
	for i, p := range left.Peers {
		p.Id = ids[0].GetNewPeerIds()[i]
	}
	v := r.meta.GetRegionEpoch().GetVersion() + 1
	left.RegionEpoch = &metapb.RegionEpoch{ConfVer: r.meta.GetRegionEpoch().GetConfVer(), Version: v}
	right := cloneRegion(r.meta)
	right.StartKey = mid
	right.RegionEpoch = &metapb.RegionEpoch{ConfVer: r.meta.GetRegionEpoch().GetConfVer(), Version: v}
	r.meta = right
	var ll *metapb.Peer
	for i, p := range right.Peers {
		if p.GetId() == r.leader.GetId() {
			ll = left.Peers[i]
		}
	}
	r.size /= 2
	c.regions[left.GetId()] = &simRegion{meta: left, leader: ll, pending: map[uint64]time.Time{}, size: r.size}
	return true
}

func (c *Cluster) mergeLocked(src *simRegion, target *metapb.Region) bool {
	t := c.regions[target.GetId()]
	if t == nil || !region.EpochEqual(t.meta.GetRegionEpoch(), target.GetRegionEpoch()) {
		return false
	}
	m := cloneRegion(t.meta)
	if string(src.meta.GetEndKey()) == string(m.GetStartKey()) {
		m.StartKey = src.meta.GetStartKey()
	} else if string(m.GetEndKey()) == string(src.meta.GetStartKey()) {
		m.EndKey = src.meta.GetEndKey()
	} else {
		return false
	}
	m.RegionEpoch = &metapb.RegionEpoch{ConfVer: m.GetRegionEpoch().GetConfVer(),
		Version: max(m.GetRegionEpoch().GetVersion(), src.meta.GetRegionEpoch().GetVersion()) + 1}
	t.meta = m
	delete(c.regions, src.meta.GetId())
	// The source is gone; what changed is the target: report it.
	if t.leader != nil {
		go func(hb *pdpb.RegionHeartbeatRequest, s *store) { _ = c.send(s, hb) }(c.heartbeatLocked(t, time.Now()), c.stores[t.leader.GetStoreId()])
	}
	return false
}

func cloneRegion(r *metapb.Region) *metapb.Region {
	out := &metapb.Region{Id: r.GetId(), StartKey: r.GetStartKey(), EndKey: r.GetEndKey(),
		RegionEpoch: &metapb.RegionEpoch{ConfVer: r.GetRegionEpoch().GetConfVer(), Version: r.GetRegionEpoch().GetVersion()}}
	for _, p := range r.GetPeers() {
		out.Peers = append(out.Peers, &metapb.Peer{Id: p.GetId(), StoreId: p.GetStoreId(), Role: p.GetRole()})
	}
	return out
}

// StoreCount is one store's replica and leader count.
type StoreCount struct {
	StoreID          uint64
	Regions, Leaders int
	Down             bool
}

// Counts returns per-store replica and leader counts, by store ID.
func (c *Cluster) Counts() []StoreCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[uint64]*StoreCount{}
	for id, s := range c.stores {
		m[id] = &StoreCount{StoreID: id, Down: s.down}
	}
	for _, r := range c.regions {
		for _, p := range r.meta.GetPeers() {
			m[p.GetStoreId()].Regions++
		}
		if r.leader != nil {
			m[r.leader.GetStoreId()].Leaders++
		}
	}
	var out []StoreCount
	for _, sc := range m {
		out = append(out, *sc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StoreID < out[j].StoreID })
	return out
}

// Regions returns a copy of every simulated region's descriptor.
func (c *Cluster) Regions() []*metapb.Region {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*metapb.Region
	for _, r := range c.regions {
		out = append(out, cloneRegion(r.meta))
	}
	return out
}

// SetWritten makes a region report bytes written per heartbeat (hot
// regions).
func (c *Cluster) SetWritten(regionID, bytes uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.regions[regionID]; r != nil {
		r.written = bytes
	}
}

// SetRead makes a region report bytes and keys read per heartbeat (regions
// hot from reads).
func (c *Cluster) SetRead(regionID, bytes, keys uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.regions[regionID]; r != nil {
		r.readBytes, r.readKeys = bytes, keys
	}
}

// SetSize makes a region report an approximate size of its own; its
// halves report half each once it splits.
func (c *Cluster) SetSize(regionID, bytes uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.regions[regionID]; r != nil {
		r.size = bytes
	}
}

// LeaderStore returns the store leading a region (0: none or unknown).
func (c *Cluster) LeaderStore(regionID uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.regions[regionID]; r != nil && r.leader != nil {
		return r.leader.GetStoreId()
	}
	return 0
}
