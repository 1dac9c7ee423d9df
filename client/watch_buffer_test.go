package client

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// A piece of a watched range that stops advancing does not make the
// watch hold the other pieces' events without end: past MaxBufferedBytes
// it keeps the lowest revisions and sheds the rest, parking the piece
// ahead at the highest revision kept (its region watch ends). When the
// lagging piece moves on, the kept revisions are released and the parked
// piece is watched again from the next one; the events it replays are
// released in order, none lost or repeated.
func TestWatchBufferIsBoundedWhileAPieceLags(t *testing.T) {
	var logs bytes.Buffer
	out := make(chan *WatchResponse, 16)
	c := &Client{opts: Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}}
	subCtx := func() (*subWatch, context.Context) {
		ctx, cancel := context.WithCancel(context.Background())
		return &subWatch{cancel: cancel}, ctx
	}
	stuck, _ := subCtx()
	ahead, aheadCtx := subCtx()
	m := &mergedWatch{c: c, out: out, buffered: map[int64][]*kvpb.Event{}, sent: 10, announced: true, opts: WatchOptions{MaxBufferedBytes: 1000},
		segs: []*watchSegment{{lo: []byte("a"), hi: []byte("m"), frontier: 10, sub: stuck}, {lo: []byte("m"), frontier: 10, sub: ahead}}}
	ctx := context.Background()
	ev := func(key string, rev int64) *kvpb.Event {
		return &kvpb.Event{Kv: &kvpb.KeyValue{Key: []byte(key), Value: bytes.Repeat([]byte("v"), 100), ModRevision: rev}}
	}
	feed := func(s *subWatch, top int64, evs ...*kvpb.Event) {
		t.Helper()
		if !m.handle(ctx, subMsg{sub: s, resp: &kvpb.WatchResponse{Header: &kvpb.ResponseHeader{Revision: top}, Events: evs}}) {
			t.Fatal("the watch ended")
		}
	}
	released := func() []int64 {
		var got []int64
		for len(out) > 0 {
			for _, e := range (<-out).Events {
				got = append(got, e.GetKv().GetModRevision())
			}
		}
		return got
	}
	// "a".."m" is stuck at 10; "m".. keeps sending.
	var maxHeld int
	for rev := int64(11); rev <= 30; rev++ {
		feed(ahead, rev, ev("n", rev))
		maxHeld = max(maxHeld, m.bufferedBytes)
	}
	if maxHeld > 1000 {
		t.Fatalf("held %d bytes of events, bound 1000", maxHeld)
	}
	if aheadCtx.Err() == nil {
		t.Fatal("the piece ahead kept its region watch after the buffer filled")
	}
	kept := m.parkedAt
	if seg := m.segs[1]; !seg.parked || seg.sub != nil || seg.frontier != kept || kept < 11 || kept >= 30 {
		t.Fatalf("the piece ahead: parked %v, watched %v, frontier %d (kept up to %d); want parked, unwatched, at the highest revision kept",
			seg.parked, seg.sub != nil, seg.frontier, kept)
	}
	if m.segs[0].parked || m.segs[0].frontier != 10 {
		t.Fatal("the lagging piece was parked or moved")
	}
	if !strings.Contains(logs.String(), "watch buffer full") {
		t.Fatalf("shedding was not logged: %s", logs.String())
	}
	// Events the parked piece's ended watch still sends are ignored.
	held := m.bufferedBytes
	feed(ahead, 31, ev("n", 31))
	if m.bufferedBytes != held {
		t.Fatal("an event from a parked piece's ended watch was buffered")
	}
	// The lagging piece moves on, with an event of its own at 12: what was
	// kept is released, and the parked piece is to be watched again.
	feed(stuck, 40, ev("b", 12))
	got := released()
	if len(got) != int(kept-10)+1 || got[0] != 11 || got[1] != 12 || got[2] != 12 || got[len(got)-1] != kept {
		t.Fatalf("released %v once the lagging piece moved on; want 11, 12 (two events) .. %d", got, kept)
	}
	if m.segs[1].parked || m.retry == nil {
		t.Fatal("the parked piece was not scheduled to be watched again after the others reached its revision")
	}
	// Watched again from the next revision, it replays its history.
	again, _ := subCtx()
	m.segs[1].sub = again
	var evs []*kvpb.Event
	for rev := kept + 1; rev <= 31; rev++ {
		evs = append(evs, ev("n", rev))
	}
	feed(again, 45, evs...)
	got = append(got, released()...)
	if len(got) != 22 || got[21] != 31 {
		t.Fatalf("released revisions %v: want 11, 12 (two events), 13..31", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] || (got[i] == got[i-1] && got[i] != 12) {
			t.Fatalf("released out of order or twice: %v", got)
		}
	}
}

// With CreatedNotify, the created response comes before any event, even
// when a piece was parked (and so is unwatched) by the time the last
// region watch is created.
func TestWatchCreatedComesFirstWhenAPieceIsParked(t *testing.T) {
	out := make(chan *WatchResponse, 16)
	c := &Client{opts: Options{Logger: slog.New(slog.DiscardHandler)}}
	newSub := func() *subWatch {
		_, cancel := context.WithCancel(context.Background())
		return &subWatch{cancel: cancel}
	}
	early, late := newSub(), newSub()
	m := &mergedWatch{c: c, out: out, buffered: map[int64][]*kvpb.Event{}, sent: 10, opts: WatchOptions{MaxBufferedBytes: 1000, CreatedNotify: true},
		segs: []*watchSegment{{lo: []byte("a"), hi: []byte("m"), frontier: 10, sub: early}, {lo: []byte("m"), frontier: 10, sub: late}}}
	ctx := context.Background()
	handle := func(s *subWatch, resp *kvpb.WatchResponse) {
		t.Helper()
		if !m.handle(ctx, subMsg{sub: s, resp: resp}) {
			t.Fatal("the watch ended")
		}
	}
	handle(early, &kvpb.WatchResponse{Created: true})
	for rev := int64(11); rev <= 30; rev++ {
		handle(early, &kvpb.WatchResponse{Header: &kvpb.ResponseHeader{Revision: rev},
			Events: []*kvpb.Event{{Kv: &kvpb.KeyValue{Key: []byte("b"), Value: bytes.Repeat([]byte("v"), 100), ModRevision: rev}}}})
	}
	if !m.segs[0].parked {
		t.Fatal("the piece ahead was not parked")
	}
	handle(late, &kvpb.WatchResponse{Created: true})
	handle(late, &kvpb.WatchResponse{Header: &kvpb.ResponseHeader{Revision: 40}})
	if len(out) < 2 {
		t.Fatalf("%d responses, want the created one and events", len(out))
	}
	if first := <-out; !first.Created || len(first.Events) > 0 {
		t.Fatalf("first response %+v, want the created one", first)
	}
	if next := <-out; len(next.Events) == 0 || next.Events[0].GetKv().GetModRevision() != 11 {
		t.Fatalf("second response %+v, want events from revision 11", next)
	}
}
