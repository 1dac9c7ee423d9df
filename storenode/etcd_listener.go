package storenode

import (
	"errors"
	"fmt"
	"net"
	"net/url"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/basaltdb/basalt/internal/status"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/storenode/etcdapi"
)

// ErrEtcdURL: --etcd-listen-url or --etcd-advertise-urls is not a URL an
// etcd client can dial, or its scheme does not match the TLS settings.
var ErrEtcdURL = errors.New("storenode: bad etcd client URL")

// etcdListenHost parses an etcd listen URL: http://host:port serves plain
// gRPC, https://host:port serves TLS and needs tlsOn.
func etcdListenHost(raw string, tlsOn bool) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", fmt.Errorf("%w: %q: want http://host:port or https://host:port", ErrEtcdURL, raw)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrEtcdURL, raw, err)
	}
	switch {
	case u.Scheme == "https" && !tlsOn:
		return "", fmt.Errorf("%w: %q is https, but no certificate and key are given", ErrEtcdURL, raw)
	case u.Scheme == "http" && tlsOn:
		return "", fmt.Errorf("%w: %q is http, but a certificate is given: use https", ErrEtcdURL, raw)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%w: %q: the scheme must be http or https", ErrEtcdURL, raw)
	}
	return u.Host, nil
}

// listenEtcd opens the etcd-only listener when one is configured and
// settles the URLs the store publishes for it. It runs before the store
// registers with PD, so the published URLs name a port that is listening.
func (s *Server) listenEtcd() error {
	if s.cfg.EtcdListenURL == "" {
		if s.cfg.EtcdTLS != nil || len(s.cfg.EtcdAdvertiseURLs) > 0 {
			return fmt.Errorf("%w: TLS settings and advertised etcd URLs need --etcd-listen-url", ErrEtcdURL)
		}
		return nil
	}
	tlsOn := s.cfg.EtcdTLS != nil
	host, err := etcdListenHost(s.cfg.EtcdListenURL, tlsOn)
	if err != nil {
		return err
	}
	for _, a := range s.cfg.EtcdAdvertiseURLs {
		if _, err := etcdListenHost(a, tlsOn); err != nil {
			return err
		}
	}
	if s.etcdLis, err = net.Listen("tcp", host); err != nil {
		return fmt.Errorf("storenode: listen on %s: %w", s.cfg.EtcdListenURL, err)
	}
	s.etcdURLs = s.cfg.EtcdAdvertiseURLs
	if len(s.etcdURLs) == 0 {
		scheme := "http"
		if tlsOn {
			scheme = "https"
		}
		s.etcdURLs = []string{scheme + "://" + s.etcdLis.Addr().String()}
	}
	return nil
}

// serveEtcd serves the etcd API alone on the etcd listener, with TLS when
// configured. Basalt's own services (KV, Admin, the raft transport) stay
// on Addr only: they are the cluster's internals, not an etcd client's.
func (s *Server) serveEtcd(gm *status.GRPCMetrics, cfg etcdapi.Config) {
	if s.etcdLis == nil {
		return
	}
	opts := append(gm.ServerOptions(), raftstore.ServerOptions()...)
	if s.cfg.EtcdTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.EtcdTLS)))
	}
	s.etcdGRPC = grpc.NewServer(opts...)
	etcdapi.Register(s.etcdGRPC, cfg)
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = s.etcdGRPC.Serve(s.etcdLis) }()
}

// EtcdURLs are the URLs of the store's etcd-only listener (none when the
// etcd API is served on Addr alone).
func (s *Server) EtcdURLs() []string { return s.etcdURLs }
