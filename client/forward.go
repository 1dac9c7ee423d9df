package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// With Options.ForwardWrites, the client sends Put, DeleteRange and Txn to
// each store over one Forward stream instead of a gRPC call per write. A
// store's own client carries many callers' writes to the stores leading
// their regions, and a call per write cost both ends a stream set-up,
// headers and a flush each: about a fifth of the stores' CPU per put with
// 1,000 clients (docs/benchmarks.md). On the stream, the writes that queue
// while one batch is sent leave together in the next, so a lone write
// waits for nothing.
//
// What a caller sees is what the unary call gives: the response, or the
// gRPC status the store answered with; a write that never left is
// notSent (safe to send again), one in flight when the stream broke may
// have applied. Each write goes with what is left of its caller's deadline
// when it is sent; a caller that cancels instead stops waiting, and the
// store runs the write until that deadline (a unary call's cancel would
// reach the store's handler).

const (
	// forwardMaxBatch and forwardMaxBatchBytes bound one batch.
	forwardMaxBatch      = 256
	forwardMaxBatchBytes = 1 << 20
	// forwardMaxWriteBytes: a larger write goes by its own call rather
	// than hold up the writes batched behind it.
	forwardMaxWriteBytes = 256 << 10
	// forwardQueueLen bounds the writes waiting for the sender; a caller
	// beyond it waits (under its deadline) for room.
	forwardQueueLen = 1024
	// forwardMaxRecvBytes: one batch of results may hold several large
	// transaction responses (internal/forward caps each at 4 MiB, as the
	// unary calls' own receive limit).
	forwardMaxRecvBytes = 64 << 20
	// unsupportedFor: how long a store without the Forward method gets
	// unary calls before the stream is tried again.
	unsupportedFor = time.Minute
)

// notSentError: a forwarded write that never left this process (the
// stream could not open, or ended before the write was handed to it).
// Like a unary call that found no connection, it is safe to send again.
type notSentError struct {
	addr  string
	cause codes.Code
}

func (e *notSentError) Error() string {
	return fmt.Sprintf("client: no forward stream to %s (%s): the write was not sent", e.addr, e.cause)
}

func (e *notSentError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.Error()) }

// errClientClosed answers writes caught by Client.Close.
var errClientClosed = status.Error(codes.Canceled, "client: closed")

// errUseUnary: the write goes by its own call (too large, or a store
// without the Forward stream).
var errUseUnary = errors.New("client: send the write by its own call")

// forwardingKV sends writes over a store's Forward stream and every other
// call by the store's own gRPC client. A request is encoded by the sender
// goroutine, possibly after its caller gave up: callers must not change a
// request once passed (none does; the client builds one per attempt).
type forwardingKV struct {
	kvpb.KVClient
	ws *writeStream
}

func (f forwardingKV) Put(ctx context.Context, in *kvpb.PutRequest, opts ...grpc.CallOption) (*kvpb.PutResponse, error) {
	return forwardWrite(ctx, f.ws, in, &kvpb.ForwardedWrite{Request: &kvpb.ForwardedWrite_Put{Put: in}},
		(*kvpb.ForwardedResult).GetPut, func() (*kvpb.PutResponse, error) { return f.KVClient.Put(ctx, in, opts...) })
}

func (f forwardingKV) DeleteRange(ctx context.Context, in *kvpb.DeleteRangeRequest, opts ...grpc.CallOption) (*kvpb.DeleteRangeResponse, error) {
	return forwardWrite(ctx, f.ws, in, &kvpb.ForwardedWrite{Request: &kvpb.ForwardedWrite_DeleteRange{DeleteRange: in}},
		(*kvpb.ForwardedResult).GetDeleteRange, func() (*kvpb.DeleteRangeResponse, error) { return f.KVClient.DeleteRange(ctx, in, opts...) })
}

func (f forwardingKV) Txn(ctx context.Context, in *kvpb.TxnRequest, opts ...grpc.CallOption) (*kvpb.TxnResponse, error) {
	return forwardWrite(ctx, f.ws, in, &kvpb.ForwardedWrite{Request: &kvpb.ForwardedWrite_Txn{Txn: in}},
		(*kvpb.ForwardedResult).GetTxn, func() (*kvpb.TxnResponse, error) { return f.KVClient.Txn(ctx, in, opts...) })
}

// forwardWrite sends w (carrying req) on the stream and returns the
// response response picks from its result, or makes the unary call when
// the write must go by its own.
func forwardWrite[R proto.Message](ctx context.Context, ws *writeStream, req proto.Message, w *kvpb.ForwardedWrite,
	response func(*kvpb.ForwardedResult) R, unary func() (R, error)) (R, error) {
	var none R
	res, err := ws.send(ctx, w, req)
	switch {
	case errors.Is(err, errUseUnary):
		return unary()
	case err != nil:
		return none, err
	}
	if r := response(res); r.ProtoReflect().IsValid() {
		return r, nil
	}
	return none, status.Errorf(codes.Internal, "client: forwarded write %d answered with the wrong response (%T)", res.GetId(), res.GetResponse())
}

// forwardCall is one write waiting for its result.
type forwardCall struct {
	ctx  context.Context
	w    *kvpb.ForwardedWrite
	size int
	// done is buffered: a call gets at most one outcome, and exactly one
	// unless its context ended before it was sent (its caller has left).
	done chan forwardOutcome
}

type forwardOutcome struct {
	res   *kvpb.ForwardedResult
	err   error
	unary bool // the store has no Forward stream: nothing ran, send it by its own call
}

// writeStream carries the writes for one store. One sender goroutine
// (run) owns the stream and its batching; each stream it opens has a
// receiver goroutine that hands results to their callers.
type writeStream struct {
	addr  string
	kv    kvpb.KVClient
	bg    context.Context // the client's: ends at Close
	queue chan *forwardCall
	// senderDone closes once run has returned; every call it took whose
	// caller still waits has its outcome by then.
	senderDone chan struct{}
	// unsupportedAt: when the store last answered that it has no Forward
	// method (unix nanoseconds; 0: never). For unsupportedFor after it,
	// writes go by their own calls; then the stream is tried again, in
	// case the store was upgraded.
	unsupportedAt atomic.Int64

	// Owned by run.
	nextID uint64
	cur    *forwardConn
}

// forwardConn is one Forward stream. Every write handed to it is in
// pending until its result arrives or the stream ends; err is set once,
// when it ends, and no write is added after that.
type forwardConn struct {
	stream kvpb.KV_ForwardClient
	cancel context.CancelFunc

	mu      sync.Mutex
	pending map[uint64]*forwardCall
	err     error
	// answered: a batch of results has arrived on the stream.
	answered bool
}

// writeStreamFor returns the write stream over cc, starting it on first
// use; nil once the client is closing.
func (c *Client) writeStreamFor(cc *grpc.ClientConn, kv kvpb.KVClient) *writeStream {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ws := c.writeStreams[cc]; ws != nil {
		return ws
	}
	if c.closed {
		return nil
	}
	ws := &writeStream{addr: cc.Target(), kv: kv, bg: c.bgCtx, queue: make(chan *forwardCall, forwardQueueLen), senderDone: make(chan struct{})}
	if c.writeStreams == nil {
		c.writeStreams = map[*grpc.ClientConn]*writeStream{}
	}
	c.writeStreams[cc] = ws
	c.bg.Add(1) // under c.mu, before Close can see closed and Wait
	go func() {
		defer c.bg.Done()
		ws.run()
	}()
	return ws
}

// send queues a write and waits for its result. A result carrying an
// error status comes back as that status.
func (ws *writeStream) send(ctx context.Context, w *kvpb.ForwardedWrite, req proto.Message) (*kvpb.ForwardedResult, error) {
	if ws.unsupported() {
		return nil, errUseUnary
	}
	size := proto.Size(req)
	if size > forwardMaxWriteBytes {
		return nil, errUseUnary
	}
	call := &forwardCall{ctx: ctx, w: w, size: size, done: make(chan forwardOutcome, 1)}
	select {
	case ws.queue <- call:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-ws.senderDone:
		return nil, errClientClosed
	}
	var o forwardOutcome
	select {
	case o = <-call.done:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-ws.senderDone:
		// Queued after the sender drained its queue, or answered just
		// before it returned.
		select {
		case o = <-call.done:
		default:
			return nil, errClientClosed
		}
	}
	switch {
	case o.unary:
		return nil, errUseUnary
	case o.err != nil:
		return nil, o.err
	case o.res.GetCode() != 0:
		return nil, status.Error(codes.Code(o.res.GetCode()), o.res.GetMessage())
	}
	return o.res, nil
}

// run batches queued writes onto the stream until the client closes.
func (ws *writeStream) run() {
	var receivers sync.WaitGroup
	defer func() {
		if ws.cur != nil {
			ws.cur.cancel()
		}
		receivers.Wait()
		for {
			select {
			case call := <-ws.queue:
				call.done <- forwardOutcome{err: errClientClosed}
			default:
				close(ws.senderDone)
				return
			}
		}
	}()
	batch := make([]*forwardCall, 0, forwardMaxBatch)
	for {
		var first *forwardCall
		select {
		case first = <-ws.queue:
		case <-ws.bg.Done():
			return
		}
		batch = append(batch[:0], first)
		bytes := first.size
	fill:
		for len(batch) < forwardMaxBatch && bytes < forwardMaxBatchBytes {
			select {
			case call := <-ws.queue:
				batch = append(batch, call)
				bytes += call.size
			default:
				break fill
			}
		}
		ws.sendBatch(batch, &receivers)
		clear(batch) // drop the calls: the batch's array is reused
	}
}

// sendBatch hands a batch to the current stream, opening one if needed.
func (ws *writeStream) sendBatch(batch []*forwardCall, receivers *sync.WaitGroup) {
	if ws.unsupported() {
		ws.failUnsent(batch, nil)
		return
	}
	if ws.cur == nil || ws.cur.ended() {
		conn, err := ws.open(receivers)
		if err != nil {
			ws.failUnsent(batch, err)
			return
		}
		ws.cur = conn
	}
	conn := ws.cur
	msg := &kvpb.ForwardedWrites{Writes: make([]*kvpb.ForwardedWrite, 0, len(batch))}
	conn.mu.Lock()
	if conn.err != nil {
		// It ended since the check above; nothing of this batch was sent.
		err := conn.err
		conn.mu.Unlock()
		ws.failUnsent(batch, err)
		return
	}
	now := time.Now()
	for _, call := range batch {
		// Opening the stream, or the last Send, may have taken a while:
		// what is left of the deadline is reckoned now, and a write with
		// none left (its caller has given up) is not sent.
		if call.ctx.Err() != nil {
			continue
		}
		call.w.TimeoutMicros = 0
		if dl, ok := call.ctx.Deadline(); ok {
			if call.w.TimeoutMicros = dl.Sub(now).Microseconds(); call.w.TimeoutMicros <= 0 {
				continue
			}
		}
		ws.nextID++
		call.w.Id = ws.nextID
		conn.pending[call.w.Id] = call
		msg.Writes = append(msg.Writes, call.w)
	}
	conn.mu.Unlock()
	if len(msg.Writes) == 0 {
		return
	}
	if err := conn.stream.Send(msg); err != nil {
		// Part of the batch may have left: the receiver hears how the
		// stream ended and fails every pending write as possibly applied.
		conn.cancel()
	}
}

// failUnsent answers a batch none of which was sent: by its own calls if
// the store has no Forward method, else notSent.
func (ws *writeStream) failUnsent(batch []*forwardCall, err error) {
	o := forwardOutcome{err: &notSentError{addr: ws.addr, cause: status.Code(err)}}
	if status.Code(err) == codes.Unimplemented || ws.unsupported() {
		o = forwardOutcome{unary: true}
	}
	for _, call := range batch {
		call.done <- o
	}
}

func (ws *writeStream) unsupported() bool {
	at := ws.unsupportedAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < unsupportedFor
}

func (ws *writeStream) open(receivers *sync.WaitGroup) (*forwardConn, error) {
	ctx, cancel := context.WithCancel(ws.bg)
	stream, err := ws.kv.Forward(ctx, grpc.MaxCallRecvMsgSize(forwardMaxRecvBytes))
	if err != nil {
		cancel()
		return nil, err
	}
	conn := &forwardConn{stream: stream, cancel: cancel, pending: map[uint64]*forwardCall{}}
	receivers.Add(1)
	go func() {
		defer receivers.Done()
		ws.receive(conn)
	}()
	return conn, nil
}

// receive hands results to their callers until the stream ends, then
// fails the writes still pending.
func (ws *writeStream) receive(conn *forwardConn) {
	for {
		msg, err := conn.stream.Recv()
		if err != nil {
			ws.end(conn, err)
			return
		}
		conn.mu.Lock()
		conn.answered = true
		for _, r := range msg.GetResults() {
			if call := conn.pending[r.GetId()]; call != nil {
				delete(conn.pending, r.GetId())
				call.done <- forwardOutcome{res: r}
			}
		}
		conn.mu.Unlock()
	}
}

func (ws *writeStream) end(conn *forwardConn, err error) {
	conn.cancel()
	conn.mu.Lock()
	conn.err = err
	pending := conn.pending
	conn.pending = nil
	// A store without the method answers Unimplemented before anything,
	// having run none of the writes. Once a result has come back, the
	// method exists and Unimplemented means something else (a codec, a
	// proxy): the writes may have applied.
	unary := status.Code(err) == codes.Unimplemented && !conn.answered
	conn.mu.Unlock()
	if unary {
		ws.unsupportedAt.Store(time.Now().UnixNano())
	}
	for _, call := range pending {
		if unary {
			call.done <- forwardOutcome{unary: true}
			continue
		}
		// The text of err is left out on purpose: a transport error's
		// "connection error" would make notSent take a write that may
		// have applied for one never sent.
		call.done <- forwardOutcome{err: status.Errorf(codes.Unavailable,
			"client: the forward stream to %s ended (%s) with the write in flight: it may have applied", ws.addr, status.Code(err))}
	}
}

func (conn *forwardConn) ended() bool {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	return conn.err != nil
}
