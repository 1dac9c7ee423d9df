package tlsutil_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"testing"

	"github.com/basaltdb/basalt/internal/tlsutil"
	"github.com/basaltdb/basalt/internal/tlsutil/tlstest"
)

// serve accepts TLS connections with cfg until the test ends, finishing
// each handshake so the client learns its outcome.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = lis.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			// One byte tells the client the server accepted it: with TLS
			// 1.3 a refused client certificate shows only at the first read.
			_, _ = c.Write([]byte{1})
			_ = c.Close()
		}
	}()
	return lis.Addr().String()
}

// dial handshakes and reads the server's byte; it returns the server's
// leaf certificate.
func dial(addr string, cfg *tls.Config) (*x509.Certificate, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

func clientCfg(t *testing.T, ca, cert, key string) *tls.Config {
	t.Helper()
	cfg, err := tlsutil.ClientConfig(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// presenting is a client that presents its certificate whatever CAs the
// server names: Go's client offers only a certificate of a named CA, and
// would otherwise send none.
func presenting(t *testing.T, ca, cert, key string) *tls.Config {
	cfg := clientCfg(t, ca, cert, key)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cfg.Certificates[0], nil }
	return cfg
}

func TestServerConfigRefusesIncompleteFiles(t *testing.T) {
	dir := t.TempDir()
	f := tlstest.Write(t, dir, "a")
	for _, tc := range []struct {
		name  string
		files tlsutil.ServerFiles
		want  error
	}{
		{"no key", tlsutil.ServerFiles{CertFile: f.ServerCert}, tlsutil.ErrNoCertificate},
		{"client auth without a CA", tlsutil.ServerFiles{CertFile: f.ServerCert, KeyFile: f.ServerKey, ClientCertAuth: true}, tlsutil.ErrClientAuthWithoutCA},
	} {
		if _, err := tc.files.ServerConfig(); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// Files that exist but do not hold what they should.
	for name, files := range map[string]tlsutil.ServerFiles{
		"missing certificate": {CertFile: dir + "/none.pem", KeyFile: f.ServerKey},
		"key of another cert": {CertFile: f.ServerCert, KeyFile: f.ClientKey},
		"CA file not PEM":     {CertFile: f.ServerCert, KeyFile: f.ServerKey, TrustedCAFile: f.ServerKey},
	} {
		if _, err := files.ServerConfig(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := tlsutil.ClientConfig(f.CA, f.ClientCert, ""); err == nil {
		t.Error("a client certificate without its key: no error")
	}
}

func TestClientCertAuth(t *testing.T) {
	dir := t.TempDir()
	a, b := tlstest.Write(t, dir, "a"), tlstest.Write(t, dir, "b")
	cfg, err := tlsutil.ServerFiles{CertFile: a.ServerCert, KeyFile: a.ServerKey, TrustedCAFile: a.CA, ClientCertAuth: true}.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	if _, err := dial(addr, clientCfg(t, a.CA, a.ClientCert, a.ClientKey)); err != nil {
		t.Fatalf("a client with a certificate of the trusted CA: %v", err)
	}
	if _, err := dial(addr, clientCfg(t, a.CA, "", "")); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	if _, err := dial(addr, presenting(t, a.CA, b.ClientCert, b.ClientKey)); err == nil {
		t.Fatal("a client with another CA's certificate was accepted")
	}
	if _, err := dial(addr, clientCfg(t, b.CA, a.ClientCert, a.ClientKey)); err == nil {
		t.Fatal("the client trusted a server certificate of a CA it does not know")
	}
}

func TestOptionalClientCert(t *testing.T) {
	dir := t.TempDir()
	a, b := tlstest.Write(t, dir, "a"), tlstest.Write(t, dir, "b")
	cfg, err := tlsutil.ServerFiles{CertFile: a.ServerCert, KeyFile: a.ServerKey, TrustedCAFile: a.CA}.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	if _, err := dial(addr, clientCfg(t, a.CA, "", "")); err != nil {
		t.Fatalf("without --client-cert-auth a client needs no certificate: %v", err)
	}
	if _, err := dial(addr, presenting(t, a.CA, b.ClientCert, b.ClientKey)); err == nil {
		t.Fatal("a certificate the client chose to present was not checked")
	}
}

// TestRotation replaces the server's files while it serves: the next
// handshake uses the new certificate, and a file caught half-written
// leaves the last good one in use.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	first := tlstest.Write(t, dir, "srv")
	cfg, err := tlsutil.ServerFiles{CertFile: first.ServerCert, KeyFile: first.ServerKey}.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	trustsFirst := clientCfg(t, first.CA, "", "")
	before, err := dial(addr, trustsFirst)
	if err != nil {
		t.Fatal(err)
	}
	second := tlstest.Write(t, dir, "srv") // the same paths, a new CA and server certificate
	after, err := dial(addr, clientCfg(t, second.CA, "", ""))
	if err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if after.Equal(before) {
		t.Fatal("the server still presents the certificate from before the rotation")
	}
	if _, err := dial(addr, trustsFirst); err == nil {
		t.Fatal("a client trusting only the old CA still accepts the server")
	}
	if err := os.WriteFile(second.ServerCert, []byte("-----BEGIN CERT"), 0o600); err != nil {
		t.Fatal(err)
	}
	during, err := dial(addr, clientCfg(t, second.CA, "", ""))
	if err != nil {
		t.Fatalf("with the certificate file half-written: %v", err)
	}
	if !during.Equal(after) {
		t.Fatal("a half-written certificate file replaced the good certificate")
	}
}
