package integration

import (
	"context"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/tests/procs"
)

// The clientv3-shaped API end to end over several regions: puts, a prefix
// get, a compare-and-set, a delete with prev_kv, and a watch.
func TestClientV3ShapedAPI(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	waitReplicated(t, c)
	splitPrefix(t, cl, "p/", 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv := cl.KV()
	w := kv.Watch(ctx, "p/", client.WithPrefix(), client.WithPrevKV(), client.WithCreatedNotify())
	defer w.Close()
	if r := <-w.C; r == nil || !r.Created {
		t.Fatalf("watch not created: %v", r)
	}
	for _, k := range []string{"p/a", "p/m", "p/z"} {
		if _, err := kv.Put(ctx, k, "1"); err != nil {
			t.Fatal(err)
		}
	}
	get, err := kv.Get(ctx, "p/", client.WithPrefix(), client.WithLimit(2))
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != 2 || get.Count != 3 || !get.More || string(get.Kvs[1].GetKey()) != "p/m" {
		t.Fatalf("prefix get over three regions: %v", get)
	}
	// Compare-and-set: the first succeeds, the second sees the new value.
	for i, want := range []bool{true, false} {
		resp, err := kv.Txn(ctx).If(client.Compare(client.Value("p/m"), "=", "1")).
			Then(client.OpPut("p/m", "2")).Else(client.OpGet("p/m")).Commit()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetSucceeded() != want {
			t.Fatalf("CAS %d: succeeded=%v", i, resp.GetSucceeded())
		}
	}
	del, err := kv.Delete(ctx, "p/", client.WithPrefix(), client.WithPrevKV())
	if err != nil {
		t.Fatal(err)
	}
	if del.GetDeleted() != 3 || len(del.GetPrevKvs()) != 3 {
		t.Fatalf("delete: %v", del)
	}
	// 3 puts, the CAS put, 3 deletes, in revision order.
	var events []string
	for len(events) < 7 {
		select {
		case r := <-w.C:
			for _, e := range r.Events {
				events = append(events, e.GetType().String()+" "+string(e.GetKv().GetKey())+"="+string(e.GetKv().GetValue()))
			}
		case <-ctx.Done():
			t.Fatalf("events so far: %v", events)
		}
	}
	want := []string{"PUT p/a=1", "PUT p/m=1", "PUT p/z=1", "PUT p/m=2", "DELETE p/a=", "DELETE p/m=", "DELETE p/z="}
	for i := range want {
		if events[i] != want[i] {
			t.Fatalf("events %v, want %v", events, want)
		}
	}
}
