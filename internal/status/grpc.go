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

func (m *GRPCMetrics) observe(method string, start time.Time, err error) {
	m.handled.WithLabelValues(method, grpcstatus.Code(err).String()).Inc()
	m.seconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

// ServerOptions returns the interceptors to pass to grpc.NewServer.
func (m *GRPCMetrics) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := h(ctx, req)
			m.observe(info.FullMethod, start, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			start := time.Now()
			err := h(srv, ss)
			m.observe(info.FullMethod, start, err)
			return err
		}),
	}
}
