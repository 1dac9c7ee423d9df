package etcdapi

import (
	"errors"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/proto/kvpb"
)

// errDuplicateWatchID is etcd's message for a watch ID already in use on
// the stream.
var errDuplicateWatchID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")

type watchServer struct {
	pb.UnimplementedWatchServer
	s *Server
}

// watchStream multiplexes one etcd Watch stream's watchers, each a
// client watch merged over every region of its range.
type watchStream struct {
	s      *Server
	stream pb.Watch_WatchServer

	sendMu sync.Mutex // serializes stream.Send

	mu      sync.Mutex
	watches map[int64]*streamWatch
	nextID  int64
	wg      sync.WaitGroup
}

// streamWatch is one watcher of a stream; done closes when its last
// response was sent.
type streamWatch struct {
	cw   *client.Watch
	done chan struct{}
}

func (w *watchServer) Watch(stream pb.Watch_WatchServer) error {
	ws := &watchStream{s: w.s, stream: stream, watches: map[int64]*streamWatch{}}
	defer ws.closeAll()
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil // the client went away or the stream ended
		}
		switch x := req.GetRequestUnion().(type) {
		case *pb.WatchRequest_CreateRequest:
			ws.create(x.CreateRequest)
		case *pb.WatchRequest_CancelRequest:
			ws.cancel(x.CancelRequest.GetWatchId())
		case *pb.WatchRequest_ProgressRequest:
			ws.mu.Lock()
			for _, sw := range ws.watches {
				sw.cw.RequestProgress()
			}
			ws.mu.Unlock()
		}
	}
}

func (ws *watchStream) send(r *pb.WatchResponse) error {
	ws.sendMu.Lock()
	defer ws.sendMu.Unlock()
	return ws.stream.Send(r)
}

func (ws *watchStream) create(cr *pb.WatchCreateRequest) {
	ws.mu.Lock()
	id := cr.GetWatchId()
	if id == 0 {
		for ws.watches[ws.nextID] != nil {
			ws.nextID++
		}
		id = ws.nextID
		ws.nextID++
	} else if ws.watches[id] != nil {
		ws.mu.Unlock()
		_ = ws.send(&pb.WatchResponse{Header: ws.s.header(0, 0), WatchId: id, Created: true, Canceled: true, CancelReason: errDuplicateWatchID.Error()})
		return
	}
	var req kvpb.WatchCreateRequest
	if err := recode(cr, &req); err != nil {
		ws.mu.Unlock()
		_ = ws.send(&pb.WatchResponse{Header: ws.s.header(0, 0), WatchId: id, Created: true, Canceled: true, CancelReason: err.Error()})
		return
	}
	req.WatchId = 0
	if len(req.Key) == 0 {
		req.Key = []byte{0} // etcd: an empty key means the first key
	}
	sw := &streamWatch{cw: ws.s.cfg.Client.Watch(ws.stream.Context(), &req, client.WatchOptions{CreatedNotify: true,
		ProgressInterval: ws.s.cfg.ProgressNotifyInterval}), done: make(chan struct{})}
	ws.watches[id] = sw
	ws.wg.Add(1)
	ws.mu.Unlock()
	go func() {
		defer ws.wg.Done()
		defer close(sw.done)
		ws.forward(id, sw, cr.GetFragment())
	}()
}

// forward sends one watcher's responses, in order, until it ends.
func (ws *watchStream) forward(id int64, sw *streamWatch, fragment bool) {
	for r := range sw.cw.C {
		out := &pb.WatchResponse{Header: ws.s.header(r.Header.GetRevision(), r.Header.GetRaftTerm()), WatchId: id,
			Created: r.Created, Canceled: r.Canceled, CompactRevision: r.CompactRevision}
		if r.Canceled && r.Err != nil {
			out.CancelReason = r.Err.Error()
			if errors.Is(r.Err, client.ErrCompacted) {
				out.CancelReason = "etcdserver: mvcc: required revision has been compacted"
			}
		}
		for _, e := range r.Events {
			var me mvccpb.Event
			if err := recode(e, &me); err != nil {
				continue
			}
			out.Events = append(out.Events, &me)
		}
		if err := ws.sendFragmented(out, fragment); err != nil {
			sw.cw.Close()
			return
		}
		if r.Canceled {
			ws.mu.Lock()
			if ws.watches[id] == sw {
				delete(ws.watches, id)
			}
			ws.mu.Unlock()
			return
		}
	}
}

// sendFragmented sends a response, cut into fragments below the request
// size limit when the watcher asked for fragments (etcd's fragment flag:
// every piece but the last is marked).
func (ws *watchStream) sendFragmented(r *pb.WatchResponse, fragment bool) error {
	limit := ws.s.cfg.MaxRequestBytes
	if !fragment || len(r.Events) < 2 || proto.Size(r) <= limit {
		return ws.send(r)
	}
	events := r.Events
	for len(events) > 0 {
		part := proto.Clone(r).(*pb.WatchResponse)
		part.Events = nil
		size := proto.Size(part)
		n := 0
		for n < len(events) && (n == 0 || size+proto.Size(events[n])+8 <= limit) {
			size += proto.Size(events[n]) + 8
			n++
		}
		part.Events = events[:n]
		events = events[n:]
		part.Fragment = len(events) > 0
		if err := ws.send(part); err != nil {
			return err
		}
	}
	return nil
}

func (ws *watchStream) cancel(id int64) {
	ws.mu.Lock()
	sw := ws.watches[id]
	delete(ws.watches, id)
	ws.mu.Unlock()
	if sw == nil {
		return
	}
	sw.cw.Close()
	<-sw.done // no event of the watcher follows its cancel response
	_ = ws.send(&pb.WatchResponse{Header: ws.s.header(0, 0), WatchId: id, Canceled: true})
}

func (ws *watchStream) closeAll() {
	ws.mu.Lock()
	all := ws.watches
	ws.watches = map[int64]*streamWatch{}
	ws.mu.Unlock()
	for _, sw := range all {
		sw.cw.Close()
	}
	ws.wg.Wait()
}
