package pd

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/raftstore"
)

// testPD runs PD members in this process, each on its own in-memory FS,
// with loopback listeners on ports the OS picked.
type testPD struct {
	t        testing.TB
	names    []string
	initial  string
	peerLis  map[string]net.Listener
	peerAddr map[string]string
	fss      map[string]vfs.FS
	servers  map[string]*Server
	mu       sync.Mutex
	schedule ScheduleConfig
	// skew: how far each member's clock (Config.Now) is from the real one.
	skew map[string]*atomic.Int64
}

// setClock puts name's clock d from the real time (negative: behind).
func (p *testPD) setClock(name string, d time.Duration) { p.skew[name].Store(int64(d)) }

func testRaftConfig() raftstore.Config {
	return raftstore.Config{TickInterval: 20 * time.Millisecond, ElectionTicks: 10, HeartbeatTicks: 2, Workers: 2}
}

func newTestPD(t testing.TB, n int) *testPD {
	return newTestPDWithSchedule(t, n, ScheduleConfig{})
}

func newTestPDWithSchedule(t testing.TB, n int, sc ScheduleConfig) *testPD {
	p := &testPD{t: t, peerLis: map[string]net.Listener{}, peerAddr: map[string]string{}, fss: map[string]vfs.FS{},
		servers: map[string]*Server{}, schedule: sc, skew: map[string]*atomic.Int64{}}
	var parts []string
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("pd%d", i)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p.names = append(p.names, name)
		p.peerLis[name] = lis
		p.peerAddr[name] = lis.Addr().String()
		p.fss[name] = vfs.NewMem()
		p.skew[name] = &atomic.Int64{}
		parts = append(parts, name+"="+lis.Addr().String())
	}
	p.initial = strings.Join(parts, ",")
	var wg sync.WaitGroup
	for _, name := range p.names {
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			p.start(name)
		}(name)
	}
	wg.Wait()
	t.Cleanup(p.closeAll)
	return p
}

func (p *testPD) start(name string) *Server {
	p.t.Helper()
	p.mu.Lock()
	peer, addr, fs, skew := p.peerLis[name], p.peerAddr[name], p.fss[name], p.skew[name]
	p.peerLis[name] = nil
	p.mu.Unlock()
	if peer == nil {
		var err error
		if peer, err = net.Listen("tcp", addr); err != nil {
			p.t.Fatalf("relisten %s: %v", addr, err)
		}
	}
	client, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.t.Fatal(err)
	}
	s, err := NewServer(Config{
		Name: name, DataDir: "/pd", InitialCluster: p.initial,
		ClientListener: client, PeerListener: peer,
		Raft: testRaftConfig(), TSOWindow: time.Second, Schedule: p.schedule,
		FS: fs, Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
	})
	if err != nil {
		p.t.Fatalf("start %s: %v", name, err)
	}
	p.mu.Lock()
	p.servers[name] = s
	p.mu.Unlock()
	return s
}

func (p *testPD) stop(name string) {
	p.mu.Lock()
	s := p.servers[name]
	delete(p.servers, name)
	p.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

func (p *testPD) closeAll() {
	for _, n := range p.names {
		p.stop(n)
	}
}

// leader waits for a serving leader and returns its name.
func (p *testPD) leader() string {
	p.t.Helper()
	var name string
	waitFor(p.t, "a serving PD leader", 20*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for n, s := range p.servers {
			if s.IsLeader() {
				name = n
				return true
			}
		}
		return false
	})
	return name
}

func (p *testPD) server(name string) *Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.servers[name]
}

func (p *testPD) endpoints() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, n := range p.names {
		if s := p.servers[n]; s != nil {
			out = append(out, s.ClientAddr())
		}
	}
	return out
}

func (p *testPD) client() *pdclient.Client {
	p.t.Helper()
	p.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pdclient.New(ctx, p.endpoints(), pdclient.Options{RetryBudget: 20 * time.Second})
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(c.Close)
	return c
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
