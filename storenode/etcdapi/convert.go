package etcdapi

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// Basalt's kvpb messages mirror etcd's field by field (kvpb.proto), except
// the response header and the region context (field 100, which etcd's
// requests never set). Requests therefore convert by re-decoding their
// encoding; responses too, once their kvpb headers are cleared, and then
// get etcd headers.

// recode decodes from's encoding into to.
func recode(from, to proto.Message) error {
	b, err := proto.Marshal(from)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, to)
}

// clearHeaders removes kvpb headers from a response, nested transaction
// responses included, so its encoding reads as etcd's.
func clearHeaders(m proto.Message) {
	switch r := m.(type) {
	case *kvpb.RangeResponse:
		r.Header = nil
	case *kvpb.PutResponse:
		r.Header = nil
	case *kvpb.DeleteRangeResponse:
		r.Header = nil
	case *kvpb.TxnResponse:
		r.Header = nil
		for _, op := range r.GetResponses() {
			switch x := op.GetResponse().(type) {
			case *kvpb.ResponseOp_ResponseRange:
				clearHeaders(x.ResponseRange)
			case *kvpb.ResponseOp_ResponsePut:
				clearHeaders(x.ResponsePut)
			case *kvpb.ResponseOp_ResponseDeleteRange:
				clearHeaders(x.ResponseDeleteRange)
			case *kvpb.ResponseOp_ResponseTxn:
				clearHeaders(x.ResponseTxn)
			}
		}
	}
}

// The messages every read, put and watch event passes through convert field
// by field instead: recode would copy a range response's keys and values
// twice more (into its buffer, then out of it), and a 1,000-key response
// held by each of a hundred clients is most of a store's heap. The
// converted message shares the keys and values of the one it came from;
// neither is written after conversion. convert_test.go sets every field
// of each side and compares with recode, so a field added to either
// proto fails it.

// bytesOrNil keeps a converted request's empty byte fields nil, as decoding
// leaves them.
func bytesOrNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func keyValueToEtcd(kv *kvpb.KeyValue, out *mvccpb.KeyValue) {
	*out = mvccpb.KeyValue{
		Key:            bytesOrNil(kv.GetKey()),
		CreateRevision: kv.GetCreateRevision(),
		ModRevision:    kv.GetModRevision(),
		Version:        kv.GetVersion(),
		Value:          bytesOrNil(kv.GetValue()),
		Lease:          kv.GetLease(),
	}
}

// keyValuesToEtcd converts kvs into one backing array: one allocation for
// the response instead of one per key.
func keyValuesToEtcd(kvs []*kvpb.KeyValue) []*mvccpb.KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	vals := make([]mvccpb.KeyValue, len(kvs))
	out := make([]*mvccpb.KeyValue, len(kvs))
	for i, kv := range kvs {
		keyValueToEtcd(kv, &vals[i])
		out[i] = &vals[i]
	}
	return out
}

func optionalKeyValueToEtcd(kv *kvpb.KeyValue) *mvccpb.KeyValue {
	if kv == nil {
		return nil
	}
	out := &mvccpb.KeyValue{}
	keyValueToEtcd(kv, out)
	return out
}

func rangeRequestFromEtcd(req *pb.RangeRequest) *kvpb.RangeRequest {
	return &kvpb.RangeRequest{
		Key:               bytesOrNil(req.Key),
		RangeEnd:          bytesOrNil(req.RangeEnd),
		Limit:             req.Limit,
		Revision:          req.Revision,
		SortOrder:         kvpb.RangeRequest_SortOrder(req.SortOrder),
		SortTarget:        kvpb.RangeRequest_SortTarget(req.SortTarget),
		Serializable:      req.Serializable,
		KeysOnly:          req.KeysOnly,
		CountOnly:         req.CountOnly,
		MinModRevision:    req.MinModRevision,
		MaxModRevision:    req.MaxModRevision,
		MinCreateRevision: req.MinCreateRevision,
		MaxCreateRevision: req.MaxCreateRevision,
	}
}

// rangeResponseToEtcd converts a response whose header the caller sets.
func rangeResponseToEtcd(resp *kvpb.RangeResponse) *pb.RangeResponse {
	return &pb.RangeResponse{Kvs: keyValuesToEtcd(resp.GetKvs()), More: resp.GetMore(), Count: resp.GetCount()}
}

func putRequestFromEtcd(req *pb.PutRequest) *kvpb.PutRequest {
	return &kvpb.PutRequest{
		Key:         bytesOrNil(req.Key),
		Value:       bytesOrNil(req.Value),
		Lease:       req.Lease,
		PrevKv:      req.PrevKv,
		IgnoreValue: req.IgnoreValue,
		IgnoreLease: req.IgnoreLease,
	}
}

// putResponseToEtcd converts a response whose header the caller sets.
func putResponseToEtcd(resp *kvpb.PutResponse) *pb.PutResponse {
	return &pb.PutResponse{PrevKv: optionalKeyValueToEtcd(resp.GetPrevKv())}
}

func eventToEtcd(e *kvpb.Event) *mvccpb.Event {
	return &mvccpb.Event{
		Type:   mvccpb.Event_EventType(e.GetType()),
		Kv:     optionalKeyValueToEtcd(e.GetKv()),
		PrevKv: optionalKeyValueToEtcd(e.GetPrevKv()),
	}
}
