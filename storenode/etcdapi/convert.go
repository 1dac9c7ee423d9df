package etcdapi

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// Basalt's kvpb messages mirror etcd's field by field (kvpb.proto), except
// the response header and the region context (field 100, which etcd's
// requests never set). The rarely sent ones (watch requests) convert by
// re-decoding their encoding.

// recode decodes from's encoding into to.
func recode(from, to proto.Message) error {
	b, err := proto.Marshal(from)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, to)
}

// Every read, write and watch event converts field by field instead:
// recode would copy a range response's keys and values twice more (into
// its buffer, then out of it), and 1,000-key responses to a hundred clients
// at once are most of a store's heap. A converted message shares the keys
// and values of the one it came from; neither is written after
// conversion. convert_test.go sets every field of each message and
// compares with recode, so a field added to either proto fails it.

// bytesOrNil keeps a converted message's empty byte fields nil, as decoding
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
		Key:               bytesOrNil(req.GetKey()),
		RangeEnd:          bytesOrNil(req.GetRangeEnd()),
		Limit:             req.GetLimit(),
		Revision:          req.GetRevision(),
		SortOrder:         kvpb.RangeRequest_SortOrder(req.GetSortOrder()),
		SortTarget:        kvpb.RangeRequest_SortTarget(req.GetSortTarget()),
		Serializable:      req.GetSerializable(),
		KeysOnly:          req.GetKeysOnly(),
		CountOnly:         req.GetCountOnly(),
		MinModRevision:    req.GetMinModRevision(),
		MaxModRevision:    req.GetMaxModRevision(),
		MinCreateRevision: req.GetMinCreateRevision(),
		MaxCreateRevision: req.GetMaxCreateRevision(),
	}
}

// rangeResponseToEtcd converts a response whose header the caller sets.
func rangeResponseToEtcd(resp *kvpb.RangeResponse) *pb.RangeResponse {
	return &pb.RangeResponse{Kvs: keyValuesToEtcd(resp.GetKvs()), More: resp.GetMore(), Count: resp.GetCount()}
}

func putRequestFromEtcd(req *pb.PutRequest) *kvpb.PutRequest {
	return &kvpb.PutRequest{
		Key:         bytesOrNil(req.GetKey()),
		Value:       bytesOrNil(req.GetValue()),
		Lease:       req.GetLease(),
		PrevKv:      req.GetPrevKv(),
		IgnoreValue: req.GetIgnoreValue(),
		IgnoreLease: req.GetIgnoreLease(),
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

func deleteRangeRequestFromEtcd(req *pb.DeleteRangeRequest) *kvpb.DeleteRangeRequest {
	return &kvpb.DeleteRangeRequest{Key: bytesOrNil(req.GetKey()), RangeEnd: bytesOrNil(req.GetRangeEnd()), PrevKv: req.GetPrevKv()}
}

// deleteRangeResponseToEtcd converts a response whose header the caller
// sets.
func deleteRangeResponseToEtcd(resp *kvpb.DeleteRangeResponse) *pb.DeleteRangeResponse {
	return &pb.DeleteRangeResponse{Deleted: resp.GetDeleted(), PrevKvs: keyValuesToEtcd(resp.GetPrevKvs())}
}

func txnRequestFromEtcd(req *pb.TxnRequest) *kvpb.TxnRequest {
	out := &kvpb.TxnRequest{
		Compare: make([]*kvpb.Compare, len(req.GetCompare())),
		Success: requestOpsFromEtcd(req.GetSuccess()),
		Failure: requestOpsFromEtcd(req.GetFailure()),
	}
	for i, c := range req.GetCompare() {
		out.Compare[i] = compareFromEtcd(c)
	}
	return out
}

func compareFromEtcd(c *pb.Compare) *kvpb.Compare {
	out := &kvpb.Compare{
		Result:   kvpb.Compare_CompareResult(c.GetResult()),
		Target:   kvpb.Compare_CompareTarget(c.GetTarget()),
		Key:      bytesOrNil(c.GetKey()),
		RangeEnd: bytesOrNil(c.GetRangeEnd()),
	}
	switch u := c.GetTargetUnion().(type) {
	case *pb.Compare_Version:
		out.TargetUnion = &kvpb.Compare_Version{Version: u.Version}
	case *pb.Compare_CreateRevision:
		out.TargetUnion = &kvpb.Compare_CreateRevision{CreateRevision: u.CreateRevision}
	case *pb.Compare_ModRevision:
		out.TargetUnion = &kvpb.Compare_ModRevision{ModRevision: u.ModRevision}
	case *pb.Compare_Value:
		out.TargetUnion = &kvpb.Compare_Value{Value: u.Value}
	case *pb.Compare_Lease:
		out.TargetUnion = &kvpb.Compare_Lease{Lease: u.Lease}
	}
	return out
}

func requestOpsFromEtcd(ops []*pb.RequestOp) []*kvpb.RequestOp {
	if len(ops) == 0 {
		return nil
	}
	out := make([]*kvpb.RequestOp, len(ops))
	for i, op := range ops {
		o := &kvpb.RequestOp{}
		switch r := op.GetRequest().(type) {
		case *pb.RequestOp_RequestRange:
			o.Request = &kvpb.RequestOp_RequestRange{RequestRange: rangeRequestFromEtcd(r.RequestRange)}
		case *pb.RequestOp_RequestPut:
			o.Request = &kvpb.RequestOp_RequestPut{RequestPut: putRequestFromEtcd(r.RequestPut)}
		case *pb.RequestOp_RequestDeleteRange:
			o.Request = &kvpb.RequestOp_RequestDeleteRange{RequestDeleteRange: deleteRangeRequestFromEtcd(r.RequestDeleteRange)}
		case *pb.RequestOp_RequestTxn:
			o.Request = &kvpb.RequestOp_RequestTxn{RequestTxn: txnRequestFromEtcd(r.RequestTxn)}
		}
		out[i] = o
	}
	return out
}

// txnResponseToEtcd converts a transaction's response and gives it, and
// every response in it, the header hdr, as etcd does.
func txnResponseToEtcd(resp *kvpb.TxnResponse, hdr *pb.ResponseHeader) *pb.TxnResponse {
	out := &pb.TxnResponse{Header: hdr, Succeeded: resp.GetSucceeded()}
	if n := len(resp.GetResponses()); n > 0 {
		out.Responses = make([]*pb.ResponseOp, n)
	}
	for i, op := range resp.GetResponses() {
		o := &pb.ResponseOp{}
		switch r := op.GetResponse().(type) {
		case *kvpb.ResponseOp_ResponseRange:
			rr := rangeResponseToEtcd(r.ResponseRange)
			rr.Header = hdr
			o.Response = &pb.ResponseOp_ResponseRange{ResponseRange: rr}
		case *kvpb.ResponseOp_ResponsePut:
			pr := putResponseToEtcd(r.ResponsePut)
			pr.Header = hdr
			o.Response = &pb.ResponseOp_ResponsePut{ResponsePut: pr}
		case *kvpb.ResponseOp_ResponseDeleteRange:
			dr := deleteRangeResponseToEtcd(r.ResponseDeleteRange)
			dr.Header = hdr
			o.Response = &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: dr}
		case *kvpb.ResponseOp_ResponseTxn:
			o.Response = &pb.ResponseOp_ResponseTxn{ResponseTxn: txnResponseToEtcd(r.ResponseTxn, hdr)}
		}
		out.Responses[i] = o
	}
	return out
}
