package robustness

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// echoServer answers every connection with what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return l.Addr().String()
}

// roundTrip writes msg and reads it back, or fails after timeout (ok false).
func roundTrip(t *testing.T, c net.Conn, msg string, timeout time.Duration) (time.Duration, bool) {
	t.Helper()
	start := time.Now()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return 0, false
	}
	if string(buf) != msg {
		t.Fatalf("read %q, want %q", buf, msg)
	}
	return time.Since(start), true
}

// The proxies pass bytes, hold them through a blackhole and deliver them
// in order when it heals, hold a connection opened during one, cut one
// direction alone, and add a delay each way; closing stops them all.
func TestNetworkProxy(t *testing.T) {
	before := runtime.NumGoroutine()
	echo := echoServer(t)
	// Store 0 dials store 1 (the echo server) through proxy 0→1.
	n := newNetwork(t, []string{"127.0.0.1:1", echo})
	c, err := net.Dial("tcp", n.proxies[link{0, 1}].l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := roundTrip(t, c, "pass", 5*time.Second); !ok {
		t.Fatal("nothing came back through a passing link")
	}

	// The answer's direction alone: the request gets there, the answer is
	// held until the link heals, then arrives whole.
	n.set(linkState{blackhole: true}, link{1, 0})
	if _, ok := roundTrip(t, c, "one-way", 300*time.Millisecond); ok {
		t.Fatal("an answer crossed a cut link")
	}
	n.heal()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len("one-way"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "one-way" {
		t.Fatalf("after healing: %q, %v", buf, err)
	}

	// Both ways, and a connection opened during the cut is held too.
	n.set(linkState{blackhole: true}, link{0, 1}, link{1, 0})
	c2, err := net.Dial("tcp", n.proxies[link{0, 1}].l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	if _, ok := roundTrip(t, c, "partitioned", 300*time.Millisecond); ok {
		t.Fatal("bytes crossed a partition")
	}
	n.heal()
	for _, x := range []struct {
		c    net.Conn
		want string
	}{{c, "partitioned"}, {c2, "held"}} {
		_ = x.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, len(x.want))
		if _, err := io.ReadFull(x.c, buf); err != nil || string(buf) != x.want {
			t.Fatalf("after healing: %q, %v; want %q", buf, err, x.want)
		}
	}

	// A delay each way: a round trip takes at least twice as long.
	const delay = 100 * time.Millisecond
	n.set(linkState{delay: delay}, link{0, 1}, link{1, 0})
	if d, ok := roundTrip(t, c, "slow", 5*time.Second); !ok || d < 2*delay {
		t.Fatalf("a round trip over delayed links took %v (ok %v), want at least %v", d, ok, 2*delay)
	}
	n.heal()
	if n.bytes(0, 1) == 0 {
		t.Fatal("no bytes counted")
	}

	// A cut with a connection blocked in it, then the end: every proxy
	// goroutine stops.
	n.set(linkState{blackhole: true}, link{0, 1})
	if _, err := c.Write([]byte("lost at the end")); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { defer close(closed); n.close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("the network did not close:\n%s", buf[:runtime.Stack(buf, true)])
	}
	// Left: the echo server's accept loop, and its handlers until they
	// see the proxy's close.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+1 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left after closing, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A crash of a node ends its connections, holds new ones to it until the
// heal, which takes them to where it listens now, and refuses what its old
// incarnation dials; nothing the old incarnation sends after the crash
// arrives.
func TestNetworkCrash(t *testing.T) {
	// Node 1's first incarnation: it writes on the connection it accepted
	// only after the crash.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	n := emptyNetwork(t)
	n.targets[0], n.targets[1] = echoServer(t), l.Addr().String()
	to1, from1 := n.addProxy(t, 0, 1), n.addProxy(t, 1, 0)
	c, err := net.Dial("tcp", to1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	old := <-accepted // the proxy dials on accepting
	n.crash(1)
	_, _ = old.Write([]byte("late"))
	old.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if k, err := c.Read(make([]byte, 16)); err == nil || k > 0 {
		t.Fatalf("read %d bytes from a crashed incarnation (err %v)", k, err)
	}
	// Its own proxies are closed: what the old incarnation dials is
	// refused, or carries nothing.
	if c2, err := net.Dial("tcp", from1); err == nil {
		if _, ok := roundTrip(t, c2, "hello", 500*time.Millisecond); ok {
			t.Fatal("the crashed incarnation's dial reached the other node")
		}
		c2.Close()
	}
	// A connection to it now waits for the heal, then reaches the new
	// incarnation with what it held.
	c3, err := net.Dial("tcp", to1)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if _, ok := roundTrip(t, c3, "held", 300*time.Millisecond); ok {
		t.Fatal("a connection to a crashed node got through before the heal")
	}
	n.retarget(1, echoServer(t))
	n.heal()
	buf := make([]byte, 4)
	_ = c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c3, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after the heal read %q, %v; want the held bytes echoed by the new incarnation", buf, err)
	}
	// And the new incarnation dials out through new proxies.
	c4, err := net.Dial("tcp", n.addProxy(t, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	if _, ok := roundTrip(t, c4, "new", 5*time.Second); !ok {
		t.Fatal("the new incarnation's connection carried nothing")
	}
}
