package storenode

import (
	"bytes"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/region"
)

// serializableRange serves an etcd serializable range from this store's
// own replica, as an etcd member serves one from its own state: no
// ReadIndex, no leader, at the revision the replica has applied (which may
// trail the cluster's). It does so only when one region here holds the
// whole range, so the answer is one region's state at one revision. ok
// false: the caller takes the linearizable path (the range spans regions,
// no replica of it is here, or it asks for a revision not applied here).
func (s *Server) serializableRange(req *kvpb.RangeRequest) (*kvpb.RangeResponse, bool) {
	key, end, inUser := region.ClipUserRange(req.GetKey(), req.GetRangeEnd())
	if !inUser {
		return nil, false
	}
	id := s.store.RegionIDByKey(key)
	if id == 0 {
		return nil, false
	}
	r := s.mvcc.Region(id)
	if r == nil {
		return nil, false
	}
	guard := s.store.LocalGuard(id)
	if guard == nil {
		return nil, false
	}
	desc := guard.Region
	if len(end) > 0 && !region.ContainsRange(desc.GetStartKey(), desc.GetEndKey(), key, end) {
		return nil, false
	}
	if req.GetRevision() > r.Revision() {
		return nil, false
	}
	if !bytes.Equal(end, req.GetRangeEnd()) {
		req = proto.Clone(req).(*kvpb.RangeRequest)
		req.RangeEnd = end
	}
	resp, err := s.mvcc.Range(r, req, r.Revision())
	if err != nil {
		// Compacted, invalid, or the range moved: the linearizable path
		// gives the answer and the error etcd's clients know.
		return nil, false
	}
	// The read must not straddle the replica leaving this store, its data
	// being replaced, or its range changing: then the linearizable path
	// answers instead.
	if guard.Check() != nil {
		return nil, false
	}
	return resp, true
}
