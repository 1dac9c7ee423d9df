package pd

import (
	"testing"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
)

// An added learner is done only once the leader has heard from it and it
// has caught up: down (never heard from) and pending (behind) both wait.
func TestAddLearnerWaitsUntilTheLearnerCaughtUp(t *testing.T) {
	learner := &metapb.Peer{Id: 9, StoreId: 3, Role: metapb.PeerRole_Learner}
	meta := &metapb.Region{Id: 1, Peers: []*metapb.Peer{{Id: 7, StoreId: 1}, {Id: 8, StoreId: 2}, learner}}
	step := addLearner{peer: learner}
	for _, tc := range []struct {
		what string
		r    *regionInfo
		want bool
	}{
		{"not in the region yet", &regionInfo{meta: &metapb.Region{Id: 1, Peers: meta.Peers[:2]}}, false},
		{"never heard from (reported down)", &regionInfo{meta: meta, downPeers: []*pdpb.PeerStats{{Peer: learner}}}, false},
		{"behind the leader (pending)", &regionInfo{meta: meta, pendingPeers: []*metapb.Peer{learner}}, false},
		{"caught up", &regionInfo{meta: meta}, true},
	} {
		if got := step.done(tc.r); got != tc.want {
			t.Errorf("%s: done %v, want %v", tc.what, got, tc.want)
		}
	}
}
