package kvpb

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// setEveryField gives every field of m a value other than its default,
// nested messages down to depth (messages nest recursively: a
// transaction's operations hold transactions).
func setEveryField(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.Kind() == protoreflect.MessageKind && depth == 0 {
			continue
		}
		if fd.IsList() {
			// One element, with every field set.
			l := m.Mutable(fd).List()
			e := l.NewElement()
			setEveryField(e.Message(), depth-1)
			l.Append(e)
			continue
		}
		var v protoreflect.Value
		switch fd.Kind() {
		case protoreflect.BytesKind:
			v = protoreflect.ValueOfBytes([]byte(fd.Name()))
		case protoreflect.BoolKind:
			v = protoreflect.ValueOfBool(true)
		case protoreflect.Int64Kind:
			v = protoreflect.ValueOfInt64(int64(fd.Number()) + 7)
		case protoreflect.Uint64Kind:
			v = protoreflect.ValueOfUint64(uint64(fd.Number()) + 7)
		case protoreflect.EnumKind:
			vals := fd.Enum().Values()
			v = protoreflect.ValueOfEnum(vals.Get(vals.Len() - 1).Number())
		case protoreflect.MessageKind:
			sub := m.NewField(fd)
			setEveryField(sub.Message(), depth-1)
			v = sub
		default:
			panic("setEveryField: add kind " + fd.Kind().String())
		}
		m.Set(fd, v)
	}
}

func TestShallowCopiesCopyEveryField(t *testing.T) {
	for _, tc := range []struct {
		msg  proto.Message
		copy func(proto.Message) proto.Message
	}{
		{&PutRequest{}, func(m proto.Message) proto.Message { return m.(*PutRequest).ShallowCopy() }},
		{&DeleteRangeRequest{}, func(m proto.Message) proto.Message { return m.(*DeleteRangeRequest).ShallowCopy() }},
		{&RangeRequest{}, func(m proto.Message) proto.Message { return m.(*RangeRequest).ShallowCopy() }},
		{&TxnRequest{}, func(m proto.Message) proto.Message { return m.(*TxnRequest).ShallowCopy() }},
	} {
		setEveryField(tc.msg.ProtoReflect(), 3)
		c := tc.copy(tc.msg)
		if !proto.Equal(c, tc.msg) {
			t.Errorf("%T: the copy %v differs from %v", tc.msg, c, tc.msg)
		}
		if c == tc.msg {
			t.Errorf("%T: the copy is the message itself", tc.msg)
		}
	}
}
