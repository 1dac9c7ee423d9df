// Package tlsutil builds a server's TLS configuration from PEM files that
// may be replaced while the server runs: certificates are rotated by
// writing new files, as with etcd, and the next handshake uses them.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// ErrNoCertificate: a TLS listener was asked for without a certificate and
// key to serve.
var ErrNoCertificate = errors.New("tlsutil: a TLS listener needs a certificate file and a key file")

// ErrClientAuthWithoutCA: client certificates cannot be checked without a
// CA to check them against.
var ErrClientAuthWithoutCA = errors.New("tlsutil: client certificate authentication needs a trusted CA file")

// ServerFiles names a server's certificate, its key, and the CA its clients'
// certificates must chain to (etcd's --cert-file, --key-file,
// --trusted-ca-file and --client-cert-auth).
type ServerFiles struct {
	CertFile, KeyFile string
	// TrustedCAFile, when set, checks client certificates against this CA
	// bundle: every client must present one when ClientCertAuth is set;
	// otherwise only a certificate a client presents is checked, as etcd
	// does.
	TrustedCAFile  string
	ClientCertAuth bool
}

// Empty reports whether no TLS file is named.
func (f ServerFiles) Empty() bool {
	return f.CertFile == "" && f.KeyFile == "" && f.TrustedCAFile == "" && !f.ClientCertAuth
}

// ServerConfig loads the files once, so a bad file is an error at start
// rather than at the first client, and returns a configuration that loads
// them again whenever one of them changed on disk. A changed file that does
// not load (a rotation caught half-written) leaves the last good one in use
// and is tried again at the next handshake.
func (f ServerFiles) ServerConfig() (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, ErrNoCertificate
	}
	if f.ClientCertAuth && f.TrustedCAFile == "" {
		return nil, ErrClientAuthWithoutCA
	}
	r := &reloader{files: f}
	if err := r.load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current(), nil
		},
	}, nil
}

// reloader holds the loaded files and what they looked like on disk.
type reloader struct {
	files ServerFiles

	mu     sync.Mutex // guards everything below
	stamps []fileStamp
	cfg    *tls.Config
}

// fileStamp is what tells a replaced file from the one loaded.
type fileStamp struct {
	size    int64
	modTime time.Time
}

func (r *reloader) paths() []string {
	p := []string{r.files.CertFile, r.files.KeyFile}
	if r.files.TrustedCAFile != "" {
		p = append(p, r.files.TrustedCAFile)
	}
	return p
}

func (r *reloader) stampsNow() ([]fileStamp, error) {
	var out []fileStamp
	for _, p := range r.paths() {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		out = append(out, fileStamp{size: fi.Size(), modTime: fi.ModTime()})
	}
	return out, nil
}

// load reads every file and builds the configuration handshakes use.
func (r *reloader) load() error {
	stamps, err := r.stampsNow()
	if err != nil {
		return fmt.Errorf("tlsutil: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		return fmt.Errorf("tlsutil: certificate %s with key %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if r.files.TrustedCAFile != "" {
		pool, err := loadPool(r.files.TrustedCAFile)
		if err != nil {
			return err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if r.files.ClientCertAuth {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	r.mu.Lock()
	r.stamps, r.cfg = stamps, cfg
	r.mu.Unlock()
	return nil
}

// current is the configuration for one handshake: the loaded one, loaded
// again first if a file changed.
func (r *reloader) current() *tls.Config {
	r.mu.Lock()
	cfg, old := r.cfg, r.stamps
	r.mu.Unlock()
	now, err := r.stampsNow()
	if err != nil || equalStamps(now, old) {
		return cfg
	}
	if r.load() != nil {
		return cfg
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

func equalStamps(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].size != b[i].size || !a[i].modTime.Equal(b[i].modTime) {
			return false
		}
	}
	return true
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tlsutil: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// ClientConfig is what a client of such a server uses: the CA that signed
// the server's certificate, and optionally the client's own certificate.
func ClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("tlsutil: a client certificate needs both its certificate file and its key file")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("tlsutil: client certificate %s with key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
