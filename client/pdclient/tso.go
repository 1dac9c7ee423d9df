package pdclient

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/basaltdb/basalt/proto/pdpb"
)

// tsoBatcher gets timestamps for every waiting caller with one RPC at a
// time on one stream to the leader: callers queue while an RPC is in
// flight, and the next RPC asks for all of them at once.
type tsoBatcher struct {
	c     *Client
	reqs  chan *tsoRequest
	done  chan struct{}
	stopc chan struct{}

	rpcSeconds prometheus.Histogram // one TSO round trip to the PD leader
	batchSize  prometheus.Histogram // timestamps asked for in one round trip
}

type tsoRequest struct {
	ctx   context.Context
	count uint32 // timestamps wanted
	ts    uint64 // the first
	err   error
	done  chan struct{}
}

func newTSOBatcher(c *Client) *tsoBatcher {
	return &tsoBatcher{c: c, reqs: make(chan *tsoRequest, 16384), done: make(chan struct{}), stopc: make(chan struct{}),
		rpcSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "basalt_pdclient_tso_rpc_seconds", Help: "One batched TSO round trip to the PD leader.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "basalt_pdclient_tso_batch_size", Help: "Timestamps asked for in one TSO round trip.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13),
		}),
	}
}

// GetTS returns a new timestamp, larger than every timestamp any caller
// obtained before this call started.
func (c *Client) GetTS(ctx context.Context) (uint64, error) { return c.GetTSRange(ctx, 1) }

// GetTSRange returns the first of n consecutive new timestamps
// (1 <= n <= 4096), all larger than any timestamp obtained before the call.
func (c *Client) GetTSRange(ctx context.Context, n uint32) (uint64, error) {
	if n == 0 || n > 4096 {
		return 0, fmt.Errorf("pdclient: GetTSRange wants 1 to 4096 timestamps, not %d", n)
	}
	r := &tsoRequest{ctx: ctx, count: n, done: make(chan struct{})}
	select {
	case c.tso.reqs <- r:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-c.tso.stopc:
		return 0, ErrClosed
	}
	select {
	case <-r.done:
		return r.ts, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Collectors returns the client's metrics, for a process's registry.
func (c *Client) Collectors() []prometheus.Collector {
	return []prometheus.Collector{c.tso.rpcSeconds, c.tso.batchSize}
}

func (b *tsoBatcher) stop() {
	select {
	case <-b.stopc:
	default:
		close(b.stopc)
	}
}

func (b *tsoBatcher) run() {
	var stream pdpb.PD_TsoClient
	var streamAddr string
	var cancelStream context.CancelFunc
	defer func() {
		if cancelStream != nil {
			cancelStream()
		}
	}()
	batch := make([]*tsoRequest, 0, b.c.opts.MaxTSOBatch)
	for {
		batch = batch[:0]
		total := 0
		select {
		case <-b.stopc:
			b.drain(ErrClosed)
			return
		case r := <-b.reqs:
			batch = append(batch, r)
			total += int(r.count)
		}
	collect:
		for total < b.c.opts.MaxTSOBatch {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
				total += int(r.count)
			default:
				break collect
			}
		}
		for attempt := 0; ; attempt++ {
			live := batch[:0]
			for _, r := range batch {
				if r.ctx.Err() != nil {
					r.err = r.ctx.Err()
					close(r.done)
				} else {
					live = append(live, r)
				}
			}
			batch = live
			if len(batch) == 0 {
				break
			}
			if stream == nil {
				pc, addr, err := b.c.leaderClient(b.c.ctx)
				if err == nil {
					sctx, cancel := context.WithCancel(b.c.ctx)
					s, serr := pc.Tso(sctx)
					if serr != nil {
						cancel()
						err = serr
						b.c.leaderGone(addr, "")
					} else {
						stream, cancelStream, streamAddr = s, cancel, addr
					}
				}
				if err != nil {
					if !b.backoff(attempt) {
						b.fail(batch, ErrClosed)
						return
					}
					continue
				}
			}
			want := uint32(0)
			for _, r := range batch {
				want += r.count
			}
			start := time.Now()
			// A leader that does not answer within TSOTimeout is given up:
			// one cut off by the network answers nothing and reports no
			// error, and every write of every region this client serves
			// would wait on it until the cut healed.
			timeout := time.AfterFunc(b.c.opts.TSOTimeout, cancelStream)
			last, err := b.fetch(stream, want)
			timedOut := !timeout.Stop()
			b.rpcSeconds.Observe(time.Since(start).Seconds())
			b.batchSize.Observe(float64(want))
			if err != nil || timedOut {
				// (An answer that came as the timeout cancelled the stream
				// is used; the stream is not.)
				cancelStream()
				stream, cancelStream = nil, nil
				hint := ""
				if e, ok := err.(*hintError); ok {
					hint = e.hint
				}
				if timedOut {
					b.c.log.Warn("PD leader did not answer a timestamp request in time; looking for the leader again",
						"pd", streamAddr, "timeout", b.c.opts.TSOTimeout)
				}
				b.c.leaderGone(streamAddr, hint)
			}
			if err != nil {
				if !b.backoff(attempt) {
					b.fail(batch, ErrClosed)
					return
				}
				continue
			}
			next := last - uint64(want) + 1
			for _, r := range batch {
				r.ts = next
				next += uint64(r.count)
				close(r.done)
			}
			break
		}
	}
}

type hintError struct {
	hint string
	msg  string
}

func (e *hintError) Error() string { return e.msg }

func (b *tsoBatcher) fetch(stream pdpb.PD_TsoClient, n uint32) (uint64, error) {
	if err := stream.Send(&pdpb.TsoRequest{Header: b.c.header(), Count: n}); err != nil {
		return 0, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return 0, err
	}
	if e := resp.GetHeader().GetError(); e != nil && e.GetType() != pdpb.ErrorType_OK {
		return 0, &hintError{hint: e.GetLeaderAddr(), msg: e.GetMessage()}
	}
	if resp.GetCount() != n {
		return 0, fmt.Errorf("pdclient: asked for %d timestamps, got %d", n, resp.GetCount())
	}
	return resp.GetTimestamp(), nil
}

func (b *tsoBatcher) backoff(attempt int) bool {
	return sleepBackoff(b.c.ctx, attempt) == nil
}

func (b *tsoBatcher) fail(batch []*tsoRequest, err error) {
	for _, r := range batch {
		r.err = err
		close(r.done)
	}
}

func (b *tsoBatcher) drain(err error) {
	for {
		select {
		case r := <-b.reqs:
			r.err = err
			close(r.done)
		default:
			return
		}
	}
}
