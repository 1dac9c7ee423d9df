package etcdapi

import (
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
