package status

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	grpcstatus "google.golang.org/grpc/status"
)

// GRPCMetrics counts and times the calls a gRPC server handles, per method
// and result code.
type GRPCMetrics struct {
	handled *prometheus.CounterVec
	seconds *prometheus.HistogramVec
}

// NewGRPCMetrics registers the metrics with r.
func NewGRPCMetrics(r prometheus.Registerer) *GRPCMetrics {
	m := &GRPCMetrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "basalt_grpc_server_handled_total",
			Help: "gRPC calls completed, by method and status code.",
		}, []string{"method", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "basalt_grpc_server_handling_seconds",
			Help:    "How long gRPC calls took, by method (streams: their whole life).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18), // 100 µs .. 13 s
		}, []string{"method"}),
	}
	r.MustRegister(m.handled, m.seconds)
	return m
}

// Observe counts and times one call; a server serving calls inside a
// stream (storenode's Forward) counts them as the calls they stand for.
func (m *GRPCMetrics) Observe(method string, start time.Time, err error) {
	m.handled.WithLabelValues(method, grpcstatus.Code(err).String()).Inc()
	m.seconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

// streamWorkers is how many long-lived goroutines a server runs requests
// on. Without them gRPC starts a goroutine per request, and a request that
// reaches pebble (an iterator is built deep in the stack) grows that new
// goroutine's 8 KiB stack several times: under etcd's range benchmark the
// stack copies were a fifth of a store's CPU. A worker keeps its grown
// stack from one request to the next; gRPC still starts a goroutine when
// every worker is busy, so this bounds nothing.
var streamWorkers = uint32(256)

// ServerOptions returns the interceptors to pass to grpc.NewServer, and
// its request workers.
func (m *GRPCMetrics) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.NumStreamWorkers(streamWorkers),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := h(ctx, req)
			m.Observe(info.FullMethod, start, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			start := time.Now()
			err := h(srv, ss)
			m.Observe(info.FullMethod, start, err)
			return err
		}),
	}
}
