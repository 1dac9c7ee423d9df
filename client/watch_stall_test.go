package client

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
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
