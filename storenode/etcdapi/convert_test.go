package etcdapi

import (
	"fmt"
	"math/bits"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// fill sets every field of m to a value other than its default, lists to
// three elements, except response headers and Basalt's region context,
// which conversion never carries (a field of either name is skipped). Of a oneof it sets the member seed
// picks, so seeds in a row cover every member; nesting stops at depth 3.
func fill(t *testing.T, m protoreflect.Message, seed, depth int) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		isMsg := fd.Kind() == protoreflect.MessageKind
		if isMsg && (fd.Name() == "header" || fd.Name() == "context" || depth >= 3) {
			continue
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && od.Fields().Get(seed%od.Fields().Len()) != fd {
			continue
		}
		if fd.IsList() {
			list := m.Mutable(fd).List()
			for j := 0; j < 3; j++ {
				if !isMsg {
					t.Fatalf("%s: a list of scalars: extend fill", fd.FullName())
				}
				e := list.NewElement()
				fill(t, e.Message(), seed+j+1, depth+1)
				list.Append(e)
			}
			continue
		}
		n := int64(seed*100 + i + 1)
		switch fd.Kind() {
		case protoreflect.BytesKind:
			m.Set(fd, protoreflect.ValueOfBytes(fmt.Appendf(nil, "%s-%d", fd.Name(), n)))
		case protoreflect.Int64Kind:
			m.Set(fd, protoreflect.ValueOfInt64(n))
		case protoreflect.BoolKind:
			// Over seeds 0..15 each bool is set in half of the messages,
			// and any two bools of a message differ in some: a dropped or
			// a swapped bool fails the comparison.
			m.Set(fd, protoreflect.ValueOfBool(bits.OnesCount(uint(seed)&uint(i+1))%2 == 1))
		case protoreflect.EnumKind:
			vals := fd.Enum().Values()
			m.Set(fd, protoreflect.ValueOfEnum(vals.Get(1+seed%(vals.Len()-1)).Number()))
		case protoreflect.MessageKind:
			fill(t, m.Mutable(fd).Message(), seed+1, depth+1)
		default:
			t.Fatalf("%s: kind %s: extend fill", fd.FullName(), fd.Kind())
		}
	}
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
	for seed := 0; seed < 16; seed++ {
		for _, c := range cases {
			from := c.from.ProtoReflect().New().Interface()
			fill(t, from.ProtoReflect(), seed, 0)
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
