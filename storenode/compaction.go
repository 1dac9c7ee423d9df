package storenode

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// Compaction. Compact raises the cluster's compaction revision in PD. Each
// store learns it here, and for every region it leads proposes the new
// revision (reads below it then fail on every replica), then removes the
// garbage in batches of gcBatchKeys keys, gcBatchesPerTick batches per tick,
// as ordinary log entries between writes: never a pause for writes.
const (
	gcBatchKeys      = 1000
	gcBatchesPerTick = 16
	compactionTick   = time.Second
)

type gcProgress struct {
	rev  int64
	next []byte // nil: done
}

func (s *Server) compactNow() {
	select {
	case s.compactWake <- struct{}{}:
	default:
	}
}

// compactedLocally reports whether every region this store leads has taken
// compaction revision rev and finished its garbage collection.
func (s *Server) compactedLocally(rev int64) bool {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	for _, st := range s.store.Regions() {
		if st == nil || !st.IsLeader() {
			continue
		}
		r := s.mvcc.Region(st.Region.GetId())
		if r == nil || r.CompactRevision() < rev {
			return false
		}
		if p, ok := s.gc[st.Region.GetId()]; !ok || p.rev < rev || p.next != nil {
			return false
		}
	}
	return true
}

func (s *Server) compactionLoop() {
	t := time.NewTicker(compactionTick)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.compactWake:
		}
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		rev, err := s.pd.GetCompactRevision(ctx)
		cancel()
		if err != nil || rev == 0 {
			continue
		}
		s.compactRegions(int64(rev))
	}
}

func (s *Server) compactRegions(rev int64) {
	budget := gcBatchesPerTick
	for _, st := range s.store.Regions() {
		if st == nil || !st.IsLeader() || budget == 0 {
			continue
		}
		id, epoch := st.Region.GetId(), st.Region.GetRegionEpoch()
		r := s.mvcc.Region(id)
		if r == nil {
			continue
		}
		if r.CompactRevision() < rev {
			if !s.proposeAdmin(id, epoch, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Compact{Compact: rev}}) {
				continue
			}
		}
		s.gcMu.Lock()
		p, ok := s.gc[id]
		if !ok || p.rev < r.CompactRevision() {
			p = &gcProgress{rev: r.CompactRevision()}
			s.gc[id] = p
			p.next = []byte{} // start
		}
		s.gcMu.Unlock()
		for budget > 0 && p.next != nil {
			from := p.next
			if len(from) == 0 {
				from = nil
			}
			keys, next, err := s.mvcc.GarbageKeys(r, p.rev, from, gcBatchKeys)
			if err != nil {
				break
			}
			if len(keys) > 0 {
				budget--
				if !s.proposeAdmin(id, epoch, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Gc{Gc: &kvpb.GCBatch{Keys: keys}}}) {
					break
				}
			}
			s.gcMu.Lock()
			p.next = next
			s.gcMu.Unlock()
		}
	}
}

// markCompacted makes every region this store leads take compaction
// revision rev now (reads below it then fail on every replica); garbage
// collection follows in the background.
func (s *Server) markCompacted(rev int64) {
	for _, st := range s.store.Regions() {
		if st == nil || !st.IsLeader() {
			continue
		}
		if r := s.mvcc.Region(st.Region.GetId()); r != nil && r.CompactRevision() < rev {
			s.proposeAdmin(st.Region.GetId(), nil, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Compact{Compact: rev}})
		}
	}
	s.compactNow()
}

// proposeAdmin proposes a command that needs no revision (compaction, GC).
func (s *Server) proposeAdmin(regionID uint64, _ any, cmd *kvpb.WriteCommand) bool {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	st := s.store.RegionStatus(regionID)
	if st == nil {
		return false
	}
	_, err = s.store.Propose(ctx, regionID, st.Region.GetRegionEpoch(), data)
	return err == nil
}
