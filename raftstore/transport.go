package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
)

// Transport carries raft messages and snapshots between stores.
type Transport interface {
	// Send queues msg for storeID. It never blocks; a message that cannot be
	// delivered is dropped (raft retransmits) and reported through the
	// transport's unreachable callback.
	Send(storeID uint64, msg *rspb.RaftMessage)
	// OpenSnapshotStream opens a stream for one snapshot to storeID.
	OpenSnapshotStream(ctx context.Context, storeID uint64) (SnapshotSender, error)
}

// SnapshotSender is the sending end of one snapshot stream.
type SnapshotSender interface {
	Send(*rspb.SnapshotChunk) error
	// CloseAndRecv ends the stream and waits for the receiver's verdict.
	CloseAndRecv() error
}

// Resolver maps a store ID to its raft transport address.
type Resolver interface {
	Resolve(storeID uint64) (string, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(storeID uint64) (string, error)

func (f ResolverFunc) Resolve(storeID uint64) (string, error) { return f(storeID) }

// GRPCTransport sends raft messages over one gRPC client stream per
// destination store, batching whatever queued while the previous batch was
// in flight.
type GRPCTransport struct {
	resolver      Resolver
	onUnreachable func(storeID uint64, msgs []*rspb.RaftMessage)
	log           *slog.Logger

	mu     sync.Mutex
	conns  map[uint64]*storeConn
	closed bool
	wg     sync.WaitGroup
}

// GRPCTransportOptions configure a GRPCTransport.
type GRPCTransportOptions struct {
	Resolver Resolver
	// OnUnreachable is told about messages that could not be delivered
	// (connection down, queue full), so raft can be told the peers are
	// unreachable. Optional.
	OnUnreachable func(storeID uint64, msgs []*rspb.RaftMessage)
	Logger        *slog.Logger
}

// maxQueuedMessages per destination store; beyond it messages are dropped.
const maxQueuedMessages = 64 * 1024

// maxBatchBytes bounds one RaftMessageBatch on the wire.
const maxBatchBytes = 8 << 20

// MaxGRPCMessageBytes is the largest gRPC message the raft transport sends;
// servers hosting RaftTransport must accept at least this much.
const MaxGRPCMessageBytes = 64 << 20

// Keepalives on the connections between stores. A peer that vanished
// without a reset (a partition, a host that lost power) leaves a
// connection that looks open: sends go into the kernel's buffers and are
// never reported unreachable, and a stream blocks once its window fills.
// A ping unanswered for keepaliveTimeout, sent after keepaliveTime with
// nothing received, closes it, so messages are reported unreachable and
// the next ones dial again. (gRPC sends no ping sooner than 10 s.)
const (
	keepaliveTime    = 10 * time.Second
	keepaliveTimeout = 5 * time.Second
)

// ServerOptions are what a gRPC server hosting RaftTransport needs: it
// accepts the transport's largest messages and its keepalive pings (by
// default a server closes connections that ping more often than every
// 5 minutes).
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxGRPCMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveTime / 2, PermitWithoutStream: true}),
	}
}

// NewGRPCTransport returns a transport that dials stores through r.
func NewGRPCTransport(o GRPCTransportOptions) *GRPCTransport {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &GRPCTransport{resolver: o.Resolver, onUnreachable: o.OnUnreachable, log: log, conns: make(map[uint64]*storeConn)}
}

type storeConn struct {
	t       *GRPCTransport
	storeID uint64
	signal  chan struct{}
	done    chan struct{}

	mu    sync.Mutex
	queue []*rspb.RaftMessage

	cc     *grpc.ClientConn
	ccAddr string
}

func (t *GRPCTransport) conn(storeID uint64) *storeConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	c := t.conns[storeID]
	if c == nil {
		c = &storeConn{t: t, storeID: storeID, signal: make(chan struct{}, 1), done: make(chan struct{})}
		t.conns[storeID] = c
		t.wg.Add(1)
		go c.run()
	}
	return c
}

// ClientConn returns the connection raft messages to storeID use, for
// other services the store serves there (merges ask every replica's store
// where it stands).
func (t *GRPCTransport) ClientConn(storeID uint64) (*grpc.ClientConn, error) {
	c := t.conn(storeID)
	if c == nil {
		return nil, errors.New("raftstore: transport closed")
	}
	return c.clientConn()
}

// Send implements Transport.
func (t *GRPCTransport) Send(storeID uint64, msg *rspb.RaftMessage) {
	c := t.conn(storeID)
	if c == nil {
		return
	}
	c.mu.Lock()
	if len(c.queue) >= maxQueuedMessages {
		c.mu.Unlock()
		t.unreachable(storeID, []*rspb.RaftMessage{msg})
		return
	}
	c.queue = append(c.queue, msg)
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

func (t *GRPCTransport) unreachable(storeID uint64, msgs []*rspb.RaftMessage) {
	if t.onUnreachable != nil && len(msgs) > 0 {
		t.onUnreachable(storeID, msgs)
	}
}

// Close stops every sender and closes every connection.
func (t *GRPCTransport) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	for _, c := range t.conns {
		close(c.done)
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// clientConn returns a connection to the store's current address,
// re-resolving so a restarted store on a new address is found.
func (c *storeConn) clientConn() (*grpc.ClientConn, error) {
	addr, err := c.t.resolver.Resolve(c.storeID)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc != nil && c.ccAddr == addr {
		return c.cc, nil
	}
	if c.cc != nil {
		_ = c.cc.Close()
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
		grpc.WithInitialWindowSize(16<<20), grpc.WithInitialConnWindowSize(32<<20),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxGRPCMessageBytes), grpc.MaxCallRecvMsgSize(MaxGRPCMessageBytes)))
	if err != nil {
		return nil, err
	}
	c.cc, c.ccAddr = cc, addr
	return cc, nil
}

func (c *storeConn) run() {
	defer c.t.wg.Done()
	defer func() {
		c.mu.Lock()
		if c.cc != nil {
			_ = c.cc.Close()
		}
		c.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.done
		cancel()
	}()
	var stream rspb.RaftTransport_RaftClient
	backoff := 50 * time.Millisecond
	var batch []*rspb.RaftMessage
	for {
		select {
		case <-c.done:
			return
		case <-c.signal:
		}
		for {
			c.mu.Lock()
			batch, c.queue = c.queue, batch[:0]
			c.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			if stream == nil {
				var err error
				stream, err = c.openStream(ctx)
				if err != nil {
					c.t.unreachable(c.storeID, batch)
					clear(batch)
					select {
					case <-c.done:
						return
					case <-time.After(backoff):
					}
					backoff = min(backoff*2, 2*time.Second)
					continue
				}
				backoff = 50 * time.Millisecond
			}
			if err := sendBatches(stream, batch); err != nil {
				c.t.log.Debug("raft stream broke", "to_store", c.storeID, "err", err)
				_, _ = stream.CloseAndRecv()
				stream = nil
				c.t.unreachable(c.storeID, batch)
			}
			clear(batch)
		}
	}
}

func (c *storeConn) openStream(ctx context.Context) (rspb.RaftTransport_RaftClient, error) {
	cc, err := c.clientConn()
	if err != nil {
		return nil, err
	}
	return rspb.NewRaftTransportClient(cc).Raft(ctx)
}

// sendBatches sends msgs in batches of at most maxBatchBytes.
func sendBatches(stream rspb.RaftTransport_RaftClient, msgs []*rspb.RaftMessage) error {
	b := &rspb.RaftMessageBatch{}
	size := 0
	for _, m := range msgs {
		sz := proto.Size(m)
		if size > 0 && size+sz > maxBatchBytes {
			if err := stream.Send(b); err != nil {
				return err
			}
			b = &rspb.RaftMessageBatch{}
			size = 0
		}
		b.Msgs = append(b.Msgs, m)
		size += sz
	}
	if len(b.Msgs) == 0 {
		return nil
	}
	return stream.Send(b)
}

// OpenSnapshotStream implements Transport.
func (t *GRPCTransport) OpenSnapshotStream(ctx context.Context, storeID uint64) (SnapshotSender, error) {
	c := t.conn(storeID)
	if c == nil {
		return nil, errors.New("raftstore: transport closed")
	}
	cc, err := c.clientConn()
	if err != nil {
		return nil, err
	}
	s, err := rspb.NewRaftTransportClient(cc).Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return snapshotClient{s}, nil
}

type snapshotClient struct {
	rspb.RaftTransport_SnapshotClient
}

func (s snapshotClient) CloseAndRecv() error {
	_, err := s.RaftTransport_SnapshotClient.CloseAndRecv()
	return err
}

// RaftServer serves the RaftTransport gRPC service for a store.
type RaftServer struct {
	rspb.UnimplementedRaftTransportServer
	store *Store
}

// NewRaftServer returns the gRPC service delivering to s. Register it on a
// server created with grpc.MaxRecvMsgSize(MaxGRPCMessageBytes).
func NewRaftServer(s *Store) *RaftServer { return &RaftServer{store: s} }

// Raft receives message batches until the sender closes the stream.
func (r *RaftServer) Raft(stream rspb.RaftTransport_RaftServer) error {
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&rspb.Done{})
		}
		if err != nil {
			return err
		}
		for _, m := range b.GetMsgs() {
			r.store.HandleRaftMessage(m)
		}
	}
}

// Snapshot receives one snapshot.
func (r *RaftServer) Snapshot(stream rspb.RaftTransport_SnapshotServer) error {
	if err := r.store.ReceiveSnapshot(stream); err != nil {
		return fmt.Errorf("receive snapshot: %w", err)
	}
	return stream.SendAndClose(&rspb.Done{})
}

// ReportUnreachable tells the regions whose messages to storeID were dropped
// that their peers there are unreachable, so leaders stop pipelining to them.
func (s *Store) ReportUnreachable(storeID uint64, msgs []*rspb.RaftMessage) {
	type key struct{ region, peer uint64 }
	seen := make(map[key]bool)
	for _, m := range msgs {
		k := key{m.GetRegionId(), m.GetToPeer().GetId()}
		if seen[k] || m.GetMessage() == nil {
			continue
		}
		seen[k] = true
		if p := s.getPeer(k.region); p != nil {
			to := k.peer
			p.pushOp(func(p *peer) { p.rn.ReportUnreachable(to) })
		}
	}
}
