package robustness

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/anishathalye/porcupine"

	"github.com/basaltdb/basalt/tests/watchcheck"
)

// history collects every operation with its call and return times.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	// counts: operations by kind and result, for the run's summary.
	counts map[string]int
}

func newHistory() *history { return &history{start: time.Now(), counts: map[string]int{}} }

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(client int, in kvInput, call int64, out kvOutput, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil:
		h.counts[in.Op+" ok"]++
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: h.now()})
	case in.Op == "get":
		// A failed read changed nothing and says nothing.
		h.counts["get failed"]++
	default:
		// A failed write may or may not have happened.
		h.counts[in.Op+" unknown"]++
		h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: kvOutput{Unknown: true}, Return: math.MaxInt64})
	}
}

// trafficClient issues random single-key operations through one etcd
// client, with values unique to the run, until ctx ends.
type trafficClient struct {
	id   int
	cli  *clientv3.Client
	keys []string
	rng  *rand.Rand
	h    *history
	log  *watchcheck.Log
	// last is the value this client last wrote per key, for compare-and-set.
	last map[string]string
	// reads records lists, leased keys' reads and acknowledged writes for
	// the replay check (reads.go); leaseKeys are the keys put with leases.
	reads     *readLog
	leaseKeys []string
	// k8sKeys are the Kubernetes-like objects; k8sSeen the mod revision
	// this client last saw of each (0: absent), as a controller's cache
	// holds it (k8s.go).
	k8sKeys []string
	k8sSeen map[string]int64
}

// write logs a write for the watch checks and, once acknowledged, for the
// replay check.
func (c *trafficClient) write(w watchcheck.Write) {
	c.log.Add(w)
	if w.Rev != 0 {
		c.reads.ack(w.Key, w.Rev)
	}
}

const opTimeout = 3 * time.Second

func (c *trafficClient) run(ctx context.Context) {
	for n := 0; ctx.Err() == nil; n++ {
		// Multi-key, leased and Kubernetes-like traffic, checked by replay
		// (reads.go, k8s.go, multikey.go). Rare: a list of a few pages takes about 5
		// single-key operations' time, a lease's grant, puts and revoke
		// (which waits out the lease's attach window, docs/leases.md)
		// about 20.
		switch p := c.rng.IntN(1000); {
		case p < 25:
			c.list(ctx)
			continue
		case p < 33:
			c.leaseOp(ctx)
			continue
		case p < 58:
			c.leaseGet(ctx)
			continue
		case p < 88:
			// Two round trips at most: a get (half the time or more) and the
			// conditional write.
			c.k8sOp(ctx, n)
			continue
		case p < 100:
			c.multiTxnOp(ctx, n)
			continue
		case p < 106:
			c.rangeDeleteOp(ctx)
			continue
		}
		key := c.keys[c.rng.IntN(len(c.keys))]
		value := fmt.Sprintf("c%d-%d", c.id, n)
		var in kvInput
		switch p := c.rng.IntN(100); {
		case p < 45:
			in = kvInput{Op: "get", Key: key}
		case p < 80:
			in = kvInput{Op: "put", Key: key, Value: value}
		case p < 92:
			in = kvInput{Op: "cas", Key: key, Expect: c.last[key], Value: value}
		default:
			in = kvInput{Op: "delete", Key: key}
		}
		c.do(ctx, in)
	}
}

func (c *trafficClient) do(parent context.Context, in kvInput) {
	ctx, cancel := context.WithTimeout(parent, opTimeout)
	defer cancel()
	call := c.h.now()
	var out kvOutput
	var err error
	switch in.Op {
	case "get":
		var resp *clientv3.GetResponse
		if resp, err = c.cli.Get(ctx, in.Key); err == nil && len(resp.Kvs) == 1 {
			out = kvOutput{Found: true, Value: string(resp.Kvs[0].Value)}
		}
	case "put":
		var resp *clientv3.PutResponse
		resp, err = c.cli.Put(ctx, in.Key, in.Value)
		c.last[in.Key] = in.Value
		if err == nil {
			c.write(watchcheck.Write{Key: in.Key, Value: in.Value, Rev: resp.Header.Revision})
		} else {
			c.write(watchcheck.Write{Key: in.Key, Value: in.Value})
		}
	case "cas":
		var resp *clientv3.TxnResponse
		resp, err = c.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(in.Key), "=", in.Expect)).
			Then(clientv3.OpPut(in.Key, in.Value)).Commit()
		if err == nil {
			out.Found = resp.Succeeded
			if resp.Succeeded {
				c.write(watchcheck.Write{Key: in.Key, Value: in.Value, Rev: resp.Header.Revision})
			}
		} else {
			c.write(watchcheck.Write{Key: in.Key, Value: in.Value})
		}
		c.last[in.Key] = in.Value
	case "delete":
		var resp *clientv3.DeleteResponse
		if resp, err = c.cli.Delete(ctx, in.Key); err == nil {
			out.Found = resp.Deleted == 1
			if out.Found {
				c.write(watchcheck.Write{Key: in.Key, Delete: true, Rev: resp.Header.Revision})
			}
		} else {
			c.write(watchcheck.Write{Key: in.Key, Delete: true})
		}
	}
	if parent.Err() != nil && err != nil && in.Op == "get" {
		return // the run ended under it
	}
	c.h.add(c.id, in, call, out, err)
}
