package storenode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/raftcmdpb"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// SplitConfig says when a store splits the regions it leads by size. As in
// TiKV, a region that grows past the max size (or key count) is cut into
// pieces of the split size (or key count).
type SplitConfig struct {
	RegionMaxSize   int64 // bytes; default 144 MiB
	RegionSplitSize int64 // bytes; default 96 MiB
	RegionMaxKeys   int64 // stored versions; default 1,440,000
	RegionSplitKeys int64 // stored versions; default 960,000
	// CheckInterval: how often led regions are checked (default 10 s).
	CheckInterval time.Duration
	// ScanBudget bounds the bytes the checker reads per interval when it
	// learns the size of regions it has not scanned yet (default 64 MiB).
	ScanBudget int64
}

func (c *SplitConfig) fillDefaults() {
	if c.RegionMaxSize == 0 {
		c.RegionMaxSize = 144 << 20
	}
	if c.RegionSplitSize == 0 {
		c.RegionSplitSize = c.RegionMaxSize * 2 / 3
	}
	if c.RegionMaxKeys == 0 {
		c.RegionMaxKeys = 1_440_000
	}
	if c.RegionSplitKeys == 0 {
		c.RegionSplitKeys = c.RegionMaxKeys * 2 / 3
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = 10 * time.Second
	}
	if c.ScanBudget == 0 {
		c.ScanBudget = 64 << 20
	}
}

// ErrCannotSplit: the region holds too little data to be cut where asked.
var ErrCannotSplit = errors.New("storenode: region cannot be split")

// maxSplitKeys is what PD hands out IDs for in one AskBatchSplit.
const maxSplitKeys = 1024

// splitRegion splits a region this store leads at keys (empty: at the
// middle of its data), with IDs from PD, and reports the result to PD.
// epoch, when set, is the epoch the caller saw: a region that changed since
// is not split (EpochNotMatch).
func (s *Server) splitRegion(ctx context.Context, id uint64, epoch *metapb.RegionEpoch, keys [][]byte) ([]*metapb.Region, error) {
	st := s.store.RegionStatus(id)
	switch {
	case st == nil || !st.Initialized:
		return nil, region.RegionNotFound(id)
	case !st.IsLeader():
		return nil, region.NotLeader(id, st.Leader)
	case epoch != nil && !region.CheckEpoch(region.CmdSplit, epoch, st.Region.GetRegionEpoch()):
		return nil, region.EpochNotMatch(st.Region)
	}
	desc := st.Region
	if len(keys) == 0 {
		r := s.mvcc.Region(id)
		if r == nil {
			return nil, region.RegionNotFound(id)
		}
		mid, err := s.mvcc.MiddleKey(r)
		if err != nil {
			return nil, err
		}
		if mid == nil || !region.ContainsKey(desc, mid) || bytes.Equal(mid, desc.GetStartKey()) {
			return nil, fmt.Errorf("%w: region %d holds fewer than two keys", ErrCannotSplit, id)
		}
		keys = [][]byte{mid}
	}
	if len(keys) > maxSplitKeys {
		return nil, fmt.Errorf("%w: %d split keys, at most %d at once", ErrCannotSplit, len(keys), maxSplitKeys)
	}
	for i, k := range keys {
		if !region.ContainsKey(desc, k) || bytes.Equal(k, desc.GetStartKey()) || (i > 0 && bytes.Compare(keys[i-1], k) >= 0) {
			return nil, fmt.Errorf("%w: split keys must be sorted, distinct and strictly inside region %d; %q is not", ErrCannotSplit, id, k)
		}
	}
	ids, err := s.pd.AskBatchSplit(ctx, desc, uint32(len(keys)))
	if err != nil {
		return nil, fmt.Errorf("storenode: ask PD for split IDs: %w", err)
	}
	if len(ids) != len(keys) {
		return nil, fmt.Errorf("storenode: PD gave %d split IDs for %d keys", len(ids), len(keys))
	}
	reqs := make([]*raftcmdpb.SplitRequest, len(keys))
	for i, k := range keys {
		reqs[i] = &raftcmdpb.SplitRequest{SplitKey: k, NewRegionId: ids[i].GetNewRegionId(), NewPeerIds: ids[i].GetNewPeerIds()}
	}
	regions, err := s.store.Split(ctx, id, desc.GetRegionEpoch(), reqs)
	if err != nil {
		return nil, err
	}
	// PD learns the new layout at once, not at the next heartbeats: clients
	// routing by it find the new regions.
	if err := s.pd.ReportBatchSplit(ctx, s.storeID, regions); err != nil {
		s.log.Debug("report split to PD", "region", id, "err", err)
	}
	for _, r := range regions {
		s.hb.mark(r.GetId())
	}
	return regions, nil
}

// splitCheckLoop splits oversized regions this store leads.
func (s *Server) splitCheckLoop() {
	t := time.NewTicker(s.cfg.Split.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.checkSplits()
	}
}

// checkSplits looks at every region this store leads. The size a region
// tracks (its last scan plus writes since) only overstates, so a region
// under the limits needs no scan; one over them is scanned to be sure and
// to find its split keys. Regions never scanned since their range changed
// are scanned within a byte budget per round, so their size (what PD's
// merge checker uses) converges without reading the whole store at once.
func (s *Server) checkSplits() {
	cfg := s.cfg.Split
	chunk := mvcc.RegionSize{Bytes: cfg.RegionSplitSize, Versions: cfg.RegionSplitKeys}
	budget := cfg.ScanBudget
	for _, st := range s.store.Regions() {
		if s.ctx.Err() != nil {
			return
		}
		if st == nil || !st.IsLeader() {
			continue
		}
		r := s.mvcc.Region(st.Region.GetId())
		if r == nil {
			continue
		}
		info := r.Size()
		over := info.Approx.Bytes > cfg.RegionMaxSize || info.Approx.Versions > cfg.RegionMaxKeys
		if !over && ((info.Known && !info.Stale) || budget <= 0) {
			continue
		}
		scan, err := s.mvcc.ScanForSplit(r, chunk)
		if err != nil {
			s.log.Warn("split check scan", "region", r.ID, "err", err)
			continue
		}
		budget -= scan.Size.Bytes
		if scan.Size.Bytes <= cfg.RegionMaxSize && scan.Size.Versions <= cfg.RegionMaxKeys {
			continue
		}
		keys := scan.Keys
		if len(keys) == 0 {
			continue // one huge key: nothing to cut
		}
		if len(keys) > maxSplitKeys {
			keys = keys[:maxSplitKeys]
		}
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		regions, err := s.splitRegion(ctx, r.ID, st.Region.GetRegionEpoch(), keys)
		cancel()
		if err != nil {
			s.log.Debug("split oversized region", "region", r.ID, "err", err)
			continue
		}
		s.log.Info("split oversized region", "region", r.ID, "bytes", scan.Size.Bytes, "versions", scan.Size.Versions, "pieces", len(regions))
		if len(regions) == len(scan.Chunks) {
			for i, nr := range regions {
				if m := s.mvcc.Region(nr.GetId()); m != nil {
					m.SetSize(scan.Chunks[i])
				}
			}
		}
	}
}

// approximateSize is what a region heartbeat reports: the region's tracked
// size once a scan measured it; before that, the larger of what was
// written since and pebble's estimate of the data on disk.
func (s *Server) approximateSize(id uint64, desc *metapb.Region) (bytes, keys uint64) {
	var info mvcc.SizeInfo
	if r := s.mvcc.Region(id); r != nil {
		info = r.Size()
	}
	b := info.Approx.Bytes
	if !info.Known {
		sp := mvcc.DataSpans(desc.GetStartKey(), desc.GetEndKey())[0]
		if est, err := s.eng.DB.EstimateDiskUsage(sp.Start, sp.End); err == nil {
			b = max(b, int64(est))
		}
	}
	return uint64(max(b, 0)), uint64(max(info.Approx.Versions, 0))
}
