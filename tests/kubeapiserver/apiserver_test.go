package kubeapiserver

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/internal/tlsutil"
	"github.com/basaltdb/basalt/internal/tlsutil/tlstest"
	"github.com/basaltdb/basalt/tests/procs"
)

// The admin's static bearer token (--token-auth-file), in system:masters.
const adminToken = "basalt-test-admin-token"

var (
	buildOnce   sync.Once
	apiserver   string
	buildErr    error
	buildStderr []byte
)

// kubeAPIServerBinary builds (or finds, cached) the real kube-apiserver
// with scripts/build-kube-apiserver.sh. `make test` runs the script first,
// so the minutes a cold build takes are not charged to this package's test
// timeout.
func kubeAPIServerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := filepath.Abs("../..")
		if err != nil {
			buildErr = err
			return
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		out, err := exec.Command(filepath.Join(root, "scripts", "build-kube-apiserver.sh"), filepath.Join(cache, "basalt-kube")).Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			buildStderr = ee.Stderr
		}
		lines := strings.Fields(string(out))
		switch {
		case err != nil:
			buildErr = err
		case len(lines) != 1:
			buildErr = fmt.Errorf("build-kube-apiserver.sh printed %q", out)
		default:
			apiserver = lines[0]
		}
	})
	if buildErr != nil {
		t.Fatalf("building kube-apiserver: %v: %s", buildErr, buildStderr)
	}
	return apiserver
}

// apiServer is a running kube-apiserver and a client for its REST API.
type apiServer struct {
	t    *testing.T
	base string // https://127.0.0.1:port
	hc   *http.Client
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// etcdTLS is how the apiserver reaches the stores' etcd listeners: their
// https URLs, and the CA and client certificate they trust.
type etcdTLS struct {
	urls  []string
	files tlstest.Files
}

// startAPIServer runs kube-apiserver against the cluster's stores (each
// store's etcd listener, over TLS with a client certificate) on a loopback port, with args added
// to its command line, and waits until /readyz, etcd's checks included,
// answers ok.
func startAPIServer(t *testing.T, bin string, etcd etcdTLS, args ...string) *apiServer {
	t.Helper()
	dir := t.TempDir()
	serving := tlstest.Write(t, dir, "apiserver")
	servingTLS, err := tlsutil.ClientConfig(serving.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	saKey := filepath.Join(dir, "sa.key")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tlstest.WritePEM(t, saKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+`,admin,admin-uid,"system:masters"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := procs.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	a := &apiServer{t: t, base: "https://" + addr, log: filepath.Join(dir, "kube-apiserver.log"), done: make(chan struct{})}
	a.hc = &http.Client{Transport: &bearer{token: adminToken, rt: &http.Transport{
		TLSClientConfig: servingTLS, ForceAttemptHTTP2: true}}}
	cmdArgs := append([]string{
		"--etcd-servers=" + strings.Join(etcd.urls, ","),
		"--etcd-cafile=" + etcd.files.CA, "--etcd-certfile=" + etcd.files.ClientCert, "--etcd-keyfile=" + etcd.files.ClientKey,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + port,
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + serving.ServerCert, "--tls-private-key-file=" + serving.ServerKey,
		"--service-account-key-file=" + saKey, "--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/24",
		// The reconciler publishes the advertise address as the kubernetes
		// service's endpoint, and refuses a loopback one.
		"--endpoint-reconciler-type=none",
		// The apiserver's own compactor: a Txn on compact_rev_key, then
		// Compact, every interval (default 5 minutes).
		"--etcd-compaction-interval=10s",
		"--profiling=false",
		"--v=1",
	}, args...)
	logf, err := os.Create(a.log)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(bin, cmdArgs...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = a.cmd.Wait()
		logf.Close()
		close(a.done)
	}()
	// Registered after procs.Start's, so it runs first: the apiserver stops
	// before the stores.
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			b, _ := os.ReadFile(a.log)
			t.Logf("kube-apiserver log (last 20 KiB): %s", b[max(0, len(b)-20<<10):])
		}
	})
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for {
		select {
		case <-a.done:
			t.Fatalf("kube-apiserver exited: %v", a.cmd.ProcessState)
		default:
		}
		code, body, err := a.request(http.MethodGet, "/readyz?verbose", "", nil)
		if err == nil && code == http.StatusOK {
			return a
		}
		last = fmt.Sprintf("%d %v %s", code, err, body)
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready after 3 minutes; last /readyz: %s", last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// stop ends the apiserver: SIGTERM, then SIGKILL if it does not exit.
func (a *apiServer) stop() {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

type bearer struct {
	token string
	rt    http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

// on returns the client reporting failures to t (a subtest's).
func (a *apiServer) on(t *testing.T) *apiServer {
	b := *a
	b.t = t
	return &b
}

// ctx bounds one request.
func (a *apiServer) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}
