package pd

import (
	"github.com/basaltdb/basalt/proto/metapb"
)

// Placement by location labels, as TiKV's PD does it. With
// location-labels ["zone", "host"], a region's replicas go to stores that
// differ at the widest label they can: other zones first, other hosts in a
// zone next. A store's place is its values of those labels (its --labels);
// a label it lacks counts as a value of its own, "".
//
// sharing(s, others) measures how crowded store s's place is among the
// others: for each level l (1: zone, 2: zone and host, ...) the number of
// others that agree with s on the first l labels, the widest level most
// significant: count_1*B^(L-1) + count_2*B^(L-2) + ... + count_L, B larger
// than any count. Lower is better isolated. Counting, not only the closest
// other, matters past three replicas: with five, zones 3-1-1 score worse
// than 2-2-1, which survives the loss of any one zone. With no location
// labels every store's sharing is 0, and placement goes by load alone.

// labelValue returns a store's value for key ("" when it has none).
func labelValue(st *metapb.Store, key string) string {
	for _, l := range st.GetLabels() {
		if l.GetKey() == key {
			return l.GetValue()
		}
	}
	return ""
}

// commonLevels is how many of labels, from the widest, a and b share.
func commonLevels(labels []string, a, b *metapb.Store) int {
	n := 0
	for _, k := range labels {
		if labelValue(a, k) != labelValue(b, k) {
			break
		}
		n++
	}
	return n
}

// sharingBase outweighs any count of voters at a narrower level.
const sharingBase = 1000

// sharingLocked is store id's sharing with the stores of r's voters other
// than itself and except (a replica leaving). Needs c.mu.
func (c *cluster) sharingLocked(labels []string, r *metapb.Region, id, except uint64) int64 {
	if len(labels) == 0 {
		return 0
	}
	st := c.storeLocked(id).meta
	counts := make([]int64, len(labels))
	for _, p := range r.GetPeers() {
		sid := p.GetStoreId()
		if sid == id || sid == except || p.GetRole() == metapb.PeerRole_Learner {
			continue
		}
		for l := range commonLevels(labels, st, c.storeLocked(sid).meta) {
			counts[l]++
		}
	}
	var score int64
	for _, n := range counts {
		score = score*sharingBase + n
	}
	return score
}
