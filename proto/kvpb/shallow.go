package kvpb

// The hot paths copy a request before changing its top-level fields (a
// region context set, a range clipped), so that the caller's message,
// which a store shares with its in-process client, never changes under it.
// proto.Clone copied every key and value too, through reflection: 8 % of
// a leader's CPU under etcd's put benchmark (docs/benchmarks.md). These
// copy the fields and share the bytes and nested messages, which nothing
// on those paths writes to. shallow_test.go fails when a field is added
// to the proto and not here.

// ShallowCopy returns a new request with r's fields, sharing its slices
// and its Context.
func (r *PutRequest) ShallowCopy() *PutRequest {
	return &PutRequest{Key: r.Key, Value: r.Value, Lease: r.Lease, PrevKv: r.PrevKv,
		IgnoreValue: r.IgnoreValue, IgnoreLease: r.IgnoreLease, Context: r.Context}
}

// ShallowCopy returns a new request with r's fields, sharing its slices
// and its Context.
func (r *DeleteRangeRequest) ShallowCopy() *DeleteRangeRequest {
	return &DeleteRangeRequest{Key: r.Key, RangeEnd: r.RangeEnd, PrevKv: r.PrevKv, Context: r.Context}
}

// ShallowCopy returns a new request with r's fields, sharing its slices
// and its Context.
func (r *RangeRequest) ShallowCopy() *RangeRequest {
	return &RangeRequest{Key: r.Key, RangeEnd: r.RangeEnd, Limit: r.Limit, Revision: r.Revision,
		SortOrder: r.SortOrder, SortTarget: r.SortTarget, Serializable: r.Serializable, KeysOnly: r.KeysOnly,
		CountOnly: r.CountOnly, MinModRevision: r.MinModRevision, MaxModRevision: r.MaxModRevision,
		MinCreateRevision: r.MinCreateRevision, MaxCreateRevision: r.MaxCreateRevision, Context: r.Context}
}

// ShallowCopy returns a new request with r's fields, sharing its
// comparisons, its operations and its Context (a store clips them: it
// copies with proto.Clone).
func (r *TxnRequest) ShallowCopy() *TxnRequest {
	return &TxnRequest{Compare: r.Compare, Success: r.Success, Failure: r.Failure, Context: r.Context}
}
