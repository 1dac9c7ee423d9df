package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/procs"
)

type watchConn struct {
	t      *testing.T
	stream kvpb.KV_WatchClient
	resps  chan *kvpb.WatchResponse
}

func openWatch(t *testing.T, addr string) *watchConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cc.Close() })
	s, err := kvpb.NewKVClient(cc).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := &watchConn{t: t, stream: s, resps: make(chan *kvpb.WatchResponse, 1024)}
	go func() {
		defer close(w.resps)
		for {
			r, err := s.Recv()
			if err != nil {
				return
			}
			select {
			case w.resps <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return w
}

func (w *watchConn) next() *kvpb.WatchResponse {
	w.t.Helper()
	select {
	case r, ok := <-w.resps:
		if !ok {
			w.t.Fatal("watch stream ended")
		}
		return r
	case <-time.After(20 * time.Second):
		w.t.Fatal("no watch response within 20 s")
	}
	return nil
}

// nextEvents skips progress notifications and returns the next events.
func (w *watchConn) nextEvents() *kvpb.WatchResponse {
	w.t.Helper()
	for {
		r := w.next()
		if len(r.GetEvents()) > 0 || r.GetCanceled() {
			return r
		}
	}
}

func fmtEvent(e *kvpb.Event) string {
	s := fmt.Sprintf("%s %s=%s", e.GetType(), e.GetKv().GetKey(), e.GetKv().GetValue())
	if p := e.GetPrevKv(); p != nil {
		s += fmt.Sprintf(" (prev %s)", p.GetValue())
	}
	return s
}

func TestWatch(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r1, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte("a"), Value: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	put(t, cl, "a", "2")
	put(t, cl, "b", "1")
	put(t, cl, "z", "outside the watched range")

	rg, err := pd.GetRegion(ctx, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	rc := &kvpb.Context{RegionId: rg.GetRegion().GetId(), RegionEpoch: rg.GetRegion().GetRegionEpoch()}
	w := openWatch(t, leaderStore(t, c, pd).Addr)
	if err := w.stream.Send(&kvpb.WatchRequest{RequestUnion: &kvpb.WatchRequest_CreateRequest{CreateRequest: &kvpb.WatchCreateRequest{
		Key: []byte("a"), RangeEnd: []byte("c"), StartRevision: r1.GetHeader().GetRevision(), PrevKv: true, ProgressNotify: true, WatchId: 7, Context: rc}}}); err != nil {
		t.Fatal(err)
	}
	if cr := w.next(); !cr.GetCreated() || cr.GetCanceled() || cr.GetWatchId() != 7 {
		t.Fatalf("create: %v", cr)
	}
	// History, in revision order, with previous values.
	var got []string
	var lastRev int64
	for len(got) < 3 {
		r := w.nextEvents()
		for _, e := range r.GetEvents() {
			if e.GetKv().GetModRevision() < lastRev {
				t.Fatalf("event at %d after %d", e.GetKv().GetModRevision(), lastRev)
			}
			lastRev = e.GetKv().GetModRevision()
			got = append(got, fmtEvent(e))
		}
	}
	want := []string{"PUT a=1", "PUT a=2 (prev 1)", "PUT b=1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("history: %q, want %q", got, want)
	}
	// Live events follow, with no gap and no repeat.
	put(t, cl, "a", "3")
	if _, err := cl.DeleteRange(ctx, &kvpb.DeleteRangeRequest{Key: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	got = nil
	for len(got) < 2 {
		for _, e := range w.nextEvents().GetEvents() {
			got = append(got, fmtEvent(e))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint([]string{"PUT a=3 (prev 2)", "DELETE b= (prev 1)"}) {
		t.Fatalf("live: %q", got)
	}
	// Progress notifications carry a resolved revision past every event.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := w.next()
		if len(r.GetEvents()) == 0 && r.GetResolvedRevision() > 0 {
			if r.GetResolvedRevision() < lastRev {
				t.Fatalf("progress %d below an event already sent (%d)", r.GetResolvedRevision(), lastRev)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no progress notification")
		}
	}

	// Filters: a NOPUT watch sees only deletes.
	w2 := openWatch(t, leaderStore(t, c, pd).Addr)
	if err := w2.stream.Send(&kvpb.WatchRequest{RequestUnion: &kvpb.WatchRequest_CreateRequest{CreateRequest: &kvpb.WatchCreateRequest{
		Key: []byte("a"), RangeEnd: []byte("c"), Filters: []kvpb.WatchCreateRequest_FilterType{kvpb.WatchCreateRequest_NOPUT}, Context: rc}}}); err != nil {
		t.Fatal(err)
	}
	w2.next()
	put(t, cl, "a", "4")
	if _, err := cl.DeleteRange(ctx, &kvpb.DeleteRangeRequest{Key: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	if r := w2.nextEvents(); len(r.GetEvents()) != 1 || r.GetEvents()[0].GetType() != kvpb.Event_DELETE {
		t.Fatalf("NOPUT watch got %v", r.GetEvents())
	}

	// A start revision below the compaction revision: canceled with it.
	now := int64(0)
	if resp, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte("c1"), Value: []byte("x")}); err == nil {
		now = resp.GetHeader().GetRevision()
	} else {
		t.Fatal(err)
	}
	if err := cl.Compact(ctx, now, true); err != nil {
		t.Fatal(err)
	}
	w3 := openWatch(t, leaderStore(t, c, pd).Addr)
	if err := w3.stream.Send(&kvpb.WatchRequest{RequestUnion: &kvpb.WatchRequest_CreateRequest{CreateRequest: &kvpb.WatchCreateRequest{
		Key: []byte("a"), StartRevision: r1.GetHeader().GetRevision(), Context: rc}}}); err != nil {
		t.Fatal(err)
	}
	if r := w3.next(); !r.GetCanceled() || r.GetCompactRevision() != now {
		t.Fatalf("watch from a compacted revision: %v", r)
	}

	// A watch on a follower is refused with the leader.
	for _, p := range c.Stores {
		if p == leaderStore(t, c, pd) {
			continue
		}
		wf := openWatch(t, p.Addr)
		if err := wf.stream.Send(&kvpb.WatchRequest{RequestUnion: &kvpb.WatchRequest_CreateRequest{CreateRequest: &kvpb.WatchCreateRequest{
			Key: []byte("a"), Context: rc}}}); err != nil {
			t.Fatal(err)
		}
		if r := wf.next(); !r.GetCanceled() || r.GetHeader().GetRegionError().GetNotLeader() == nil {
			t.Fatalf("watch on a follower: %v", r)
		}
		break
	}
}
