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
//
// In TestRobustnessInProcessCrash the clients and PD are nodes of the
// network too (inprocess.go): each store's clients reach it through a
// proxy, and it reaches PD through one, so crash can cut a store off from
// everything; the network faults still touch the links between stores
// only, as here.
type network struct {
	mu    sync.Mutex
	links map[link]linkState
	// changed is closed and replaced whenever a link changes, to wake
	// what waits for a blackhole to heal.
	changed chan struct{}
	stop    chan struct{}
	stopped bool
	// targets is where each node listens: a proxy into node j dials
	// targets[j] (an in-process store listens somewhere new after a crash).
	targets map[int]string
	// gen is each node's incarnation, bumped by crash: a connection
	// carries bytes only while both its ends are in the incarnations it
	// was made in, so nothing the crashed incarnation sent, or was sent,
	// gets through once its incarnation ended.
	gen map[int]uint64

	// proxies is the proxy of each link now (a crash retires the crashed
	// node's own, and restart gives it new ones); counts the bytes each
	// link carried, across its proxies.
	proxies map[link]*proxy
	counts  map[link]*atomic.Int64
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
	n := emptyNetwork(t)
	for j, a := range addrs {
		n.targets[j] = a
	}
	for i := range addrs {
		for j := range addrs {
			if i != j {
				n.addProxy(t, i, j)
			}
		}
	}
	return n
}

// emptyNetwork is a network with no proxies yet (addProxy adds them),
// stopped when the test ends.
func emptyNetwork(t *testing.T) *network {
	n := &network{links: map[link]linkState{}, changed: make(chan struct{}), stop: make(chan struct{}), targets: map[int]string{},
		gen: map[int]uint64{}, proxies: map[link]*proxy{}, counts: map[link]*atomic.Int64{}}
	t.Cleanup(n.close)
	return n
}

// addProxy starts the proxy of node from's connections to node to (in
// from's current incarnation) and returns its address.
func (n *network) addProxy(t testing.TB, from, to int) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	lk := link{from, to}
	if n.counts[lk] == nil {
		n.counts[lk] = &atomic.Int64{}
	}
	p := &proxy{n: n, from: from, to: to, fromGen: n.gen[from], l: l, conns: map[net.Conn]bool{}, bytes: n.counts[lk]}
	n.proxies[lk] = p
	n.wg.Add(1)
	go func() { defer n.wg.Done(); p.serve() }()
	return l.Addr().String()
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

// epoch is the incarnations of a connection's two ends when it was made.
type epoch struct {
	from, to       int
	fromGen, toGen uint64
}

// current reports whether both ends are still in e's incarnations; n.mu
// is held.
func (n *network) current(e epoch) bool {
	return n.gen[e.from] == e.fromGen && n.gen[e.to] == e.toGen
}

// admit waits until proxy p's link is not a blackhole, then returns where
// to dial and the connection's epoch; false when the connection (done),
// the proxy's incarnation or the network ended first.
func (n *network) admit(p *proxy, done <-chan struct{}) (string, epoch, bool) {
	for {
		n.mu.Lock()
		st, changed, stopped := n.links[link{p.from, p.to}], n.changed, n.stopped
		e := epoch{from: p.from, to: p.to, fromGen: p.fromGen, toGen: n.gen[p.to]}
		ok, target := n.current(e), n.targets[p.to]
		n.mu.Unlock()
		if stopped || !ok {
			return "", e, false
		}
		if !st.blackhole {
			return target, e, true
		}
		select {
		case <-changed:
		case <-done:
			return "", e, false
		case <-n.stop:
			return "", e, false
		}
	}
}

// open waits until link l is not a blackhole and returns its delay; false
// when the connection (done) or the network closed first, or an end of
// the connection (epoch e) crashed.
func (n *network) open(l link, e epoch, done <-chan struct{}) (time.Duration, bool) {
	for {
		n.mu.Lock()
		st, changed, stopped, ok := n.links[l], n.changed, n.stopped, n.current(e)
		n.mu.Unlock()
		if stopped || !ok {
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

// crash ends node's incarnation in the network: every link into and out
// of it becomes a blackhole (what it is sent, and connections to it, wait
// for restart's heal), the proxies of its own connections are closed for
// good (what it dials from now on is refused), and every connection it
// was an end of is closed. Once crash returns, no byte the node sends
// reaches anyone: a chunk already passed on was read from it before, and
// any other fails the epoch check before it is written.
func (n *network) crash(node int) {
	n.mu.Lock()
	var torn []*proxy
	for l, p := range n.proxies {
		if p.from != node && p.to != node {
			continue
		}
		n.links[l] = linkState{blackhole: true}
		n.links[link{l.to, l.from}] = linkState{blackhole: true}
		torn = append(torn, p)
		if p.from == node {
			delete(n.proxies, l)
		}
	}
	n.gen[node]++
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
	for _, p := range torn {
		if p.from == node {
			_ = p.l.Close()
		}
		p.tear(p.from == node)
	}
}

// retarget makes the proxies into node dial addr from now on.
func (n *network) retarget(node int, addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.targets[node] = addr
}

// proxyAddr is the address of link l's proxy now.
func (n *network) proxyAddr(l link) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proxies[l].l.Addr().String()
}

// bytes is how many bytes store i's connections to store j carried, both
// ways.
func (n *network) bytes(i, j int) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.counts[link{i, j}].Load()
}

func (n *network) close() {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return
	}
	n.stopped = true
	close(n.stop)
	ps := make([]*proxy, 0, len(n.proxies))
	for _, p := range n.proxies {
		ps = append(ps, p)
	}
	n.mu.Unlock()
	for _, p := range ps {
		_ = p.l.Close()
		p.tear(true)
	}
	n.wg.Wait()
}

// proxy carries node from's connections to node to, in incarnation
// fromGen of from.
type proxy struct {
	n        *network
	from, to int
	fromGen  uint64
	l        net.Listener
	bytes    *atomic.Int64

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

// tear closes every connection through p; retire also closes the ones
// it accepts from now on (p is done).
func (p *proxy) tear(retire bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	if retire {
		p.conns = nil
	} else if p.conns != nil {
		clear(p.conns)
	}
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
	target, e, ok := p.n.admit(p, done)
	if !ok {
		closeBoth()
		return
	}
	c, err := net.Dial("tcp", target)
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
	go func() { defer wg.Done(); p.pipe(down, up, link{p.from, p.to}, e, done, closeBoth) }()
	go func() { defer wg.Done(); p.pipe(up, down, link{p.to, p.from}, e, done, closeBoth) }()
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
//
// A chunk is written only after open found both ends in the connection's
// incarnations (epoch e), and was read before that: after a crash of
// either end, nothing more is passed on.
func (p *proxy) pipe(src, dst net.Conn, l link, e epoch, done chan struct{}, closeBoth func()) {
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
		delay, ok := p.n.open(l, e, done)
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
	p.n.open(l, e, done)
}

func (l link) String() string { return fmt.Sprintf("%d→%d", l.from+1, l.to+1) }
