package client

import (
	"math/rand/v2"
	"time"

	"github.com/basaltdb/basalt/proto/errorpb"
)

// retryKind sorts what went wrong by how soon a retry can succeed, so each
// kind backs off on its own schedule (as TiKV's client has a backoffer per
// error kind): a correction that came with the answer is worth trying at
// once, an election takes about an election timeout, a busy store needs
// room, and an unreachable one may be gone for good.
type retryKind int

const (
	// retryRouted: the error named where to go (a leader hint, the current
	// regions, another peer to try). The first such retry goes at once;
	// hints that keep missing (a stale hint during an election) back off.
	retryRouted retryKind = iota
	// retryElection: the region has no leader to serve it just now (no
	// leader known, a replica not initialized, a merge in progress, a
	// command from an old term).
	retryElection
	// retryBusy: the store refused for load (ServerBusy).
	retryBusy
	// retryUnreachable: PD or the store did not answer.
	retryUnreachable
	numRetryKinds
	// retryNever: the same request would fail the same way everywhere
	// (RaftEntryTooLarge): returned at once.
	retryNever
)

// retrySchedule: the first retry's delay (0: at once), then doubling from
// base to max, jittered over the upper half.
type retrySchedule struct {
	first, base, max time.Duration
}

var retrySchedules = [numRetryKinds]retrySchedule{
	retryRouted:      {first: 0, base: 2 * time.Millisecond, max: 200 * time.Millisecond},
	retryElection:    {first: 10 * time.Millisecond, base: 10 * time.Millisecond, max: 500 * time.Millisecond},
	retryBusy:        {first: 50 * time.Millisecond, base: 50 * time.Millisecond, max: 2 * time.Second},
	retryUnreachable: {first: 0, base: 20 * time.Millisecond, max: time.Second},
}

// retryTries counts one call's retries per kind.
type retryTries [numRetryKinds]int

// next returns the wait before the next retry of kind and counts it.
func (t *retryTries) next(kind retryKind) time.Duration {
	n := t[kind]
	t[kind]++
	s := retrySchedules[kind]
	if n == 0 {
		return s.first
	}
	d := min(s.base<<min(n-1, 16), s.max)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// retryKindOf classifies a region error answered for rt.
func retryKindOf(rt route, e *errorpb.Error) retryKind {
	switch d := e.GetDetail().(type) {
	case *errorpb.Error_NotLeader:
		if l := d.NotLeader.GetLeader(); l != nil && l.GetId() != rt.leader.GetId() {
			return retryRouted
		}
		return retryElection
	case *errorpb.Error_EpochNotMatch, *errorpb.Error_KeyNotInRegion, *errorpb.Error_RegionNotFound, *errorpb.Error_StoreNotMatch:
		return retryRouted
	case *errorpb.Error_ServerBusy:
		return retryBusy
	case *errorpb.Error_RaftEntryTooLarge:
		return retryNever
	}
	return retryElection
}
