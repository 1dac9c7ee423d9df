package storenode

import (
	"errors"
	"io"
	"sync"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// Watches are per region, served by its leader. A new watcher is registered
// first (live events queue up for it), then the region's history from its
// start revision up to the revision at registration is replayed, then the
// queued live events above that revision follow: no event is lost or sent
// twice at the hand-over. A watcher whose response finds its stream holding
// watchBuffer responses the client has not read yet (or which has more than
// that queued while it catches up) is cancelled, and the reason reaches the
// client after what was queued before it (watchStream). It never slows
// writes (events are queued by the apply path without blocking) or the
// watchers of other streams, and its stream's other watchers go on once the
// client reads again.
const watchBuffer = 1024

// Cancel reasons.
const (
	reasonSlow          = "watcher is too slow: it fell behind and was cancelled; resume from the last revision received"
	reasonRegionChanged = "region changed (split, merge or leader moved): resubscribe to the new region from the last revision received"
	reasonCompacted     = "mvcc: required revision has been compacted"
	reasonStopping      = "store is stopping"
)

// errDuplicateWatchID: a create request reused a watch ID still live on its
// stream (etcd's message).
var errDuplicateWatchID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")

type watchHub struct {
	s           *Server
	mu          sync.Mutex
	byRegion    map[uint64]map[*watcher]struct{}
	resolvedMu  sync.Mutex
	resolvedRev map[uint64]int64
	// notifiedRev is the last resolved revision the region's watchers were
	// told (resolvedRev may be ahead: reads note theirs silently).
	notifiedRev map[uint64]int64
}

func newWatchHub(s *Server) *watchHub {
	return &watchHub{s: s, byRegion: map[uint64]map[*watcher]struct{}{}, resolvedRev: map[uint64]int64{},
		notifiedRev: map[uint64]int64{}}
}

type watcher struct {
	id       int64
	stream   *watchStream
	regionID uint64
	key, end []byte // end exclusive, nil: unbounded
	noPut    bool
	noDelete bool
	prevKV   bool
	progress bool
	// start: events below it are never sent (0: from the registration
	// revision on).
	start int64

	mu         sync.Mutex
	catchingUp bool
	replayedTo int64
	held       []*kvpb.WatchResponse // live responses queued while catching up
	canceled   bool
	// announced: the created response is queued. A cancel before it is
	// not sent: createWatch answers the create with it (created and
	// canceled at once), so a cancel never overtakes its created.
	announced     bool
	cancelReason  string
	cancelCompact int64
	// forget drops the watcher from its stream's list once it is
	// cancelled (set by the stream's handler).
	forget func()
	// lastSent is the highest revision sent (events or progress): a
	// progress notification never goes back below it.
	lastSent int64
}

func (h *watchHub) add(w *watcher) {
	h.mu.Lock()
	m := h.byRegion[w.regionID]
	if m == nil {
		m = map[*watcher]struct{}{}
		h.byRegion[w.regionID] = m
	}
	m[w] = struct{}{}
	h.mu.Unlock()
}

func (h *watchHub) remove(w *watcher) {
	h.mu.Lock()
	if m := h.byRegion[w.regionID]; m != nil {
		delete(m, w)
		if len(m) == 0 {
			delete(h.byRegion, w.regionID)
		}
	}
	h.mu.Unlock()
}

func (h *watchHub) watchers(regionID uint64) []*watcher {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*watcher, 0, len(h.byRegion[regionID]))
	for w := range h.byRegion[regionID] {
		out = append(out, w)
	}
	return out
}

func (h *watchHub) watchedRegions() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]uint64, 0, len(h.byRegion))
	for id := range h.byRegion {
		out = append(out, id)
	}
	return out
}

func (h *watchHub) resolved(regionID uint64) int64 {
	h.resolvedMu.Lock()
	defer h.resolvedMu.Unlock()
	return h.resolvedRev[regionID]
}

// cancel ends a watcher with a reason.
func (h *watchHub) cancel(w *watcher, reason string, compactRev int64) {
	w.mu.Lock()
	if w.canceled {
		w.mu.Unlock()
		return
	}
	w.canceled = true
	w.held = nil
	w.cancelReason, w.cancelCompact = reason, compactRev
	announced, forget := w.announced, w.forget
	w.mu.Unlock()
	h.remove(w)
	if forget != nil {
		forget()
	}
	if !announced {
		return // createWatch answers the create with the reason
	}
	// Past the queue's bound: the reason must reach the client, after the
	// events queued before it (watchStream).
	w.stream.sendControl(&kvpb.WatchResponse{WatchId: w.id, Canceled: true, CancelReason: reason, CompactRevision: compactRev})
}

// publish is MVCC's OnEvents: called on the raft worker after a write
// committed. It must not block.
func (h *watchHub) publish(r *mvcc.Region, rev int64, events []*kvpb.Event) {
	for _, w := range h.watchers(r.ID) {
		if rev < w.start {
			continue
		}
		evs := w.filter(events)
		if len(evs) == 0 {
			continue
		}
		resp := &kvpb.WatchResponse{Header: &kvpb.ResponseHeader{Revision: rev}, WatchId: w.id, Events: evs}
		w.mu.Lock()
		if w.canceled {
			w.mu.Unlock()
			continue
		}
		if w.catchingUp {
			if len(w.held) >= watchBuffer {
				w.mu.Unlock()
				h.cancel(w, reasonSlow, 0)
				continue
			}
			w.held = append(w.held, resp)
			w.mu.Unlock()
			continue
		}
		ok := w.stream.send(resp)
		if ok {
			w.lastSent = rev
		}
		w.mu.Unlock()
		if !ok {
			h.cancel(w, reasonSlow, 0)
		}
	}
}

// filter keeps the events a watcher wants, in order.
func (w *watcher) filter(events []*kvpb.Event) []*kvpb.Event {
	var out []*kvpb.Event
	for _, e := range events {
		if !region.Contains(w.key, w.end, e.GetKv().GetKey()) || region.IsSystemKey(e.GetKv().GetKey()) {
			continue // system keys (lease records) are never shown to users
		}
		if (e.GetType() == kvpb.Event_PUT && w.noPut) || (e.GetType() == kvpb.Event_DELETE && w.noDelete) {
			continue
		}
		if !w.prevKV && e.GetPrevKv() != nil {
			e = &kvpb.Event{Type: e.GetType(), Kv: e.GetKv()}
		}
		out = append(out, e)
	}
	return out
}

// noteResolved records a resolved revision a read drew, without telling
// the watchers: reads at or below it need no resolve of their own, and a
// progress request is answered with it, but a notification per read to
// every watcher of a busy region would cost a stream message per read per
// watcher. The resolver's next round (at most 100 ms away while the
// region has watchers) draws a later revision and notifies.
func (h *watchHub) noteResolved(regionID uint64, rev int64) {
	h.resolvedMu.Lock()
	if rev > h.resolvedRev[regionID] {
		h.resolvedRev[regionID] = rev
	}
	h.resolvedMu.Unlock()
}

// progress tells watchers that asked for progress notifications the
// region's new resolved revision.
//
// A revision a read noted (noteResolved) above rev is told instead, so
// reads drawing revisions all the time never starve the watchers of
// notifications.
func (h *watchHub) progress(regionID uint64, rev int64) {
	h.resolvedMu.Lock()
	rev = max(rev, h.resolvedRev[regionID])
	if rev <= h.notifiedRev[regionID] {
		h.resolvedMu.Unlock()
		return
	}
	h.resolvedRev[regionID] = rev
	h.notifiedRev[regionID] = rev
	h.resolvedMu.Unlock()
	for _, w := range h.watchers(regionID) {
		if w.progress {
			h.notify(w, rev, false)
		}
	}
}

// notify sends a progress notification at rev. A periodic one is skipped
// when an event at or above rev went out already; one the client asked for
// is always answered, never below what was sent.
func (h *watchHub) notify(w *watcher, rev int64, requested bool) {
	w.mu.Lock()
	if requested {
		rev = max(rev, w.lastSent)
	}
	if w.canceled || w.catchingUp || (rev <= w.lastSent && !requested) {
		w.mu.Unlock()
		return
	}
	ok := w.stream.send(&kvpb.WatchResponse{Header: &kvpb.ResponseHeader{Revision: rev}, WatchId: w.id, ResolvedRevision: rev})
	if ok {
		w.lastSent = rev
	}
	w.mu.Unlock()
	if !ok {
		h.cancel(w, reasonSlow, 0)
	}
}

// regionChanged cancels a region's watchers when it split, merged, moved
// leader or went away: they resubscribe with fresh routing.
func (h *watchHub) regionChanged(regionID uint64) {
	for _, w := range h.watchers(regionID) {
		h.cancel(w, reasonRegionChanged, 0)
	}
	h.resolvedMu.Lock()
	delete(h.resolvedRev, regionID)
	delete(h.notifiedRev, regionID)
	h.resolvedMu.Unlock()
}

func (h *watchHub) closeAll() {
	h.mu.Lock()
	var all []*watcher
	for _, m := range h.byRegion {
		for w := range m {
			all = append(all, w)
		}
	}
	h.mu.Unlock()
	for _, w := range all {
		h.cancel(w, reasonStopping, 0)
	}
}

// Watch serves one watch stream.
func (k *kvService) Watch(stream kvpb.KV_WatchServer) error {
	h := k.s.watches
	ws := newWatchStream()
	mine := map[int64]*watcher{}
	var mineMu sync.Mutex
	defer func() {
		ws.close()
		mineMu.Lock()
		for _, w := range mine {
			h.remove(w)
		}
		mineMu.Unlock()
	}()
	sendErr := make(chan error, 1)
	go func() {
		for {
			if ws.isClosed() {
				// The handler may have returned: no Send after it.
				sendErr <- errors.New("watch stream closed")
				return
			}
			if r := ws.next(); r != nil {
				if err := stream.Send(r); err != nil {
					sendErr <- err
					ws.close()
					return
				}
				continue
			}
			select {
			case <-ws.wake:
			case <-ws.closed:
				sendErr <- errors.New("watch stream closed")
				return
			case <-stream.Context().Done():
				// Ends a history replay waiting for room (waitRoom).
				ws.close()
				sendErr <- stream.Context().Err()
				return
			}
		}
	}()
	reqs := make(chan *kvpb.WatchRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- r:
			case <-ws.closed:
				return
			}
		}
	}()
	for {
		// A client that sends requests and reads no answers gets no more
		// read (watchStream's control bound); a closed stream falls
		// through to its error below.
		ws.waitControlRoom()
		select {
		case err := <-sendErr:
			return err
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case r := <-reqs:
			switch x := r.GetRequestUnion().(type) {
			case *kvpb.WatchRequest_CreateRequest:
				inUse := func(id int64) bool {
					mineMu.Lock()
					defer mineMu.Unlock()
					return mine[id] != nil
				}
				w := k.createWatch(ws, x.CreateRequest, inUse)
				if w != nil {
					mineMu.Lock()
					mine[w.id] = w
					mineMu.Unlock()
					forget := func() {
						mineMu.Lock()
						if mine[w.id] == w {
							delete(mine, w.id)
						}
						mineMu.Unlock()
					}
					w.mu.Lock()
					w.forget = forget
					canceled := w.canceled
					w.mu.Unlock()
					if canceled {
						forget() // cancelled before forget was set
					}
				}
			case *kvpb.WatchRequest_CancelRequest:
				mineMu.Lock()
				w := mine[x.CancelRequest.GetWatchId()]
				delete(mine, x.CancelRequest.GetWatchId())
				mineMu.Unlock()
				if w != nil {
					h.cancel(w, "canceled by the client", 0)
				}
			case *kvpb.WatchRequest_ProgressRequest:
				mineMu.Lock()
				ws2 := make([]*watcher, 0, len(mine))
				for _, w := range mine {
					ws2 = append(ws2, w)
				}
				mineMu.Unlock()
				for _, w := range ws2 {
					if x.ProgressRequest.GetResolve() {
						// Answered by the resolver's notification, which
						// every watcher of the region asking for progress
						// gets.
						k.s.demands.add(w.regionID)
						continue
					}
					if rev := h.resolved(w.regionID); rev > 0 {
						h.notify(w, rev, true)
					}
				}
			}
		}
	}
}

// createWatch registers a watcher, replays its history and switches it to
// live events. It answers on the stream with the created (or canceled)
// response first.
func (k *kvService) createWatch(ws *watchStream, c *kvpb.WatchCreateRequest, inUse func(int64) bool) *watcher {
	h := k.s.watches
	id := c.GetWatchId()
	fail := func(hdr *kvpb.ResponseHeader, reason string, compactRev int64) *watcher {
		ws.sendControl(&kvpb.WatchResponse{Header: hdr, WatchId: id, Created: true, Canceled: true, CancelReason: reason, CompactRevision: compactRev})
		return nil
	}
	if id == 0 {
		id = ws.nextID.Add(1)
		for inUse(id) {
			id = ws.nextID.Add(1)
		}
	} else if inUse(id) {
		return fail(nil, errDuplicateWatchID.Error(), 0)
	}
	if err := k.s.mvcc.Limits().ValidateRange(&kvpb.RangeRequest{Key: c.GetKey(), RangeEnd: c.GetRangeEnd()}); err != nil {
		return fail(nil, err.Error(), 0)
	}
	failWith := func(err error) *watcher {
		var re *region.Error
		if errors.As(err, &re) {
			return fail(&kvpb.ResponseHeader{RegionError: re.Proto()}, err.Error(), 0)
		}
		return fail(nil, err.Error(), 0)
	}
	r, err := k.region(c.GetContext())
	if err == nil {
		err = k.canWatch(r, c)
	}
	if err != nil {
		return failWith(err)
	}
	end := region.ExclusiveEnd(c.GetKey(), c.GetRangeEnd())
	start := c.GetStartRevision()
	w := &watcher{id: id, stream: ws, regionID: r.ID, key: c.GetKey(), end: end, prevKV: c.GetPrevKv(),
		progress: c.GetProgressNotify(), start: start, catchingUp: true}
	for _, f := range c.GetFilters() {
		switch f {
		case kvpb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case kvpb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	h.add(w)
	// A leader change, split or merge between the check above and add
	// notified the region's watchers before this one was among them: check
	// again now that it would be told. A role change is published in the
	// region's status before the watchers are told; a split or merge shows
	// first in MVCC's descriptor (the status follows), which is why
	// canWatch checks the epoch against both.
	if err := k.canWatch(r, c); err != nil {
		h.remove(w)
		return failWith(err)
	}
	current := r.Revision()
	if start != 0 && start < r.CompactRevision() {
		h.remove(w)
		return fail(nil, reasonCompacted, r.CompactRevision())
	}
	w.mu.Lock()
	ok := ws.sendControl(&kvpb.WatchResponse{Header: &kvpb.ResponseHeader{Revision: current}, WatchId: id, Created: true})
	w.announced = ok
	if w.canceled {
		// Cancelled since add (its region changed, the store is
		// stopping): its cancel, which cancel left to us, follows the
		// created response, as for a watch cancelled later. (A created
		// response that is itself cancelled means the create was refused:
		// clients give up on it instead of watching the region again.)
		if ok {
			ws.sendControl(&kvpb.WatchResponse{WatchId: id, Canceled: true, CancelReason: w.cancelReason, CompactRevision: w.cancelCompact})
		}
		w.mu.Unlock()
		return nil
	}
	w.mu.Unlock()
	if !ok {
		h.remove(w)
		return nil
	}
	if start != 0 && start <= current {
		if !k.replay(w, r, start, current) {
			return nil
		}
	}
	// Hand over to live events: the queued ones above what was replayed.
	w.mu.Lock()
	w.catchingUp = false
	w.replayedTo = current
	held := w.held
	w.held = nil
	canceled := w.canceled
	overflow := false
	if !canceled {
		for _, resp := range held {
			if resp.GetHeader().GetRevision() <= current || resp.GetHeader().GetRevision() < start {
				continue
			}
			if !ws.send(resp) {
				overflow = true
				break
			}
			w.lastSent = resp.GetHeader().GetRevision()
		}
	}
	w.mu.Unlock()
	if overflow {
		h.cancel(w, reasonSlow, 0)
		return nil
	}
	if canceled {
		return nil
	}
	return w
}

// canWatch: this store leads r, the request's epoch is current and its
// range lies in r.
func (k *kvService) canWatch(r *mvcc.Region, c *kvpb.WatchCreateRequest) error {
	st := k.s.store.RegionStatus(r.ID)
	epoch := c.GetContext().GetRegionEpoch()
	switch {
	case st == nil || !st.Initialized:
		return region.RegionNotFound(r.ID)
	case !st.IsLeader():
		return region.NotLeader(r.ID, st.Leader)
	case !region.CheckEpoch(region.CmdRead, epoch, st.Region.GetRegionEpoch()):
		return region.EpochNotMatch(st.Region)
	case !region.CheckEpoch(region.CmdRead, epoch, r.Desc().GetRegionEpoch()):
		return region.EpochNotMatch(r.Desc())
	case !mvccInRegion(st.Region.GetStartKey(), st.Region.GetEndKey(), c.GetKey(), c.GetRangeEnd()):
		return region.KeyNotInRegion(c.GetKey(), st.Region)
	}
	return nil
}

// replay sends a watcher's history, whole revisions per response.
func (k *kvService) replay(w *watcher, r *mvcc.Region, from, to int64) bool {
	h := k.s.watches
	var batch []*kvpb.Event
	var batchRev int64
	flush := func() bool {
		if len(batch) == 0 {
			return true
		}
		resp := &kvpb.WatchResponse{Header: &kvpb.ResponseHeader{Revision: batchRev}, WatchId: w.id, Events: batch}
		batch = nil
		// Checked and queued under w.mu, as cancel marks the watcher under
		// it before queueing its cancel: no event follows the cancel.
		for {
			w.mu.Lock()
			if w.canceled {
				w.mu.Unlock()
				return false
			}
			if w.stream.send(resp) {
				w.lastSent = batchRev
				w.mu.Unlock()
				return true
			}
			w.mu.Unlock()
			if !w.stream.waitRoom() {
				return false
			}
		}
	}
	okAll := true
	err := k.s.mvcc.History(r, w.key, region.EtcdRangeEnd(w.end), from, to, func(e *kvpb.Event) bool {
		evs := w.filter([]*kvpb.Event{e})
		if len(evs) == 0 {
			return true
		}
		rev := e.GetKv().GetModRevision()
		if rev != batchRev && len(batch) >= 64 {
			if !flush() {
				okAll = false
				return false
			}
		}
		batch = append(batch, evs...)
		batchRev = rev
		return true
	})
	if err == nil && okAll {
		okAll = flush()
	}
	switch {
	case errors.Is(err, mvcc.ErrCompacted):
		h.cancel(w, reasonCompacted, r.CompactRevision())
		return false
	case err != nil:
		h.cancel(w, err.Error(), 0)
		return false
	case !okAll:
		h.cancel(w, reasonSlow, 0)
		return false
	}
	return true
}

func mvccInRegion(start, end, key, rangeEnd []byte) bool {
	e := region.ExclusiveEnd(key, rangeEnd)
	if !region.Contains(start, end, key) {
		return false
	}
	if e == nil {
		return len(end) == 0
	}
	return region.CompareEnd(e, end) <= 0
}
