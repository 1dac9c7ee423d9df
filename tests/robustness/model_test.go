package robustness

import (
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func op(client int, call, ret int64, in kvInput, out kvOutput) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

// The model accepts what etcd may answer and refuses what it may not: the
// checker this suite relies on can fail.
func TestKVModel(t *testing.T) {
	for _, c := range []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{"put then get", []porcupine.Operation{
			op(0, 0, 10, kvInput{Op: "put", Key: "a", Value: "1"}, kvOutput{}),
			op(1, 20, 30, kvInput{Op: "get", Key: "a"}, kvOutput{Found: true, Value: "1"}),
		}, porcupine.Ok},
		{"stale read after an acknowledged put", []porcupine.Operation{
			op(0, 0, 10, kvInput{Op: "put", Key: "a", Value: "1"}, kvOutput{}),
			op(0, 11, 20, kvInput{Op: "put", Key: "a", Value: "2"}, kvOutput{}),
			op(1, 30, 40, kvInput{Op: "get", Key: "a"}, kvOutput{Found: true, Value: "1"}),
		}, porcupine.Illegal},
		{"concurrent put may or may not be seen", []porcupine.Operation{
			op(0, 0, 10, kvInput{Op: "put", Key: "a", Value: "1"}, kvOutput{}),
			op(0, 11, 50, kvInput{Op: "put", Key: "a", Value: "2"}, kvOutput{}),
			op(1, 20, 30, kvInput{Op: "get", Key: "a"}, kvOutput{Found: true, Value: "1"}),
			op(2, 20, 30, kvInput{Op: "get", Key: "a"}, kvOutput{Found: true, Value: "2"}),
		}, porcupine.Ok},
		{"a read going back in time", []porcupine.Operation{
			op(0, 0, 10, kvInput{Op: "put", Key: "a", Value: "1"}, kvOutput{}),
			op(0, 11, 50, kvInput{Op: "put", Key: "a", Value: "2"}, kvOutput{}),
			op(1, 20, 30, kvInput{Op: "get", Key: "a"}, kvOutput{Found: true, Value: "2"}),
			op(2, 31, 40, kvInput{Op: "get", Key: "a"}, kvOutput{Found: true, Value: "1"}),
		}, porcupine.Illegal},
		{"an unknown put may have happened", []porcupine.Operation{
			op(0, 0, math.MaxInt64, kvInput{Op: "put", Key: "a", Value: "1"}, kvOutput{Unknown: true}),
			op(1, 20, 30, kvInput{Op: "get", Key: "a"}, kvOutput{Found: true, Value: "1"}),
		}, porcupine.Ok},
		{"an unknown put may not have happened", []porcupine.Operation{
			op(0, 0, math.MaxInt64, kvInput{Op: "put", Key: "a", Value: "1"}, kvOutput{Unknown: true}),
			op(1, 20, 30, kvInput{Op: "get", Key: "a"}, kvOutput{}),
		}, porcupine.Ok},
		{"cas succeeds only on the expected value", []porcupine.Operation{
			op(0, 0, 10, kvInput{Op: "put", Key: "a", Value: "1"}, kvOutput{}),
			op(0, 11, 20, kvInput{Op: "cas", Key: "a", Expect: "0", Value: "2"}, kvOutput{Found: true}),
		}, porcupine.Illegal},
		{"cas then delete", []porcupine.Operation{
			op(0, 0, 10, kvInput{Op: "put", Key: "a", Value: "1"}, kvOutput{}),
			op(0, 11, 20, kvInput{Op: "cas", Key: "a", Expect: "1", Value: "2"}, kvOutput{Found: true}),
			op(0, 21, 30, kvInput{Op: "delete", Key: "a"}, kvOutput{Found: true}),
			op(1, 31, 40, kvInput{Op: "get", Key: "a"}, kvOutput{}),
		}, porcupine.Ok},
		{"a delete of a missing key that found one", []porcupine.Operation{
			op(0, 0, 10, kvInput{Op: "delete", Key: "a"}, kvOutput{Found: true}),
		}, porcupine.Illegal},
		{"keys are independent", []porcupine.Operation{
			op(0, 0, 10, kvInput{Op: "put", Key: "a", Value: "1"}, kvOutput{}),
			op(1, 20, 30, kvInput{Op: "get", Key: "b"}, kvOutput{}),
		}, porcupine.Ok},
	} {
		if got := porcupine.CheckOperationsTimeout(kvModel, c.history, 10*time.Second); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
