// Package status serves a process's HTTP status endpoints: Prometheus
// metrics at /metrics and, when asked for, Go's profiler at /debug/pprof.
// It also measures every gRPC call a server handles. Stores and PD share
// it; nothing here knows what a region is.
package status

import (
	"context"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry holding the Go runtime's and the process's
// collectors. Each server gets its own registry (not the global one), so
// several servers in one test process do not collide.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// NewServerRegistry is a server's registry: the process, the gRPC
// server's call metrics (returned, for its interceptors) and the server's
// own collectors.
func NewServerRegistry(cs ...prometheus.Collector) (*prometheus.Registry, *GRPCMetrics) {
	r := NewRegistry()
	gm := NewGRPCMetrics(r)
	r.MustRegister(cs...)
	return r, gm
}

// Register adds the handlers to mux: /metrics from g, and /debug/pprof/
// when withPprof (profiling costs nothing until asked, but exposes the
// process's internals, so it is off unless a flag turns it on).
func Register(mux *http.ServeMux, g prometheus.Gatherer, withPprof bool) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}

// Server is a status HTTP server.
type Server struct {
	lis  net.Listener
	http *http.Server
	done chan struct{}
}

// Serve serves /metrics (and /debug/pprof) on lis until Close, and
// whatever routes the server adds to the mux.
func Serve(lis net.Listener, g prometheus.Gatherer, withPprof bool, routes ...func(*http.ServeMux)) *Server {
	mux := http.NewServeMux()
	Register(mux, g, withPprof)
	for _, r := range routes {
		r(mux)
	}
	s := &Server{lis: lis, http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		// It returns when Close shuts it down or the listener closes under
		// it (the store's listen mux closing): either way there is nothing
		// to report.
		_ = s.http.Serve(lis)
	}()
	return s
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close stops the server and waits for its goroutine.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		_ = s.http.Close()
	}
	<-s.done
}
