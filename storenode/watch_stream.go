package storenode

import (
	"sync"
	"sync/atomic"

	"github.com/basaltdb/basalt/proto/kvpb"
)

// watchStream is one client stream's outbound queue; its responses go out
// in order through one sender goroutine (kvService.Watch).
//
// Events and progress notifications count against watchBuffer: the apply
// path never waits for a slow reader, it cancels the watcher whose
// response found the queue full. Control responses (a watch created, a
// watch cancelled, with its reason) are queued past the bound, so the
// reason of a slow watcher's cancel reaches the client after the events
// queued before it, and the stream's other watchers go on once the reader
// catches up. There is at most one created and one cancel per watcher the
// client asked for, and the handler reads no more requests while
// watchBuffer control responses wait (waitControlRoom), so they are
// bounded too.
type watchStream struct {
	// mu is taken under a watcher's mu (publish, replay, createWatch),
	// never the other way round.
	mu      sync.Mutex
	queue   []queuedResponse
	counted int // queued responses that count against watchBuffer
	// controls: queued control responses. The stream's handler stops
	// reading requests while watchBuffer of them wait (waitControlRoom),
	// so a client that sends creates and never reads grows nothing.
	controls int

	// wake: something was queued (the sender waits on it); room: the
	// sender took a response off (waitRoom and waitControlRoom wait on
	// it, each rechecking its own condition, so a signal is never lost
	// to the other). Both hold at most one pending signal.
	wake   chan struct{}
	room   chan struct{}
	closed chan struct{}
	once   sync.Once
	nextID atomic.Int64
}

type queuedResponse struct {
	resp    *kvpb.WatchResponse
	counted bool
}

func newWatchStream() *watchStream {
	return &watchStream{wake: make(chan struct{}, 1), room: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (ws *watchStream) close() { ws.once.Do(func() { close(ws.closed) }) }

func (ws *watchStream) isClosed() bool {
	select {
	case <-ws.closed:
		return true
	default:
		return false
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// send queues an event or progress response without blocking; false when
// the stream holds watchBuffer of them already, or is closed.
func (ws *watchStream) send(r *kvpb.WatchResponse) bool {
	ws.mu.Lock()
	if ws.counted >= watchBuffer || ws.isClosed() {
		ws.mu.Unlock()
		return false
	}
	ws.queue = append(ws.queue, queuedResponse{resp: r, counted: true})
	ws.counted++
	ws.mu.Unlock()
	signal(ws.wake)
	return true
}

// sendControl queues a created or cancel response whatever the queue
// holds; false only once the stream is closed.
func (ws *watchStream) sendControl(r *kvpb.WatchResponse) bool {
	ws.mu.Lock()
	if ws.isClosed() {
		ws.mu.Unlock()
		return false
	}
	ws.queue = append(ws.queue, queuedResponse{resp: r})
	ws.controls++
	ws.mu.Unlock()
	signal(ws.wake)
	return true
}

// controlRoom reports whether fewer than watchBuffer control responses
// are queued.
func (ws *watchStream) controlRoom() bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.controls < watchBuffer
}

// waitControlRoom waits until fewer than watchBuffer control responses
// are queued; false once the stream is closed. Only for the handler's
// goroutine, before it takes the next request.
func (ws *watchStream) waitControlRoom() bool {
	for {
		if ws.controlRoom() {
			return !ws.isClosed()
		}
		select {
		case <-ws.room:
		case <-ws.closed:
			return false
		}
	}
}

// waitRoom waits for the sender to take a response off; false once the
// stream is closed. The caller retries its send: another may have taken
// the room.
func (ws *watchStream) waitRoom() bool {
	select {
	case <-ws.room:
		return true
	case <-ws.closed:
		return false
	}
}

// next takes the oldest queued response; nil when the queue is empty.
func (ws *watchStream) next() *kvpb.WatchResponse {
	ws.mu.Lock()
	if len(ws.queue) == 0 {
		ws.mu.Unlock()
		return nil
	}
	q := ws.queue[0]
	ws.queue[0] = queuedResponse{}
	ws.queue = ws.queue[1:]
	if len(ws.queue) == 0 {
		ws.queue = nil // let a burst's backing array go
	}
	if q.counted {
		ws.counted--
	} else {
		ws.controls--
	}
	ws.mu.Unlock()
	signal(ws.room)
	return q.resp
}
