package integration

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/internal/tlsutil"
	"github.com/basaltdb/basalt/internal/tlsutil/tlstest"
	"github.com/basaltdb/basalt/tests/procs"
)

// TestEtcdAPIOverTLS: every store serves the etcd API on an https listener
// of its own that requires client certificates. clientv3 with a
// certificate works (KV, a watch, the member list naming the https URLs,
// endpoint auto-sync); without one, with another CA's, or in plain text it
// is refused.
func TestEtcdAPIOverTLS(t *testing.T) {
	_, ctl := etcdBinaries(t)
	dir := t.TempDir()
	certs, other := tlstest.Write(t, dir, "etcd"), tlstest.Write(t, dir, "other")
	var etcdAddrs []string
	for range 3 {
		etcdAddrs = append(etcdAddrs, procs.FreeAddr(t))
	}
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3,
		StoreArgs: []string{"--etcd-cert-file", certs.ServerCert, "--etcd-key-file", certs.ServerKey,
			"--etcd-trusted-ca-file", certs.CA, "--etcd-client-cert-auth"},
		StoreArgsFor: func(i int) []string { return []string{"--etcd-listen-url", "https://" + etcdAddrs[i]} }})
	waitReplicated(t, c)
	var urls []string
	for _, a := range etcdAddrs {
		urls = append(urls, "https://"+a)
	}
	tlsClient := func(ca, cert, key string, eps ...string) *clientv3.Client {
		t.Helper()
		cfg, err := tlsutil.ClientConfig(ca, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, TLS: cfg, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cli := tlsClient(certs.CA, certs.ClientCert, certs.ClientKey, urls[0])
	wch := cli.Watch(ctx, "tls/", clientv3.WithPrefix())
	put, err := cli.Put(ctx, "tls/a", "1")
	if err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	get, err := cli.Get(ctx, "tls/a")
	if err != nil || len(get.Kvs) != 1 || string(get.Kvs[0].Value) != "1" {
		t.Fatalf("get over TLS: %v %v", get, err)
	}
	select {
	case wr := <-wch:
		if err := wr.Err(); err != nil || len(wr.Events) != 1 || wr.Events[0].Kv.ModRevision != put.Header.Revision {
			t.Fatalf("watch over TLS: %+v %v, want the put at %d", wr.Events, err, put.Header.Revision)
		}
	case <-ctx.Done():
		t.Fatal("no watch event over TLS")
	}
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("tls/a"), "=", "1")).Then(clientv3.OpPut("tls/a", "2")).Commit()
	if err != nil || !txn.Succeeded {
		t.Fatalf("txn over TLS: %v %v", txn, err)
	}

	// The member list names each store's https listener, not its plain
	// address, so a syncing client stays on TLS and reaches every store.
	members, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, m := range members.Members {
		listed = append(listed, m.ClientURLs...)
	}
	slices.Sort(listed)
	want := slices.Sorted(slices.Values(urls))
	if !slices.Equal(listed, want) {
		t.Fatalf("member list client URLs %v, want %v", listed, want)
	}
	if err := cli.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if eps := slices.Sorted(slices.Values(cli.Endpoints())); !slices.Equal(eps, want) {
		t.Fatalf("endpoints after sync %v, want %v", eps, want)
	}
	for _, u := range urls[1:] {
		one := tlsClient(certs.CA, certs.ClientCert, certs.ClientKey, u)
		if r, err := one.Get(ctx, "tls/a"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "2" {
			t.Fatalf("get through %s: %v %v", u, r, err)
		}
	}

	// etcdctl with its TLS flags, as an operator would run it.
	etcdctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ctl, append([]string{"--endpoints", urls[1], "--cacert", certs.CA, "--cert", certs.ClientCert,
			"--key", certs.ClientKey, "--dial-timeout", "10s", "--command-timeout", "30s"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("etcdctl %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	if out := etcdctl("put", "tls/ctl", "v"); strings.TrimSpace(out) != "OK" {
		t.Fatalf("etcdctl put over TLS: %q", out)
	}
	if out := etcdctl("get", "tls/ctl", "--print-value-only"); strings.TrimSpace(out) != "v" {
		t.Fatalf("etcdctl get over TLS: %q", out)
	}
	if out := etcdctl("endpoint", "health"); !strings.Contains(out, urls[1]+" is healthy") {
		t.Fatalf("etcdctl endpoint health over TLS: %q", out)
	}
	if out := etcdctl("member", "list"); strings.Count(out, "https://127.0.0.1:") != 3 {
		t.Fatalf("etcdctl member list over TLS: %q, want the three https URLs", out)
	}

	// Refused: no client certificate, another CA's, a server certificate
	// the client cannot verify, and plain text on the TLS port. Each is
	// only known refused when its put times out, so they wait together.
	plain, err := clientv3.New(clientv3.Config{Endpoints: etcdAddrs[:1], DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	refused := map[string]*clientv3.Client{
		"no client certificate":           tlsClient(certs.CA, "", "", urls[0]),
		"another CA's client certificate": tlsClient(certs.CA, other.ClientCert, other.ClientKey, urls[0]),
		"an unknown server CA":            tlsClient(other.CA, certs.ClientCert, certs.ClientKey, urls[0]),
		"plain text on the TLS port":      plain,
	}
	var wg sync.WaitGroup
	wrote := make(chan string, len(refused))
	for name, cli := range refused {
		wg.Go(func() {
			rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
			defer rcancel()
			if _, err := cli.Put(rctx, "tls/refused", name); err == nil {
				wrote <- name
			}
		})
	}
	wg.Wait()
	close(wrote)
	for name := range wrote {
		t.Errorf("%s: the put went through", name)
	}
	if r, err := cli.Get(ctx, "tls/refused"); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("a refused client wrote: %v %v", r, err)
	}
}
