package storenode

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/basaltdb/basalt/proto/pdpb"
)

// heartbeater reports this store and the regions it leads to PD, and
// carries out the operator steps PD answers with. A region is reported every
// RegionHeartbeat, and at once after its leader or descriptor changed.
type heartbeater struct {
	s     *Server
	mu    sync.Mutex
	dirty map[uint64]bool
	busy  map[uint64]bool // regions with an operator step running
	wake  chan struct{}
	// warned: operator kinds this store cannot run yet, logged once.
	warned map[string]bool
}

func newHeartbeater(s *Server) *heartbeater {
	return &heartbeater{s: s, dirty: map[uint64]bool{}, busy: map[uint64]bool{}, wake: make(chan struct{}, 1), warned: map[string]bool{}}
}

func (h *heartbeater) mark(regionID uint64) {
	h.mu.Lock()
	h.dirty[regionID] = true
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *heartbeater) roleChanged(regionID uint64, isLeader bool, term uint64) {
	// Leadership changes are what an operator (and a failing test) needs
	// to see to tell how long a region went without a leader.
	if isLeader {
		h.s.log.Info("became the region's leader", "region", regionID, "term", term)
	} else {
		h.s.log.Info("no longer the region's leader", "region", regionID, "term", term)
	}
	if isLeader {
		h.mark(regionID)
	} else {
		h.s.watches.regionChanged(regionID)
	}
}

func (h *heartbeater) regionChanged(regionID uint64) { h.mark(regionID) }

func (h *heartbeater) run() {
	storeTick := time.NewTicker(h.s.cfg.StoreHeartbeat)
	regionTick := time.NewTicker(h.s.cfg.RegionHeartbeat)
	defer storeTick.Stop()
	defer regionTick.Stop()
	h.storeHeartbeat()
	h.markAll()
	var stream pdpb.PD_RegionHeartbeatClient
	var cancel context.CancelFunc
	// ended closes when the stream's receiver stops: the stream broke, or
	// PD answered that the member is no longer the leader (a member cut
	// off for a moment comes back a follower and keeps the stream open,
	// answering every heartbeat so; pdclient ends the stream then).
	var ended chan struct{}
	defer func() {
		if cancel != nil {
			cancel()
		}
	}()
	for {
		select {
		case <-h.s.ctx.Done():
			return
		case <-storeTick.C:
			h.storeHeartbeat()
			continue
		case <-regionTick.C:
			h.markAll()
		case <-ended:
			// Everything again on the next stream: what was sent on this
			// one since the leader moved reached no leader.
			cancel()
			stream, cancel, ended = nil, nil, nil
			h.markAll()
			h.retryLater() // reopened in 200 ms, not in a loop with a flapping PD
			continue
		case <-h.wake:
		}
		if stream == nil {
			ctx, c := context.WithCancel(h.s.ctx)
			var err error
			if stream, err = h.s.pd.OpenRegionHeartbeat(ctx); err != nil {
				c()
				stream = nil
				h.retryLater()
				continue
			}
			cancel = c
			ended = make(chan struct{})
			h.s.wg.Add(1)
			go func(st pdpb.PD_RegionHeartbeatClient, ended chan struct{}) {
				defer h.s.wg.Done()
				defer close(ended)
				h.receive(st)
			}(stream, ended)
		}
		if err := h.sendDirty(stream); err != nil {
			cancel()
			stream, cancel, ended = nil, nil, nil
			h.s.pd.LeaderGone()
			h.markAll()
			h.retryLater()
		}
	}
}

func (h *heartbeater) retryLater() {
	time.AfterFunc(200*time.Millisecond, func() {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	})
}

func (h *heartbeater) markAll() {
	h.mu.Lock()
	for _, st := range h.s.store.Regions() {
		if st != nil && st.IsLeader() {
			h.dirty[st.Region.GetId()] = true
		}
	}
	h.mu.Unlock()
}

func (h *heartbeater) sendDirty(stream pdpb.PD_RegionHeartbeatClient) error {
	h.mu.Lock()
	ids := make([]uint64, 0, len(h.dirty))
	for id := range h.dirty {
		ids = append(ids, id)
	}
	clear(h.dirty)
	h.mu.Unlock()
	for _, id := range ids {
		req := h.regionHeartbeat(id)
		if req == nil {
			continue
		}
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	return nil
}

// regionHeartbeat describes one region this store leads, or nil.
func (h *heartbeater) regionHeartbeat(id uint64) *pdpb.RegionHeartbeatRequest {
	ctx, cancel := context.WithTimeout(h.s.ctx, time.Second)
	defer cancel()
	ls, err := h.s.store.LeaderStats(ctx, id)
	if err != nil {
		return nil
	}
	// A heartbeat at the regular interval reports what happened since
	// the last; one sooner (the region changed) repeats the last.
	f := h.s.load.takeFlow(id, time.Now(), h.s.cfg.RegionHeartbeat/2)
	req := &pdpb.RegionHeartbeatRequest{
		Header: &pdpb.RequestHeader{ClusterId: h.s.pd.ClusterID()},
		Region: ls.Region, Leader: ls.Leader, PendingPeers: ls.PendingPeers, Term: ls.Term,
		BytesWritten: f.bytesWritten, KeysWritten: f.keysWritten, BytesRead: f.bytesRead, KeysRead: f.keysRead,
		IntervalSeconds: f.seconds,
	}
	for i, p := range ls.DownPeers {
		req.DownPeers = append(req.DownPeers, &pdpb.PeerStats{Peer: p, DownSeconds: uint64(ls.DownFor[i] / time.Second)})
	}
	req.ApproximateSize, req.ApproximateKeys = h.s.approximateSize(id, ls.Region)
	return req
}

func (h *heartbeater) storeHeartbeat() {
	stats := &pdpb.StoreStats{StoreId: h.s.storeID, StartTime: time.Now().Unix()}
	for _, st := range h.s.store.Regions() {
		if st == nil {
			continue
		}
		stats.RegionCount++
		if st.IsLeader() {
			stats.LeaderCount++
		}
	}
	var fs syscall.Statfs_t
	if syscall.Statfs(h.s.cfg.DataDir, &fs) == nil {
		stats.Capacity = fs.Blocks * uint64(fs.Bsize)
		stats.Available = fs.Bavail * uint64(fs.Bsize)
	}
	stats.UsedSize = h.s.eng.DB.Metrics().DiskSpaceUsage()
	ctx, cancel := context.WithTimeout(h.s.ctx, 5*time.Second)
	defer cancel()
	if err := h.s.pd.StoreHeartbeat(ctx, stats); err != nil && h.s.ctx.Err() == nil {
		h.s.log.Debug("store heartbeat failed", "err", err)
	}
}

// receive carries out the operator steps PD sends on the stream.
func (h *heartbeater) receive(stream pdpb.PD_RegionHeartbeatClient) {
	for {
		resp, err := stream.Recv()
		if err != nil {
			return
		}
		if resp.GetHeader().GetError() != nil {
			continue
		}
		h.execute(resp)
	}
}

func (h *heartbeater) execute(resp *pdpb.RegionHeartbeatResponse) {
	id := resp.GetRegionId()
	st := h.s.store.RegionStatus(id)
	if st == nil || !st.IsLeader() {
		return
	}
	h.mu.Lock()
	if h.busy[id] {
		h.mu.Unlock()
		return
	}
	var run func(ctx context.Context) error
	switch {
	case resp.GetChangePeers() != nil:
		changes := resp.GetChangePeers().GetChanges()
		run = func(ctx context.Context) error {
			_, err := h.s.store.ChangePeers(ctx, id, st.Region.GetRegionEpoch(), changes)
			return err
		}
	case resp.GetTransferLeader() != nil:
		to := resp.GetTransferLeader().GetPeer().GetId()
		run = func(ctx context.Context) error {
			return h.s.store.TransferLeader(ctx, id, st.Region.GetRegionEpoch(), to)
		}
	case resp.GetSplitRegion() != nil:
		// PD's epoch, not ours: a split PD asked for before the region
		// changed (another split) must not cut the new region again.
		keys, epoch := resp.GetSplitRegion().GetKeys(), resp.GetRegionEpoch()
		run = func(ctx context.Context) error {
			_, err := h.s.splitRegion(ctx, id, epoch, keys)
			return err
		}
	case resp.GetMerge() != nil:
		target, epoch := resp.GetMerge().GetTarget().GetId(), resp.GetRegionEpoch()
		run = func(ctx context.Context) error {
			_, err := h.s.mergeRegion(ctx, id, epoch, target)
			return err
		}
	}
	if run == nil {
		h.mu.Unlock()
		return
	}
	h.busy[id] = true
	h.mu.Unlock()
	h.s.wg.Add(1)
	go func() {
		defer h.s.wg.Done()
		ctx, cancel := context.WithTimeout(h.s.ctx, 30*time.Second)
		err := run(ctx)
		cancel()
		h.mu.Lock()
		delete(h.busy, id)
		h.mu.Unlock()
		if err != nil {
			h.s.log.Info("operator step failed", "region", id, "err", err)
		}
		h.mark(id)
	}()
}
