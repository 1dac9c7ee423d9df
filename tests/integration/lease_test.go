package integration

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/tests/procs"
)

// leasedKeys returns the keys under prefix that carry lease id.
func leasedKeys(t *testing.T, ctx context.Context, kv client.KV, prefix string, id int64) []string {
	t.Helper()
	resp, err := kv.Get(ctx, prefix, client.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range resp.Kvs {
		if e.GetLease() == id {
			out = append(out, string(e.GetKey()))
		}
	}
	return out
}

// waitNoLeasedKeys polls until no key under prefix carries lease id.
func waitNoLeasedKeys(t *testing.T, ctx context.Context, kv client.KV, prefix string, id int64) {
	t.Helper()
	for {
		left := leasedKeys(t, ctx, kv, prefix, id)
		if len(left) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("keys of lease %d still there: %v", id, left)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// A lease's keys in four regions all go when it expires, as ordinary
// delete events in a watch; keys without the lease stay.
func TestLeaseExpiryDeletesKeysInEveryRegion(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	waitReplicated(t, c)
	splitPrefix(t, cl, "l/", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv := cl.KV()
	w := kv.Watch(ctx, "l/", client.WithPrefix(), client.WithCreatedNotify())
	defer w.Close()
	if r := <-w.C; r == nil || !r.Created {
		t.Fatalf("watch not created: %v", r)
	}
	g, err := cl.LeaseGrant(ctx, 1, 0) // below the minimum: raised to it
	if err != nil {
		t.Fatal(err)
	}
	if g.GetTtl() != 2 || g.GetId() <= 0 {
		t.Fatalf("grant: %v", g)
	}
	keys := []string{"l/a", "l/h", "l/p", "l/x"}
	for _, k := range keys {
		if _, err := kv.Put(ctx, k, "v", client.WithLease(g.GetId())); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, "l/keep", "v"); err != nil {
		t.Fatal(err)
	}
	ttl, err := cl.LeaseTimeToLive(ctx, g.GetId(), true)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range ttl.Keys {
		got = append(got, string(k))
	}
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(keys) || ttl.GrantedTTL != 2 || ttl.TTL < 0 || ttl.TTL > 2 {
		t.Fatalf("time to live: %+v keys %v", ttl, got)
	}
	ids, err := cl.Leases(ctx)
	if err != nil || len(ids) != 1 || ids[0] != g.GetId() {
		t.Fatalf("leases: %v %v", ids, err)
	}
	waitNoLeasedKeys(t, ctx, kv, "l/", g.GetId())
	if v, ok := get(t, cl, "l/keep"); !ok || v != "v" {
		t.Fatal("a key without the lease was deleted")
	}
	var deleted []string
	for len(deleted) < len(keys) {
		select {
		case r := <-w.C:
			for _, e := range r.Events {
				if e.GetType().String() == "DELETE" {
					deleted = append(deleted, string(e.GetKv().GetKey()))
				}
			}
		case <-ctx.Done():
			t.Fatalf("delete events so far: %v", deleted)
		}
	}
	sort.Strings(deleted)
	if fmt.Sprint(deleted) != fmt.Sprint(keys) {
		t.Fatalf("delete events %v, want %v", deleted, keys)
	}
	if _, err := kv.Put(ctx, "l/late", "v", client.WithLease(g.GetId())); !client.IsLeaseNotFound(err) {
		t.Fatalf("put with an expired lease: %v", err)
	}
	if ttl, err := cl.LeaseTimeToLive(ctx, g.GetId(), false); err != nil || ttl.TTL != -1 {
		t.Fatalf("time to live of an expired lease: %+v %v", ttl, err)
	}
}

// Keep-alives hold a lease past its TTL; a revoke deletes its keys before
// it returns; the revoked lease takes no more keys.
func TestLeaseKeepAliveThenRevoke(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	waitReplicated(t, c)
	splitPrefix(t, cl, "r/", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv := cl.KV()
	g, err := cl.LeaseGrant(ctx, 2, 4242)
	if err != nil || g.GetId() != 4242 {
		t.Fatalf("grant with an ID: %v %v", g, err)
	}
	if _, err := cl.LeaseGrant(ctx, 2, 4242); err == nil {
		t.Fatal("a second grant of the same ID succeeded")
	}
	kaCtx, kaStop := context.WithCancel(ctx)
	ka, err := cl.LeaseKeepAlive(kaCtx, g.GetId())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"r/a", "r/k", "r/t"} {
		if _, err := kv.Put(ctx, k, "v", client.WithLease(g.GetId())); err != nil {
			t.Fatal(err)
		}
	}
	// Three TTLs of keep-alives.
	for renewals := 0; renewals < 6; {
		select {
		case _, ok := <-ka:
			if !ok {
				t.Fatal("keep-alive stopped")
			}
			renewals++
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if left := leasedKeys(t, ctx, kv, "r/", g.GetId()); len(left) != 3 {
		t.Fatalf("kept-alive keys: %v", left)
	}
	if err := cl.LeaseRevoke(ctx, g.GetId()); err != nil {
		t.Fatal(err)
	}
	if left := leasedKeys(t, ctx, kv, "r/", g.GetId()); len(left) != 0 {
		t.Fatalf("keys after the revoke returned: %v", left)
	}
	kaStop()
	if _, err := kv.Put(ctx, "r/b", "v", client.WithLease(g.GetId())); !client.IsLeaseNotFound(err) {
		t.Fatalf("put with a revoked lease: %v", err)
	}
	if err := cl.LeaseRevoke(ctx, g.GetId()); !client.IsLeaseNotFound(err) {
		t.Fatalf("second revoke: %v", err)
	}
	if _, err := kv.Put(ctx, "\x00Lx", "v"); err == nil {
		t.Fatal("a put into the system range succeeded")
	}
}
