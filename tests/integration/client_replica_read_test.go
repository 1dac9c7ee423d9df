package integration

import (
	"context"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/tests/procs"
)

// A serializable Get through the client is served by a replica from what
// it has applied, as an etcd member serves one: it goes on when the region
// has lost its quorum and no leader can answer, where a linearizable Get
// cannot. At a revision the replica has reached it is exact; above it,
// the replica refuses and the read needs the leader.
func TestSerializableGetServedByAReplicaWithoutQuorum(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv := cl.KV()
	first, err := kv.Put(ctx, "sr/k", "v1")
	if err != nil {
		t.Fatal(err)
	}
	last, err := kv.Put(ctx, "sr/k", "v2")
	if err != nil {
		t.Fatal(err)
	}
	leader := leaderStoreOf(t, c, pd, []byte("sr/k"))
	var survivor *procs.Proc
	for _, p := range c.Stores {
		if p != leader {
			survivor = p
			break
		}
	}
	// The survivor has applied the second put: its own serializable read
	// (the etcd API's local path) shows it.
	ecli, err := clientv3.New(clientv3.Config{Endpoints: []string{survivor.Addr}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer ecli.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := ecli.Get(ctx, "sr/k", clientv3.WithSerializable())
		if err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store %s never applied the put: %v %v", survivor.Name, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ecli.Close()

	for _, p := range c.Stores {
		if p != survivor {
			c.Signal(p, syscall.SIGKILL)
		}
	}
	// Once no leader lease is left anywhere, a linearizable read fails.
	deadline = time.Now().Add(30 * time.Second)
	for {
		lctx, lcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := kv.Get(lctx, "sr/k")
		lcancel()
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("linearizable reads still answered 30 s after the region lost two of its three replicas")
		}
	}
	// The client tries the replicas from a random one on: every read finds
	// the survivor.
	for i := 0; i < 6; i++ {
		r, err := kv.Get(ctx, "sr/k", client.WithSerializable())
		if err != nil {
			t.Fatalf("serializable get %d without a quorum: %v", i, err)
		}
		if len(r.GetKvs()) != 1 || string(r.GetKvs()[0].GetValue()) != "v2" || r.GetHeader().GetRevision() < last.GetHeader().GetRevision() {
			t.Fatalf("serializable get %d: %v, want v2 at revision %d or later", i, r, last.GetHeader().GetRevision())
		}
	}
	r, err := kv.Get(ctx, "sr/k", client.WithSerializable(), client.WithRev(first.GetHeader().GetRevision()))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetKvs()) != 1 || string(r.GetKvs()[0].GetValue()) != "v1" {
		t.Fatalf("serializable get at the first put's revision: %v, want v1", r)
	}
	// A revision no replica has reached needs the leader, which is gone.
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
	defer fcancel()
	if r, err := kv.Get(fctx, "sr/k", client.WithSerializable(), client.WithRev(last.GetHeader().GetRevision()+1<<20)); err == nil {
		t.Fatalf("a serializable get above every replica's revision answered without a leader: %v", r)
	}
}
