package etcdapi

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/basaltdb/basalt/internal/prototest"
	"github.com/basaltdb/basalt/proto/kvpb"
)

// noHeaderOrContext leaves out response headers and Basalt's region
// context, which conversion never carries.
func noHeaderOrContext(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.MessageKind && (fd.Name() == "header" || fd.Name() == "context")
}

// checkSame fails unless direct equals what recode makes of from, and is
// not empty (a conversion that dropped everything would equal an empty
// recode of an empty message).
func checkSame(t *testing.T, from, direct, viaRecode proto.Message) {
	t.Helper()
	if err := recode(from, viaRecode); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(direct, viaRecode) {
		t.Fatalf("%T: field-by-field conversion differs from recode:\n direct %v\n recode %v", direct, direct, viaRecode)
	}
	if proto.Size(direct) == 0 {
		t.Fatalf("%T: converted to an empty message", direct)
	}
}

func TestConversionsMatchRecode(t *testing.T) {
	// Each case: an empty message of the type converted (filled below),
	// the conversion, and an empty message of the type it converts to.
	cases := []struct {
		from    proto.Message
		convert func(proto.Message) proto.Message
		to      proto.Message
	}{
		{&pb.RangeRequest{}, func(m proto.Message) proto.Message { return rangeRequestFromEtcd(m.(*pb.RangeRequest)) }, &kvpb.RangeRequest{}},
		{&pb.PutRequest{}, func(m proto.Message) proto.Message { return putRequestFromEtcd(m.(*pb.PutRequest)) }, &kvpb.PutRequest{}},
		{&pb.DeleteRangeRequest{}, func(m proto.Message) proto.Message { return deleteRangeRequestFromEtcd(m.(*pb.DeleteRangeRequest)) }, &kvpb.DeleteRangeRequest{}},
		{&pb.TxnRequest{}, func(m proto.Message) proto.Message { return txnRequestFromEtcd(m.(*pb.TxnRequest)) }, &kvpb.TxnRequest{}},
		{&kvpb.RangeResponse{}, func(m proto.Message) proto.Message { return rangeResponseToEtcd(m.(*kvpb.RangeResponse)) }, &pb.RangeResponse{}},
		{&kvpb.PutResponse{}, func(m proto.Message) proto.Message { return putResponseToEtcd(m.(*kvpb.PutResponse)) }, &pb.PutResponse{}},
		{&kvpb.DeleteRangeResponse{}, func(m proto.Message) proto.Message { return deleteRangeResponseToEtcd(m.(*kvpb.DeleteRangeResponse)) }, &pb.DeleteRangeResponse{}},
		// Headers: nil here, as recode leaves them (fill sets none).
		{&kvpb.TxnResponse{}, func(m proto.Message) proto.Message { return txnResponseToEtcd(m.(*kvpb.TxnResponse), nil) }, &pb.TxnResponse{}},
		{&kvpb.Event{}, func(m proto.Message) proto.Message { return eventToEtcd(m.(*kvpb.Event)) }, &mvccpb.Event{}},
	}
	for seed := 0; seed < prototest.Seeds; seed++ {
		for _, c := range cases {
			from := c.from.ProtoReflect().New().Interface()
			if err := prototest.Fill(from.ProtoReflect(), seed, noHeaderOrContext); err != nil {
				t.Fatal(err)
			}
			checkSame(t, from, c.convert(from), c.to.ProtoReflect().New().Interface())
		}
	}
}

// A transaction's response gives its header to every response in it, nested
// transactions' too, as etcd does.
func TestTxnResponseHeaders(t *testing.T) {
	resp := &kvpb.TxnResponse{Responses: []*kvpb.ResponseOp{
		{Response: &kvpb.ResponseOp_ResponseRange{ResponseRange: &kvpb.RangeResponse{}}},
		{Response: &kvpb.ResponseOp_ResponsePut{ResponsePut: &kvpb.PutResponse{}}},
		{Response: &kvpb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &kvpb.DeleteRangeResponse{}}},
		{Response: &kvpb.ResponseOp_ResponseTxn{ResponseTxn: &kvpb.TxnResponse{Responses: []*kvpb.ResponseOp{
			{Response: &kvpb.ResponseOp_ResponsePut{ResponsePut: &kvpb.PutResponse{}}},
		}}}},
	}}
	hdr := &pb.ResponseHeader{Revision: 42}
	out := txnResponseToEtcd(resp, hdr)
	inner := out.Responses[3].GetResponseTxn()
	for i, h := range []*pb.ResponseHeader{out.Header, out.Responses[0].GetResponseRange().Header, out.Responses[1].GetResponsePut().Header,
		out.Responses[2].GetResponseDeleteRange().Header, inner.Header, inner.Responses[0].GetResponsePut().Header} {
		if h != hdr {
			t.Fatalf("header %d: %v, want the transaction's", i, h)
		}
	}
}

// Absent and empty fields convert as decoding leaves them: absent messages
// stay nil, empty bytes become nil.
func TestConversionsOfEmptyFields(t *testing.T) {
	for _, c := range []struct{ from, direct, viaRecode proto.Message }{
		{&pb.RangeRequest{Key: []byte{}, RangeEnd: []byte{}}, rangeRequestFromEtcd(&pb.RangeRequest{Key: []byte{}, RangeEnd: []byte{}}), &kvpb.RangeRequest{}},
		{&kvpb.PutResponse{}, putResponseToEtcd(&kvpb.PutResponse{}), &pb.PutResponse{}},
		{&kvpb.Event{Kv: &kvpb.KeyValue{Key: []byte("k"), Value: []byte{}}}, eventToEtcd(&kvpb.Event{Kv: &kvpb.KeyValue{Key: []byte("k"), Value: []byte{}}}), &mvccpb.Event{}},
	} {
		if err := recode(c.from, c.viaRecode); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(c.direct, c.viaRecode) {
			t.Fatalf("%T: %v, recode gives %v", c.direct, c.direct, c.viaRecode)
		}
	}
	if r := rangeRequestFromEtcd(&pb.RangeRequest{Key: []byte{}}); r.Key != nil {
		t.Fatalf("empty key converted to %q, not nil", r.Key)
	}
	if r := putResponseToEtcd(&kvpb.PutResponse{}); r.PrevKv != nil {
		t.Fatalf("absent prev_kv converted to %v", r.PrevKv)
	}
}

// A 1,000-key response as the 100,000-key range workload reads it.
func rangeResponseOf(n int) *kvpb.RangeResponse {
	resp := &kvpb.RangeResponse{More: true, Count: 100000}
	for i := 0; i < n; i++ {
		resp.Kvs = append(resp.Kvs, &kvpb.KeyValue{Key: fmt.Appendf(nil, "%08d", i), Value: make([]byte, 256), CreateRevision: int64(i), ModRevision: int64(i), Version: 1})
	}
	return resp
}

func BenchmarkRangeResponseToEtcd(b *testing.B) {
	resp := rangeResponseOf(1000)
	b.Run("recode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out := &pb.RangeResponse{}
			if err := recode(resp, out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("field-by-field", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = rangeResponseToEtcd(resp)
		}
	})
}
