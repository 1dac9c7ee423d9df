package client

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/internal/forward"
	"github.com/basaltdb/basalt/proto/kvpb"
)

// forwardKV serves Put by its own call and on the Forward stream (through
// the stores' forward.Serve), answering each key with a response only it
// gets. Keys with a prefix misbehave on the stream: "bad" fails with
// InvalidArgument, "wrong" is answered with a transaction's response, "hang" waits for release or its deadline, "break" ends
// the stream as it arrives.
type forwardKV struct {
	kvpb.UnimplementedKVServer
	noForward bool // as a store without the Forward method

	mu        sync.Mutex
	unary     int
	forwarded int
	deadlines []time.Duration
	release   chan struct{}
}

func putAnswer(key []byte) *kvpb.PutResponse {
	return &kvpb.PutResponse{Header: &kvpb.ResponseHeader{Revision: int64(len(key))}, PrevKv: &kvpb.KeyValue{Key: key}}
}

func (k *forwardKV) Put(_ context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	k.mu.Lock()
	k.unary++
	k.mu.Unlock()
	return putAnswer(req.GetKey()), nil
}

func (k *forwardKV) Forward(stream kvpb.KV_ForwardServer) error {
	if k.noForward {
		return k.UnimplementedKVServer.Forward(stream)
	}
	return forward.Serve(breakingStream{stream}, func(ctx context.Context, w *kvpb.ForwardedWrite) (*kvpb.ForwardedResult, error) {
		key := w.GetPut().GetKey()
		dl, _ := ctx.Deadline()
		k.mu.Lock()
		k.forwarded++
		k.deadlines = append(k.deadlines, time.Until(dl))
		release := k.release
		k.mu.Unlock()
		switch {
		case strings.HasPrefix(string(key), "bad"):
			return nil, status.Error(codes.InvalidArgument, "bad key "+string(key))
		case strings.HasPrefix(string(key), "wrong"):
			return &kvpb.ForwardedResult{Response: &kvpb.ForwardedResult_Txn{Txn: &kvpb.TxnResponse{}}}, nil
		case strings.HasPrefix(string(key), "hang"):
			select {
			case <-release:
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		return &kvpb.ForwardedResult{Response: &kvpb.ForwardedResult_Put{Put: putAnswer(key)}}, nil
	})
}

// breakingStream ends the stream, as a broken connection would, when a
// batch holds a key starting with "break", and with Unimplemented (as a
// codec or a proxy might, mid-stream) for one starting with "unimpl".
type breakingStream struct{ kvpb.KV_ForwardServer }

func (b breakingStream) Recv() (*kvpb.ForwardedWrites, error) {
	in, err := b.KV_ForwardServer.Recv()
	for _, w := range in.GetWrites() {
		switch key := string(w.GetPut().GetKey()); {
		case strings.HasPrefix(key, "break"):
			return nil, status.Error(codes.Unavailable, "connection error: desc = \"broken on purpose\"")
		case strings.HasPrefix(key, "unimpl"):
			return nil, status.Error(codes.Unimplemented, "grpc: Decompressor is not installed")
		}
	}
	return in, err
}

// forwardClient is a Client with nothing but what write streams need, and
// a KV for the store at addr that forwards its writes.
func forwardClient(t *testing.T, addr string) (*Client, kvpb.KVClient) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{}
	c.bgCtx, c.stop = context.WithCancel(context.Background())
	t.Cleanup(func() { c.stopBackground(); _ = cc.Close() })
	kv := kvpb.NewKVClient(cc)
	return c, forwardingKV{KVClient: kv, ws: c.writeStreamFor(cc, kv)}
}

func putKey(ctx context.Context, kv kvpb.KVClient, key string) error {
	resp, err := kv.Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte("v")})
	if err != nil {
		return err
	}
	if string(resp.GetPrevKv().GetKey()) != key || resp.GetHeader().GetRevision() != int64(len(key)) {
		return fmt.Errorf("put %q got the answer for %q", key, resp.GetPrevKv().GetKey())
	}
	return nil
}

func TestForwardedWritesGetTheirOwnAnswers(t *testing.T) {
	fk := &forwardKV{}
	_, kv := forwardClient(t, serveKV(t, fk))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 300
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- putKey(ctx, kv, strings.Repeat("k", i+1)) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	fk.mu.Lock()
	defer fk.mu.Unlock()
	if fk.forwarded != n || fk.unary != 0 {
		t.Fatalf("%d writes forwarded and %d by their own call, want %d and 0", fk.forwarded, fk.unary, n)
	}
	for _, d := range fk.deadlines {
		if d <= 0 || d > 30*time.Second {
			t.Fatalf("a forwarded write ran with %v left, want the caller's deadline (at most 30 s)", d)
		}
	}
}

func TestForwardedWriteErrorsAreTheStoresStatus(t *testing.T) {
	_, kv := forwardClient(t, serveKV(t, &forwardKV{}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := putKey(ctx, kv, "bad1")
	if s, _ := status.FromError(err); s.Code() != codes.InvalidArgument || s.Message() != "bad key bad1" {
		t.Fatalf("put bad1: %v, want InvalidArgument \"bad key bad1\"", err)
	}
	if err := putKey(ctx, kv, "wrong1"); status.Code(err) != codes.Internal {
		t.Fatalf("put answered with a transaction's response: %v, want Internal", err)
	}
	if err := putKey(ctx, kv, "fine"); err != nil {
		t.Fatal(err)
	}
}

// A store that predates the Forward stream ran none of the writes sent on
// it: they, and every later write, go by their own call.
func TestWritesGoByTheirOwnCallToAStoreWithoutForward(t *testing.T) {
	fk := &forwardKV{noForward: true}
	_, kv := forwardClient(t, serveKV(t, fk))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, k := range []string{"a", "bb", "ccc"} {
		if err := putKey(ctx, kv, k); err != nil {
			t.Fatal(err)
		}
	}
	if !kv.(forwardingKV).ws.unsupported() {
		t.Fatal("the stream was not marked unsupported")
	}
	fk.mu.Lock()
	defer fk.mu.Unlock()
	if fk.unary != 3 {
		t.Fatalf("%d puts by their own call, want 3", fk.unary)
	}
}

// A write in flight when the stream broke may have applied: it fails, and
// not as notSent (which would send it again). The next write opens a new
// stream.
func TestABrokenForwardStreamFailsWritesInFlightAsAmbiguous(t *testing.T) {
	fk := &forwardKV{release: make(chan struct{})}
	_, kv := forwardClient(t, serveKV(t, fk))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hung := make(chan error, 1)
	go func() { hung <- putKey(ctx, kv, "hang1") }()
	waitFor(t, func() bool { fk.mu.Lock(); defer fk.mu.Unlock(); return fk.forwarded == 1 })
	err := putKey(ctx, kv, "break1")
	for _, e := range []error{err, <-hung} {
		if status.Code(e) != codes.Unavailable || notSent(e) || !strings.Contains(e.Error(), "may have applied") {
			t.Fatalf("write in flight on a broken stream: %v, want Unavailable, possibly applied, not notSent", e)
		}
	}
	if err := putKey(ctx, kv, "after"); err != nil {
		t.Fatalf("write after the break: %v", err)
	}
}

// A stream that cannot open sent nothing: the write may go elsewhere.
// Unimplemented from a stream that has already answered does not mean a
// store without the method: the write in flight may have applied, and is
// not sent again by its own call.
func TestUnimplementedAfterAnAnswerIsNotAStoreWithoutForward(t *testing.T) {
	fk := &forwardKV{}
	_, kv := forwardClient(t, serveKV(t, fk))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := putKey(ctx, kv, "first"); err != nil {
		t.Fatal(err)
	}
	err := putKey(ctx, kv, "unimpl1")
	if status.Code(err) != codes.Unavailable || notSent(err) || !strings.Contains(err.Error(), "may have applied") {
		t.Fatalf("write in flight when an answered stream ended Unimplemented: %v, want possibly applied", err)
	}
	fk.mu.Lock()
	defer fk.mu.Unlock()
	if fk.unary != 0 || kv.(forwardingKV).ws.unsupported() {
		t.Fatalf("%d writes went by their own call, stream unsupported %v: want none, false", fk.unary, kv.(forwardingKV).ws.unsupported())
	}
}

func TestAForwardStreamThatCannotOpenSendsNothing(t *testing.T) {
	_, kv := forwardClient(t, deadAddr(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := putKey(ctx, kv, "k")
	if !notSent(err) || status.Code(err) != codes.Unavailable {
		t.Fatalf("write to a store that cannot be reached: %v, want notSent", err)
	}
}

func TestAForwardedWriteEndsWithItsCallersDeadline(t *testing.T) {
	fk := &forwardKV{release: make(chan struct{})}
	_, kv := forwardClient(t, serveKV(t, fk))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := putKey(ctx, kv, "hang2"); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a write past its deadline: %v, want DeadlineExceeded", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := putKey(ctx2, kv, "next"); err != nil {
		t.Fatal(err)
	}
}

func TestCloseEndsForwardedWritesInFlight(t *testing.T) {
	fk := &forwardKV{release: make(chan struct{})}
	c, kv := forwardClient(t, serveKV(t, fk))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hung := make(chan error, 1)
	go func() { hung <- putKey(ctx, kv, "hang3") }()
	waitFor(t, func() bool { fk.mu.Lock(); defer fk.mu.Unlock(); return fk.forwarded == 1 })
	c.stopBackground()
	if err := <-hung; status.Code(err) != codes.Unavailable || notSent(err) || !strings.Contains(err.Error(), "may have applied") {
		t.Fatalf("write in flight at Close: %v, want a failure that may have applied", err)
	}
	if err := putKey(ctx, kv, "late"); status.Code(err) != codes.Canceled {
		t.Fatalf("write after Close: %v, want Canceled", err)
	}
}

// fakeForwardStream blocks its first Send until the test lets it go, so
// the writes queued meanwhile must leave in one batch.
type fakeForwardStream struct {
	grpc.ClientStream
	ctx     context.Context
	release chan struct{}
	mu      sync.Mutex
	batches [][]*kvpb.ForwardedWrite
	results chan *kvpb.ForwardedResults
}

func (f *fakeForwardStream) Send(m *kvpb.ForwardedWrites) error {
	f.mu.Lock()
	first := len(f.batches) == 0
	f.batches = append(f.batches, m.GetWrites())
	f.mu.Unlock()
	if first {
		select {
		case <-f.release:
		case <-f.ctx.Done(): // the client closing, after a failed test
			return f.ctx.Err()
		}
	}
	out := &kvpb.ForwardedResults{}
	for _, w := range m.GetWrites() {
		out.Results = append(out.Results, &kvpb.ForwardedResult{Id: w.GetId(), Response: &kvpb.ForwardedResult_Put{Put: putAnswer(w.GetPut().GetKey())}})
	}
	f.results <- out
	return nil
}

func (f *fakeForwardStream) Recv() (*kvpb.ForwardedResults, error) {
	select {
	case r := <-f.results:
		return r, nil
	case <-f.ctx.Done():
		return nil, status.FromContextError(f.ctx.Err()).Err()
	}
}

type fakeForwardKV struct {
	kvpb.KVClient
	stream *fakeForwardStream
}

func (f *fakeForwardKV) Forward(ctx context.Context, _ ...grpc.CallOption) (kvpb.KV_ForwardClient, error) {
	f.stream.ctx = ctx
	return f.stream, nil
}

// fakeStreamClient returns a write stream on a fakeForwardStream, and a KV
// that forwards through it.
func fakeStreamClient(t *testing.T) (*fakeForwardStream, *writeStream, forwardingKV) {
	t.Helper()
	fs := &fakeForwardStream{release: make(chan struct{}), results: make(chan *kvpb.ForwardedResults, 16)}
	c := &Client{}
	c.bgCtx, c.stop = context.WithCancel(context.Background())
	// The connection is never used: the fake's Forward stands for it.
	cc, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.stopBackground(); _ = cc.Close() })
	ws := c.writeStreamFor(cc, &fakeForwardKV{stream: fs})
	return fs, ws, forwardingKV{ws: ws}
}

func TestWritesQueuedDuringASendLeaveInOneBatch(t *testing.T) {
	fs, ws, kv := fakeStreamClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 50
	errs := make(chan error, n+1)
	go func() { errs <- putKey(ctx, kv, "first") }()
	waitFor(t, func() bool { fs.mu.Lock(); defer fs.mu.Unlock(); return len(fs.batches) == 1 })
	for i := range n {
		go func() { errs <- putKey(ctx, kv, strings.Repeat("q", i+1)) }()
	}
	waitFor(t, func() bool { return len(ws.queue) == n })
	close(fs.release)
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.batches) != 2 || len(fs.batches[0]) != 1 || len(fs.batches[1]) != n {
		sizes := []int{}
		for _, b := range fs.batches {
			sizes = append(sizes, len(b))
		}
		t.Fatalf("batches of %v writes, want [1 %d]", sizes, n)
	}
}

// A write is sent with what is left of its deadline when it leaves, not
// when it was queued, and one whose caller gave up while it waited is not
// sent at all.
func TestQueuedWritesLeaveWithWhatIsLeftOfTheirDeadline(t *testing.T) {
	fs, ws, kv := fakeStreamClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- putKey(ctx, kv, "first") }()
	waitFor(t, func() bool { fs.mu.Lock(); defer fs.mu.Unlock(); return len(fs.batches) == 1 })
	go func() { errs <- putKey(ctx, kv, "waits") }()
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	if err := putKey(short, kv, "gives-up"); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a write whose deadline passed in the queue: %v, want DeadlineExceeded", err)
	}
	canceled, cancelNow := context.WithCancel(ctx)
	canceledErr := make(chan error, 1)
	go func() { canceledErr <- putKey(canceled, kv, "canceled") }()
	waitFor(t, func() bool { return len(ws.queue) == 3 })
	cancelNow()
	if err := <-canceledErr; status.Code(err) != codes.Canceled {
		t.Fatalf("a write canceled in the queue: %v, want Canceled", err)
	}
	time.Sleep(10 * time.Millisecond) // time the queued writes spend waiting
	released := time.Now()
	close(fs.release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	dl, _ := ctx.Deadline()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.batches) != 2 || len(fs.batches[1]) != 1 || string(fs.batches[1][0].GetPut().GetKey()) != "waits" {
		t.Fatalf("second batch %v, want only the write still waited for", fs.batches[1:])
	}
	if left := fs.batches[1][0].GetTimeoutMicros(); left <= 0 || left > dl.Sub(released).Microseconds() {
		t.Fatalf("the write left with %d µs, want at most the %d µs left when it was sent", left, dl.Sub(released).Microseconds())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 20 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// deadAddr returns a loopback address where every connection is closed as
// soon as it is accepted: no gRPC stream can open there. (A port just
// closed could be taken by another process meanwhile.)
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() { _ = lis.Close(); <-done })
	return lis.Addr().String()
}
