// Package netns gives a test a private IPv4 network of Linux network
// namespaces, so processes can be cut off from each other (and from the
// test) by the network itself rather than by proxies in front of some of
// their addresses.
//
// The layout, for a run that drew subnet 10.213.Z.0/24:
//
//	root namespace (the test, its clients)
//	  bsnZ          10.213.Z.1/24   veth to the hub's port "host"
//	namespace bsnZ-hub
//	  br0           bridge, no address; ports "host" and one per node
//	  nft table bridge basalt, chain cut: the faults' drop rules
//	namespace bsnZ-NAME (one per node: a store, a PD member)
//	  lo            up
//	  eth0          10.213.Z.N/24   veth to the hub's port NAME
//	  default route via 10.213.Z.1
//
// The bridge sits in a namespace of its own rather than in the root
// namespace: with br_netfilter loaded, frames bridged in the root
// namespace go through the root's iptables FORWARD chain, whose policy on
// a machine with Docker is drop, so nodes on a root bridge reach the
// test but not each other. The hub namespace has no rules but ours.
//
// Every node's traffic, to the test or to another node, crosses the hub's
// bridge, so a cut is a set of nft rules there: drop what enters the
// bridge from one port, or leaves it to one, or both. Dropped frames
// vanish (nothing is refused or reset, ARP included), as on a cut cable;
// the nodes' own stacks are untouched, and a heal lets TCP's
// retransmissions resume the same connections.
//
// Z is drawn per run and owned through a lock file
// (/run/basalt-netns/Z.lock, flock held until the network is removed), so
// test binaries running side by side never share a subnet or a name.
// Leftovers of a run that died without cleaning up (namespaces bsnZ-*,
// the link bsnZ) are removed by the next New that can take their lock.
package netns

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

const (
	prefix  = "bsn"
	lockDir = "/run/basalt-netns"
	// The networks are 10.213.Z.0/24, Z in 1..254: 10.213/16 is private
	// and chosen to be out of the way of Docker's (172.17/16 on), the
	// usual home networks (192.168/16, 10.0/16, 10.1/16) and cloud VPCs
	// (10.0/16 again).
	octet1, octet2 = 10, 213
	// bridge is the hub's bridge; hostPort is its port to the root
	// namespace.
	bridge, hostPort = "br0", "host"
	// table and chain hold the cuts in the hub.
	table, chain = "basalt", "cut"
)

// Net is one test's network.
type Net struct {
	t    testing.TB
	z    int
	lock *os.File
	hub  string
	// Host is the root namespace, as a node: Cut rules may name it
	// (From: Host is what the test sends the nodes).
	Host *Node

	mu     sync.Mutex
	nodes  []*Node
	closed bool
}

// Node is one namespace on the network.
type Node struct {
	// Name is the node's name as Add was given it, and its port on the
	// hub's bridge.
	Name string
	// Netns is the namespace's name, for `ip netns exec`.
	Netns string
	// IP is the node's address.
	IP string
}

func (nd *Node) String() string { return nd.Name }

// New builds a network with no nodes yet and removes it when the test
// ends. It needs root, iproute2 and nftables; without them it fails the
// test and says so.
func New(t testing.TB) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("netns: network namespaces need root (this test runs as uid %d)", os.Geteuid())
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("netns: %s not found (install iproute2 and nftables): %v", tool, err)
		}
	}
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		t.Fatalf("netns: %v", err)
	}
	sweep()
	n := &Net{t: t}
	for _, z := range rand.Perm(254) {
		z++
		lock, ok := tryLock(z)
		if !ok {
			continue
		}
		if used, err := subnetUsed(z); err != nil || used {
			lock.Close()
			if err != nil {
				t.Fatalf("netns: %v", err)
			}
			continue
		}
		removeLeftovers(z)
		n.z, n.lock = z, lock
		break
	}
	if n.lock == nil {
		t.Fatalf("netns: no free subnet in %d.%d.0.0/16", octet1, octet2)
	}
	t.Cleanup(n.close)
	n.hub = fmt.Sprintf("%s%d-hub", prefix, n.z)
	n.Host = &Node{Name: hostPort, IP: n.ip(1)}
	root := n.rootLink()
	n.must("ip", "netns", "add", n.hub)
	n.must("ip", "-n", n.hub, "link", "set", "dev", "lo", "up")
	n.must("ip", "-n", n.hub, "link", "add", "name", bridge, "type", "bridge")
	n.must("ip", "-n", n.hub, "link", "set", "dev", bridge, "up")
	n.must("ip", "link", "add", "name", root, "type", "veth", "peer", "name", hostPort, "netns", n.hub)
	n.must("ip", "-n", n.hub, "link", "set", "dev", hostPort, "master", bridge, "up")
	n.must("ip", "addr", "add", n.Host.IP+"/24", "dev", root)
	n.must("ip", "link", "set", "dev", root, "up")
	n.nft(fmt.Sprintf("add table bridge %s\nadd chain bridge %s %s { type filter hook forward priority 0; policy accept; }\n", table, table, chain))
	return n
}

var nodeName = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

// Add creates a node: a namespace with lo up and eth0 on the bridge, at
// the next free address.
func (n *Net) Add(name string) *Node {
	n.t.Helper()
	if !nodeName.MatchString(name) || name == hostPort || name == bridge {
		n.t.Fatalf("netns: node name %q: want 1–8 lower-case letters and digits, not %q or %q", name, hostPort, bridge)
	}
	n.mu.Lock()
	for _, nd := range n.nodes {
		if nd.Name == name {
			n.mu.Unlock()
			n.t.Fatalf("netns: two nodes named %q", name)
		}
	}
	if len(n.nodes) >= 250 {
		n.mu.Unlock()
		n.t.Fatalf("netns: too many nodes")
	}
	nd := &Node{Name: name, Netns: fmt.Sprintf("%s%d-%s", prefix, n.z, name), IP: n.ip(2 + len(n.nodes))}
	n.nodes = append(n.nodes, nd)
	n.mu.Unlock()
	n.must("ip", "netns", "add", nd.Netns)
	n.must("ip", "-n", n.hub, "link", "add", "name", name, "type", "veth", "peer", "name", "eth0", "netns", nd.Netns)
	n.must("ip", "-n", n.hub, "link", "set", "dev", name, "master", bridge, "up")
	n.must("ip", "-n", nd.Netns, "link", "set", "dev", "lo", "up")
	n.must("ip", "-n", nd.Netns, "addr", "add", nd.IP+"/24", "dev", "eth0")
	n.must("ip", "-n", nd.Netns, "link", "set", "dev", "eth0", "up")
	n.must("ip", "-n", nd.Netns, "route", "add", "default", "via", n.Host.IP)
	return nd
}

// Command is a command run inside node nd's namespace (`ip netns exec`,
// which execs in place: the process's PID is the command's own, so
// signals reach it directly).
func (nd *Node) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", nd.Netns, name}, args...)...)
}

// Rule drops the frames that enter the bridge from From and leave it to
// To; a nil From or To matches every port. Rules name ports, so a rule
// cuts both the node's own traffic and ARP: {From: a, To: b} alone is a
// one-way cut, what a sends b vanishes, what b sends a arrives.
type Rule struct {
	From, To *Node
	// LossPercent, when above 0, drops that share of the frames at random
	// (a lossy link) instead of every one.
	LossPercent int
}

// Lossy is the rules that make every link into and out of the nodes lose
// percent of its frames at random.
func Lossy(percent int, nodes ...*Node) []Rule {
	var rs []Rule
	for _, nd := range nodes {
		rs = append(rs, Rule{From: nd, LossPercent: percent}, Rule{To: nd, LossPercent: percent})
	}
	return rs
}

// Isolate is the rules that cut nodes off from everything, the test
// included, both ways.
func Isolate(nodes ...*Node) []Rule {
	var rs []Rule
	for _, nd := range nodes {
		rs = append(rs, Rule{From: nd}, Rule{To: nd})
	}
	return rs
}

// Between is the rules that cut every node of a from every node of b,
// both ways; each still reaches the rest.
func Between(a, b []*Node) []Rule {
	var rs []Rule
	for _, x := range a {
		for _, y := range b {
			rs = append(rs, Rule{From: x, To: y}, Rule{From: y, To: x})
		}
	}
	return rs
}

// Cut replaces the network's rules with rs, at once (one nft
// transaction). Cut with no rules heals.
func (n *Net) Cut(rs ...Rule) error {
	var b strings.Builder
	fmt.Fprintf(&b, "flush chain bridge %s %s\n", table, chain)
	for _, r := range rs {
		if r.From == nil && r.To == nil {
			return errors.New("netns: a rule must name a port")
		}
		fmt.Fprintf(&b, "add rule bridge %s %s", table, chain)
		if r.From != nil {
			fmt.Fprintf(&b, " iifname %q", r.From.Name)
		}
		if r.To != nil {
			fmt.Fprintf(&b, " oifname %q", r.To.Name)
		}
		switch {
		case r.LossPercent < 0 || r.LossPercent > 100:
			return fmt.Errorf("netns: a loss of %d%%", r.LossPercent)
		case r.LossPercent > 0 && r.LossPercent < 100:
			fmt.Fprintf(&b, " numgen random mod 100 < %d", r.LossPercent)
		}
		b.WriteString(" counter drop\n")
	}
	return n.nftErr(b.String())
}

// Dropped is how many frames the rules in place dropped since Cut set
// them.
func (n *Net) Dropped() (uint64, error) {
	out, err := exec.Command("ip", "netns", "exec", n.hub, "nft", "list", "chain", "bridge", table, chain).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("netns: nft list chain: %v: %s", err, bytes.TrimSpace(out))
	}
	var sum uint64
	for _, m := range counterRE.FindAllSubmatch(out, -1) {
		v, err := strconv.ParseUint(string(m[1]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("netns: counter %q: %v", m[0], err)
		}
		sum += v
	}
	return sum, nil
}

var counterRE = regexp.MustCompile(`counter packets (\d+) bytes \d+`)

// Heal removes every rule and returns how many frames they dropped.
func (n *Net) Heal() (uint64, error) {
	d, err := n.Dropped()
	if err != nil {
		return 0, err
	}
	return d, n.Cut()
}

func (n *Net) ip(host int) string { return fmt.Sprintf("%d.%d.%d.%d", octet1, octet2, n.z, host) }

func (n *Net) rootLink() string { return fmt.Sprintf("%s%d", prefix, n.z) }

func (n *Net) must(args ...string) {
	n.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		n.t.Fatalf("netns: %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

func (n *Net) nft(script string) {
	n.t.Helper()
	if err := n.nftErr(script); err != nil {
		n.t.Fatal(err)
	}
}

func (n *Net) nftErr(script string) error {
	cmd := exec.Command("ip", "netns", "exec", n.hub, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netns: nft: %v: %s\n%s", err, bytes.TrimSpace(out), script)
	}
	return nil
}

// close removes the namespaces (deleting a namespace deletes its veth
// ends, and a veth's two ends go together, so the root's link goes with
// the hub) and fails the test if anything of the network is left.
func (n *Net) close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.mu.Unlock()
	removeLeftovers(n.z)
	if left := leftovers(n.z); len(left) > 0 {
		n.t.Errorf("netns: left behind after cleanup: %s", strings.Join(left, ", "))
	}
	n.lock.Close() // releases the flock
}

// Prefix is the prefix of every namespace and link of the network, for
// tests that look for leftovers.
func (n *Net) Prefix() string { return fmt.Sprintf("%s%d", prefix, n.z) }

// Leftovers lists what exists of the network with prefix p (a Prefix):
// namespaces and root links. Empty once the network is removed.
func Leftovers(p string) []string {
	z, err := strconv.Atoi(strings.TrimPrefix(p, prefix))
	if err != nil || !strings.HasPrefix(p, prefix) {
		return []string{"bad prefix " + p}
	}
	return leftovers(z)
}

func tryLock(z int) (*os.File, bool) {
	f, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprintf("%d.lock", z)), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

var leftoverNS = regexp.MustCompile(`^` + prefix + `(\d+)-[a-z0-9]+$`)
var leftoverLink = regexp.MustCompile(`^` + prefix + `(\d+)$`)

// sweep removes the leftovers of every network whose lock nobody holds:
// runs that died without cleaning up.
func sweep() {
	zs := map[int]bool{}
	if es, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range es {
			if m := leftoverNS.FindStringSubmatch(e.Name()); m != nil {
				z, _ := strconv.Atoi(m[1])
				zs[z] = true
			}
		}
	}
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if m := leftoverLink.FindStringSubmatch(i.Name); m != nil {
				z, _ := strconv.Atoi(m[1])
				zs[z] = true
			}
		}
	}
	for z := range zs {
		if lock, ok := tryLock(z); ok {
			removeLeftovers(z)
			lock.Close()
		}
	}
}

// leftovers is what exists of network z.
func leftovers(z int) []string {
	var out []string
	if es, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range es {
			if m := leftoverNS.FindStringSubmatch(e.Name()); m != nil && m[1] == strconv.Itoa(z) {
				out = append(out, "namespace "+e.Name())
			}
		}
	}
	if _, err := net.InterfaceByName(fmt.Sprintf("%s%d", prefix, z)); err == nil {
		out = append(out, fmt.Sprintf("link %s%d", prefix, z))
	}
	return out
}

// removeLeftovers deletes network z's namespaces, hub last, and its root
// link if it outlived them. Called with z's lock held.
func removeLeftovers(z int) {
	var nodes []string
	hub := ""
	if es, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range es {
			if m := leftoverNS.FindStringSubmatch(e.Name()); m != nil && m[1] == strconv.Itoa(z) {
				if strings.HasSuffix(e.Name(), "-hub") {
					hub = e.Name()
				} else {
					nodes = append(nodes, e.Name())
				}
			}
		}
	}
	if hub != "" {
		nodes = append(nodes, hub)
	}
	for _, ns := range nodes {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	link := fmt.Sprintf("%s%d", prefix, z)
	if _, err := net.InterfaceByName(link); err == nil {
		_ = exec.Command("ip", "link", "del", "dev", link).Run()
	}
}

// subnetUsed reports whether 10.213.z.0/24 overlaps an address or route
// the root namespace already has (another network on the machine).
func subnetUsed(z int) (bool, error) {
	_, mine, _ := net.ParseCIDR(fmt.Sprintf("%d.%d.%d.0/24", octet1, octet2, z))
	overlaps := func(o *net.IPNet) bool { return o.Contains(mine.IP) || mine.Contains(o.IP) }
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && overlaps(ipn) {
			return true, nil
		}
	}
	out, err := exec.Command("ip", "-4", "-o", "route", "show", "table", "all").Output()
	if err != nil {
		return false, fmt.Errorf("ip route show: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case len(f) >= 2 && (f[0] == "local" || f[0] == "broadcast" || f[0] == "unreachable" ||
			f[0] == "blackhole" || f[0] == "prohibit" || f[0] == "unicast"):
			f = f[1:] // the route's type before its destination
		}
		dst := f[0]
		if dst == "default" {
			continue
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if _, o, err := net.ParseCIDR(dst); err == nil && o.String() != "0.0.0.0/0" && overlaps(o) {
			return true, nil
		}
	}
	return false, nil
}
