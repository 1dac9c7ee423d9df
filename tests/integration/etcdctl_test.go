package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/basaltdb/basalt/tests/procs"
)

var (
	etcdOnce            sync.Once
	etcdBin, etcdctlBin string
	etcdBuildErr        error
	etcdBuildOutput     []byte
)

// etcdBinaries builds etcd and etcdctl 3.7 from the Go module proxy
// (scripts/build-etcd.sh, cached in the user's cache directory).
func etcdBinaries(t *testing.T) (etcd, etcdctl string) {
	t.Helper()
	etcdOnce.Do(func() {
		root, err := filepath.Abs("../..")
		if err != nil {
			etcdBuildErr = err
			return
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		cmd := exec.Command(filepath.Join(root, "scripts", "build-etcd.sh"), filepath.Join(cache, "basalt-etcd"))
		etcdBuildOutput, etcdBuildErr = cmd.Output()
		if etcdBuildErr == nil {
			lines := strings.Fields(string(etcdBuildOutput))
			if len(lines) == 2 {
				etcdBin, etcdctlBin = lines[0], lines[1]
			} else {
				etcdBuildErr = fmt.Errorf("build-etcd.sh printed %q", etcdBuildOutput)
			}
		}
	})
	if etcdBuildErr != nil {
		t.Fatalf("building etcd: %v: %s", etcdBuildErr, etcdBuildOutput)
	}
	return etcdBin, etcdctlBin
}

// startEtcd runs a one-member etcd 3.7 server and returns its client
// address once it serves.
func startEtcd(t *testing.T, bin, ctl string) string {
	t.Helper()
	client, peer := procs.FreeAddr(t), procs.FreeAddr(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "--name", "e1", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "e1=http://"+peer, "--log-level", "error")
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, err := exec.Command(ctl, "--endpoints", client, "endpoint", "health").CombinedOutput(); err == nil {
			return client
		} else if time.Now().After(deadline) {
			t.Fatalf("etcd never served: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// etcdctlStep is one etcdctl command; $LEASE in args is the lease the
// last `lease grant` printed on that system.
type etcdctlStep struct {
	args  string
	stdin string
}

var (
	hexID     = regexp.MustCompile(`\b[0-9a-f]{16}\b`)
	remaining = regexp.MustCompile(`remaining\(\d+s\)`)
	took      = regexp.MustCompile(`took = [0-9.]+[µnm]?s`)
	address   = regexp.MustCompile(`127\.0\.0\.1:\d+`)
)

// normalize hides what differs by nature between two clusters: lease and
// member IDs, remaining seconds, timings, addresses, and the client's own
// JSON log lines (timestamps, pointers).
func normalize(s string) string {
	var kept []string
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, `{"level":`) {
			kept = append(kept, line)
		}
	}
	s = strings.Join(kept, "\n")
	s = hexID.ReplaceAllString(s, "<id>")
	s = remaining.ReplaceAllString(s, "remaining(<s>)")
	s = took.ReplaceAllString(s, "took = <t>")
	return address.ReplaceAllString(s, "<addr>")
}

// The real etcdctl prints the same against a Basalt store as against a
// real etcd 3.7 server, for put/get/del/txn/lease/watch/endpoint commands
// and their errors.
func TestEtcdctlMatchesEtcd(t *testing.T) {
	etcdPath, ctl := etcdBinaries(t)
	etcdAddr := startEtcd(t, etcdPath, ctl)
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	c.Client(t)
	waitReplicated(t, c)
	basaltAddr := c.Stores[0].Addr

	steps := []etcdctlStep{
		{args: "put foo bar"},
		{args: "put foo baz --prev-kv"},
		{args: "get foo"},
		{args: "put foo2 x"},
		{args: "put fop y"},
		{args: "get foo --prefix"},
		{args: "get f --prefix --keys-only"},
		{args: "get foo --from-key --limit 2"},
		{args: "get f --prefix --sort-by=VALUE --order=DESCEND --print-value-only"},
		{args: "get nothing"},
		{args: "del foo2"},
		{args: "del fo --prefix --prev-kv"},
		{args: "txn", stdin: "mod(\"t1\") = \"0\"\n\nput t1 first\n\nget t1\n"},
		{args: "txn", stdin: "mod(\"t1\") = \"0\"\n\nput t1 second\n\nget t1\n"},
		{args: "txn", stdin: "value(\"t1\") = \"first\"\nversion(\"t1\") > \"0\"\n\ndel t1\n\n\n"},
		{args: "lease grant 60"},
		{args: "put lk v --lease=$LEASE"},
		{args: "lease timetolive $LEASE --keys"},
		{args: "lease list"},
		{args: "lease keep-alive --once $LEASE"},
		{args: "lease revoke $LEASE"},
		{args: "get lk"},
		{args: "lease timetolive $LEASE"},
		{args: "put lk v --lease=1234"},
		{args: "get foo --rev 999999999999999999"},
		{args: "put"},
		{args: "endpoint health"},
	}
	run := func(addr string, s etcdctlStep, lease string) (string, string) {
		args := strings.Fields(strings.ReplaceAll(s.args, "$LEASE", lease))
		cmd := exec.Command(ctl, append([]string{"--endpoints", addr, "--dial-timeout", "10s", "--command-timeout", "30s"}, args...)...)
		cmd.Stdin = strings.NewReader(s.stdin)
		out, err := cmd.CombinedOutput()
		exit := "ok"
		if err != nil {
			exit = "failed"
		}
		return string(out), exit
	}
	leases := map[string]string{}
	for _, s := range steps {
		var outs [2]string
		for i, addr := range []string{etcdAddr, basaltAddr} {
			out, exit := run(addr, s, leases[addr])
			if strings.HasPrefix(s.args, "lease grant") {
				if id := hexID.FindString(out); id != "" {
					leases[addr] = id
				}
			}
			outs[i] = normalize(out) + "[" + exit + "]"
		}
		if outs[0] != outs[1] {
			t.Errorf("etcdctl %s\n  etcd:   %q\n  basalt: %q", s.args, outs[0], outs[1])
		}
	}

	// Commands whose output is about the members: they succeed, report a
	// 3.7 server, list every store, and every store hashes alike.
	var all []string
	for _, p := range c.Stores {
		all = append(all, p.Addr)
	}
	eps := strings.Join(all, ",")
	basaltOnly := func(args ...string) string {
		out, err := exec.Command(ctl, append([]string{"--endpoints", eps}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("etcdctl %v: %v: %s", args, err, out)
		}
		return normalize(string(out))
	}
	if out, exit := run(basaltAddr, etcdctlStep{args: "put h1 v"}, ""); exit != "ok" {
		t.Fatal(out)
	}
	if out := basaltOnly("endpoint", "status"); strings.Count(out, ", 3.7.3, ") != 3 || strings.Count(out, ", true, false, ") != 1 {
		t.Errorf("endpoint status: three 3.7.3 members, one leader: %q", out)
	}
	if out := basaltOnly("member", "list"); strings.Count(out, ", started, store-") != 3 {
		t.Errorf("member list: %q", out)
	}
	hashes := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(basaltOnly("endpoint", "hashkv", "--rev", "0")), "\n") {
		if f := strings.Split(line, ", "); len(f) >= 2 {
			hashes[f[1]] = true // endpoint, hash, hash revision
		}
	}
	if len(hashes) != 1 {
		t.Errorf("endpoint hashkv: stores disagree: %v", hashes)
	}

	// A watch from a revision prints the same events.
	rev := regexp.MustCompile(`"revision":(\d+)`)
	watchOut := func(addr string) string {
		out, exit := run(addr, etcdctlStep{args: "put w0 z -w json"}, "")
		m := rev.FindStringSubmatch(out)
		if exit != "ok" || m == nil {
			t.Fatalf("put -w json: %s", out)
		}
		var from int64
		fmt.Sscan(m[1], &from)
		for _, s := range []string{"put w1 a", "put w2 b", "del w1"} {
			if out, exit := run(addr, etcdctlStep{args: s}, ""); exit != "ok" {
				t.Fatalf("%s: %s", s, out)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, ctl, "--endpoints", addr, "watch", "w", "--prefix", "--rev", fmt.Sprint(from+1))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		var lines []string
		sc := bufio.NewScanner(stdout)
		for len(lines) < 8 && sc.Scan() {
			lines = append(lines, sc.Text())
		}
		return strings.Join(lines, "\n")
	}
	if e, b := watchOut(etcdAddr), watchOut(basaltAddr); e != b {
		t.Errorf("etcdctl watch\n  etcd:   %q\n  basalt: %q", e, b)
	}
}
