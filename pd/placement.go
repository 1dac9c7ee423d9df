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
// sharing(s, others) is how alike store s is to the closest of the
// others: the number of location labels, from the widest, on which they
// agree (0: another zone; len(labels): the same place). Lower is better
// isolated. With no location labels every store's sharing is 0, and
// placement goes by load alone, as before labels existed.

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

// sharingLocked is store id's sharing with the stores of r's voters other
// than itself and except (a replica leaving). Needs c.mu.
func (c *cluster) sharingLocked(labels []string, r *metapb.Region, id, except uint64) int {
	if len(labels) == 0 {
		return 0
	}
	st := c.storeLocked(id).meta
	worst := 0
	for _, p := range r.GetPeers() {
		sid := p.GetStoreId()
		if sid == id || sid == except || p.GetRole() == metapb.PeerRole_Learner {
			continue
		}
		worst = max(worst, commonLevels(labels, st, c.storeLocked(sid).meta))
	}
	return worst
}
