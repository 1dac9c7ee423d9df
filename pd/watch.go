package pd

import (
	"sync"

	"github.com/basaltdb/basalt/proto/pdpb"
)

// watchHub fans routing changes out to WatchRegions subscribers. A
// subscriber that falls more than watchBuffer events behind is dropped (its
// stream ends with an error) and must rescan: it never slows heartbeats.
type watchHub struct {
	mu   sync.Mutex
	subs map[*watcher]struct{}
}

const watchBuffer = 4096

type watcher struct {
	ch      chan *pdpb.WatchRegionsResponse
	dropped chan struct{}
	once    sync.Once
}

func newWatchHub() *watchHub { return &watchHub{subs: make(map[*watcher]struct{})} }

func (h *watchHub) subscribe() *watcher {
	w := &watcher{ch: make(chan *pdpb.WatchRegionsResponse, watchBuffer), dropped: make(chan struct{})}
	h.mu.Lock()
	h.subs[w] = struct{}{}
	h.mu.Unlock()
	return w
}

func (h *watchHub) unsubscribe(w *watcher) {
	h.mu.Lock()
	delete(h.subs, w)
	h.mu.Unlock()
	w.once.Do(func() { close(w.dropped) })
}

func (h *watchHub) publish(ev *pdpb.WatchRegionsResponse) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.subs {
		select {
		case w.ch <- ev:
		default:
			delete(h.subs, w)
			w.once.Do(func() { close(w.dropped) })
		}
	}
}

func (h *watchHub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.subs {
		delete(h.subs, w)
		w.once.Do(func() { close(w.dropped) })
	}
}
