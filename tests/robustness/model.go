// Package robustness runs real basalt processes under randomized traffic
// and faults and checks what clients saw: single-key histories against a
// model of etcd's semantics with porcupine (linearizability), and lists
// and leased keys' reads by replaying the watches' events (reads.go).
// docs/robustness.md says how to run it and what it found.
package robustness

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// kvInput is one client operation on one key.
type kvInput struct {
	Op     string // "get", "put", "delete", "cas"
	Key    string
	Value  string // put, cas: the value written
	Expect string // cas: the value compared (the key must exist with it)
}

// kvOutput is what the client saw.
type kvOutput struct {
	// Unknown: a write whose call failed or timed out, so it may or may
	// not have taken effect. Its return time is the end of the history, so
	// porcupine may place it anywhere after its call, including after
	// every other operation (where it is as if it never happened).
	Unknown bool
	// Found: get found the key; delete deleted it; cas succeeded.
	Found bool
	Value string // get
}

// kvState is one key as etcd would hold it.
type kvState struct {
	exists bool
	value  string
}

func stepKV(state, input, output any) (bool, any) {
	s, in, out := state.(kvState), input.(kvInput), output.(kvOutput)
	switch in.Op {
	case "get":
		return out.Found == s.exists && (!s.exists || out.Value == s.value), s
	case "put":
		return true, kvState{exists: true, value: in.Value}
	case "delete":
		if out.Unknown {
			return true, kvState{}
		}
		return out.Found == s.exists, kvState{}
	case "cas":
		holds := s.exists && s.value == in.Expect
		next := s
		if holds {
			next = kvState{exists: true, value: in.Value}
		}
		if out.Unknown {
			return true, next
		}
		return out.Found == holds, next
	}
	panic(fmt.Sprintf("robustness: unknown operation %q", in.Op))
}

// partitionByKey: operations on different keys commute, so each key's
// history is checked alone (etcd's robustness suite does the same for
// single-key operations).
func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range history {
		k := op.Input.(kvInput).Key
		byKey[k] = append(byKey[k], op)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out
}

// kvModel is etcd's single-key KV semantics for porcupine.
var kvModel = porcupine.Model{
	Partition: partitionByKey,
	Init:      func() any { return kvState{} },
	Step:      stepKV,
	Equal:     func(a, b any) bool { return a.(kvState) == b.(kvState) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		res := ""
		switch {
		case out.Unknown:
			res = "?"
		case in.Op == "get" && out.Found:
			res = fmt.Sprintf("%q", out.Value)
		case in.Op == "get":
			res = "none"
		case in.Op == "put":
			res = "ok"
		default:
			res = fmt.Sprint(out.Found)
		}
		switch in.Op {
		case "put":
			return fmt.Sprintf("put(%s, %q) -> %s", in.Key, in.Value, res)
		case "cas":
			return fmt.Sprintf("cas(%s, %q -> %q) -> %s", in.Key, in.Expect, in.Value, res)
		default:
			return fmt.Sprintf("%s(%s) -> %s", in.Op, in.Key, res)
		}
	},
	DescribeState: func(state any) string {
		s := state.(kvState)
		if !s.exists {
			return "absent"
		}
		return fmt.Sprintf("%q", s.value)
	},
}
