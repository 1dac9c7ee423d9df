package robustness

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// network stands between the stores: every connection store i opens to
// store j goes through a TCP proxy of its own (store i runs with
// --peer-addr-map mapping j's address to that proxy), so bytes between
// two stores can be held or slowed in each direction separately.
//
// A link is a direction of bytes between two stores, from→to, whichever
// store opened the connection: on i's connection to j, i's requests take
// link (i, j) and j's answers link (j, i). Cutting one direction then cuts
// what i sends to j on every connection, as a one-way loss of packets
// would, while j's messages to i still arrive. (It is not TCP to the
// letter: on a real one-way cut, j's connections to i would stall once
// their unacknowledged bytes filled the window, since i's ACKs are lost.)
//
// Clients and PD are not behind proxies, and neither is the liveness
// gossip (memberlist over UDP and TCP at addresses it learns from the
// gossip, which --peer-addr-map does not map): a partition here cuts the
// stores' raft and forwarded requests while memberlist still finds the
// cut-off store alive, directly or through a third store's indirect
// probe. That is a partial partition, the kind a real network also makes.
type network struct {
	mu    sync.Mutex
	links map[link]linkState
	// changed is closed and replaced whenever a link changes, to wake
	// what waits for a blackhole to heal.
	changed chan struct{}
	stop    chan struct{}
	stopped bool

	proxies map[link]*proxy
	wg      sync.WaitGroup
}

type link struct{ from, to int }

// linkState: blackhole holds every byte (and every new connection) until
// it heals; delay adds a fixed latency to each chunk, in order.
type linkState struct {
	blackhole bool
	delay     time.Duration
}

// newNetwork starts a proxy for every ordered pair of the stores at addrs
// and stops them, and every connection through them, when the test ends.
func newNetwork(t *testing.T, addrs []string) *network {
	t.Helper()
	n := &network{links: map[link]linkState{}, changed: make(chan struct{}), stop: make(chan struct{}), proxies: map[link]*proxy{}}
	t.Cleanup(n.close)
	for i := range addrs {
		for j := range addrs {
			if i == j {
				continue
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			p := &proxy{n: n, from: i, to: j, target: addrs[j], l: l, conns: map[net.Conn]bool{}}
			n.proxies[link{i, j}] = p
			n.wg.Add(1)
			go func() { defer n.wg.Done(); p.serve() }()
		}
	}
	return n
}

// peerAddrMap is store i's --peer-addr-map: every other store's address
// to the proxy of i's connections to it.
func (n *network) peerAddrMap(i int, addrs []string) string {
	var pairs []string
	for j, a := range addrs {
		if j != i {
			pairs = append(pairs, a+"="+n.proxies[link{i, j}].l.Addr().String())
		}
	}
	return strings.Join(pairs, ",")
}

// set changes the links given; heal puts every link back to passing.
func (n *network) set(st linkState, links ...link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range links {
		n.links[l] = st
	}
	close(n.changed)
	n.changed = make(chan struct{})
}

func (n *network) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.links)
	close(n.changed)
	n.changed = make(chan struct{})
}

// open waits until link l is not a blackhole and returns its delay; false
// when the connection (done) or the network closed first.
func (n *network) open(l link, done <-chan struct{}) (time.Duration, bool) {
	for {
		n.mu.Lock()
		st, changed, stopped := n.links[l], n.changed, n.stopped
		n.mu.Unlock()
		if stopped {
			return 0, false
		}
		if !st.blackhole {
			return st.delay, true
		}
		select {
		case <-changed:
		case <-done:
			return 0, false
		case <-n.stop:
			return 0, false
		}
	}
}

// bytes is how many bytes store i's connections to store j carried, both
// ways.
func (n *network) bytes(i, j int) int64 { return n.proxies[link{i, j}].bytes.Load() }

func (n *network) close() {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return
	}
	n.stopped = true
	close(n.stop)
	n.mu.Unlock()
	for _, p := range n.proxies {
		_ = p.l.Close()
		p.closeAll()
	}
	n.wg.Wait()
}

// proxy carries store from's connections to store to.
type proxy struct {
	n        *network
	from, to int
	target   string
	l        net.Listener
	bytes    atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return // closed at the test's end
		}
		p.n.wg.Add(1)
		go func() { defer p.n.wg.Done(); p.handle(c) }()
	}
}

// track keeps c to close at the end; false if the network closed already.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// handle carries one connection. One opened during a blackhole is
// accepted and held: the dialing store's connect succeeds (the proxy is
// on its host, so to speak) but nothing reaches the other store until the
// link heals, as a connection whose SYN is lost is retried until the
// network lets it through. The dialer's own timeouts decide meanwhile.
func (p *proxy) handle(down net.Conn) {
	if !p.track(down) {
		_ = down.Close()
		return
	}
	done := make(chan struct{})
	var once sync.Once
	var up net.Conn
	closeBoth := func() {
		once.Do(func() {
			close(done)
			_ = down.Close()
			if up != nil {
				_ = up.Close()
			}
		})
	}
	if _, ok := p.n.open(link{p.from, p.to}, done); !ok {
		closeBoth()
		return
	}
	c, err := net.Dial("tcp", p.target)
	if err != nil {
		closeBoth() // the store is down: the dialer sees a reset, as it would
		return
	}
	if !p.track(c) {
		_ = c.Close()
		closeBoth()
		return
	}
	up = c
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(down, up, link{p.from, p.to}, done, closeBoth) }()
	go func() { defer wg.Done(); p.pipe(up, down, link{p.to, p.from}, done, closeBoth) }()
	wg.Wait()
}

type chunk struct {
	b  []byte
	at time.Time // read from the source
}

// pipe copies src to dst across link l. A reader stamps each chunk when it
// arrives and a writer sends it once the link is open and the chunk is
// the link's delay old, so a delay adds latency without slowing the
// stream down to one chunk per delay, and chunks keep their order.
//
// Healing releases what a blackhole held, in order, instead of closing
// the connections: a cut of a few seconds does not end a TCP connection
// (its segments are retransmitted until they get through, and the
// keepalives between stores give up only after 10 s of silence and 5 s
// more, longer than any cut here), so
// late bytes on the old connections are what a healed network delivers.
// A source's close is held like its bytes: the end of the stream arrives
// in order, after everything sent before it.
func (p *proxy) pipe(src, dst net.Conn, l link, done chan struct{}, closeBoth func()) {
	// The queue is the network's buffer: when it is full the reader stops
	// reading and the sender's TCP window closes, as it would behind a
	// real cut.
	q := make(chan chunk, 64)
	var reader sync.WaitGroup
	defer reader.Wait() // after closeBoth, which ends its Read
	reader.Add(1)
	go func() {
		defer reader.Done()
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			k, err := src.Read(buf)
			if k > 0 {
				select {
				case q <- chunk{b: buf[:k], at: time.Now()}:
				case <-done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer closeBoth()
	for c := range q {
		delay, ok := p.n.open(l, done)
		if !ok {
			return
		}
		if wait := time.Until(c.at.Add(delay)); wait > 0 {
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-done:
				timer.Stop()
				return
			case <-p.n.stop:
				timer.Stop()
				return
			}
		}
		if _, err := dst.Write(c.b); err != nil {
			return
		}
		p.bytes.Add(int64(len(c.b)))
	}
	// The source ended: its end waits for the link like its bytes did.
	p.n.open(l, done)
}

func (l link) String() string { return fmt.Sprintf("%d→%d", l.from+1, l.to+1) }
