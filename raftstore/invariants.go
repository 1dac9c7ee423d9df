package raftstore

import (
	"fmt"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// checkInvariants panics when the store's state is inconsistent. It runs
// after every round when built with -tags invariants.
func (s *Store) checkInvariants() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	// Initialized replicas on one store never overlap: the range index
	// holds every one of them.
	n := 0
	for id, p := range s.peers {
		st := p.status.Load()
		if st == nil || !st.Initialized {
			continue
		}
		n++
		if got := s.ranges.GetByID(id); got == nil {
			var idx []string
			s.ranges.Ascend(nil, func(r *metapb.Region) bool {
				idx = append(idx, fmt.Sprintf("%d[%q,%q)v%d", r.GetId(), r.GetStartKey(), r.GetEndKey(), r.GetRegionEpoch().GetVersion()))
				return true
			})
			panic(fmt.Sprintf("raftstore: invariant: store %d: initialized region %d (%v) missing from the range index %v",
				s.cfg.StoreID, id, st.Region, idx))
		}
		if st.Applied > st.Commit && st.Commit != 0 {
			panic(fmt.Sprintf("raftstore: invariant: region %d applied %d beyond commit %d", id, st.Applied, st.Commit))
		}
		if region.FindPeerByID(st.Region, st.PeerID) == nil {
			panic(fmt.Sprintf("raftstore: invariant: region %d descriptor lacks its own peer %d", id, st.PeerID))
		}
	}
	// Every region in the index has its replica here. (Not "only the
	// initialized ones": a replica being destroyed is unpublished first and
	// unindexed only once its tombstone is on disk, and other workers check
	// meanwhile. Two race runs of ~30 failed the old count check; the one
	// with the details found no mismatch, so this window is the known
	// cause, not necessarily the only one.)
	if n > s.ranges.Len() {
		panic(fmt.Sprintf("raftstore: invariant: %d initialized regions but %d in the range index", n, s.ranges.Len()))
	}
	s.ranges.Ascend(nil, func(r *metapb.Region) bool {
		if s.peers[r.GetId()] == nil {
			panic(fmt.Sprintf("raftstore: invariant: store %d: region %d [%q, %q) is in the range index without a replica here",
				s.cfg.StoreID, r.GetId(), r.GetStartKey(), r.GetEndKey()))
		}
		return true
	})
}
