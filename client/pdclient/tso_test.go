package pdclient

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/basaltdb/basalt/proto/pdpb"
)

// fakePD is a PD member for the client's tests: it names a leader, hands
// out timestamps from its own counter, and, once silent, answers nothing
// at all, as a member cut off by the network would (no error, no reset).
type fakePD struct {
	pdpb.UnimplementedPDServer
	addr   string
	leader atomic.Pointer[string]
	silent atomic.Bool
	ts     atomic.Uint64
}

func startFakePD(t *testing.T, firstTS uint64) *fakePD {
	t.Helper()
	return startFakePDWith(t, firstTS, nil)
}

// startFakePDWith starts a fakePD served as wrap makes it (a type
// embedding it that implements more of PD), or as itself when wrap is nil.
func startFakePDWith(t *testing.T, firstTS uint64, wrap func(*fakePD) pdpb.PDServer) *fakePD {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePD{addr: l.Addr().String()}
	f.leader.Store(&f.addr)
	f.ts.Store(firstTS)
	var srv pdpb.PDServer = f
	if wrap != nil {
		srv = wrap(f)
	}
	gs := grpc.NewServer()
	pdpb.RegisterPDServer(gs, srv)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop) // ends the handlers a silent member holds
	return f
}

func (f *fakePD) GetMembers(ctx context.Context, _ *pdpb.GetMembersRequest) (*pdpb.GetMembersResponse, error) {
	if f.silent.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	l := *f.leader.Load()
	return &pdpb.GetMembersResponse{Header: &pdpb.ResponseHeader{ClusterId: 1},
		Leader: &pdpb.Member{Name: l, ClientAddr: l}}, nil
}

func (f *fakePD) Tso(stream pdpb.PD_TsoServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		if f.silent.Load() {
			<-stream.Context().Done() // the request is never answered
			return stream.Context().Err()
		}
		ts := f.ts.Add(uint64(req.GetCount()))
		if err := stream.Send(&pdpb.TsoResponse{Header: &pdpb.ResponseHeader{ClusterId: 1}, Count: req.GetCount(), Timestamp: ts}); err != nil {
			return err
		}
	}
}

// A leader that stops answering (cut off, not dead: its connection stays
// open) must not hold timestamps up past TSOTimeout: the client gives its
// stream up and finds the new leader, which another member names. Before
// the timeout, a stores' writes all waited on the old leader for as long
// as the cut lasted (TestWritesGoOnWhilePDLeaderIsCutOff in
// tests/integration).
func TestTSOLeavesASilentLeader(t *testing.T) {
	a, b := startFakePD(t, 1000), startFakePD(t, 1<<40)
	b.leader.Store(&a.addr) // both name a
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, []string{a.addr, b.addr}, Options{TSOTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ts, err := c.GetTS(ctx)
	if err != nil || ts >= 1<<40 {
		t.Fatalf("from the first leader: %d, %v", ts, err)
	}

	// a goes silent mid-stream; b takes over.
	a.silent.Store(true)
	b.leader.Store(&b.addr)
	start := time.Now()
	gctx, gcancel := context.WithTimeout(ctx, 10*time.Second)
	defer gcancel()
	ts, err = c.GetTS(gctx)
	if err != nil {
		t.Fatalf("no timestamp within 10 s of the leader going silent: %v", err)
	}
	if ts < 1<<40 {
		t.Fatalf("timestamp %d, not from the new leader", ts)
	}
	// Expected: the timeout, then asking a (silent: a 1 s GetMembers
	// timeout) and b who leads. Logged, not asserted: without the timeout
	// the call waits on a until gctx ends, which fails above.
	t.Logf("the new leader's timestamp came %v after the old one went silent", time.Since(start).Round(time.Millisecond))
}

func (f *fakePD) AllocID(ctx context.Context, req *pdpb.AllocIDRequest) (*pdpb.AllocIDResponse, error) {
	if f.silent.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if l := *f.leader.Load(); l != f.addr {
		return &pdpb.AllocIDResponse{Header: &pdpb.ResponseHeader{ClusterId: 1,
			Error: &pdpb.Error{Type: pdpb.ErrorType_NOT_LEADER, LeaderAddr: l}}}, nil
	}
	return &pdpb.AllocIDResponse{Header: &pdpb.ResponseHeader{ClusterId: 1}, Id: f.ts.Add(uint64(req.GetCount()))}, nil
}

// A unary call to a leader that stops answering gives that attempt up
// after CallTimeout and asks the new leader, within the call's deadline.
// Before CallTimeout the attempt held the whole deadline.
func TestUnaryCallLeavesASilentLeader(t *testing.T) {
	a, b := startFakePD(t, 1000), startFakePD(t, 1<<40)
	b.leader.Store(&a.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, []string{a.addr, b.addr}, Options{CallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if id, err := c.AllocID(ctx, 1); err != nil || id >= 1<<40 {
		t.Fatalf("from the first leader: %d, %v", id, err)
	}
	a.silent.Store(true)
	b.leader.Store(&b.addr)
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	defer acancel()
	id, err := c.AllocID(actx, 1)
	if err != nil {
		t.Fatalf("no ID within 10 s of the leader going silent: %v", err)
	}
	if id < 1<<40 {
		t.Fatalf("ID %d, not from the new leader", id)
	}
}

// A member is dialed where DialAddr says, the endpoints given and the
// leader PD names alike: a store behind a proxy reaches PD only through it
// (tests/robustness's in-process crashes cut a store's PD connections
// there).
func TestDialAddrMapsMemberAddresses(t *testing.T) {
	a := startFakePD(t, 1000)
	published := "10.0.0.9:2379" // what a names as leader; nothing listens there
	a.leader.Store(&published)
	var mu sync.Mutex
	dialed := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := New(ctx, []string{"10.0.0.8:2379"}, Options{DialAddr: func(addr string) string {
		mu.Lock()
		dialed[addr]++
		mu.Unlock()
		return a.addr
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetTS(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if dialed["10.0.0.8:2379"] != 1 || dialed[published] != 1 || len(dialed) != 2 {
		t.Fatalf("dialed %v, want the endpoint and the leader's published address once each", dialed)
	}
}
