package pd

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/basaltdb/basalt/proto/pdpb"
)

// Timestamps are physical milliseconds << LogicalBits | logical.
const (
	LogicalBits = 18
	maxLogical  = 1 << LogicalBits
)

// ComposeTS builds a timestamp.
func ComposeTS(physicalMs, logical int64) uint64 {
	return uint64(physicalMs)<<LogicalBits | uint64(logical)
}

// ParseTS splits a timestamp.
func ParseTS(ts uint64) (physicalMs, logical int64) {
	return int64(ts >> LogicalBits), int64(ts & (maxLogical - 1))
}

var (
	errTSOWindowExhausted = errors.New("pd: timestamp window exhausted; retry")
	errInvalidCount       = errors.New("pd: count must be between 1 and 2^18")
)

// tsoAllocator hands out strictly increasing timestamps. Two rules make that
// hold across leader changes and restarts:
//
//   - A leader never hands out a timestamp at or above the window upper
//     bound it committed through Raft, and a new leader starts above the
//     last committed bound, so it is above everything any earlier leader
//     handed out.
//   - A leader serves only while it holds the raft leader lease, so a
//     deposed leader stops before its successor can exist and no timestamp
//     from it can follow (in real time) a larger one from the successor.
type tsoAllocator struct {
	s *Server

	// What this member served since it started: requests (each a batch)
	// and the timestamps in them.
	requests, timestamps atomic.Int64

	mu       sync.Mutex
	ready    bool
	physical int64 // ms
	logical  int64
	window   int64 // ms, committed, exclusive
}

func newTSOAllocator(s *Server) *tsoAllocator { return &tsoAllocator{s: s} }

// nowMs reads the member's clock (Config.Now).
func (t *tsoAllocator) nowMs() int64 {
	if t.s.cfg.Now != nil {
		return t.s.cfg.Now().UnixMilli()
	}
	return time.Now().UnixMilli()
}

// init reserves the first window of a new leader.
func (t *tsoAllocator) init(ctx context.Context) error {
	persisted, _ := t.s.fsm.windows()
	start := max(t.nowMs(), int64(persisted)+1)
	win := start + t.s.cfg.TSOWindow.Milliseconds()
	if _, err := t.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_SetTsoWindow{SetTsoWindow: uint64(win)}}); err != nil {
		return err
	}
	t.mu.Lock()
	t.physical, t.logical, t.window, t.ready = start, 0, win, true
	t.mu.Unlock()
	return nil
}

func (t *tsoAllocator) reset() {
	t.mu.Lock()
	t.ready = false
	t.mu.Unlock()
}

// alloc returns the largest of count consecutive timestamps, all in one
// physical millisecond.
func (t *tsoAllocator) alloc(count uint32) (uint64, error) {
	if count == 0 || count > maxLogical {
		return 0, errInvalidCount
	}
	if t.s.store.LeaseRemaining(pdRegionID) == 0 {
		return 0, errNotLeader
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.ready {
		return 0, errNotLeader
	}
	if now := t.nowMs(); now > t.physical {
		t.physical, t.logical = now, 0
	}
	if t.logical+int64(count) > maxLogical {
		t.physical, t.logical = t.physical+1, 0
	}
	if t.physical >= t.window {
		return 0, errTSOWindowExhausted
	}
	t.logical += int64(count)
	return ComposeTS(t.physical, t.logical-1), nil
}

// maintain keeps the lease fresh and the window ahead of the clock while
// this member leads.
func (t *tsoAllocator) maintain(ctx context.Context) {
	lease := t.s.store.LeaseRemaining
	renewBelow := t.s.cfg.Raft.TickInterval * time.Duration(t.s.cfg.Raft.ElectionTicks) / 3
	if renewBelow <= 0 {
		renewBelow = 300 * time.Millisecond
	}
	winLen := t.s.cfg.TSOWindow.Milliseconds()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if lease(pdRegionID) < renewBelow {
			if err := t.s.store.RenewLease(ctx, pdRegionID); err != nil && ctx.Err() == nil {
				t.s.log.Debug("lease renewal failed", "err", err)
			}
		}
		t.mu.Lock()
		need := max(t.physical, t.nowMs()) >= t.window-winLen/3
		next := max(t.physical, t.nowMs()) + winLen
		t.mu.Unlock()
		if !need {
			continue
		}
		if _, err := t.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_SetTsoWindow{SetTsoWindow: uint64(next)}}); err != nil {
			continue
		}
		t.mu.Lock()
		if t.ready && next > t.window {
			t.window = next
		}
		t.mu.Unlock()
	}
}

// idAllocator hands out cluster-unique IDs from windows committed through
// Raft; a new leader starts at the last committed window's end.
type idAllocator struct {
	s     *Server
	mu    sync.Mutex
	ready bool
	next  uint64
	end   uint64 // exclusive, committed
}

const idWindowStep = 1000

func newIDAllocator(s *Server) *idAllocator { return &idAllocator{s: s} }

func (a *idAllocator) init() {
	_, persisted := a.s.fsm.windows()
	a.mu.Lock()
	a.next = max(persisted, 1)
	a.end = a.next
	a.ready = true
	a.mu.Unlock()
}

func (a *idAllocator) reset() {
	a.mu.Lock()
	a.ready = false
	a.mu.Unlock()
}

// alloc returns the first of count consecutive new IDs.
func (a *idAllocator) alloc(ctx context.Context, count uint32) (uint64, error) {
	if count == 0 {
		count = 1
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ready {
		return 0, errNotLeader
	}
	if a.next+uint64(count) > a.end {
		end := a.next + uint64(count) + idWindowStep
		if _, err := a.s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_SetIdWindow{SetIdWindow: end}}); err != nil {
			return 0, err
		}
		if !a.ready {
			return 0, errNotLeader
		}
		a.end = end
	}
	id := a.next
	a.next += uint64(count)
	return id, nil
}

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }
