package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/proto/errorpb"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// Each kind of failure waits on its own schedule: a correction that came
// with the answer is tried at once, a busy store waits longest, and one
// kind's retries do not lengthen another's waits.
func TestRetryKindsBackOffSeparately(t *testing.T) {
	var tries retryTries
	if d := tries.next(retryRouted); d != 0 {
		t.Fatalf("first routed retry waits %v, want at once", d)
	}
	for range 20 {
		tries.next(retryUnreachable)
	}
	if d := tries.next(retryBusy); d != retrySchedules[retryBusy].first {
		t.Fatalf("first busy retry waits %v after 20 unreachable ones, want %v", d, retrySchedules[retryBusy].first)
	}
	for kind := range numRetryKinds {
		var k retryTries
		s := retrySchedules[kind]
		k.next(kind)
		prevHi := time.Duration(0)
		for n := 1; n < 40; n++ {
			d := k.next(kind)
			hi := min(s.base<<min(n-1, 16), s.max)
			if d < hi/2 || d > hi {
				t.Fatalf("kind %d retry %d waits %v, want within [%v, %v]", kind, n, d, hi/2, hi)
			}
			if hi < prevHi {
				t.Fatalf("kind %d: bound shrank at retry %d", kind, n)
			}
			prevHi = hi
		}
		if prevHi != s.max {
			t.Fatalf("kind %d never reached its cap %v", kind, s.max)
		}
	}
	leader := &metapb.Peer{Id: 1, StoreId: 1}
	rt := route{leader: leader}
	for _, c := range []struct {
		e    *errorpb.Error
		want retryKind
	}{
		{region.NotLeader(5, &metapb.Peer{Id: 2, StoreId: 2}).Proto(), retryRouted},
		{region.NotLeader(5, nil).Proto(), retryElection},
		{region.NotLeader(5, leader).Proto(), retryElection},
		{region.EpochNotMatch(&metapb.Region{Id: 5}).Proto(), retryRouted},
		{region.RegionNotFound(5).Proto(), retryRouted},
		{region.ErrServerBusy.Proto(), retryBusy},
		{region.ErrRegionNotInitialized.Proto(), retryElection},
		{region.ErrRaftEntryTooLarge.Proto(), retryNever},
	} {
		if got := retryKindOf(rt, c.e); got != c.want {
			t.Errorf("%v: kind %d, want %d", c.e, got, c.want)
		}
	}
}

// scriptedKV answers every Put with the same region error.
type scriptedKV struct {
	kvpb.UnimplementedKVServer
	err  *errorpb.Error
	puts atomic.Int32
}

func (k *scriptedKV) Put(context.Context, *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	k.puts.Add(1)
	return &kvpb.PutResponse{Header: &kvpb.ResponseHeader{RegionError: k.err}}, nil
}

func scriptedClient(t *testing.T, kv kvpb.KVServer, budget time.Duration) *Client {
	c := &Client{
		opts:    Options{RetryBudget: budget},
		regions: region.NewRegionTree(), leaders: map[uint64]*metapb.Peer{},
		stores: map[uint64]string{1: serveKV(t, kv)},
		conns:  map[string]*grpc.ClientConn{},
	}
	t.Cleanup(func() {
		for _, cc := range c.conns {
			cc.Close()
		}
	})
	r := testRegion(5, 1, 1)
	c.learn(r, r.GetPeers()[0])
	return c
}

// A request too large for the raft log fails at once, with the region
// error, instead of being retried until the budget runs out.
func TestEntryTooLargeIsNotRetried(t *testing.T) {
	kv := &scriptedKV{err: region.ErrRaftEntryTooLarge.Proto()}
	c := scriptedClient(t, kv, time.Minute)
	_, err := c.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	if !errors.Is(err, region.ErrRaftEntryTooLarge) || kv.puts.Load() != 1 {
		t.Fatalf("put: %v after %d attempts, want RaftEntryTooLarge after 1", err, kv.puts.Load())
	}
}

// When the budget runs out the call returns ErrGaveUp with the last
// attempt's error, which a caller can inspect.
func TestGaveUpCarriesTheLastError(t *testing.T) {
	kv := &scriptedKV{err: region.ErrServerBusy.Proto()}
	c := scriptedClient(t, kv, time.Second)
	_, err := c.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	// The budget ends in a backoff (the last error is ServerBusy) or, if an
	// attempt had just begun, cuts that attempt off (its own deadline).
	var gu *GaveUpError
	if !errors.Is(err, ErrGaveUp) || !errors.As(err, &gu) ||
		(!errors.Is(gu.Last, region.ErrServerBusy) && status.Code(gu.Last) != codes.DeadlineExceeded) {
		t.Fatalf("put: %v, want ErrGaveUp with ServerBusy or the cut attempt's deadline as the last error", err)
	}
	// Busy answers back off from 50 ms, doubling: a handful of attempts
	// in a second, not hundreds.
	if n := kv.puts.Load(); n < 2 || n > 12 {
		t.Fatalf("%d attempts in a second of ServerBusy", n)
	}
	// The region error is not unwrapped from it (see GaveUpError).
	if errors.Is(err, region.ErrServerBusy) {
		t.Fatal("a gave-up error matches the last attempt's region error")
	}
}

// hangingKV never answers a Put before its caller gives up.
type hangingKV struct{ kvpb.UnimplementedKVServer }

func (hangingKV) Put(ctx context.Context, _ *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

// A budget that ends during an attempt is still the client's budget, not
// the caller's deadline: ErrGaveUp, with the cut attempt's error as Last
// (a write cut off in flight may have applied).
func TestABudgetEndingMidAttemptGivesUp(t *testing.T) {
	c := scriptedClient(t, hangingKV{}, 200*time.Millisecond)
	_, err := c.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	var gu *GaveUpError
	if !errors.As(err, &gu) || status.Code(gu.Last) != codes.DeadlineExceeded {
		t.Fatalf("put: %v, want ErrGaveUp with the attempt's DeadlineExceeded as the last error", err)
	}
}
