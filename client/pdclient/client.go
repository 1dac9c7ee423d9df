// Package pdclient talks to the placement driver: it finds the PD leader,
// follows it across leader changes, batches timestamp requests (one RPC in
// flight carries every waiting request), and wraps PD's other calls with
// retries.
package pdclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
)

// Error is an error PD answered with.
type Error struct {
	Type    pdpb.ErrorType
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("pd: %s: %s", e.Type, e.Message) }

// Is matches errors of the same type: errors.Is(err, ErrNotBootstrapped).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Type == e.Type
}

// Sentinels for errors.Is.
var (
	ErrNotBootstrapped     = &Error{Type: pdpb.ErrorType_NOT_BOOTSTRAPPED}
	ErrAlreadyBootstrapped = &Error{Type: pdpb.ErrorType_ALREADY_BOOTSTRAPPED}
	ErrStoreNotFound       = &Error{Type: pdpb.ErrorType_STORE_NOT_FOUND}
	ErrStaleRegion         = &Error{Type: pdpb.ErrorType_STALE_REGION}
	ErrInvalidArgument     = &Error{Type: pdpb.ErrorType_INVALID_ARGUMENT}
	ErrClosed              = errors.New("pdclient: closed")
)

// retryable: the leader moved or is not ready; ask again.
func retryable(t pdpb.ErrorType) bool {
	return t == pdpb.ErrorType_NOT_LEADER || t == pdpb.ErrorType_UNKNOWN
}

// Options configure a Client.
type Options struct {
	// RetryBudget bounds how long one call keeps retrying when no context
	// deadline is set. Default 10 s.
	RetryBudget time.Duration
	// MaxTSOBatch bounds timestamps per TSO RPC. Default 10,000.
	MaxTSOBatch int
	// TSOTimeout bounds one TSO round trip: a leader that has not
	// answered by then is given up (its stream cancelled) and the leader
	// looked for again. Default 3 s.
	TSOTimeout time.Duration
	// CallTimeout bounds one attempt of a unary call (AllocID, GetRegion,
	// PutStore...): a leader that has not answered by then is treated as
	// gone and the call asks the leader again, within the call's own
	// deadline or retry budget. A leader cut off by the network answers
	// nothing and resets nothing, so without it a call would wait for the
	// connection's keepalive (5–15 s) or its whole budget. Default 3 s.
	CallTimeout time.Duration
	Logger      *slog.Logger
	// DialAddr maps a member's client address (an endpoint, or one PD
	// named in its members list) to the address to dial, for a client
	// that reaches PD through NAT or a proxy. Connections are still kept
	// under the member's address. Default: dial the member's address.
	DialAddr func(addr string) string
}

// Client is safe for concurrent use.
type Client struct {
	opts      Options
	log       *slog.Logger
	endpoints []string

	mu     sync.Mutex
	leader string
	conns  map[string]*grpc.ClientConn
	known  []string // every member's client address seen

	clusterID atomic.Uint64
	tso       *tsoBatcher
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// New connects to a PD cluster through any of endpoints (client addresses)
// and finds its leader.
func New(ctx context.Context, endpoints []string, opts Options) (*Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("pdclient: no PD endpoints")
	}
	if opts.RetryBudget == 0 {
		opts.RetryBudget = 10 * time.Second
	}
	if opts.MaxTSOBatch == 0 {
		opts.MaxTSOBatch = 10000
	}
	if opts.TSOTimeout == 0 {
		opts.TSOTimeout = 3 * time.Second
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = 3 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Client{opts: opts, log: opts.Logger, endpoints: endpoints, conns: make(map[string]*grpc.ClientConn),
		known: append([]string(nil), endpoints...)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.tso = newTSOBatcher(c)
	if _, err := c.findLeader(ctx); err != nil {
		c.Close()
		return nil, err
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.tso.run()
	}()
	return c, nil
}

// Close stops the client.
func (c *Client) Close() {
	c.cancel()
	c.tso.stop()
	c.wg.Wait()
	c.mu.Lock()
	for _, cc := range c.conns {
		_ = cc.Close()
	}
	c.conns = nil
	c.mu.Unlock()
}

// Keepalives on the connections to PD members. A member cut off by the
// network (no reset, no error) leaves its connection looking open: the
// streams on it (timestamps, region heartbeats, region watches) would
// wait on it until the kernel gave up, a quarter of an hour later. A ping
// unanswered for keepaliveTimeout, sent after keepaliveTime with nothing
// received, closes it, and gRPC also sets the socket's TCP user timeout
// to keepaliveTimeout, so the kernel closes it once data sent has gone
// unacknowledged that long; the streams then fail and are opened again
// on the leader. PD's servers accept pings this often
// (raftstore.ServerOptions).
const (
	keepaliveTime    = 10 * time.Second
	keepaliveTimeout = 5 * time.Second
)

// ClusterID is the cluster's ID, known once a PD answered.
func (c *Client) ClusterID() uint64 { return c.clusterID.Load() }

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns == nil {
		return nil, ErrClosed
	}
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	target := addr
	if c.opts.DialAddr != nil {
		target = c.opts.DialAddr(addr)
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}))
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// findLeader asks the known members who leads, until one knows.
func (c *Client) findLeader(ctx context.Context) (string, error) {
	ctx, cancel := c.budget(ctx)
	defer cancel()
	var lastErr error
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		cands := append([]string(nil), c.known...)
		c.mu.Unlock()
		for _, addr := range cands {
			cc, err := c.conn(addr)
			if err != nil {
				lastErr = err
				continue
			}
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			resp, err := pdpb.NewPDClient(cc).GetMembers(rctx, &pdpb.GetMembersRequest{})
			rcancel()
			if err != nil {
				lastErr = err
				continue
			}
			c.learnMembers(resp)
			if l := resp.GetLeader().GetClientAddr(); l != "" {
				c.mu.Lock()
				c.leader = l
				c.mu.Unlock()
				return l, nil
			}
			lastErr = errors.New("pdclient: PD has no leader yet")
		}
		if err := sleepBackoff(ctx, attempt); err != nil {
			return "", fmt.Errorf("pdclient: no PD leader found: %w (last error: %v)", err, lastErr)
		}
	}
}

func (c *Client) learnMembers(resp *pdpb.GetMembersResponse) {
	if id := resp.GetHeader().GetClusterId(); id != 0 {
		c.clusterID.Store(id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]bool{}
	for _, a := range c.known {
		seen[a] = true
	}
	for _, m := range resp.GetMembers() {
		if a := m.GetClientAddr(); a != "" && !seen[a] {
			c.known = append(c.known, a)
			seen[a] = true
		}
	}
}

// Members returns the PD members and the leader.
func (c *Client) Members(ctx context.Context) (*pdpb.GetMembersResponse, error) {
	var out *pdpb.GetMembersResponse
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.GetMembers(ctx, &pdpb.GetMembersRequest{Header: c.header()})
		out = r
		return r.GetHeader(), err
	})
	return out, err
}

func (c *Client) header() *pdpb.RequestHeader { return &pdpb.RequestHeader{ClusterId: c.ClusterID()} }

// budget gives ctx the default retry budget when it has no deadline.
func (c *Client) budget(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.RetryBudget)
}

func sleepBackoff(ctx context.Context, attempt int) error {
	d := min(10*time.Millisecond<<min(attempt, 6), 500*time.Millisecond)
	d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// leaderClient returns a client for the current leader.
func (c *Client) leaderClient(ctx context.Context) (pdpb.PDClient, string, error) {
	c.mu.Lock()
	l := c.leader
	c.mu.Unlock()
	if l == "" {
		var err error
		if l, err = c.findLeader(ctx); err != nil {
			return nil, "", err
		}
	}
	cc, err := c.conn(l)
	if err != nil {
		return nil, "", err
	}
	return pdpb.NewPDClient(cc), l, nil
}

// leaderGone forgets addr as the leader (or adopts the hint).
func (c *Client) leaderGone(addr, hint string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader == addr {
		c.leader = hint
	}
	if hint != "" {
		for _, a := range c.known {
			if a == hint {
				return
			}
		}
		c.known = append(c.known, hint)
	}
}

// call runs fn against the leader, following NOT_LEADER answers and
// transport errors until ctx (or the retry budget) ends. A PD error that is
// not about leadership is returned as *Error.
func (c *Client) call(ctx context.Context, fn func(context.Context, pdpb.PDClient) (*pdpb.ResponseHeader, error)) error {
	ctx, cancel := c.budget(ctx)
	defer cancel()
	var lastErr error
	for attempt := 0; ; attempt++ {
		pc, addr, err := c.leaderClient(ctx)
		if err == nil {
			var h *pdpb.ResponseHeader
			actx, acancel := context.WithTimeout(ctx, c.opts.CallTimeout)
			h, err = fn(actx, pc)
			acancel()
			if err == nil {
				if id := h.GetClusterId(); id != 0 {
					c.clusterID.Store(id)
				}
				e := h.GetError()
				if e == nil || e.GetType() == pdpb.ErrorType_OK {
					return nil
				}
				if !retryable(e.GetType()) {
					return &Error{Type: e.GetType(), Message: e.GetMessage()}
				}
				c.leaderGone(addr, e.GetLeaderAddr())
				err = &Error{Type: e.GetType(), Message: e.GetMessage()}
			} else {
				c.leaderGone(addr, "")
			}
		}
		lastErr = err
		if err := sleepBackoff(ctx, attempt); err != nil {
			return fmt.Errorf("pdclient: %w (last error: %v)", err, lastErr)
		}
	}
}

// AllocID returns the first of count new cluster-unique IDs.
func (c *Client) AllocID(ctx context.Context, count uint32) (uint64, error) {
	var id uint64
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.AllocID(ctx, &pdpb.AllocIDRequest{Header: c.header(), Count: count})
		id = r.GetId()
		return r.GetHeader(), err
	})
	return id, err
}

// IsBootstrapped reports whether a store bootstrapped the cluster.
func (c *Client) IsBootstrapped(ctx context.Context) (bool, error) {
	var b bool
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.IsBootstrapped(ctx, &pdpb.IsBootstrappedRequest{Header: c.header()})
		b = r.GetBootstrapped()
		return r.GetHeader(), err
	})
	return b, err
}

// Bootstrap creates the cluster with its first store and region.
func (c *Client) Bootstrap(ctx context.Context, store *metapb.Store, r *metapb.Region) error {
	return c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		resp, err := pc.Bootstrap(ctx, &pdpb.BootstrapRequest{Header: c.header(), Store: store, Region: r})
		return resp.GetHeader(), err
	})
}

// PutStore registers or updates a store.
func (c *Client) PutStore(ctx context.Context, s *metapb.Store) error {
	return c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.PutStore(ctx, &pdpb.PutStoreRequest{Header: c.header(), Store: s})
		return r.GetHeader(), err
	})
}

// GetStore returns a store.
func (c *Client) GetStore(ctx context.Context, id uint64) (*metapb.Store, error) {
	var s *metapb.Store
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.GetStore(ctx, &pdpb.GetStoreRequest{Header: c.header(), StoreId: id})
		s = r.GetStore()
		return r.GetHeader(), err
	})
	return s, err
}

// GetAllStores returns every store.
func (c *Client) GetAllStores(ctx context.Context, excludeTombstones bool) ([]*metapb.Store, error) {
	var out []*metapb.Store
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.GetAllStores(ctx, &pdpb.GetAllStoresRequest{Header: c.header(), ExcludeTombstoneStores: excludeTombstones})
		out = r.GetStores()
		return r.GetHeader(), err
	})
	return out, err
}

// StoreHeartbeat reports a store's statistics.
func (c *Client) StoreHeartbeat(ctx context.Context, stats *pdpb.StoreStats) error {
	return c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.StoreHeartbeat(ctx, &pdpb.StoreHeartbeatRequest{Header: c.header(), Stats: stats})
		return r.GetHeader(), err
	})
}

// GetRegion returns the region holding key and its leader (nil if none).
func (c *Client) GetRegion(ctx context.Context, key []byte) (*pdpb.GetRegionResponse, error) {
	var out *pdpb.GetRegionResponse
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.GetRegion(ctx, &pdpb.GetRegionRequest{Header: c.header(), RegionKey: key})
		out = r
		return r.GetHeader(), err
	})
	return out, err
}

// GetPrevRegion returns the region left of the one holding key.
func (c *Client) GetPrevRegion(ctx context.Context, key []byte) (*pdpb.GetRegionResponse, error) {
	var out *pdpb.GetRegionResponse
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.GetPrevRegion(ctx, &pdpb.GetRegionRequest{Header: c.header(), RegionKey: key})
		out = r
		return r.GetHeader(), err
	})
	return out, err
}

// GetRegionByID returns a region and its leader.
func (c *Client) GetRegionByID(ctx context.Context, id uint64) (*pdpb.GetRegionResponse, error) {
	var out *pdpb.GetRegionResponse
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.GetRegionByID(ctx, &pdpb.GetRegionByIDRequest{Header: c.header(), RegionId: id})
		out = r
		return r.GetHeader(), err
	})
	return out, err
}

// ScanRegions returns up to limit regions overlapping [start, end).
func (c *Client) ScanRegions(ctx context.Context, start, end []byte, limit int) ([]*pdpb.RegionInfo, error) {
	var out []*pdpb.RegionInfo
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.ScanRegions(ctx, &pdpb.ScanRegionsRequest{Header: c.header(), StartKey: start, EndKey: end, Limit: int32(limit)})
		out = r.GetRegions()
		return r.GetHeader(), err
	})
	return out, err
}

// AskBatchSplit allocates IDs for count new regions split from r.
func (c *Client) AskBatchSplit(ctx context.Context, r *metapb.Region, count uint32) ([]*pdpb.SplitID, error) {
	var out []*pdpb.SplitID
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		resp, err := pc.AskBatchSplit(ctx, &pdpb.AskBatchSplitRequest{Header: c.header(), Region: r, SplitCount: count})
		out = resp.GetIds()
		return resp.GetHeader(), err
	})
	return out, err
}

// ReportBatchSplit tells PD the regions a split on storeID produced.
func (c *Client) ReportBatchSplit(ctx context.Context, storeID uint64, regions []*metapb.Region) error {
	return c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.ReportBatchSplit(ctx, &pdpb.ReportBatchSplitRequest{Header: c.header(), Regions: regions, StoreId: storeID})
		return r.GetHeader(), err
	})
}

// GetCompactRevision returns the cluster's compaction revision.
func (c *Client) GetCompactRevision(ctx context.Context) (uint64, error) {
	var rev uint64
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.GetCompactRevision(ctx, &pdpb.GetCompactRevisionRequest{Header: c.header()})
		rev = r.GetRevision()
		return r.GetHeader(), err
	})
	return rev, err
}

// UpdateCompactRevision raises the compaction revision and returns it.
func (c *Client) UpdateCompactRevision(ctx context.Context, rev uint64) (uint64, error) {
	var out uint64
	err := c.call(ctx, func(ctx context.Context, pc pdpb.PDClient) (*pdpb.ResponseHeader, error) {
		r, err := pc.UpdateCompactRevision(ctx, &pdpb.UpdateCompactRevisionRequest{Header: c.header(), Revision: rev})
		out = r.GetRevision()
		return r.GetHeader(), err
	})
	return out, err
}

// OpenRegionHeartbeat opens a region heartbeat stream to the PD leader.
// The caller reopens it when it breaks (the leader may have moved).
//
// A member that lost its leadership but stays reachable (cut off for a
// moment, back as a follower) keeps the stream open and answers each
// heartbeat with NOT_LEADER: nothing breaks, and the new leader would
// never hear of the regions the caller leads (no leaders, no operator
// steps, routing frozen at what it loaded). The first such answer ends the
// stream: Recv returns the error, the stream's context is cancelled so the
// caller's next Send fails too, and the next OpenRegionHeartbeat goes to
// the leader the member named.
func (c *Client) OpenRegionHeartbeat(ctx context.Context) (pdpb.PD_RegionHeartbeatClient, error) {
	pc, addr, err := c.leaderClient(ctx)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	s, err := pc.RegionHeartbeat(sctx)
	if err != nil {
		cancel()
		c.leaderGone(addr, "")
		return nil, err
	}
	return &heartbeatStream{PD_RegionHeartbeatClient: s, c: c, addr: addr, cancel: cancel}, nil
}

// heartbeatStream is a region heartbeat stream that ends at the first
// NOT_LEADER answer (OpenRegionHeartbeat).
type heartbeatStream struct {
	pdpb.PD_RegionHeartbeatClient
	c      *Client
	addr   string
	cancel context.CancelFunc
}

func (s *heartbeatStream) Recv() (*pdpb.RegionHeartbeatResponse, error) {
	resp, err := s.PD_RegionHeartbeatClient.Recv()
	if err != nil {
		s.c.leaderGone(s.addr, "")
		s.cancel()
		return nil, err
	}
	if e := resp.GetHeader().GetError(); e.GetType() == pdpb.ErrorType_NOT_LEADER {
		s.c.leaderGone(s.addr, e.GetLeaderAddr())
		s.cancel()
		return nil, &Error{Type: e.GetType(), Message: e.GetMessage()}
	}
	return resp, nil
}

// LeaderGone tells the client the stream it opened to the leader broke, so
// the next call looks for the leader again.
func (c *Client) LeaderGone() {
	c.mu.Lock()
	c.leader = ""
	c.mu.Unlock()
}

// WatchRegions subscribes to routing changes at the PD leader: fn gets
// each batch of changed and removed regions. Once registered, ready is
// called; the caller rescans whatever it may have missed before it. It
// returns when the stream ends (the leader moved, the subscriber fell
// behind, or ctx is done); the caller subscribes again.
func (c *Client) WatchRegions(ctx context.Context, ready func(), fn func(changed []*pdpb.RegionInfo, removed []uint64)) error {
	pc, addr, err := c.leaderClient(ctx)
	if err != nil {
		return err
	}
	s, err := pc.WatchRegions(ctx, &pdpb.WatchRegionsRequest{Header: c.header()})
	if err != nil {
		c.leaderGone(addr, "")
		return err
	}
	for first := true; ; first = false {
		resp, err := s.Recv()
		if err != nil {
			c.leaderGone(addr, "")
			return err
		}
		if e := resp.GetHeader().GetError(); e != nil {
			c.leaderGone(addr, e.GetLeaderAddr())
			return &Error{Type: e.GetType(), Message: e.GetMessage()}
		}
		if first {
			ready()
			continue
		}
		fn(resp.GetChanged(), resp.GetRemoved())
	}
}
