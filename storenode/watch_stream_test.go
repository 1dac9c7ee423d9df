package storenode

import (
	"fmt"
	"testing"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// A client that stops reading its watch stream gets, once it reads again,
// everything queued before the bound, then a cancel with the slow-watcher
// reason for each watcher whose response found the stream full; watchers
// on that stream that sent nothing meanwhile go on. Before, the cancel was
// queued like an event, found the stream full, and closed the stream: the
// reason never arrived and every watcher on the stream ended without one.
func TestSlowWatcherIsCancelledWithItsReason(t *testing.T) {
	h := newWatchHub(nil)
	ws := newWatchStream()
	// Live watchers: their created responses went out.
	busy := &watcher{id: 1, stream: ws, regionID: 5, key: []byte("a"), end: []byte("m"), announced: true}
	quiet := &watcher{id: 2, stream: ws, regionID: 6, key: []byte("m"), announced: true}
	other := newWatchStream()
	elsewhere := &watcher{id: 1, stream: other, regionID: 5, key: []byte("a"), end: []byte("m"), announced: true}
	for _, w := range []*watcher{busy, quiet, elsewhere} {
		h.add(w)
	}
	r5, r6 := &mvcc.Region{ID: 5}, &mvcc.Region{ID: 6}
	put := func(key string, rev int64) []*kvpb.Event {
		return []*kvpb.Event{{Kv: &kvpb.KeyValue{Key: []byte(key), Value: []byte(fmt.Sprint(rev)), ModRevision: rev}}}
	}
	// Nobody reads ws; other is read as it goes.
	const writes = watchBuffer + 10
	for rev := int64(1); rev <= writes; rev++ {
		h.publish(r5, rev, put("b", rev))
		if got := other.next(); got == nil || got.GetHeader().GetRevision() != rev {
			t.Fatalf("the other stream's watcher got %v at revision %d: a slow stream held it up", got, rev)
		}
	}
	// The slow stream's client reads again.
	var revs []int64
	var cancel *kvpb.WatchResponse
	for r := ws.next(); r != nil; r = ws.next() {
		if r.GetCanceled() {
			if cancel != nil {
				t.Fatalf("two cancels: %v and %v", cancel, r)
			}
			cancel = r
			continue
		}
		if cancel != nil {
			t.Fatalf("a response after the cancel: %v", r)
		}
		revs = append(revs, r.GetHeader().GetRevision())
	}
	if len(revs) != watchBuffer || revs[0] != 1 || revs[len(revs)-1] != watchBuffer {
		t.Fatalf("the slow stream delivered %d responses (%v..), want revisions 1..%d", len(revs), revs[:min(3, len(revs))], watchBuffer)
	}
	if cancel == nil || cancel.GetWatchId() != busy.id || cancel.GetCancelReason() != reasonSlow {
		t.Fatalf("cancel: %v, want watch %d cancelled with %q", cancel, busy.id, reasonSlow)
	}
	// The stream is open and its other watcher goes on.
	h.publish(r6, writes+1, put("x", writes+1))
	if r := ws.next(); r == nil || r.GetWatchId() != quiet.id || r.GetHeader().GetRevision() != writes+1 {
		t.Fatalf("the stream's other watcher got %v after the slow one was cancelled", r)
	}
	if ws.isClosed() {
		t.Fatal("the stream was closed")
	}
}

// History replay waits for room instead of cancelling: waitRoom returns
// once the sender took a response off, and false on a closed stream.
func TestWaitRoomWaitsForTheSender(t *testing.T) {
	ws := newWatchStream()
	for i := range watchBuffer {
		if !ws.send(&kvpb.WatchResponse{WatchId: int64(i)}) {
			t.Fatalf("send %d refused below the bound", i)
		}
	}
	if ws.send(&kvpb.WatchResponse{}) {
		t.Fatal("send past the bound accepted")
	}
	done := make(chan bool)
	go func() {
		for {
			if ws.send(&kvpb.WatchResponse{WatchId: watchBuffer}) {
				done <- true
				return
			}
			if !ws.waitRoom() {
				done <- false
				return
			}
		}
	}()
	if r := ws.next(); r.GetWatchId() != 0 {
		t.Fatalf("first out: %v", r)
	}
	if !<-done {
		t.Fatal("no room after the sender took one off")
	}
	ws.close()
	if ws.waitRoom() && ws.sendControl(&kvpb.WatchResponse{}) {
		t.Fatal("a closed stream accepted a response")
	}
}

// A watcher cancelled before its created response was queued (its region
// changed while the create was being served) queues no cancel then:
// createWatch queues the created response and the cancel after it, so a
// cancel never comes before its created. It is dropped from its stream's
// list either way.
func TestCancelBeforeCreatedIsNotSent(t *testing.T) {
	h := newWatchHub(nil)
	ws := newWatchStream()
	forgotten := false
	w := &watcher{id: 3, stream: ws, regionID: 5, forget: func() { forgotten = true }}
	h.add(w)
	h.cancel(w, reasonRegionChanged, 0)
	if r := ws.next(); r != nil {
		t.Fatalf("queued before the created response: %v", r)
	}
	if !forgotten || w.cancelReason != reasonRegionChanged {
		t.Fatalf("forgotten %v, reason %q", forgotten, w.cancelReason)
	}
}

// The handler stops taking requests while watchBuffer control responses
// wait for a client that does not read.
func TestControlResponsesAreBounded(t *testing.T) {
	ws := newWatchStream()
	for i := range watchBuffer {
		if !ws.controlRoom() {
			t.Fatalf("no room with %d control responses queued", i)
		}
		ws.sendControl(&kvpb.WatchResponse{WatchId: int64(i), Created: true})
	}
	if ws.controlRoom() {
		t.Fatal("room with watchBuffer control responses queued")
	}
	// A handler waiting for room goes on once the sender takes one off.
	done := make(chan bool)
	go func() { done <- ws.waitControlRoom() }()
	ws.next()
	if !<-done {
		t.Fatal("no room after one was taken off")
	}
	ws.close()
	if ws.waitControlRoom() {
		t.Fatal("room on a closed stream")
	}
}
