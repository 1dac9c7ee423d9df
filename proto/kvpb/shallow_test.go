package kvpb

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/internal/prototest"
)

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
		for seed := 0; seed < prototest.Seeds; seed++ {
			m := tc.msg.ProtoReflect().New().Interface()
			if err := prototest.Fill(m.ProtoReflect(), seed, nil); err != nil {
				t.Fatal(err)
			}
			c := tc.copy(m)
			if !proto.Equal(c, m) {
				t.Errorf("%T: the copy %v differs from %v", m, c, m)
			}
			if c == m {
				t.Errorf("%T: the copy is the message itself", m)
			}
		}
	}
}
