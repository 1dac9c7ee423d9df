package netns

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the processes run in the namespaces:
// BASALT_NETNS_HELPER=listen:IP echoes on IP (its address on stdout),
// BASALT_NETNS_HELPER=dial:ADDR exits 0 if ADDR echoes within a second.
func TestMain(m *testing.M) {
	if h := os.Getenv("BASALT_NETNS_HELPER"); h != "" {
		os.Exit(helper(h))
	}
	os.Exit(m.Run())
}

func helper(h string) int {
	mode, arg, _ := strings.Cut(h, ":")
	switch mode {
	case "listen":
		l, err := net.Listen("tcp", net.JoinHostPort(arg, "0"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(l.Addr().String())
		for {
			c, err := l.Accept()
			if err != nil {
				return 1
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	case "dial":
		if err := echo(arg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	return 2
}

// echo dials addr and waits for its echo, a second at most.
func echo(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return fmt.Errorf("echo %q", line)
	}
	return nil
}

// dialFrom is echo run inside node nd's namespace.
func dialFrom(nd *Node, addr string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := nd.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), "BASALT_NETNS_HELPER=dial:"+addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// eventually polls f until it succeeds (a heal may need an ARP round
// before the first frame passes again).
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cut(t *testing.T, n *Net, rs ...Rule) {
	t.Helper()
	if err := n.Cut(rs...); err != nil {
		t.Fatal(err)
	}
}

func heal(t *testing.T, n *Net) uint64 {
	t.Helper()
	d, err := n.Heal()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err.Error()
	}
	// pid (comm) STATE ...: comm may hold spaces, so read after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// Two nodes and the test: each reaches the others; a process started in
// a node runs in its namespace under its own PID (ip netns exec execs in
// place), so SIGSTOP and SIGCONT reach it; isolating a node cuts it from
// the test and the other node, a one-way rule or a cut between the two
// only what it names; a heal restores everything and reports what was
// dropped; and nothing is left once the test ends.
func TestNetwork(t *testing.T) {
	var prefix string
	t.Run("net", func(t *testing.T) {
		n := New(t)
		prefix = n.Prefix()
		a, b := n.Add("a"), n.Add("b")
		if a.IP == b.IP || a.IP == n.Host.IP {
			t.Fatalf("addresses: host %s, a %s, b %s", n.Host.IP, a.IP, b.IP)
		}
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		srv := a.Command(self, "-test.run=^$")
		srv.Env = append(os.Environ(), "BASALT_NETNS_HELPER=listen:"+a.IP)
		out, err := srv.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		srv.Stderr = os.Stderr
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			t.Fatalf("the listener said nothing: %v", err)
		}
		addr := strings.TrimSpace(line)
		if host, _, _ := net.SplitHostPort(addr); host != a.IP {
			t.Fatalf("the listener is at %s, not on %s", addr, a.IP)
		}

		// The PID is the helper's, in a's namespace.
		pid := srv.Process.Pid
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := filepath.EvalSymlinks(self); exe != want {
			t.Fatalf("PID %d runs %s, not the helper %s: ip netns exec forked", pid, exe, want)
		}
		var st syscall.Stat_t
		if err := syscall.Stat("/run/netns/"+a.Netns, &st); err != nil {
			t.Fatal(err)
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("net:[%d]", st.Ino); ns != want {
			t.Fatalf("PID %d is in %s, a's namespace is %s", pid, ns, want)
		}
		if err := srv.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		eventually(t, "SIGSTOP", func() error {
			if s := procState(pid); s != "T" {
				return fmt.Errorf("state %s", s)
			}
			return nil
		})
		if err := srv.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}

		eventually(t, "host to a", func() error { return echo(addr) })
		eventually(t, "b to a", func() error { return dialFrom(b, addr) })

		cut(t, n, Isolate(a)...)
		if err := echo(addr); err == nil {
			t.Fatal("a isolated, yet the host reached it")
		}
		if err := dialFrom(b, addr); err == nil {
			t.Fatal("a isolated, yet b reached it")
		}
		if d := heal(t, n); d == 0 {
			t.Fatal("a isolated and dialed twice, yet the rules dropped nothing")
		}
		eventually(t, "host to a after the heal", func() error { return echo(addr) })
		eventually(t, "b to a after the heal", func() error { return dialFrom(b, addr) })

		// One way: what b sends a vanishes; the host still reaches a.
		cut(t, n, Rule{From: b, To: a})
		if err := dialFrom(b, addr); err == nil {
			t.Fatal("b's frames to a dropped, yet b reached a")
		}
		if err := echo(addr); err != nil {
			t.Fatalf("only b to a cut, yet the host did not reach a: %v", err)
		}
		heal(t, n)

		// Between: a and b apart, both still reach the host.
		cut(t, n, Between([]*Node{a}, []*Node{b})...)
		if err := dialFrom(b, addr); err == nil {
			t.Fatal("a and b cut apart, yet b reached a")
		}
		if err := echo(addr); err != nil {
			t.Fatalf("a and b cut apart, yet the host did not reach a: %v", err)
		}
		heal(t, n)
		eventually(t, "b to a after the last heal", func() error { return dialFrom(b, addr) })

		// A lossy link drops some frames, not all: echoes still get
		// through (TCP retransmits), and the rule's counter moves.
		cut(t, n, Lossy(30, a)...)
		eventually(t, "an echo through a lossy link", func() error { return echo(addr) })
		eventually(t, "a frame dropped by the lossy link", func() error {
			_ = echo(addr)
			if d, err := n.Dropped(); err != nil || d == 0 {
				return fmt.Errorf("dropped %d: %v", d, err)
			}
			return nil
		})
		heal(t, n)
		if err := n.Cut(Rule{From: a, LossPercent: 101}); err == nil {
			t.Fatal("a loss of 101% accepted")
		}
	})
	if left := Leftovers(prefix); len(left) > 0 {
		t.Fatalf("after the test: %v", left)
	}
}

// A network left behind by a run that died (its lock free) is removed by
// the next New.
func TestSweepsLeftovers(t *testing.T) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A subnet nobody holds, as a crashed run would leave it: a node's
	// namespace and the root link, no lock held.
	z := 0
	for c := 254; c > 0; c-- {
		if lock, ok := tryLock(c); ok {
			if len(leftovers(c)) == 0 {
				z = c
			}
			lock.Close()
			if z != 0 {
				break
			}
		}
	}
	if z == 0 {
		t.Fatal("no free subnet")
	}
	ns, link := fmt.Sprintf("%s%d-crashed", prefix, z), fmt.Sprintf("%s%d", prefix, z)
	for _, args := range [][]string{{"netns", "add", ns}, {"link", "add", link, "type", "veth", "peer", "name", link + "p"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { removeLeftovers(z) }) // if the sweep failed
	if left := leftovers(z); len(left) != 2 {
		t.Fatalf("the fake leftovers: %v", left)
	}
	t.Run("new", func(t *testing.T) {
		n := New(t)
		if n.z == z {
			// It took the swept subnet: its own network, but not the
			// crashed run's namespace.
			if slices.Contains(leftovers(z), "namespace "+ns) {
				t.Fatalf("%s not swept", ns)
			}
			return
		}
		if left := leftovers(z); len(left) > 0 {
			t.Fatalf("not swept: %v", left)
		}
	})
}
