package client

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/region"
)

// One watch over a range that spans any number of regions.
//
// Every region of the range is watched by its leader from a start
// revision, with progress notifications on. The client keeps, for each
// piece of the range (a segment), a frontier: the revision up to which it
// has received every event of that piece. A region's events arrive in
// revision order and its progress notifications carry its resolved
// revision, so each response from a region raises the frontier of the
// segments it watches. An event is released only once every segment's
// frontier reached its revision; the released stream is therefore ordered,
// and each revision arrives whole and in key order (a write is one
// region's, but a region that split since sends its part from each half).
//
// When a region's watch ends (split, merge, leader change, store restart,
// a slow consumer), its segments are watched again from their own
// frontiers: an event at or below the frontier of its key's segment was
// received already and is dropped, so nothing is lost or repeated.
//
// Events wait in memory for the slowest piece. A piece that stops
// advancing (its region lost its quorum, say) would have the others' events
// pile up without end, so the buffer is bounded (MaxBufferedBytes). When
// it is full, the watch keeps the lowest revisions, up to half the bound,
// and sheds the rest from the top: every event above the highest revision
// X it keeps is dropped, and every piece whose frontier is above X goes
// back to X and is parked (its region watch ends). Once every other piece
// has reached X, everything up to X is released and the parked pieces are
// watched again from X+1; the events they dropped come back from the
// stores' history (or the watch ends with ErrCompacted if the history was
// compacted meanwhile, as a resumed etcd watch would). X is at or above
// the lowest buffered revision, which is above the frontier, so the pieces
// at the frontier are never parked and each round releases at least one
// revision: a backlog larger than the bound is worked through in rounds
// instead of filling the buffer again and again with nothing released.

// WatchOptions adjust a watch.
type WatchOptions struct {
	// CreatedNotify: the first response has Created set, once every region
	// of the range is watched.
	CreatedNotify bool
	// ProgressInterval: with progress_notify, the longest quiet time before
	// a progress notification. Default 1 s (etcd's server uses 10 min).
	ProgressInterval time.Duration
	// MaxBufferedBytes bounds the events held back for a piece of the
	// range that lags (see above). Default DefaultWatchBufferBytes.
	MaxBufferedBytes int
}

// DefaultWatchBufferBytes is the default WatchOptions.MaxBufferedBytes.
const DefaultWatchBufferBytes = 64 << 20

// ErrCompacted ends a watch whose start revision was compacted away; the
// response carries the compaction revision.
var ErrCompacted = errors.New("client: required revision has been compacted")

// WatchResponse is one batch of a watch: whole revisions in order, or a
// progress notification, or the end.
type WatchResponse struct {
	// Header.Revision: the highest revision in Events, or for a progress
	// notification the revision every event at or below which was sent.
	Header          *kvpb.ResponseHeader
	Events          []*kvpb.Event
	Created         bool
	Canceled        bool
	CompactRevision int64
	// Err says why the watch was canceled.
	Err error
}

// IsProgressNotify: a bookmark, no events.
func (r *WatchResponse) IsProgressNotify() bool {
	return len(r.Events) == 0 && !r.Canceled && !r.Created && r.Header.GetRevision() != 0
}

// Watch is a running watch. Its channel closes when the watch ends: the
// context is done, Close is called, or a canceled response was sent.
type Watch struct {
	C        <-chan *WatchResponse
	progress chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}
}

// RequestProgress asks for a progress notification at the current
// frontier, as etcd's RequestProgress does.
func (w *Watch) RequestProgress() {
	select {
	case w.progress <- struct{}{}:
	default:
	}
}

// Close ends the watch and waits until everything it started stopped.
func (w *Watch) Close() {
	w.cancel()
	<-w.done
}

// Watch watches a key, range or prefix (req's key, range_end, start
// revision, filters, prev_kv and progress_notify, as etcd's). Without a
// start revision it starts after a fresh timestamp: it sees every write
// that begins after the call.
func (c *Client) Watch(ctx context.Context, req *kvpb.WatchCreateRequest, opts WatchOptions) *Watch {
	if opts.ProgressInterval == 0 {
		opts.ProgressInterval = time.Second
	}
	if opts.MaxBufferedBytes <= 0 {
		opts.MaxBufferedBytes = DefaultWatchBufferBytes
	}
	ctx, cancel := context.WithCancel(ctx)
	out := make(chan *WatchResponse, 16)
	w := &Watch{C: out, progress: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	m := &mergedWatch{c: c, req: req, opts: opts, out: out, msgs: make(chan subMsg, 64), buffered: map[int64][]*kvpb.Event{}}
	go func() {
		defer close(w.done)
		defer close(out)
		m.run(ctx, w.progress)
		cancel()
		m.wg.Wait()
	}()
	return w
}

// watchSegment is a piece of the watched range: [lo, hi), hi nil for +∞.
type watchSegment struct {
	lo, hi []byte
	// frontier: every event of the piece at or below it was received.
	frontier int64
	sub      *subWatch // nil: waiting to be watched again
	// parked: shed while the buffer was full; not watched again until
	// every unparked piece reached its frontier (unparkIfPassed).
	parked bool
}

// subWatch is one region's part of the watch.
type subWatch struct {
	lo, hi  []byte
	cancel  context.CancelFunc
	created bool
	// resolveNow takes a request for the region to resolve at once; its
	// stream's sender sends it (cap 1: requests coalesce).
	resolveNow chan struct{}
	// asked: the lowest held revision the last such request was for;
	// regionID: the region watched, from the created response. Only the
	// merging goroutine touches them.
	asked    int64
	regionID uint64
}

type subMsg struct {
	sub  *subWatch
	rt   route
	resp *kvpb.WatchResponse
	err  error // the stream failed (resp nil)
}

type mergedWatch struct {
	c    *Client
	req  *kvpb.WatchCreateRequest
	opts WatchOptions
	out  chan<- *WatchResponse
	msgs chan subMsg
	wg   sync.WaitGroup

	segs     []*watchSegment // sorted, covering the range
	buffered map[int64][]*kvpb.Event
	revs     revHeap
	// bufferedBytes: the encoded size of the events in buffered;
	// revBytes: the same per buffered revision.
	bufferedBytes int
	revBytes      map[int64]int
	// parkedAt: the revision the parked pieces wait at for the others to
	// reach (0: none parked).
	parkedAt int64
	// sent: the highest revision delivered (events or progress); nothing
	// at or below it is sent again.
	sent     int64
	lastSend time.Time
	// announced: the created response went out (or is not wanted).
	announced bool
	failures  int
	retry     <-chan time.Time
	// The frontier's last move, to report a watch that stopped advancing.
	lastFrontier  int64
	frontierMoved time.Time
	stallReported bool
}

// watchStallWarning: a watch whose frontier stood still this long is
// logged. Every region watched sends progress at least every 100 ms, so
// a frontier that stands still means a region has no working watch.
const watchStallWarning = 10 * time.Second

// noteStall logs, once per stall, a watch whose frontier stopped moving,
// with the state of each piece of its range.
func (m *mergedWatch) noteStall(now time.Time) {
	f := m.frontier()
	if f != m.lastFrontier || m.frontierMoved.IsZero() {
		m.lastFrontier, m.frontierMoved, m.stallReported = f, now, false
		return
	}
	if m.stallReported || now.Sub(m.frontierMoved) < watchStallWarning {
		return
	}
	m.stallReported = true
	var b strings.Builder
	for _, seg := range m.segs {
		state := "unwatched (retry pending)"
		if seg.parked {
			state = "parked while the buffer was full"
		}
		if seg.sub != nil {
			state = "watched"
			if !seg.sub.created {
				state = "watch requested, not created"
			}
		}
		fmt.Fprintf(&b, "[%q, %q) at %d: %s; ", seg.lo, seg.hi, seg.frontier, state)
	}
	m.c.opts.Logger.Warn("watch stopped advancing", "for", now.Sub(m.frontierMoved).Round(time.Second),
		"frontier", f, "failures", m.failures, "pieces", b.String())
}

func (m *mergedWatch) run(ctx context.Context, progress <-chan struct{}) {
	start := m.req.GetStartRevision() - 1
	if m.req.GetStartRevision() <= 0 {
		ts, err := m.c.pd.GetTS(ctx)
		if err != nil {
			m.send(ctx, &WatchResponse{Canceled: true, Err: err})
			return
		}
		start = int64(ts)
	}
	m.sent = start
	lo := append([]byte{}, m.req.GetKey()...)
	m.segs = []*watchSegment{{lo: lo, hi: region.ExclusiveEnd(lo, m.req.GetRangeEnd()), frontier: start}}
	m.announced = !m.opts.CreatedNotify
	m.subscribe(ctx)
	tick := time.NewTicker(m.opts.ProgressInterval / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-m.msgs:
			if !m.handle(ctx, msg) {
				return
			}
		case <-m.retry:
			m.retry = nil
			m.subscribe(ctx)
		case <-progress:
			if !m.progressNotify(ctx, true) {
				return
			}
		case now := <-tick.C:
			m.noteStall(now)
			if m.req.GetProgressNotify() && time.Since(m.lastSend) >= m.opts.ProgressInterval {
				if !m.progressNotify(ctx, false) {
					return
				}
			}
		}
	}
}

// send delivers a response; false when the watch is over.
func (m *mergedWatch) send(ctx context.Context, r *WatchResponse) bool {
	select {
	case m.out <- r:
		m.lastSend = time.Now()
		return !r.Canceled
	case <-ctx.Done():
		return false
	}
}

// handle applies one message from a region's watch; false ends the watch.
func (m *mergedWatch) handle(ctx context.Context, msg subMsg) bool {
	s := msg.sub
	if !m.owns(s) {
		return true // a watch already ended and replaced
	}
	if msg.err != nil {
		// The store is unreachable or the stream broke: the region's next
		// peer will name (or become) the leader.
		m.c.nextPeer(msg.rt)
		m.drop(s)
		return true
	}
	resp := msg.resp
	switch {
	case resp.GetCanceled() && resp.GetCompactRevision() > 0:
		m.send(ctx, &WatchResponse{Header: &kvpb.ResponseHeader{Revision: m.sent}, Canceled: true,
			CompactRevision: resp.GetCompactRevision(), Err: ErrCompacted})
		return false
	case resp.GetCanceled() && resp.GetHeader().GetRegionError() != nil:
		m.c.onRegionError(msg.rt, resp.GetHeader().GetRegionError())
		m.drop(s)
		return true
	case resp.GetCanceled() && resp.GetCreated() && !s.created:
		// Refused at creation for something other than routing: the request
		// itself is bad.
		m.send(ctx, &WatchResponse{Canceled: true, Err: fmt.Errorf("client: watch refused: %s", resp.GetCancelReason())})
		return false
	case resp.GetCanceled():
		// Region changed, this watcher fell behind, or the store is
		// stopping: watch the segments again from their frontiers.
		m.drop(s)
		return true
	case resp.GetCreated():
		s.created = true
		s.regionID = msg.rt.region.GetId()
		m.failures = 0
		return m.announce(ctx) && m.release(ctx)
	}
	top := resp.GetHeader().GetRevision()
	for _, e := range resp.GetEvents() {
		rev := e.GetKv().GetModRevision()
		top = max(top, rev)
		if seg := m.segmentOf(e.GetKv().GetKey()); seg == nil || seg.sub != s || rev <= seg.frontier {
			continue
		}
		if _, ok := m.buffered[rev]; !ok {
			heap.Push(&m.revs, rev)
		}
		m.buffered[rev] = append(m.buffered[rev], e)
		size := proto.Size(e)
		if m.revBytes == nil {
			m.revBytes = map[int64]int{}
		}
		m.revBytes[rev] += size
		m.bufferedBytes += size
	}
	top = max(top, resp.GetResolvedRevision())
	m.raise(s, top)
	if !m.release(ctx) {
		return false
	}
	if limit := m.opts.MaxBufferedBytes; m.bufferedBytes > limit && limit > 0 {
		m.park()
	}
	m.unparkIfPassed()
	m.askLaggards()
	return true
}

// park sheds the buffer from the top, as the comment at the top of this
// file says.
func (m *mergedWatch) park() {
	revs := slices.Clone(m.revs)
	slices.Sort(revs)
	keep, kept := revs[0], 0
	for _, rev := range revs {
		size := m.revBytes[rev]
		if kept > 0 && kept+size > m.opts.MaxBufferedBytes/2 {
			break
		}
		keep, kept = rev, kept+size
	}
	dropped := m.bufferedBytes - kept
	m.revs = m.revs[:0]
	for _, rev := range revs {
		if rev <= keep {
			m.revs = append(m.revs, rev) // ascending: a valid heap
		} else {
			delete(m.buffered, rev)
			delete(m.revBytes, rev)
		}
	}
	m.bufferedBytes = kept
	if dropped == 0 {
		return // one revision over the bound: kept whole, nothing to shed
	}
	var subs []*subWatch
	parked := 0
	for _, seg := range m.segs {
		if seg.frontier <= keep {
			continue
		}
		if seg.sub != nil && !slices.Contains(subs, seg.sub) {
			subs = append(subs, seg.sub)
		}
		seg.frontier, seg.parked = keep, true
		parked++
	}
	// A region watch that also covers a piece below keep ends too; that
	// piece is watched again soon (it is not parked). Parking is no
	// failure: the backoff does not grow.
	for _, s := range subs {
		m.endSub(s)
	}
	m.subscribeSoon()
	if m.parkedAt == 0 || keep < m.parkedAt {
		m.parkedAt = keep
	}
	m.c.opts.Logger.Warn("watch buffer full: pieces ahead parked until the others reach the highest revision kept",
		"frontier", m.frontier(), "kept up to", keep, "parked", parked, "dropped bytes", dropped, "limit", m.opts.MaxBufferedBytes)
}

// unparkIfPassed schedules the parked pieces to be watched again once
// every other piece reached the revision they were parked at.
func (m *mergedWatch) unparkIfPassed() {
	if m.parkedAt == 0 {
		return
	}
	for _, seg := range m.segs {
		if !seg.parked && seg.frontier < m.parkedAt {
			return
		}
	}
	for _, seg := range m.segs {
		seg.parked = false
	}
	m.parkedAt = 0
	m.subscribeSoon()
}

// askLaggards asks every region whose frontier holds back a buffered event
// to resolve now: without it the event waits for the region's periodic
// resolved revision (every 100 ms), with it one resolve. A region is asked
// once per held revision by the whole client, not per watch: the region
// answers every watcher it has, and the etcd front end runs one watch per
// etcd watcher, hundreds of them over the same regions.
func (m *mergedWatch) askLaggards() {
	if len(m.revs) == 0 {
		return
	}
	low := m.revs[0]
	for _, seg := range m.segs {
		s := seg.sub
		if seg.frontier >= low || s == nil || !s.created || s.asked >= low {
			continue
		}
		s.asked = low
		if !m.c.claimResolveAsk(s.regionID, low) {
			continue
		}
		select {
		case s.resolveNow <- struct{}{}:
		default: // one is queued already; its answer covers low too
		}
	}
}

// claimResolveAsk reports whether a watch should ask the region to resolve
// past rev: no other watch of the client asked it for rev or more.
func (c *Client) claimResolveAsk(regionID uint64, rev int64) bool {
	c.resolveAsksMu.Lock()
	defer c.resolveAsksMu.Unlock()
	if c.resolveAsks[regionID] >= rev {
		return false
	}
	c.resolveAsks[regionID] = rev
	return true
}

func (m *mergedWatch) owns(s *subWatch) bool {
	for _, seg := range m.segs {
		if seg.sub == s {
			return true
		}
	}
	return false
}

// drop ends a region's watch; its segments are watched again after a
// backoff.
func (m *mergedWatch) drop(s *subWatch) {
	m.endSub(s)
	m.retryLater()
}

// endSub ends a region's watch and leaves its segments unwatched.
func (m *mergedWatch) endSub(s *subWatch) {
	s.cancel()
	for _, seg := range m.segs {
		if seg.sub == s {
			seg.sub = nil
		}
	}
}

// subscribeSoon schedules watching the unwatched segments again without
// counting a failure (the watch shed them itself).
func (m *mergedWatch) subscribeSoon() {
	if m.retry == nil {
		m.retry = time.After(backoffDelay(0))
	}
}

// retryLater schedules watching the unwatched segments again, backing off
// while failures repeat.
func (m *mergedWatch) retryLater() {
	m.failures++
	if m.retry == nil {
		m.retry = time.After(backoffDelay(m.failures))
	}
}

// raise records that s delivered everything up to rev.
func (m *mergedWatch) raise(s *subWatch, rev int64) {
	for _, seg := range m.segs {
		if seg.sub == s && seg.frontier < rev {
			seg.frontier = rev
		}
	}
	// Neighbours watched by the same region at the same frontier are one
	// segment again.
	out := m.segs[:1]
	for _, seg := range m.segs[1:] {
		prev := out[len(out)-1]
		if prev.sub == seg.sub && prev.sub != nil && prev.frontier == seg.frontier {
			prev.hi = seg.hi
			continue
		}
		out = append(out, seg)
	}
	m.segs = out
}

func (m *mergedWatch) frontier() int64 {
	f := m.segs[0].frontier
	for _, seg := range m.segs[1:] {
		f = min(f, seg.frontier)
	}
	return f
}

// release delivers every buffered revision at or below the frontier,
// once the created response (when asked for) went out.
func (m *mergedWatch) release(ctx context.Context) bool {
	if !m.announced {
		return true
	}
	f := m.frontier()
	var evs []*kvpb.Event
	var top int64
	for len(m.revs) > 0 && m.revs[0] <= f {
		rev := heap.Pop(&m.revs).(int64)
		m.bufferedBytes -= m.revBytes[rev]
		delete(m.revBytes, rev)
		// A revision's events in key order, as a store sends them: one
		// write is one region's, but a region that split after it sends
		// its part from each half, in whatever order the halves answer (a
		// watch resumed from history after the split).
		at := m.buffered[rev]
		if len(at) > 1 { // nearly always one event: no sort, no allocation
			slices.SortStableFunc(at, func(a, b *kvpb.Event) int { return bytes.Compare(a.GetKv().GetKey(), b.GetKv().GetKey()) })
		}
		evs = append(evs, at...)
		delete(m.buffered, rev)
		top = rev
	}
	if len(evs) == 0 {
		return true
	}
	if top <= m.sent {
		panic(fmt.Sprintf("client: watch would deliver revision %d after %d", top, m.sent))
	}
	m.sent = top
	return m.send(ctx, &WatchResponse{Header: &kvpb.ResponseHeader{Revision: top}, Events: evs})
}

// progressNotify sends a bookmark at the frontier when it moved past what
// was sent; one asked for is sent even when it did not.
func (m *mergedWatch) progressNotify(ctx context.Context, requested bool) bool {
	if !m.announced {
		return true // the created response goes first
	}
	f := m.frontier()
	if f <= m.sent && !requested {
		return true
	}
	m.sent = max(m.sent, f)
	return m.send(ctx, &WatchResponse{Header: &kvpb.ResponseHeader{Revision: m.sent}})
}

// announce sends the created response once every region is watched.
func (m *mergedWatch) announce(ctx context.Context) bool {
	if m.announced {
		return true
	}
	for _, seg := range m.segs {
		// A parked piece was watched (its frontier rose) before it was shed.
		if !seg.parked && (seg.sub == nil || !seg.sub.created) {
			return true
		}
	}
	m.announced = true
	return m.send(ctx, &WatchResponse{Header: &kvpb.ResponseHeader{Revision: m.sent}, Created: true})
}

func (m *mergedWatch) segmentOf(key []byte) *watchSegment {
	i := sort.Search(len(m.segs), func(i int) bool { return bytes.Compare(m.segs[i].lo, key) > 0 }) - 1
	if i < 0 || !keyBefore(key, m.segs[i].hi) {
		return nil
	}
	return m.segs[i]
}

// subscribe watches every segment that has no region watch, one watch per
// region, each from the lowest frontier among its segments.
func (m *mergedWatch) subscribe(ctx context.Context) {
	for i := 0; i < len(m.segs); {
		if !m.segs[i].unwatched() {
			i++
			continue
		}
		j := i
		for j < len(m.segs) && m.segs[j].unwatched() {
			j++
		}
		lo, hi := m.segs[i].lo, m.segs[j-1].hi
		regions, err := m.c.regionsCovering(ctx, lo, hi)
		if err != nil {
			m.retryLater()
			return
		}
		for _, r := range regions {
			plo, phi := clamp(lo, hi, r)
			m.splitAt(plo)
			if phi != nil {
				m.splitAt(phi)
			}
			sctx, cancel := context.WithCancel(ctx)
			s := &subWatch{lo: plo, hi: phi, cancel: cancel, resolveNow: make(chan struct{}, 1)}
			start := int64(-1)
			for _, seg := range m.segs {
				if bytes.Compare(seg.lo, plo) >= 0 && keyBefore(seg.lo, phi) {
					seg.sub = s
					if start < 0 || seg.frontier < start {
						start = seg.frontier
					}
				}
			}
			m.wg.Add(1)
			go m.runSub(sctx, s, start+1)
		}
		i = 0 // segments were split; start over (the ones just watched are skipped)
	}
}

// unwatched: the piece waits to be watched again (and is not parked).
func (seg *watchSegment) unwatched() bool { return seg.sub == nil && !seg.parked }

// splitAt makes key a segment boundary.
func (m *mergedWatch) splitAt(key []byte) {
	seg := m.segmentOf(key)
	if seg == nil || bytes.Equal(seg.lo, key) {
		return
	}
	right := &watchSegment{lo: append([]byte(nil), key...), hi: seg.hi, frontier: seg.frontier, sub: seg.sub}
	seg.hi = right.lo
	i := sort.Search(len(m.segs), func(i int) bool { return bytes.Compare(m.segs[i].lo, key) > 0 })
	m.segs = append(m.segs, nil)
	copy(m.segs[i+1:], m.segs[i:])
	m.segs[i] = right
}

// runSub watches [s.lo, s.hi) at the leader of the region holding it and
// forwards what it hears until the stream ends.
func (m *mergedWatch) runSub(ctx context.Context, s *subWatch, start int64) {
	defer m.wg.Done()
	report := func(msg subMsg) {
		msg.sub = s
		select {
		case m.msgs <- msg:
		case <-ctx.Done():
		}
	}
	rt, err := m.c.locate(ctx, s.lo)
	if err != nil {
		report(subMsg{rt: rt, err: err})
		return
	}
	if !regionHolds(rt.region, s.lo, s.hi) {
		// The cache changed since the plan: let the plan run again.
		report(subMsg{rt: rt, resp: &kvpb.WatchResponse{Canceled: true, Header: &kvpb.ResponseHeader{
			RegionError: region.EpochNotMatch(rt.region).Proto()}}})
		return
	}
	stream, err := rt.kv.Watch(ctx)
	if err != nil {
		report(subMsg{rt: rt, err: err})
		return
	}
	create := &kvpb.WatchCreateRequest{Key: s.lo, RangeEnd: region.EtcdRangeEnd(s.hi), StartRevision: start, ProgressNotify: true,
		Filters: m.req.GetFilters(), PrevKv: m.req.GetPrevKv(), Context: rt.context()}
	if err := stream.Send(&kvpb.WatchRequest{RequestUnion: &kvpb.WatchRequest_CreateRequest{CreateRequest: create}}); err != nil {
		report(subMsg{rt: rt, err: err})
		return
	}
	// The stream's only sender from here on: requests to resolve now. A
	// failed send shows as a failed Recv below.
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ask := &kvpb.WatchRequest{RequestUnion: &kvpb.WatchRequest_ProgressRequest{ProgressRequest: &kvpb.WatchProgressRequest{Resolve: true}}}
		for {
			select {
			case <-s.resolveNow:
				if stream.Send(ask) != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		resp, err := stream.Recv()
		if err != nil {
			if ctx.Err() == nil {
				report(subMsg{rt: rt, err: err})
			}
			return
		}
		report(subMsg{rt: rt, resp: resp})
		if resp.GetCanceled() {
			return
		}
	}
}

// revHeap is a min-heap of buffered revisions.
type revHeap []int64

func (h revHeap) Len() int           { return len(h) }
func (h revHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h revHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *revHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *revHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
