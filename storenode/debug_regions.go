package storenode

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sort"
)

// regionDebug is one replica as /debug/regions shows it: the raft state
// this store's replica sees, which is what to look at when a region has no
// leader (is a replica asleep, uninitialized, a learner in its own view,
// behind on its commit?).
type regionDebug struct {
	RegionID    uint64      `json:"region_id"`
	StartKey    string      `json:"start_key"`
	EndKey      string      `json:"end_key"`
	ConfVer     uint64      `json:"conf_ver"`
	Version     uint64      `json:"version"`
	Peers       []peerDebug `json:"peers"`
	PeerID      uint64      `json:"peer_id"`
	Leader      uint64      `json:"leader_peer_id"`
	RaftState   string      `json:"raft_state"`
	Term        uint64      `json:"term"`
	Commit      uint64      `json:"commit"`
	Applied     uint64      `json:"applied"`
	LastIndex   uint64      `json:"last_index"`
	Hibernating bool        `json:"hibernating"`
	Initialized bool        `json:"initialized"`
	Ticks       uint64      `json:"ticks"`
	Merging     *mergeDebug `json:"merging,omitempty"`
}

type peerDebug struct {
	ID      uint64 `json:"id"`
	StoreID uint64 `json:"store_id"`
	Role    string `json:"role"`
}

type mergeDebug struct {
	Target uint64 `json:"target_region_id"`
	Commit uint64 `json:"commit"`
}

// registerDebugRoutes adds GET /debug/regions: every replica on this store,
// as its worker last published it, by region ID.
func (s *Server) registerDebugRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/regions", func(w http.ResponseWriter, r *http.Request) {
		sts := s.store.Regions()
		out := make([]regionDebug, 0, len(sts))
		for _, st := range sts {
			if st == nil {
				continue // created, not published yet
			}
			d := regionDebug{
				RegionID: st.Region.GetId(), StartKey: hex.EncodeToString(st.Region.GetStartKey()), EndKey: hex.EncodeToString(st.Region.GetEndKey()),
				ConfVer: st.Region.GetRegionEpoch().GetConfVer(), Version: st.Region.GetRegionEpoch().GetVersion(),
				PeerID: st.PeerID, Leader: st.Leader.GetId(), RaftState: st.RaftState.String(), Term: st.Term,
				Commit: st.Commit, Applied: st.Applied, LastIndex: st.LastIndex, Hibernating: st.Hibernating,
				Initialized: st.Initialized, Ticks: st.Ticks,
			}
			for _, p := range st.Region.GetPeers() {
				d.Peers = append(d.Peers, peerDebug{ID: p.GetId(), StoreID: p.GetStoreId(), Role: p.GetRole().String()})
			}
			if m := st.Merge; m != nil {
				d.Merging = &mergeDebug{Target: m.Target.GetId(), Commit: m.Commit}
			}
			out = append(out, d)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].RegionID < out[j].RegionID })
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	})
}
