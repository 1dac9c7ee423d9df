package storenode

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A write that never finishes (its leader lost its quorum) must not hold a
// resolve past its deadline: waitBelow gives up with the context.
func TestWaitBelowHonoursItsContext(t *testing.T) {
	q := newSequencer(nil)
	defer q.stop()
	q.inflight[1] = map[int64]struct{}{10: {}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- q.waitBelow(ctx, 1, 20) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("waitBelow: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waitBelow ignored its context")
	}
	// Writes of other regions, or above the marker, do not block.
	if err := q.waitBelow(context.Background(), 2, 20); err != nil {
		t.Fatal(err)
	}
	if err := q.waitBelow(context.Background(), 1, 10); err != nil {
		t.Fatal(err)
	}
}
