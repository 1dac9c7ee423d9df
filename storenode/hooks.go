package storenode

import (
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// regionHook is the state machine given to the raftstore: the MVCC, with
// region changes also reported to the heartbeater (PD hears at once) and
// the watch hub (watchers of a changed region resubscribe).
type regionHook struct {
	*mvcc.MVCC
	s *Server
}

func (s *Server) regionHook() raftstore.StateMachine { return regionHook{MVCC: s.mvcc, s: s} }

func (h regionHook) RegionChanged(id uint64, desc *metapb.Region, state []byte) {
	var old *metapb.Region
	if r := h.MVCC.Region(id); r != nil {
		old = r.Desc()
	}
	h.MVCC.RegionChanged(id, desc, state)
	h.s.hb.regionChanged(id)
	if desc == nil || old == nil || old.GetRegionEpoch().GetVersion() != desc.GetRegionEpoch().GetVersion() {
		h.s.watches.regionChanged(id)
		h.s.load.forget(id)
	}
}
