package pdclient

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
)

// heartbeatPD is a fakePD that takes region heartbeats as PD's members do:
// the leader records them, a follower answers each with NOT_LEADER naming
// the leader and keeps the stream open.
type heartbeatPD struct {
	*fakePD
	heard atomic.Int64
}

func (f *heartbeatPD) RegionHeartbeat(stream pdpb.PD_RegionHeartbeatServer) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
		if l := *f.leader.Load(); l != f.addr {
			if err := stream.Send(&pdpb.RegionHeartbeatResponse{Header: &pdpb.ResponseHeader{ClusterId: 1,
				Error: &pdpb.Error{Type: pdpb.ErrorType_NOT_LEADER, LeaderAddr: l}}}); err != nil {
				return err
			}
			continue
		}
		f.heard.Add(1)
	}
}

func startHeartbeatPD(t *testing.T) *heartbeatPD {
	t.Helper()
	var h *heartbeatPD
	startFakePDWith(t, 1000, func(f *fakePD) pdpb.PDServer {
		h = &heartbeatPD{fakePD: f}
		return h
	})
	return h
}

// A leader that loses its leadership but stays reachable (cut off for a
// moment, back as a follower) answers every region heartbeat with
// NOT_LEADER on a stream that stays open. The stream must end at the first
// such answer, so the caller reopens it at the new leader. Before, Recv
// handed the answer over as any other and the store's heartbeater ignored
// it, Sends kept succeeding, and the new leader never heard of the
// regions the store led: GetRegion gave no leader (or a stale one) for as
// long as the cluster ran, and a client that took PD's word for a region
// whose first peer had been removed asked that peer forever (robustness
// seed 3904404337035378111: a watch piece unwatched for a minute).
func TestRegionHeartbeatStreamEndsAtAFollower(t *testing.T) {
	a, b := startHeartbeatPD(t), startHeartbeatPD(t)
	b.leader.Store(&a.addr) // both name a
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, []string{a.addr, b.addr}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hb := &pdpb.RegionHeartbeatRequest{Header: &pdpb.RequestHeader{ClusterId: 1},
		Region: &metapb.Region{Id: 2, RegionEpoch: &metapb.RegionEpoch{}}, Leader: &metapb.Peer{Id: 3, StoreId: 1}}
	s, err := c.OpenRegionHeartbeat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(hb); err != nil {
		t.Fatal(err)
	}
	for a.heard.Load() == 0 {
		if ctx.Err() != nil {
			t.Fatal("the leader never heard the heartbeat")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// b leads now; a is a follower that still answers.
	a.leader.Store(&b.addr)
	b.leader.Store(&b.addr)
	if err := s.Send(hb); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := s.Recv()
		got <- err
	}()
	select {
	case err := <-got:
		if !errors.Is(err, &Error{Type: pdpb.ErrorType_NOT_LEADER}) {
			t.Fatalf("Recv after the leader moved: %v, want NOT_LEADER", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv returned nothing in 5 s after a NOT_LEADER answer")
	}
	// The stream is over for its sender too.
	for s.Send(hb) == nil {
		if ctx.Err() != nil {
			t.Fatal("Send still succeeds on a stream whose member is no longer the leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Reopened, it reaches the member a named.
	s, err = c.OpenRegionHeartbeat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(hb); err != nil {
		t.Fatal(err)
	}
	for b.heard.Load() == 0 {
		if ctx.Err() != nil {
			t.Fatal("the new leader never heard a heartbeat")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
