// Package procs runs Basalt clusters as real processes for tests: the
// basalt binary is built once per test binary, every process listens on
// loopback ports picked free, and everything is stopped when the test ends.
package procs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/proto/metapb"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/basalt (once) and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "basalt-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "basalt")
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/basalt")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the test directory")
		}
		dir = parent
	}
}

var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{} // ports FreeAddr returned (or drew) in this binary
)

// FreeAddr returns a loopback address with a port nobody listens on, for
// a child process to bind. The port is drawn below the kernel's ephemeral
// range (ip_local_port_range): a port the kernel hands out (":0") is also
// what it gives outgoing connections, and one of them took such a port
// between this check and the child's bind often enough to fail a run.
//
// A port is handed out once per test binary: the children bind later, so
// a second call before the first child bound could otherwise draw it again
// (a store once drew its PD's peer port).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return freeAddr(t, "")
}

// FreeAddrOn is FreeAddr's port on host: an address for a process in a
// network namespace of its own (tests/netns), whose ports nothing else
// binds. The port is drawn and checked as FreeAddr's, so it is also
// unique in this test binary.
func FreeAddrOn(t testing.TB, host string) string {
	t.Helper()
	return freeAddr(t, host)
}

func freeAddr(t testing.TB, host string) string {
	t.Helper()
	lo, hi := ephemeralRange()
	for try := 0; try < 1000; try++ {
		port := 10000 + rand.IntN(lo-10000)
		if port >= lo && port <= hi {
			continue
		}
		handedOutMu.Lock()
		taken := handedOut[port]
		handedOut[port] = true
		handedOutMu.Unlock()
		if taken {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use
		}
		addr := l.Addr().String()
		l.Close()
		if host != "" {
			addr = net.JoinHostPort(host, strconv.Itoa(port))
		}
		return addr
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// ephemeralRange is the kernel's range for outgoing connections' ports.
func ephemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && l > 11000 {
				lo, hi = l, h
			}
		}
	}
	return lo, hi
}

// Proc is one basalt process.
type Proc struct {
	Name string
	Args []string
	Addr string
	Dir  string
	// Netns is the network namespace the process runs in ("": the test's
	// own): it is started as `ip netns exec Netns basalt ...`, which execs
	// in place, so PID and signals are basalt's own.
	Netns string
	cmd   *exec.Cmd
	done  chan struct{}
}

// PID returns the process's ID while it runs, or 0.
func (p *Proc) PID() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Cluster is PD members and stores, as processes.
type Cluster struct {
	t      testing.TB
	bin    string
	dir    string
	PDs    []*Proc
	Stores []*Proc
}

// Options shape a cluster.
type Options struct {
	PDs, Stores int
	// MaxStoreDownTime for PD's replica checker (default 30 m).
	MaxStoreDownTime time.Duration
	// StoreArgs are added to every store's command line.
	StoreArgs []string
	// StoreAddrs, when set, are the stores' addresses (one per store, from
	// FreeAddr), for a test that must know them before the stores start:
	// proxies between the stores, say.
	StoreAddrs []string
	// StoreArgsFor, when set, adds store i's own arguments (i from 0)
	// after StoreArgs.
	StoreArgsFor func(i int) []string
	// PDArgs are added to every PD member's command line.
	PDArgs []string
	// StoreNetns, when set (one per store), runs store i in network
	// namespace StoreNetns[i], listening on its IP (a port from
	// FreeAddrOn, unless StoreAddrs gives the address). The test reaches
	// it over the namespaces' network (tests/netns builds one).
	StoreNetns []Netns
	// PDNetns, when set (one per PD member), does the same for the PD
	// members: client and peer addresses on the namespace's IP.
	PDNetns []Netns
}

// Netns is a network namespace a process runs in, and its address there.
type Netns struct{ Name, IP string }

// Start runs a cluster and waits for it to serve.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: Binary(t), dir: t.TempDir()}
	t.Cleanup(c.Stop)
	var initial []string
	if o.PDNetns != nil && len(o.PDNetns) != o.PDs {
		t.Fatalf("procs: %d PD namespaces for %d PD members", len(o.PDNetns), o.PDs)
	}
	if o.StoreNetns != nil && len(o.StoreNetns) != o.Stores {
		t.Fatalf("procs: %d store namespaces for %d stores", len(o.StoreNetns), o.Stores)
	}
	for i := 0; i < o.PDs; i++ {
		name := fmt.Sprintf("pd%d", i+1)
		host, ns := "", ""
		if o.PDNetns != nil {
			host, ns = o.PDNetns[i].IP, o.PDNetns[i].Name
		}
		peer := freeAddr(t, host)
		initial = append(initial, name+"="+peer)
		c.PDs = append(c.PDs, &Proc{Name: name, Addr: freeAddr(t, host), Dir: filepath.Join(c.dir, name), Netns: ns})
		c.PDs[i].Args = []string{"pd", "--name", name, "--data-dir", c.PDs[i].Dir, "--client-addr", c.PDs[i].Addr,
			"--peer-addr", peer, "--max-replicas", strconv.Itoa(min(3, o.Stores))}
		if o.MaxStoreDownTime > 0 {
			c.PDs[i].Args = append(c.PDs[i].Args, "--max-store-down-time", o.MaxStoreDownTime.String())
		}
		c.PDs[i].Args = append(c.PDs[i].Args, o.PDArgs...)
	}
	for _, p := range c.PDs {
		p.Args = append(p.Args, "--initial-cluster", strings.Join(initial, ","))
		c.start(p)
	}
	if o.StoreAddrs != nil && len(o.StoreAddrs) != o.Stores {
		t.Fatalf("procs: %d store addresses for %d stores", len(o.StoreAddrs), o.Stores)
	}
	for i := 0; i < o.Stores; i++ {
		name := fmt.Sprintf("store%d", i+1)
		host, ns := "", ""
		if o.StoreNetns != nil {
			host, ns = o.StoreNetns[i].IP, o.StoreNetns[i].Name
		}
		addr := ""
		if o.StoreAddrs != nil {
			addr = o.StoreAddrs[i]
		} else {
			addr = freeAddr(t, host)
		}
		p := &Proc{Name: name, Addr: addr, Dir: filepath.Join(c.dir, name), Netns: ns}
		p.Args = []string{"store", "--data-dir", p.Dir, "--addr", p.Addr, "--pd", c.PDEndpoints(),
			"--heartbeat-interval", "1s", "--log-level", "warn"}
		p.Args = append(p.Args, o.StoreArgs...)
		if o.StoreArgsFor != nil {
			p.Args = append(p.Args, o.StoreArgsFor(i)...)
		}
		c.Stores = append(c.Stores, p)
		c.start(p)
	}
	return c
}

// PDEndpoints is the PD client addresses, comma separated.
func (c *Cluster) PDEndpoints() string {
	var a []string
	for _, p := range c.PDs {
		a = append(a, p.Addr)
	}
	return strings.Join(a, ",")
}

func (c *Cluster) start(p *Proc) {
	c.t.Helper()
	logf, err := os.OpenFile(filepath.Join(c.dir, p.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	if p.Netns != "" {
		p.cmd = exec.Command("ip", append([]string{"netns", "exec", p.Netns, c.bin}, p.Args...)...)
	} else {
		p.cmd = exec.Command(c.bin, p.Args...)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}(p.cmd, p.done)
	if p.Netns != "" {
		c.waitExec(p)
	}
}

// waitExec waits until a process started through `ip netns exec` has
// exec'd basalt, so what the test does to its PID next (SIGSTOP, say)
// reaches basalt, not ip. A process that exits first is left for the
// test to notice.
func (c *Cluster) waitExec(p *Proc) {
	c.t.Helper()
	bin, err := filepath.EvalSymlinks(c.bin) // /proc's link is resolved
	if err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.cmd.Process.Pid)); exe == bin {
			return
		}
		select {
		case <-p.done:
			return
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: ip netns exec %s did not exec %s within 30 s", p.Name, p.Netns, c.bin)
		}
	}
}

// Signal sends sig to a process and, for SIGTERM and SIGKILL, waits for it
// to exit.
func (c *Cluster) Signal(p *Proc, sig syscall.Signal) {
	c.t.Helper()
	_ = p.cmd.Process.Signal(sig)
	if sig == syscall.SIGTERM || sig == syscall.SIGKILL {
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			c.t.Fatalf("%s did not exit after %v", p.Name, sig)
		}
	}
}

// Exited reports whether the process ended (and how), for failure
// messages: "" while it runs.
func (c *Cluster) Exited(p *Proc) string {
	select {
	case <-p.done:
		return p.cmd.ProcessState.String()
	default:
		return ""
	}
}

// Restart starts a stopped process again with the same arguments.
func (c *Cluster) Restart(p *Proc) { c.start(p) }

// Stop kills every process.
func (c *Cluster) Stop() {
	for _, p := range append(append([]*Proc{}, c.Stores...), c.PDs...) {
		if p.cmd != nil && p.cmd.Process != nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// Log returns a process's log (for failure messages).
func (c *Cluster) Log(p *Proc) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, p.Name+".log"))
	return string(b)
}

// Regions is a running store's /debug/regions (each replica's raft state
// as the store sees it), or why it could not be read: what a test prints
// when a region would not elect.
func (c *Cluster) Regions(p *Proc) string {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + p.Addr + "/debug/regions")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// RegionState is one replica as a store's /debug/regions shows it (the
// fields tests read).
type RegionState struct {
	RegionID    uint64 `json:"region_id"`
	RaftState   string `json:"raft_state"`
	Term        uint64 `json:"term"`
	Hibernating bool   `json:"hibernating"`
	Peers       []struct {
		StoreID uint64 `json:"store_id"`
		Role    string `json:"role"`
	} `json:"peers"`
}

// RegionStates reads and decodes a running store's /debug/regions.
func (c *Cluster) RegionStates(p *Proc) ([]RegionState, error) {
	var out []RegionState
	if err := json.Unmarshal([]byte(c.Regions(p)), &out); err != nil {
		return nil, fmt.Errorf("%s /debug/regions: %w", p.Name, err)
	}
	return out, nil
}

// DumpState logs every process's log tail (the last tail bytes), then
// every running store's regions and its goroutines that run Basalt's code:
// the state a failed test leaves to read. Taking the goroutines ends the
// stores (SIGQUIT), so it is the last thing a failing test does with them.
func (c *Cluster) DumpState(t testing.TB, tail int) {
	t.Helper()
	for _, p := range append(append([]*Proc{}, c.PDs...), c.Stores...) {
		l := c.Log(p)
		state := c.Exited(p)
		if state == "" {
			state = "running"
		}
		t.Logf("%s (%s) log: %s", p.Name, state, l[max(0, len(l)-tail):])
	}
	for _, p := range c.Stores {
		if c.Exited(p) == "" {
			t.Logf("%s regions: %s", p.Name, c.Regions(p))
		}
	}
	for _, p := range c.Stores {
		if c.Exited(p) == "" {
			t.Logf("%s goroutines in Basalt's code: %s", p.Name, c.stacks(p))
		}
	}
}

// stacks ends a running process with SIGQUIT, which makes the Go runtime
// write every goroutine's stack to its log, and returns the goroutines
// with a frame in Basalt's packages (the rest is gRPC, pebble and runtime
// machinery around them). A region that will not elect, or a write that
// never returns, shows there as a goroutine blocked where it should not be.
func (c *Cluster) stacks(p *Proc) string {
	before := len(c.Log(p))
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		return "(no stack dump: the process did not exit on SIGQUIT)"
	}
	l := c.Log(p)
	if len(l) < before {
		return "(no stack dump: the log shrank)"
	}
	var b strings.Builder
	for _, g := range strings.Split(l[before:], "\n\n") {
		if strings.HasPrefix(g, "goroutine ") && strings.Contains(g, "github.com/basaltdb/basalt/") {
			b.WriteString("\n")
			b.WriteString(g)
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Client connects a client and waits until the cluster serves a write.
func (c *Cluster) Client(t testing.TB) *client.Client {
	t.Helper()
	return c.ClientWith(t, client.Options{})
}

// ClientWith is Client with options.
func (c *Cluster) ClientWith(t testing.TB, opts client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cl *client.Client
	var err error
	for ctx.Err() == nil {
		if cl, err = client.New(ctx, strings.Split(c.PDEndpoints(), ","), opts); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cl == nil {
		t.Fatalf("no client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// RSS returns a process's resident memory in bytes (0 if it is gone).
func RSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// WaitVoters waits until the region holding key has a leader and n voters,
// as PD reports it, or ctx ends.
// WaitSettled waits until every region overlapping [start, end) has a
// leader, n voters, and no replica PD hears is down or behind (a replica
// of a region split a moment ago is behind until its store applied the
// split).
func WaitSettled(ctx context.Context, pd *pdclient.Client, start, end []byte, n int) error {
	for {
		settled := false
		if rs, err := pd.ScanRegions(ctx, start, end, 0); err == nil && len(rs) > 0 {
			settled = true
			for _, ri := range rs {
				r, err := pd.GetRegion(ctx, ri.GetRegion().GetStartKey())
				voters := 0
				for _, p := range r.GetRegion().GetPeers() {
					if p.GetRole() == metapb.PeerRole_Voter {
						voters++
					}
				}
				if err != nil || r.GetLeader() == nil || voters != n || len(r.GetRegion().GetPeers()) != n ||
					len(r.GetPendingPeers()) > 0 || len(r.GetDownPeers()) > 0 {
					settled = false
					break
				}
			}
		}
		if settled {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the regions of [%q, %q) never settled with %d voters each: %w", start, end, n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func WaitVoters(ctx context.Context, pd *pdclient.Client, key []byte, n int) error {
	for {
		r, err := pd.GetRegion(ctx, key)
		if err == nil && r.GetLeader() != nil && len(r.GetRegion().GetPeers()) == n {
			voters := 0
			for _, p := range r.GetRegion().GetPeers() {
				if p.GetRole() == metapb.PeerRole_Voter {
					voters++
				}
			}
			if voters == n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the region of %q never had a leader and %d voters: %w", key, n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
