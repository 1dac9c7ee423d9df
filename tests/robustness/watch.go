package robustness

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

// recordedWatch is one client's watch of the traffic's prefix, from a
// revision on, as clientv3 delivers it (it resumes by itself after its
// store restarts).
type recordedWatch struct {
	start int64
	mu    sync.Mutex
	resps []watchcheck.Response
	errs  []error
	done  chan struct{}
}

func watchPrefix(ctx context.Context, cli *clientv3.Client, prefix string, start int64) *recordedWatch {
	w := &recordedWatch{start: start, done: make(chan struct{})}
	ch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(start))
	go func() {
		defer close(w.done)
		for resp := range ch {
			if err := resp.Err(); err != nil {
				w.mu.Lock()
				w.errs = append(w.errs, err)
				w.mu.Unlock()
				continue
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
	}()
	return w
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
