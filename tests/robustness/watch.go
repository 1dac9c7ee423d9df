package robustness

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

// recordedWatch is one client's watch of the traffic's prefix, from a
// revision on, as clientv3 delivers it (clientv3 resumes a watch by itself
// after its store restarts; resumingWatch also restarts it on purpose).
type recordedWatch struct {
	start int64
	mu    sync.Mutex
	resps []watchcheck.Response
	errs  []error
	// restarts: watches started again from the last revision given.
	restarts int
	done     chan struct{}
}

// watchPrefix watches prefix from start for as long as ctx lasts, with
// progress notifications on (the stores send them every few hundred
// milliseconds in this suite, and the test asks for more).
func watchPrefix(ctx context.Context, cli *clientv3.Client, prefix string, start int64) *recordedWatch {
	w := &recordedWatch{start: start, done: make(chan struct{})}
	ch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(start), clientv3.WithProgressNotify())
	go func() {
		defer close(w.done)
		for resp := range ch {
			w.record(resp, true)
		}
	}()
	return w
}

// filteredWatch watches prefix from start like watchPrefix, with etcd's
// filter dropping puts (noPut) or deletes.
func filteredWatch(ctx context.Context, cli *clientv3.Client, prefix string, start int64, noPut bool) *recordedWatch {
	w := &recordedWatch{start: start, done: make(chan struct{})}
	filter := clientv3.WithFilterDelete()
	if noPut {
		filter = clientv3.WithFilterPut()
	}
	ch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(start), clientv3.WithProgressNotify(), filter)
	go func() {
		defer close(w.done)
		for resp := range ch {
			w.record(resp, true)
		}
	}()
	return w
}

// resumingWatch watches prefix the way a Kubernetes reflector does: it
// ends its watch every so often and starts a new one right after the last
// revision it was given (an event's or a bookmark's). Its responses, all
// watches' together, must read as one watch: nothing lost or repeated
// across the restarts.
func resumingWatch(ctx context.Context, cli *clientv3.Client, prefix string, start int64, rng *rand.Rand) *recordedWatch {
	w := &recordedWatch{start: start, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			next := max(start, w.lastRevision()+1)
			wctx, cancel := context.WithTimeout(ctx, time.Duration(300+rng.IntN(1500))*time.Millisecond)
			ch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(),
				clientv3.WithRev(next), clientv3.WithProgressNotify())
			for resp := range ch {
				// The ends this watch chose are not failures.
				w.record(resp, wctx.Err() == nil)
			}
			cancel()
			w.mu.Lock()
			w.restarts++
			w.mu.Unlock()
		}
	}()
	return w
}

// record keeps one response; a failed one is kept as an error when
// failuresCount.
func (w *recordedWatch) record(resp clientv3.WatchResponse, failuresCount bool) {
	if err := resp.Err(); err != nil {
		if failuresCount {
			w.mu.Lock()
			w.errs = append(w.errs, err)
			w.mu.Unlock()
		}
		return
	}
	if resp.Canceled || resp.Created {
		return
	}
	r := watchcheck.Response{Revision: resp.Header.Revision, Progress: resp.IsProgressNotify()}
	for _, ev := range resp.Events {
		// kvpb mirrors etcd's field numbers: re-decoding converts.
		b, err := proto.Marshal(ev)
		var e kvpb.Event
		if err == nil {
			err = proto.Unmarshal(b, &e)
		}
		if err != nil {
			w.mu.Lock()
			w.errs = append(w.errs, err)
			w.mu.Unlock()
			continue
		}
		r.Events = append(r.Events, &e)
	}
	w.mu.Lock()
	w.resps = append(w.resps, r)
	w.mu.Unlock()
}

// lastRevision is the highest revision the watch delivered.
func (w *recordedWatch) lastRevision() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last int64
	for _, r := range w.resps {
		for _, e := range r.Events {
			last = max(last, e.GetKv().GetModRevision())
		}
		if r.Progress {
			last = max(last, r.Revision)
		}
	}
	return last
}

// responses is a copy of what the watch delivered so far.
func (w *recordedWatch) responses() []watchcheck.Response {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]watchcheck.Response(nil), w.resps...)
}
