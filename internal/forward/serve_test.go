package forward

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// scriptStream hands Serve the given batches, then io.EOF (a client that
// closed its side), and records what Serve sends.
type scriptStream struct {
	ctx     context.Context
	in      []*kvpb.ForwardedWrites
	mu      sync.Mutex
	results []*kvpb.ForwardedResult
}

func (s *scriptStream) Context() context.Context { return s.ctx }

func (s *scriptStream) Recv() (*kvpb.ForwardedWrites, error) {
	if len(s.in) == 0 {
		return nil, io.EOF
	}
	b := s.in[0]
	s.in = s.in[1:]
	return b, nil
}

func (s *scriptStream) Send(m *kvpb.ForwardedResults) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range m.GetResults() {
		// Send's message is reused after it returns, its results are not.
		s.results = append(s.results, r)
	}
	return nil
}

func puts(first, n int) *kvpb.ForwardedWrites {
	b := &kvpb.ForwardedWrites{}
	for i := first; i < first+n; i++ {
		b.Writes = append(b.Writes, &kvpb.ForwardedWrite{Id: uint64(i), TimeoutMicros: 30e6,
			Request: &kvpb.ForwardedWrite_Put{Put: &kvpb.PutRequest{Key: []byte{byte(i)}}}})
	}
	return b
}

// Every write is in its handler at once (so none waits for another), more
// of them than the kept workers; a client that closed its side still gets
// every result, each under its own id.
func TestServeRunsWritesConcurrentlyAndAnswersEach(t *testing.T) {
	const n = keptWorkers + 40
	stream := &scriptStream{ctx: context.Background(), in: []*kvpb.ForwardedWrites{puts(1, 30), puts(31, n-30)}}
	var mu sync.Mutex
	inFlight := 0
	all := make(chan struct{})
	err := Serve(stream, func(ctx context.Context, w *kvpb.ForwardedWrite) (*kvpb.ForwardedResult, error) {
		mu.Lock()
		inFlight++
		if inFlight == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if w.GetId()%2 == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "even %d", w.GetId())
		}
		return &kvpb.ForwardedResult{Response: &kvpb.ForwardedResult_Put{Put: &kvpb.PutResponse{
			Header: &kvpb.ResponseHeader{Revision: int64(w.GetId())}}}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(stream.results) != n {
		t.Fatalf("%d results, want %d", len(stream.results), n)
	}
	seen := map[uint64]bool{}
	for _, r := range stream.results {
		id := r.GetId()
		if seen[id] {
			t.Fatalf("two results for write %d", id)
		}
		seen[id] = true
		if id%2 == 0 {
			if codes.Code(r.GetCode()) != codes.InvalidArgument || r.GetResponse() != nil {
				t.Fatalf("write %d: %v, want its handler's InvalidArgument and no response", id, r)
			}
			continue
		}
		if r.GetCode() != 0 || r.GetPut().GetHeader().GetRevision() != int64(id) {
			t.Fatalf("write %d got %v", id, r)
		}
	}
}

// brokenStream fails its Recv after one batch, as a connection that went.
type brokenStream struct {
	scriptStream
	sent bool
}

func (b *brokenStream) Recv() (*kvpb.ForwardedWrites, error) {
	if b.sent {
		return nil, status.Error(codes.Unavailable, "transport is closing")
	}
	b.sent = true
	return puts(1, 3), nil
}

// On a broken stream, the writes in flight are cancelled (a handler
// waiting on its context returns) and nothing more is sent.
func TestServeCancelsWritesOnABrokenStream(t *testing.T) {
	stream := &brokenStream{scriptStream: scriptStream{ctx: context.Background()}}
	done := make(chan error, 1)
	go func() {
		done <- Serve(stream, func(ctx context.Context, w *kvpb.ForwardedWrite) (*kvpb.ForwardedResult, error) {
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		})
	}()
	select {
	case err := <-done:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Serve returned %v, want the stream's error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return: the writes in flight were not cancelled")
	}
	if len(stream.results) != 0 {
		t.Fatalf("%d results sent on a broken stream", len(stream.results))
	}
}

// A handler error that is not a gRPC status reaches the client as
// Unknown with its text, under the write's id, as a unary call's would.
func TestServeReportsAHandlerError(t *testing.T) {
	stream := &scriptStream{ctx: context.Background(), in: []*kvpb.ForwardedWrites{{Writes: []*kvpb.ForwardedWrite{{Id: 9}}}}}
	errNoRequest := errors.New("no request")
	if err := Serve(stream, func(ctx context.Context, w *kvpb.ForwardedWrite) (*kvpb.ForwardedResult, error) {
		if w.GetRequest() == nil {
			return nil, errNoRequest
		}
		return &kvpb.ForwardedResult{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(stream.results) != 1 || codes.Code(stream.results[0].GetCode()) != codes.Unknown || stream.results[0].GetMessage() != "no request" || stream.results[0].GetId() != 9 {
		t.Fatalf("results %v, want write 9 failed with Unknown \"no request\"", stream.results)
	}
}

// A result larger than a unary call could receive fails alone; the other
// writes of the stream are answered.
func TestServeRefusesAnOversizedResultAlone(t *testing.T) {
	stream := &scriptStream{ctx: context.Background(), in: []*kvpb.ForwardedWrites{puts(1, 2)}}
	big := make([]byte, MaxResultBytes)
	if err := Serve(stream, func(ctx context.Context, w *kvpb.ForwardedWrite) (*kvpb.ForwardedResult, error) {
		resp := &kvpb.PutResponse{Header: &kvpb.ResponseHeader{Revision: int64(w.GetId())}}
		if w.GetId() == 1 {
			resp.PrevKv = &kvpb.KeyValue{Value: big}
		}
		return &kvpb.ForwardedResult{Response: &kvpb.ForwardedResult_Put{Put: resp}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(stream.results) != 2 {
		t.Fatalf("%d results, want 2", len(stream.results))
	}
	for _, r := range stream.results {
		switch r.GetId() {
		case 1:
			if codes.Code(r.GetCode()) != codes.ResourceExhausted || r.GetResponse() != nil {
				t.Fatalf("oversized result: %v, want ResourceExhausted and no response", r)
			}
		case 2:
			if r.GetCode() != 0 || r.GetPut().GetHeader().GetRevision() != 2 {
				t.Fatalf("write 2: %v", r)
			}
		}
	}
}
