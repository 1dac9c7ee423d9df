package client

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// A watch whose frontier stands still for watchStallWarning is logged
// once, naming its pieces; a move of the frontier ends the stall.
func TestWatchStallIsLoggedOnce(t *testing.T) {
	var out bytes.Buffer
	c := &Client{opts: Options{Logger: slog.New(slog.NewTextHandler(&out, nil))}}
	m := &mergedWatch{c: c, segs: []*watchSegment{{lo: []byte("a"), hi: []byte("m"), frontier: 5}, {lo: []byte("m"), frontier: 7}}}
	t0 := time.Now()
	warnings := func() int { return strings.Count(out.String(), "watch stopped advancing") }
	m.noteStall(t0)
	m.noteStall(t0.Add(watchStallWarning - time.Millisecond))
	if warnings() != 0 {
		t.Fatalf("warned before the stall was long enough: %s", out.String())
	}
	m.noteStall(t0.Add(watchStallWarning))
	m.noteStall(t0.Add(2 * watchStallWarning))
	if warnings() != 1 || !strings.Contains(out.String(), `[\"a\", \"m\") at 5: unwatched`) {
		t.Fatalf("want one warning naming the stuck piece, got: %s", out.String())
	}
	m.segs[0].frontier = 7
	m.noteStall(t0.Add(3 * watchStallWarning))
	m.noteStall(t0.Add(4*watchStallWarning - time.Millisecond))
	if warnings() != 1 {
		t.Fatalf("warned again after the frontier moved: %s", out.String())
	}
	m.noteStall(t0.Add(4 * watchStallWarning))
	if warnings() != 2 {
		t.Fatalf("a second stall was not logged: %s", out.String())
	}
}

// One revision's events reach a merged watch from two regions when the
// region that applied the write split before the watch read it back from
// history; they are released in key order, the order a store sends them
// (robustness seed 11108665095852659029: a filtered watch had them the
// other way round from the unfiltered one).
func TestRevisionReleasedInKeyOrder(t *testing.T) {
	out := make(chan *WatchResponse, 1)
	s1, s2 := &subWatch{}, &subWatch{}
	m := &mergedWatch{out: out, buffered: map[int64][]*kvpb.Event{}, sent: 1, announced: true,
		segs: []*watchSegment{{lo: []byte("a"), hi: []byte("m"), frontier: 1, sub: s1}, {lo: []byte("m"), frontier: 1, sub: s2}}}
	ev := func(key string) *kvpb.Event {
		return &kvpb.Event{Kv: &kvpb.KeyValue{Key: []byte(key), ModRevision: 5}}
	}
	ctx := context.Background()
	// The right half answers first, then the left one.
	if !m.handle(ctx, subMsg{sub: s2, resp: &kvpb.WatchResponse{Header: &kvpb.ResponseHeader{Revision: 5}, Events: []*kvpb.Event{ev("n")}}}) {
		t.Fatal("the watch ended")
	}
	if !m.handle(ctx, subMsg{sub: s1, resp: &kvpb.WatchResponse{Header: &kvpb.ResponseHeader{Revision: 5}, Events: []*kvpb.Event{ev("b"), ev("c")}}}) {
		t.Fatal("the watch ended")
	}
	r := <-out
	var keys []string
	for _, e := range r.Events {
		keys = append(keys, string(e.GetKv().GetKey()))
	}
	if strings.Join(keys, ",") != "b,c,n" || r.Header.GetRevision() != 5 {
		t.Fatalf("released %v at %d, want b,c,n at 5", keys, r.Header.GetRevision())
	}
}
