package status

import (
	"bufio"
	"bytes"
	"net"
	"sync"
)

// ListenMux serves gRPC and HTTP/1 on one listener: a connection that opens
// with the HTTP/2 client preface goes to gRPC, anything else to HTTP. PD
// serves its API this way, stores their /metrics.
type ListenMux struct {
	root       net.Listener
	grpc, http *muxListener
	closeOnce  sync.Once
}

var http2Preface = []byte("PRI * HTTP/2.0")

// NewListenMux splits l; call Serve to start accepting.
func NewListenMux(l net.Listener) *ListenMux {
	m := &ListenMux{root: l}
	m.grpc = &muxListener{parent: m, conns: make(chan net.Conn, 16), done: make(chan struct{})}
	m.http = &muxListener{parent: m, conns: make(chan net.Conn, 16), done: make(chan struct{})}
	return m
}

// Serve accepts until the root listener closes.
func (m *ListenMux) Serve() {
	for {
		c, err := m.root.Accept()
		if err != nil {
			m.Close()
			return
		}
		go m.route(c)
	}
}

func (m *ListenMux) route(c net.Conn) {
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

// Close closes the root listener and both halves.
func (m *ListenMux) Close() {
	m.closeOnce.Do(func() {
		_ = m.root.Close()
		close(m.grpc.done)
		close(m.http.done)
	})
}

// GRPC is the listener of HTTP/2 connections.
func (m *ListenMux) GRPC() net.Listener { return m.grpc }

// HTTP is the listener of every other connection.
func (m *ListenMux) HTTP() net.Listener { return m.http }

type muxListener struct {
	parent *ListenMux
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

func (l *muxListener) Close() error   { l.parent.Close(); return nil }
func (l *muxListener) Addr() net.Addr { return l.parent.root.Addr() }

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
