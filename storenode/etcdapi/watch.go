package etcdapi

import (
	"errors"
	"io"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/proto/kvpb"
)

// Etcd's messages for refused watches.
var (
	errDuplicateWatchID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
	errCompactedReason  = "etcdserver: mvcc: required revision has been compacted"
)

// refusedWatchID is the ID etcd answers a refused create with.
const refusedWatchID = -1

type watchServer struct {
	pb.UnimplementedWatchServer
	s *Server
}

// watchStream multiplexes one etcd Watch stream's watchers, each a
// client watch merged over every region of its range.
//
// As etcd's server does, a watcher's Created response is sent from the
// receive loop, in request order, before anything else of that watcher:
// clientv3 creates watches one at a time per stream and learns a watch's
// ID only from its Created response.
type watchStream struct {
	s      *Server
	stream pb.Watch_WatchServer

	sendMu sync.Mutex // serializes stream.Send; held across a fragmented response

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
		if errors.Is(err, io.EOF) {
			// The client stopped sending, not listening (etcd keeps
			// its watchers until the stream ends).
			<-stream.Context().Done()
			return nil
		}
		if err != nil {
			return nil
		}
		switch x := req.GetRequestUnion().(type) {
		case *pb.WatchRequest_CreateRequest:
			if x.CreateRequest != nil {
				ws.create(x.CreateRequest)
			}
		case *pb.WatchRequest_CancelRequest:
			if x.CancelRequest != nil {
				ws.cancel(x.CancelRequest.GetWatchId())
			}
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

// refuse answers a create etcd would refuse.
func (ws *watchStream) refuse(reason string) {
	rev, _ := ws.s.currentRevision(ws.stream.Context())
	_ = ws.send(&pb.WatchResponse{Header: ws.s.header(rev, 0), WatchId: refusedWatchID, Created: true, Canceled: true, CancelReason: reason})
}

func (ws *watchStream) create(cr *pb.WatchCreateRequest) {
	var req kvpb.WatchCreateRequest
	if err := recode(cr, &req); err != nil {
		ws.refuse(err.Error())
		return
	}
	if req.GetStartRevision() < 0 {
		ws.refuse(errCompactedReason)
		return
	}
	ctx := ws.stream.Context()
	// The Created response carries the revision the watch starts after.
	rev, err := ws.s.currentRevision(ctx)
	if err != nil {
		ws.refuse(etcdError(err).Error())
		return
	}
	if req.GetStartRevision() == 0 {
		req.StartRevision = rev + 1
	}
	req.WatchId = 0
	if len(req.Key) == 0 {
		req.Key = []byte{0} // etcd: an empty key means the first key
	}
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
		ws.refuse(errDuplicateWatchID.Error())
		return
	}
	sw := &streamWatch{done: make(chan struct{})}
	ws.watches[id] = sw
	ws.mu.Unlock()
	if err := ws.send(&pb.WatchResponse{Header: ws.s.header(rev, 0), WatchId: id, Created: true}); err != nil {
		close(sw.done)
		return
	}
	sw.cw = ws.s.cfg.Client.Watch(ctx, &req, client.WatchOptions{ProgressInterval: ws.s.cfg.ProgressNotifyInterval})
	ws.wg.Add(1)
	go func() {
		defer ws.wg.Done()
		defer close(sw.done)
		ws.forward(id, sw, cr.GetFragment())
	}()
}

// forward sends one watcher's responses, in order, until it ends.
func (ws *watchStream) forward(id int64, sw *streamWatch, fragment bool) {
	for r := range sw.cw.C {
		if r.Created {
			continue // sent when the watch was created
		}
		out := &pb.WatchResponse{Header: ws.s.headerOf(r.Header), WatchId: id,
			Canceled: r.Canceled, CompactRevision: r.CompactRevision}
		if r.Canceled {
			if out.Header.Revision == 0 {
				out.Header.Revision, _ = ws.s.currentRevision(ws.stream.Context())
			}
			if r.Err != nil {
				out.CancelReason = r.Err.Error()
				if errors.Is(r.Err, client.ErrCompacted) {
					out.CancelReason = errCompactedReason
				}
			}
		}
		for _, e := range r.Events {
			out.Events = append(out.Events, eventToEtcd(e))
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
// every piece but the last is marked). The pieces go out back to back:
// clientv3 drops another watcher's response that arrives between them.
func (ws *watchStream) sendFragmented(r *pb.WatchResponse, fragment bool) error {
	limit := ws.s.cfg.MaxRequestBytes
	if !fragment || len(r.Events) < 2 || proto.Size(r) <= limit {
		return ws.send(r)
	}
	ws.sendMu.Lock()
	defer ws.sendMu.Unlock()
	events := r.Events
	for len(events) > 0 {
		part := &pb.WatchResponse{Header: r.Header, WatchId: r.WatchId, Canceled: r.Canceled, CompactRevision: r.CompactRevision,
			CancelReason: r.CancelReason}
		size := proto.Size(part)
		n := 0
		for n < len(events) && (n == 0 || size+proto.Size(events[n])+8 <= limit) {
			size += proto.Size(events[n]) + 8
			n++
		}
		part.Events = events[:n]
		events = events[n:]
		part.Fragment = len(events) > 0
		if err := ws.stream.Send(part); err != nil {
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
	if sw == nil || sw.cw == nil {
		return
	}
	sw.cw.Close()
	<-sw.done // no event of the watcher follows its cancel response
	rev, _ := ws.s.currentRevision(ws.stream.Context())
	_ = ws.send(&pb.WatchResponse{Header: ws.s.header(rev, 0), WatchId: id, Canceled: true})
}

func (ws *watchStream) closeAll() {
	ws.mu.Lock()
	all := ws.watches
	ws.watches = map[int64]*streamWatch{}
	ws.mu.Unlock()
	for _, sw := range all {
		if sw.cw != nil {
			sw.cw.Close()
		}
	}
	ws.wg.Wait()
}
