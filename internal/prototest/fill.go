// Package prototest helps tests that must notice a field added to a proto
// and not to the code that copies or converts it.
package prototest

import (
	"fmt"
	"math/bits"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Seeds is how many seeds Fill needs for every oneof member to be set in
// some message and every pair of bools of a message to differ in some.
const Seeds = 16

// Fill sets every field of m that skip does not name to a value other
// than its default, lists to three elements. Of a oneof it sets the member
// seed picks, so seeds in a row cover every member; bools are set in half
// of the seeds 0..Seeds-1, and any two of a message differ in some, so a
// dropped or swapped bool shows. Nesting stops at depth 3 (messages nest
// recursively). It fails on a field kind it does not fill yet.
func Fill(m protoreflect.Message, seed int, skip func(protoreflect.FieldDescriptor) bool) error {
	return fill(m, seed, 0, skip)
}

func fill(m protoreflect.Message, seed, depth int, skip func(protoreflect.FieldDescriptor) bool) error {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		isMsg := fd.Kind() == protoreflect.MessageKind
		if (skip != nil && skip(fd)) || (isMsg && depth >= 3) {
			continue
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && od.Fields().Get(seed%od.Fields().Len()) != fd {
			continue
		}
		if fd.IsList() {
			if !isMsg {
				return fmt.Errorf("%s: a list of scalars: extend prototest.Fill", fd.FullName())
			}
			list := m.Mutable(fd).List()
			for j := 0; j < 3; j++ {
				e := list.NewElement()
				if err := fill(e.Message(), seed+j+1, depth+1, skip); err != nil {
					return err
				}
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
		case protoreflect.Uint64Kind:
			m.Set(fd, protoreflect.ValueOfUint64(uint64(n)))
		case protoreflect.BoolKind:
			m.Set(fd, protoreflect.ValueOfBool(bits.OnesCount(uint(seed)&uint(i+1))%2 == 1))
		case protoreflect.EnumKind:
			vals := fd.Enum().Values()
			m.Set(fd, protoreflect.ValueOfEnum(vals.Get(1+seed%(vals.Len()-1)).Number()))
		case protoreflect.MessageKind:
			if err := fill(m.Mutable(fd).Message(), seed+1, depth+1, skip); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: kind %s: extend prototest.Fill", fd.FullName(), fd.Kind())
		}
	}
	return nil
}
