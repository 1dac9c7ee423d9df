package integration

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/region"
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
	if _, err := kv.Put(ctx, string(region.LeaseKey(1)), "v"); err == nil {
		t.Fatal("a put into the system range succeeded")
	}
}

// Writers keep attaching a lease to keys in four regions while it is
// revoked: once the revoke returns and the writers stop, no key carries
// it, whichever of their puts were acknowledged.
func TestLeaseRevokeRacesAttachingPuts(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	waitReplicated(t, c)
	splitPrefix(t, cl, "v/", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kv := cl.KV()
	for round := 0; round < 4; round++ {
		g, err := cl.LeaseGrant(ctx, 30, 0)
		if err != nil {
			t.Fatal(err)
		}
		var acked, refused, attempts atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					key := fmt.Sprintf("v/%c%d-%d", 'a'+rune((w*7+i)%26), w, i%50)
					_, err := kv.Put(ctx, key, "v", client.WithLease(g.GetId()))
					attempts.Add(1)
					switch {
					case err == nil:
						acked.Add(1)
					case client.IsLeaseNotFound(err):
						refused.Add(1)
					}
				}
			}(w)
		}
		// Let the writers attach in every region, then revoke under them.
		for acked.Load() < 200 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		if err := cl.LeaseRevoke(ctx, g.GetId()); err != nil {
			t.Fatal(err)
		}
		// Puts keep coming after the revoke returned: all must be refused.
		for after := attempts.Load(); attempts.Load() < after+100 && ctx.Err() == nil; {
			time.Sleep(5 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		if left := leasedKeys(t, ctx, kv, "v/", g.GetId()); len(left) != 0 {
			t.Fatalf("round %d: %d keys survived the revoke of lease %d (acked %d): %v", round, len(left), g.GetId(), acked.Load(), left)
		}
		t.Logf("round %d: %d puts acknowledged, %d refused", round, acked.Load(), refused.Load())
	}
}

// Killing the leader of the region holding a lease's record neither
// expires the kept-alive lease nor stops its clock: once the keep-alives
// stop, the new leader expires it and its keys go.
func TestLeaseSurvivesOwnerLeaderKill(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	splitPrefix(t, cl, "o/", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kv := cl.KV()
	g, err := cl.LeaseGrant(ctx, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"o/a", "o/x"} {
		if _, err := kv.Put(ctx, k, "v", client.WithLease(g.GetId())); err != nil {
			t.Fatal(err)
		}
	}
	kaCtx, kaStop := context.WithCancel(ctx)
	defer kaStop()
	ka, err := cl.LeaseKeepAlive(kaCtx, g.GetId())
	if err != nil {
		t.Fatal(err)
	}
	owner := leaderStoreOf(t, c, pd, region.LeaseKey(g.GetId()))
	c.Signal(owner, syscall.SIGKILL)
	// Renewals through the new leader for three TTLs.
	for renewals := 0; renewals < 9; {
		select {
		case _, ok := <-ka:
			if !ok {
				t.Fatal("keep-alive stopped: the lease was lost with its leader")
			}
			renewals++
		case <-ctx.Done():
			for _, p := range c.Stores {
				l := c.Log(p)
				t.Logf("%s log: %s", p.Name, l[max(0, len(l)-3000):])
			}
			t.Fatalf("%d renewals after the kill: %v", renewals, ctx.Err())
		}
	}
	if left := leasedKeys(t, ctx, kv, "o/", g.GetId()); len(left) != 2 {
		t.Fatalf("keys of the kept-alive lease after the kill: %v", left)
	}
	c.Restart(owner)
	kaStop()
	waitNoLeasedKeys(t, ctx, kv, "o/", g.GetId())
}

// A region split between a key's attach and the revoke: the revoke still
// finds the keys that moved to the new region.
func TestLeaseRevokeAfterDataRegionSplit(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	waitReplicated(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv := cl.KV()
	g, err := cl.LeaseGrant(ctx, 60, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 26; i++ {
		if _, err := kv.Put(ctx, fmt.Sprintf("s/%c", 'a'+i), "v", client.WithLease(g.GetId())); err != nil {
			t.Fatal(err)
		}
	}
	splitAt(t, cl, 3, func(i int) string { return fmt.Sprintf("s/%c", 'a'+i*9) })
	ttl, err := cl.LeaseTimeToLive(ctx, g.GetId(), true)
	if err != nil || len(ttl.Keys) != 26 {
		t.Fatalf("keys after the split: %d %v", len(ttl.Keys), err)
	}
	if err := cl.LeaseRevoke(ctx, g.GetId()); err != nil {
		t.Fatal(err)
	}
	if left := leasedKeys(t, ctx, kv, "s/", g.GetId()); len(left) != 0 {
		t.Fatalf("keys after the revoke: %v", left)
	}
}

// The regions holding lease records split (and their leaders move with
// the new regions) while 200 leases are kept alive: none is lost, and once
// the keep-alives stop every lease's key goes, whichever region's leader
// now runs its clock.
func TestLeaseRegionSplitsUnderKeepAlive(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	waitReplicated(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv := cl.KV()
	ids := make([]int64, 0, 200)
	keepAll := func() {
		ttls, err := cl.LeaseKeepAliveMany(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		for i, ttl := range ttls {
			if ttl <= 0 {
				t.Fatalf("lease %d (%d of %d) was lost", ids[i], i, len(ids))
			}
		}
	}
	// Granting them all can take longer than a TTL on a busy machine: the
	// ones granted are renewed every second meanwhile.
	renewed := time.Now()
	for i := 0; i < cap(ids); i++ {
		g, err := cl.LeaseGrant(ctx, 3, 0)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, g.GetId())
		if _, err := kv.Put(ctx, fmt.Sprintf("q/%03d", i), "v", client.WithLease(ids[i])); err != nil {
			t.Fatal(err)
		}
		if time.Since(renewed) > time.Second {
			keepAll()
			renewed = time.Now()
		}
	}
	keepAll()
	splitAt(t, cl, 4, func(i int) string { return string(append(append([]byte(nil), region.LeasePrefix...), byte(i*64))) })
	// Renew for two TTLs after the split, a renewal every second.
	for deadline := time.Now().Add(6 * time.Second); time.Now().Before(deadline); {
		keepAll()
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(time.Second):
		}
	}
	got, err := cl.Leases(ctx)
	if err != nil || len(got) != len(ids) {
		t.Fatalf("leases after the split: %d, %v", len(got), err)
	}
	for {
		resp, err := kv.Get(ctx, "q/", client.WithPrefix(), client.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d keys of expired leases left", resp.Count)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
