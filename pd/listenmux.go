package pd

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"sync"
)

// listenMux serves gRPC and HTTP/1 on one listener: a connection that opens
// with the HTTP/2 client preface goes to gRPC, anything else to HTTP.
type listenMux struct {
	root       net.Listener
	grpc, http *muxListener
	closeOnce  sync.Once
}

var http2Preface = []byte("PRI * HTTP/2.0")

func newListenMux(l net.Listener) *listenMux {
	m := &listenMux{root: l}
	m.grpc = &muxListener{parent: m, conns: make(chan net.Conn, 16), done: make(chan struct{})}
	m.http = &muxListener{parent: m, conns: make(chan net.Conn, 16), done: make(chan struct{})}
	return m
}

// serve accepts until the root listener closes.
func (m *listenMux) serve() {
	for {
		c, err := m.root.Accept()
		if err != nil {
			m.close()
			return
		}
		go m.route(c)
	}
}

func (m *listenMux) route(c net.Conn) {
	br := bufio.NewReader(c)
	head, err := br.Peek(len(http2Preface))
	target := m.http
	if err == nil && bytes.Equal(head, http2Preface) {
		target = m.grpc
	} else if err != nil && len(head) == 0 {
		_ = c.Close()
		return
	}
	select {
	case target.conns <- &peekedConn{Conn: c, r: br}:
	case <-target.done:
		_ = c.Close()
	}
}

func (m *listenMux) close() {
	m.closeOnce.Do(func() {
		_ = m.root.Close()
		close(m.grpc.done)
		close(m.http.done)
	})
}

type muxListener struct {
	parent *listenMux
	conns  chan net.Conn
	done   chan struct{}
}

func (l *muxListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *muxListener) Close() error   { l.parent.close(); return nil }
func (l *muxListener) Addr() net.Addr { return l.parent.root.Addr() }

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

var errNotLeader = errors.New("pd: not the leader")
