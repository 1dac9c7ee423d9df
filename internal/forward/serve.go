// Package forward serves the store side of the KV Forward stream, on which
// another store's client sends writes in batches (client/forward.go): each
// write is served as its own unary call would be, concurrently with the
// others, and the results go back in batches as they finish, in any order.
package forward

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// Stream is the server's side of one Forward stream.
type Stream interface {
	Context() context.Context
	Recv() (*kvpb.ForwardedWrites, error)
	Send(*kvpb.ForwardedResults) error
}

// Handler serves one write within ctx, which carries the write's own
// deadline: it returns the result with its response set, or the error the
// unary call would have returned (a gRPC status).
type Handler func(ctx context.Context, w *kvpb.ForwardedWrite) (*kvpb.ForwardedResult, error)

const (
	// keptWorkers goroutines serve a stream's writes one after another
	// and live as long as it; a write that finds them all busy gets a
	// goroutine of its own. Kept workers keep the stacks they grew, as
	// the gRPC server's stream workers do (internal/status).
	keptWorkers = 64
	// maxBatch and maxBatchBytes bound one batch of results (the client
	// receives up to 64 MiB).
	maxBatch      = 256
	maxBatchBytes = 1 << 20
	// MaxResultBytes caps one result as gRPC's default receive limit caps
	// the response of the unary call it stands for: a larger one fails
	// alone with ResourceExhausted, instead of breaking the stream, and
	// every write on it, at the client's limit.
	MaxResultBytes = 4 << 20
)

// Serve serves the stream until the client ends it, then waits for the
// writes already received. A client that closes its side gets the
// results of those; on a stream that broke, they are cancelled, as unary
// calls are when their connection goes, and their results dropped.
func Serve(stream Stream, handle Handler) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	s := &server{ctx: ctx, handle: handle, work: make(chan *kvpb.ForwardedWrite), results: make(chan sizedResult, maxBatch)}
	sent := make(chan error, 1)
	go func() { sent <- s.sendResults(stream) }()
	var err error
	for {
		var in *kvpb.ForwardedWrites
		if in, err = stream.Recv(); err != nil {
			break
		}
		for _, w := range in.GetWrites() {
			s.dispatch(w)
		}
	}
	if !errors.Is(err, io.EOF) {
		cancel()
	}
	close(s.work)
	s.workers.Wait()
	close(s.results)
	sendErr := <-sent
	if errors.Is(err, io.EOF) {
		return sendErr
	}
	return err
}

type server struct {
	ctx     context.Context
	handle  Handler
	work    chan *kvpb.ForwardedWrite // unbuffered: taken only by an idle kept worker
	results chan sizedResult
	workers sync.WaitGroup
	kept    atomic.Int32
}

// sizedResult is a result with its encoded size, reckoned once.
type sizedResult struct {
	r    *kvpb.ForwardedResult
	size int
}

func (s *server) dispatch(w *kvpb.ForwardedWrite) {
	select {
	case s.work <- w:
		return
	default:
	}
	keep := s.kept.Add(1) <= keptWorkers
	if !keep {
		s.kept.Add(-1)
	}
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		s.serve(w)
		if keep {
			for w := range s.work {
				s.serve(w)
			}
		}
	}()
}

func (s *server) serve(w *kvpb.ForwardedWrite) {
	ctx := s.ctx
	if t := w.GetTimeoutMicros(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Microsecond)
		defer cancel()
	}
	res, err := s.handle(ctx, w)
	size := 0
	if err == nil && res != nil {
		if size = proto.Size(res); size > MaxResultBytes {
			err = status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", size, MaxResultBytes)
		}
	}
	if err != nil {
		st := status.Convert(err)
		// A string field must be UTF-8, or the whole batch fails to encode.
		res = &kvpb.ForwardedResult{Code: uint32(st.Code()), Message: strings.ToValidUTF8(st.Message(), "\uFFFD")}
	} else if res == nil {
		res = &kvpb.ForwardedResult{}
	}
	res.Id = w.GetId()
	if s.ctx.Err() != nil {
		return // the stream broke: nobody hears this
	}
	if err != nil || size == 0 {
		size = proto.Size(res)
	}
	select {
	case s.results <- sizedResult{res, size}:
	case <-s.ctx.Done():
	}
}

// sendResults sends results as they come, together when several wait.
// After a failed send, or once the stream broke, it keeps draining so no
// worker blocks, and sends nothing.
func (s *server) sendResults(stream Stream) error {
	var err error
	for r := range s.results {
		if err != nil || s.ctx.Err() != nil {
			continue
		}
		// A new message each time: gRPC may still read one after Send.
		batch := &kvpb.ForwardedResults{Results: []*kvpb.ForwardedResult{r.r}}
		bytes := r.size
	fill:
		for len(batch.Results) < maxBatch && bytes < maxBatchBytes {
			select {
			case r, ok := <-s.results:
				if !ok {
					break fill
				}
				batch.Results = append(batch.Results, r.r)
				bytes += r.size
			default:
				break fill
			}
		}
		err = stream.Send(batch)
	}
	return err
}
