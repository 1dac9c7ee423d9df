package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/procs"
)

// Edges of etcd's watch and compaction semantics, on one cluster.
func TestWatchAndCompactionEdges(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	regionCtx := func() *kvpb.Context {
		rg, err := pd.GetRegion(ctx, []byte("a"))
		if err != nil {
			t.Fatal(err)
		}
		return &kvpb.Context{RegionId: rg.GetRegion().GetId(), RegionEpoch: rg.GetRegion().GetRegionEpoch()}
	}
	create := func(w *watchConn, req *kvpb.WatchCreateRequest) *kvpb.WatchResponse {
		t.Helper()
		req.Context = regionCtx()
		if err := w.stream.Send(&kvpb.WatchRequest{RequestUnion: &kvpb.WatchRequest_CreateRequest{CreateRequest: req}}); err != nil {
			t.Fatal(err)
		}
		return w.next()
	}

	t.Run("compaction above an idle region's last write", func(t *testing.T) {
		r, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte("a"), Value: []byte("1")})
		if err != nil {
			t.Fatal(err)
		}
		// Above the region's last write, below PD's clock.
		if err := cl.Compact(ctx, r.GetHeader().GetRevision()+1, true); err != nil {
			t.Fatal(err)
		}
		resp, err := cl.Range(ctx, &kvpb.RangeRequest{Key: []byte("a")})
		if err != nil {
			t.Fatalf("latest read after Compact: %v", err)
		}
		if len(resp.GetKvs()) != 1 || string(resp.GetKvs()[0].GetValue()) != "1" {
			t.Fatalf("latest read after Compact: %v", resp)
		}
		if _, err := cl.Range(ctx, &kvpb.RangeRequest{Key: []byte("a"), Revision: r.GetHeader().GetRevision()}); err == nil {
			t.Fatal("a read below the compaction revision succeeded")
		}
	})

	t.Run("start revision in the future", func(t *testing.T) {
		r1, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte("a"), Value: []byte("2")})
		if err != nil {
			t.Fatal(err)
		}
		start := r1.GetHeader().GetRevision() + 1<<32 // TSO ticks of about 16 s ahead
		w := openWatch(t, leaderStore(t, c, pd).Addr)
		if cr := create(w, &kvpb.WatchCreateRequest{Key: []byte("a"), StartRevision: start}); !cr.GetCreated() || cr.GetCanceled() {
			t.Fatalf("create: %v", cr)
		}
		if _, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte("a"), Value: []byte("3")}); err != nil {
			t.Fatal(err)
		}
		// A second watch on the same stream from now on sees the write
		// that follows; the future one must not have seen either.
		if cr := create(w, &kvpb.WatchCreateRequest{Key: []byte("a")}); !cr.GetCreated() || cr.GetCanceled() {
			t.Fatalf("create: %v", cr)
		}
		if _, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte("a"), Value: []byte("4")}); err != nil {
			t.Fatal(err)
		}
		for {
			r := w.nextEvents()
			for _, e := range r.GetEvents() {
				if e.GetKv().GetModRevision() < start && r.GetWatchId() == 1 {
					t.Fatalf("watch from %d got an event at %d", start, e.GetKv().GetModRevision())
				}
			}
			if r.GetWatchId() == 2 {
				return // the last write reached the stream; nothing came before it for watch 1
			}
		}
	})

	t.Run("duplicate watch ID", func(t *testing.T) {
		w := openWatch(t, leaderStore(t, c, pd).Addr)
		if cr := create(w, &kvpb.WatchCreateRequest{Key: []byte("a"), WatchId: 7}); cr.GetCanceled() {
			t.Fatalf("create: %v", cr)
		}
		cr := create(w, &kvpb.WatchCreateRequest{Key: []byte("b"), WatchId: 7})
		if !cr.GetCanceled() || cr.GetCancelReason() != "mvcc: duplicate watch ID provided on the WatchStream" {
			t.Fatalf("second watch with ID 7: %v", cr)
		}
		if _, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte("a"), Value: []byte("5")}); err != nil {
			t.Fatal(err)
		}
		if r := w.nextEvents(); r.GetWatchId() != 7 || string(r.GetEvents()[0].GetKv().GetValue()) != "5" {
			t.Fatalf("the first watch 7: %v", r)
		}
	})

	t.Run("progress never below a sent event", func(t *testing.T) {
		w := openWatch(t, leaderStore(t, c, pd).Addr)
		create(w, &kvpb.WatchCreateRequest{Key: []byte("a"), ProgressNotify: true})
		wctx, wcancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for wctx.Err() == nil {
					_, _ = cl.Put(wctx, &kvpb.PutRequest{Key: []byte("a"), Value: []byte("x")})
				}
			}()
		}
		defer func() { wcancel(); wg.Wait() }()
		var last int64
		// Under load most notifications are rightly skipped (an event
		// above them went out already): stop after enough of either.
		progress, responses := 0, 0
		for progress < 20 && responses < 3000 {
			responses++
			r := w.next()
			for _, e := range r.GetEvents() {
				last = max(last, e.GetKv().GetModRevision())
			}
			if len(r.GetEvents()) == 0 && !r.GetCanceled() {
				progress++
				if r.GetHeader().GetRevision() < last {
					t.Fatalf("progress notification at %d after an event at %d", r.GetHeader().GetRevision(), last)
				}
			}
		}
		if progress == 0 {
			t.Fatalf("no progress notification in %d responses under load", responses)
		}
	})
}
