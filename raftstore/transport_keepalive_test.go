package raftstore

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
)

// countingRaftServer counts the raft messages it receives.
type countingRaftServer struct {
	rspb.UnimplementedRaftTransportServer
	got atomic.Int64
}

func (s *countingRaftServer) Raft(stream rspb.RaftTransport_RaftServer) error {
	for {
		b, err := stream.Recv()
		if err != nil {
			if err == io.EOF {
				return stream.SendAndClose(&rspb.Done{})
			}
			return err
		}
		s.got.Add(int64(len(b.GetMsgs())))
	}
}

// holdingProxy forwards TCP connections to a backend; while held, it
// passes no bytes either way on any connection (new ones are accepted and
// held too), as a partition that drops packets without resets does.
type holdingProxy struct {
	lis      net.Listener
	backend  string
	accepted atomic.Int64

	mu    sync.Mutex
	cond  *sync.Cond
	held  bool
	done  bool
	conns []net.Conn
	wg    sync.WaitGroup
}

func newHoldingProxy(t *testing.T, backend string) *holdingProxy {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdingProxy{lis: lis, backend: backend}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *holdingProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		b, err := net.Dial("tcp", p.backend)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, b)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, b)
		go p.pipe(b, c)
	}
}

// pipe copies chunk by chunk, waiting before each write while held.
func (p *holdingProxy) pipe(from, to net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.held && !p.done {
				p.cond.Wait()
			}
			done := p.done
			p.mu.Unlock()
			if done {
				return
			}
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = to.Close()
			return
		}
	}
}

func (p *holdingProxy) hold(h bool) {
	p.mu.Lock()
	p.held = h
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *holdingProxy) close() {
	p.lis.Close()
	p.mu.Lock()
	p.done = true
	p.cond.Broadcast()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// A connection to a store that went silent without a reset is given up by
// the keepalive, and the transport dials again: without keepalives it
// would send into the dead connection until TCP itself gave up, many
// minutes later.
func TestTransportDropsSilentConnection(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ServerOptions()...)
	recv := &countingRaftServer{}
	rspb.RegisterRaftTransportServer(srv, recv)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	proxy := newHoldingProxy(t, lis.Addr().String())
	var unreachable atomic.Int64
	tr := NewGRPCTransport(GRPCTransportOptions{
		Resolver:      ResolverFunc(func(uint64) (string, error) { return proxy.lis.Addr().String(), nil }),
		OnUnreachable: func(_ uint64, msgs []*rspb.RaftMessage) { unreachable.Add(int64(len(msgs))) },
	})
	defer tr.Close()
	send := func() { tr.Send(2, &rspb.RaftMessage{RegionId: 1}) }
	send()
	waitFor(t, "the first message", 10*time.Second, func() bool { return recv.got.Load() == 1 })

	proxy.hold(true)
	// Messages keep coming (as heartbeats would) while nothing passes.
	stop := make(chan struct{})
	var senders sync.WaitGroup
	senders.Add(1)
	go func() {
		defer senders.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				send()
			}
		}
	}()
	defer func() { close(stop); senders.Wait() }()
	waitFor(t, "the silent connection to be given up and a new one dialed", keepaliveTime+keepaliveTimeout+20*time.Second,
		func() bool { return proxy.accepted.Load() >= 2 })
	if unreachable.Load() == 0 {
		t.Fatal("messages sent into the dead connection were never reported unreachable")
	}

	// The partition heals: messages flow again.
	before := recv.got.Load()
	proxy.hold(false)
	waitFor(t, "messages after the heal", 30*time.Second, func() bool { return recv.got.Load() > before })
}
