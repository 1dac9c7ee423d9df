// Package client is Basalt's Go client: it routes each request to the
// region that holds its key, corrects its routing from the region errors
// stores return, and retries with backoff within a budget.
package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/proto/errorpb"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// Options configure a Client.
type Options struct {
	// RetryBudget bounds how long one call retries region errors when its
	// context has no deadline. Default 20 s.
	RetryBudget time.Duration

	// LocalStoreID and LocalKV: a client running inside a store calls that
	// store's KV service in process, not through gRPC. LocalKV gets the
	// store's gRPC client (for the calls it does not serve itself, like
	// streams) and returns the client to use.
	LocalStoreID uint64
	LocalKV      func(remote kvpb.KVClient) kvpb.KVClient

	// Logger gets warnings worth an operator's attention (a watch that
	// stopped advancing). Default: discarded.
	Logger *slog.Logger

	// DialAddr maps a store's published address, or a PD member's client
	// address, to the address to dial, for a client that reaches stores
	// and PD through NAT or a proxy (a store started with
	// --peer-addr-map). Connections are still cached by the published
	// address. Default: dial the published address.
	DialAddr func(addr string) string

	// ForwardWrites sends Put, DeleteRange and Txn to each store over one
	// stream, in batches (forward.go), instead of a gRPC call per write:
	// for a client carrying many callers' writes, as a store's own does.
	ForwardWrites bool
}

// Client is safe for concurrent use.
type Client struct {
	opts Options
	pd   *pdclient.Client

	mu      sync.Mutex
	regions *region.RegionTree
	leaders map[uint64]*metapb.Peer
	stores  map[uint64]string
	conns   map[string]*grpc.ClientConn
	// slowStores: stores that timed out a replica read, until when they
	// are tried last (replica_read.go).
	slowStores map[uint64]time.Time
	// missingPeers: per region, the peers of its cached descriptor whose
	// stores answered RegionNotFound; cleared when the region is learned
	// again or dropped (onRegionNotFound).
	missingPeers map[uint64]map[uint64]struct{}

	// resolveAsks: per region, the highest revision some watch of this
	// client asked the region to resolve past (mergedWatch.askLaggards).
	// The region's answer reaches every watcher it has, so the client's
	// other watches need not ask again.
	resolveAsksMu sync.Mutex
	resolveAsks   map[uint64]int64

	// writeStreams: per store connection, its Forward stream
	// (Options.ForwardWrites). closed: Close has begun; no goroutine
	// starts after it.
	writeStreams map[*grpc.ClientConn]*writeStream
	closed       bool

	bgCtx context.Context // ends at Close
	stop  context.CancelFunc
	bg    sync.WaitGroup
}

// New connects to a Basalt cluster through its PD endpoints.
func New(ctx context.Context, pdEndpoints []string, opts Options) (*Client, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RetryBudget == 0 {
		opts.RetryBudget = 20 * time.Second
	}
	pd, err := pdclient.New(ctx, pdEndpoints, pdclient.Options{DialAddr: opts.DialAddr})
	if err != nil {
		return nil, err
	}
	c := &Client{opts: opts, pd: pd, regions: region.NewRegionTree(), leaders: map[uint64]*metapb.Peer{},
		stores: map[uint64]string{}, conns: map[string]*grpc.ClientConn{}, resolveAsks: map[uint64]int64{}}
	bg, stop := context.WithCancel(context.Background())
	c.bgCtx, c.stop = bg, stop
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		c.followRouting(bg)
	}()
	return c, nil
}

// PD returns the client's PD client.
func (c *Client) PD() *pdclient.Client { return c.pd }

// Close closes every connection.
func (c *Client) Close() {
	c.stopBackground()
	c.mu.Lock()
	for _, cc := range c.conns {
		_ = cc.Close()
	}
	c.conns = map[string]*grpc.ClientConn{}
	c.mu.Unlock()
	c.pd.Close()
}

// stopBackground ends the client's goroutines (the routing subscription,
// the write streams) and waits for them.
func (c *Client) stopBackground() {
	c.stop()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.bg.Wait()
}

// route is where a request for a key goes.
type route struct {
	region *metapb.Region
	leader *metapb.Peer
	kv     kvpb.KVClient
	admin  kvpb.AdminClient
}

func (r route) context() *kvpb.Context {
	return &kvpb.Context{RegionId: r.region.GetId(), RegionEpoch: r.region.GetRegionEpoch(), Peer: r.leader}
}

// locate returns the cached region holding key, asking PD on a miss.
func (c *Client) locate(ctx context.Context, key []byte) (route, error) {
	c.mu.Lock()
	r := c.regions.Search(key)
	var leader *metapb.Peer
	if r != nil {
		leader = c.leaders[r.GetId()]
	}
	c.mu.Unlock()
	if r == nil || leader == nil {
		resp, err := c.pd.GetRegion(ctx, key)
		if err != nil {
			return route{}, err
		}
		if resp.GetRegion() == nil {
			return route{}, fmt.Errorf("client: no region holds key %q yet", key)
		}
		r, leader = resp.GetRegion(), resp.GetLeader()
		if leader == nil && len(r.GetPeers()) > 0 {
			leader = r.GetPeers()[0]
		}
		if !c.learn(r, leader) {
			// PD is behind the cache (a new PD leader whose descriptors
			// the stores have not corrected yet): the cache's newer region
			// is the better guess.
			r, leader = c.preferCached(key, r, leader)
		}
	}
	cc, err := c.storeConn(ctx, leader.GetStoreId())
	if err != nil {
		return route{}, err
	}
	kv := kvpb.NewKVClient(cc)
	if c.opts.LocalKV != nil && leader.GetStoreId() == c.opts.LocalStoreID {
		kv = c.opts.LocalKV(kv)
	} else if c.opts.ForwardWrites {
		if ws := c.writeStreamFor(cc, kv); ws != nil {
			kv = forwardingKV{KVClient: kv, ws: ws}
		}
	}
	return route{region: r, leader: leader, kv: kv, admin: kvpb.NewAdminClient(cc)}, nil
}

// learn caches r (and its leader, when known) unless the cache holds a
// newer epoch of it or of a region it overlaps; it reports whether r was
// taken.
func (c *Client) learn(r *metapb.Region, leader *metapb.Peer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	removed, err := c.regions.Update(r)
	if err != nil {
		return false
	}
	for _, o := range removed {
		delete(c.missingPeers, o.GetId())
		if o.GetId() != r.GetId() {
			delete(c.leaders, o.GetId())
		}
	}
	delete(c.missingPeers, r.GetId())
	if leader != nil {
		c.leaders[r.GetId()] = leader
	}
	return true
}

// preferCached returns the cached region holding key, with the best leader
// guess for it, in place of PD's older r; r and leader when nothing is
// cached there.
func (c *Client) preferCached(key []byte, r *metapb.Region, leader *metapb.Peer) (*metapb.Region, *metapb.Peer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cr := c.regions.Search(key)
	if cr == nil || len(cr.GetPeers()) == 0 {
		return r, leader
	}
	if l := c.leaders[cr.GetId()]; l != nil {
		return cr, l
	}
	if leader != nil && cr.GetId() == r.GetId() && region.FindPeerByID(cr, leader.GetId()) != nil {
		return cr, leader
	}
	return cr, cr.GetPeers()[0]
}

func (c *Client) storeConn(ctx context.Context, storeID uint64) (*grpc.ClientConn, error) {
	c.mu.Lock()
	addr, ok := c.stores[storeID]
	c.mu.Unlock()
	if !ok {
		st, err := c.pd.GetStore(ctx, storeID)
		if err != nil {
			return nil, err
		}
		addr = st.GetAddress()
		c.mu.Lock()
		c.stores[storeID] = addr
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cc := c.conns[addr]
	if cc == nil {
		target := addr
		if c.opts.DialAddr != nil {
			target = c.opts.DialAddr(addr)
		}
		var err error
		if cc, err = grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return nil, err
		}
		c.conns[addr] = cc
	}
	return cc, nil
}

// onRegionError corrects the cache from a region error; it reports whether
// the call should be retried.
func (c *Client) onRegionError(rt route, e *errorpb.Error) bool {
	switch d := e.GetDetail().(type) {
	case *errorpb.Error_NotLeader:
		if l := d.NotLeader.GetLeader(); l != nil && l.GetId() != rt.leader.GetId() {
			c.mu.Lock()
			c.leaders[rt.region.GetId()] = l
			c.mu.Unlock()
		} else {
			c.nextPeer(rt)
		}
	case *errorpb.Error_EpochNotMatch:
		c.mu.Lock()
		c.forgetLocked(rt.region.GetId())
		c.mu.Unlock()
		for _, r := range d.EpochNotMatch.GetCurrentRegions() {
			c.learn(r, nil)
		}
	case *errorpb.Error_RegionNotFound:
		c.onRegionNotFound(rt)
	case *errorpb.Error_ServerBusy:
		// The route is right; the store needs room (retryBusy waits).
	case *errorpb.Error_StoreNotMatch:
		c.mu.Lock()
		delete(c.stores, d.StoreNotMatch.GetRequestStoreId())
		delete(c.leaders, rt.region.GetId())
		c.mu.Unlock()
	default:
		c.mu.Lock()
		c.forgetLocked(rt.region.GetId())
		c.mu.Unlock()
	}
	return true
}

// nextPeer makes the region's next voter (after the one tried) the one to
// try, and forgets the unreachable store's address.
func (c *Client) nextPeer(rt route) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.stores, rt.leader.GetStoreId())
	peers := rt.region.GetPeers()
	for i, p := range peers {
		if p.GetId() == rt.leader.GetId() {
			c.leaders[rt.region.GetId()] = peers[(i+1)%len(peers)]
			return
		}
	}
	delete(c.leaders, rt.region.GetId())
}

// onRegionNotFound moves on to the descriptor's next peer whose store has
// not said it lacks the region: a store without a replica (removed, or not
// created yet) says nothing about the others, and a stale descriptor (from
// PD after a failover) still names live replicas, which will name the
// leader or return the current epoch. Only once every peer has said so is
// the region dropped, for PD to be asked again; going back to PD at once
// could be answered with the same stale descriptor, again and again.
func (c *Client) onRegionNotFound(rt route) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := rt.region.GetId()
	if cur := c.regions.GetByID(id); cur == nil || !region.EpochEqual(cur.GetRegionEpoch(), rt.region.GetRegionEpoch()) {
		// The route was not the cached descriptor (PD's, older than the
		// cache, or one replaced meanwhile): only its leader guess goes;
		// the next attempt routes by the cache or asks PD.
		delete(c.leaders, id)
		return
	}
	if c.missingPeers == nil {
		c.missingPeers = map[uint64]map[uint64]struct{}{}
	}
	missing := c.missingPeers[id]
	if missing == nil {
		missing = map[uint64]struct{}{}
		c.missingPeers[id] = missing
	}
	missing[rt.leader.GetId()] = struct{}{}
	peers := rt.region.GetPeers()
	start := 0
	for i, p := range peers {
		if p.GetId() == rt.leader.GetId() {
			start = i + 1
			break
		}
	}
	for k := range peers {
		p := peers[(start+k)%len(peers)]
		if _, ok := missing[p.GetId()]; !ok {
			c.leaders[id] = p
			return
		}
	}
	c.forgetLocked(id)
}

// forgetLocked drops a region from the cache with what is kept about it.
// Needs c.mu.
func (c *Client) forgetLocked(id uint64) {
	c.regions.Remove(id)
	delete(c.leaders, id)
	delete(c.missingPeers, id)
}

// errBudgetSpent is the cause of a context ended by withBudget.
var errBudgetSpent = errors.New("client: retry budget spent")

// withBudget bounds a request with no deadline of its own by RetryBudget.
// It bounds each region request, retries included, not a call made of
// many (a range or a range delete over regions): such a call may take
// longer while every part makes progress.
func (c *Client) withBudget(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, c.opts.RetryBudget, errBudgetSpent)
}

// do runs call against the region holding key, retrying region errors
// (which guarantee nothing was applied) with backoff until the budget ends.
// Transport failures are retried only for reads: a write may have applied.
func (c *Client) do(ctx context.Context, key []byte, read bool, call func(context.Context, route) (*kvpb.ResponseHeader, error)) error {
	_, callerDeadline := ctx.Deadline()
	ctx, cancel := c.withBudget(ctx)
	defer cancel()
	var last error
	var tries retryTries
	for {
		kind := retryUnreachable // PD or the store could not be reached
		rt, err := c.locate(ctx, key)
		if err == nil {
			var h *kvpb.ResponseHeader
			h, err = call(ctx, rt)
			if err == nil && h.GetRegionError() == nil {
				return nil
			}
			if err == nil {
				re := h.GetRegionError()
				kind = retryKindOf(rt, re)
				if kind == retryNever {
					return region.FromProto(re)
				}
				c.onRegionError(rt, re)
				err = region.FromProto(re)
			} else if notSent(err) || (read && retryableTransport(err)) {
				// The store is unreachable: try the region's next peer, which
				// will name (or become) the new leader.
				c.nextPeer(rt)
			} else {
				if read && status.Code(err) == codes.DeadlineExceeded {
					// The store did not answer in time (it may be gone and
					// its address not yet refusing): the next call of this
					// idempotent kind starts at another peer instead of
					// waiting on it again.
					c.nextPeer(rt)
				}
				if !callerDeadline && status.Code(err) == codes.DeadlineExceeded {
					// Our own budget ended this attempt, not the caller's
					// time (the store may report it a moment before our
					// context does). Last is the attempt's own error: a
					// write cut off in flight may have applied.
					return &GaveUpError{Budget: c.opts.RetryBudget, Last: err}
				}
				return err
			}
		}
		last = err
		wait := tries.next(kind)
		var re *region.Error
		if errors.As(err, &re) {
			// A busy store may say how long to stay away.
			wait = max(wait, time.Duration(re.Proto().GetServerBusy().GetBackoffMs())*time.Millisecond)
		}
		if err := sleepCtx(ctx, wait); err != nil {
			if errors.Is(context.Cause(ctx), errBudgetSpent) {
				// Our own budget ran out, not the caller's time.
				return &GaveUpError{Budget: c.opts.RetryBudget, Last: last}
			}
			return fmt.Errorf("client: gave up: %w (last error: %v)", err, last)
		}
	}
}

// backoffDelay is the wait before retry number attempt: doubling from
// 5 ms to 500 ms, with jitter over its upper half.
func backoffDelay(attempt int) time.Duration {
	d := min(5*time.Millisecond<<min(attempt, 7), 500*time.Millisecond)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func backoff(ctx context.Context, attempt int) error {
	return sleepCtx(ctx, backoffDelay(attempt))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Put writes key=value.
func (c *Client) Put(ctx context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	var out *kvpb.PutResponse
	err := c.do(ctx, req.GetKey(), false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
		r := req.ShallowCopy()
		r.Context = rt.context()
		resp, err := rt.kv.Put(ctx, r)
		out = resp
		return resp.GetHeader(), err
	})
	return out, err
}

// DeleteRange deletes a key or a range. A range over several regions is
// deleted region by region, in key order: each region's part is atomic
// and has its own revision, but the whole is not (a reader can see some
// regions' keys gone and others' not yet). The response sums the parts and
// carries the highest revision. If it fails part-way, the regions before
// the failure were deleted.
func (c *Client) DeleteRange(ctx context.Context, req *kvpb.DeleteRangeRequest) (*kvpb.DeleteRangeResponse, error) {
	end := req.GetRangeEnd()
	if len(end) == 0 {
		var out *kvpb.DeleteRangeResponse
		err := c.do(ctx, req.GetKey(), false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
			r := req.ShallowCopy()
			r.Context = rt.context()
			resp, err := rt.kv.DeleteRange(ctx, r)
			out = resp
			return resp.GetHeader(), err
		})
		return out, err
	}
	toEnd := len(end) == 1 && end[0] == 0 // etcd's "every key from Key on"
	total := &kvpb.DeleteRangeResponse{}
	cursor := req.GetKey()
	for {
		var part *kvpb.DeleteRangeResponse
		var regionEnd []byte
		err := c.do(ctx, cursor, false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
			r := req.ShallowCopy()
			r.Context = rt.context()
			r.Key = cursor
			regionEnd = rt.region.GetEndKey()
			if len(regionEnd) > 0 && (toEnd || bytes.Compare(regionEnd, end) < 0) {
				r.RangeEnd = regionEnd
			}
			resp, err := rt.kv.DeleteRange(ctx, r)
			part = resp
			return resp.GetHeader(), err
		})
		if err != nil {
			if total.Header != nil {
				return total, fmt.Errorf("client: delete range: deleted up to %q, then: %w", cursor, err)
			}
			return nil, err
		}
		if total.Header == nil || part.GetHeader().GetRevision() > total.Header.GetRevision() {
			total.Header = part.GetHeader()
		}
		total.Deleted += part.GetDeleted()
		total.PrevKvs = append(total.PrevKvs, part.GetPrevKvs()...)
		if len(regionEnd) == 0 || (!toEnd && bytes.Compare(regionEnd, end) >= 0) {
			return total, nil
		}
		cursor = regionEnd
	}
}

// Txn runs a single-region transaction. One whose keys lie in more than
// one region fails with an *ErrTxnSpansRegions before anything is sent,
// so nothing is applied.
func (c *Client) Txn(ctx context.Context, req *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	spans := txnSpans(req, nil)
	if len(spans) == 0 {
		return nil, errors.New("client: a transaction needs at least one key")
	}
	for refreshed := false; ; refreshed = true {
		var out *kvpb.TxnResponse
		err := c.do(ctx, spans[0].lo, false, func(ctx context.Context, rt route) (*kvpb.ResponseHeader, error) {
			if err := checkTxnSpans(rt.region, spans); err != nil {
				if refreshed {
					return nil, err
				}
				// The cache may be behind a merge that made the keys one
				// region's: ask PD once before failing.
				return nil, errRouteChanged
			}
			r := req.ShallowCopy()
			r.Context = rt.context()
			resp, err := rt.kv.Txn(ctx, r)
			out = resp
			return resp.GetHeader(), err
		})
		if !errors.Is(err, errRouteChanged) {
			return out, err
		}
		if err := c.refresh(ctx, spans[0].lo); err != nil {
			return nil, err
		}
	}
}

// Compact compacts the cluster at rev.
func (c *Client) Compact(ctx context.Context, rev int64, physical bool) error {
	rt, err := c.locate(ctx, []byte{0})
	if err != nil {
		return err
	}
	if _, err = rt.kv.Compact(ctx, &kvpb.CompactRequest{Revision: rev, Physical: physical}); err != nil {
		return err
	}
	// Every other store marks the regions it leads now, so no read below
	// rev succeeds once Compact returned. A store that cannot be reached
	// lost its leaderships or will take the revision from PD within a
	// second of returning (docs/client.md).
	stores, err := c.pd.GetAllStores(ctx, true)
	if err != nil {
		return nil // compacted; only the prompt marking is skipped
	}
	var wg sync.WaitGroup
	for _, st := range stores {
		if st.GetId() == rt.leader.GetStoreId() || st.GetState() != metapb.StoreState_Up {
			continue
		}
		wg.Add(1)
		go func(id uint64) {
			defer wg.Done()
			cc, err := c.storeConn(ctx, id)
			if err != nil {
				return
			}
			_, _ = kvpb.NewKVClient(cc).Compact(ctx, &kvpb.CompactRequest{Revision: rev, Local: true})
		}(st.GetId())
	}
	wg.Wait()
	return nil
}
