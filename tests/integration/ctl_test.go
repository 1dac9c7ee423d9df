package integration

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/tests/procs"
)

// `basalt ctl txn` reads etcdctl's syntax from stdin; a compare-and-set
// succeeds once and then fails.
func TestCtlTxn(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	c.Client(t)
	waitReplicated(t, c)
	in := "version(\"t/x\") = \"0\"\n\nput t/x \"first value\"\n\nget t/x\n"
	for _, want := range []string{"SUCCESS\n\nOK\n", "FAILURE\n\nt/x\nfirst value\n"} {
		cmd := exec.Command(procs.Binary(t), "ctl", "--pd", c.PDEndpoints(), "txn")
		cmd.Stdin = strings.NewReader(in)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ctl txn: %v: %s", err, out)
		}
		if string(out) != want {
			t.Fatalf("ctl txn printed %q, want %q", out, want)
		}
	}
	cmd := exec.Command(procs.Binary(t), "ctl", "--pd", c.PDEndpoints(), "txn")
	cmd.Stdin = strings.NewReader("frob(\"k\") = \"1\"\n")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "unknown target") {
		t.Fatalf("a bad compare: %v: %s", err, out)
	}
}

// `basalt ctl watch --prefix` prints events as etcdctl does until it is
// interrupted.
func TestCtlWatch(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	waitReplicated(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, procs.Binary(t), "ctl", "--pd", c.PDEndpoints(), "watch", "v/", "--prefix")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// The watch starts after a timestamp drawn when it starts: keep
	// writing until the first event shows.
	var got []string
	for len(got) < 3 {
		put(t, cl, "v/a", "1")
		select {
		case l := <-lines:
			got = append(got, l)
			for len(got) < 3 {
				got = append(got, <-lines)
			}
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no event printed")
		}
	}
	if strings.Join(got, "|") != "PUT|v/a|1" {
		t.Fatalf("printed %q", got)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ctl watch did not exit cleanly on SIGINT: %v", err)
	}
}

// `basalt ctl lease` speaks etcdctl's lease dialect: hexadecimal IDs,
// `put --lease`, timetolive with keys, list, revoke, and one-line errors.
func TestCtlLease(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	c.Client(t)
	waitReplicated(t, c)
	ctl := func(args ...string) (string, error) {
		out, err := exec.Command(procs.Binary(t), append([]string{"ctl", "--pd", c.PDEndpoints()}, args...)...).CombinedOutput()
		return string(out), err
	}
	out, err := ctl("lease", "grant", "60", "--id", "2a")
	if err != nil || out != "lease 000000000000002a granted with TTL(60s)\n" {
		t.Fatalf("grant: %v: %q", err, out)
	}
	if out, err := ctl("put", "lk", "v", "--lease", "2a"); err != nil || out != "OK\n" {
		t.Fatalf("put --lease: %v: %q", err, out)
	}
	// A serializable get is served by any replica, which may not have
	// applied the put yet.
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, err := ctl("get", "lk", "--consistency", "s")
		if err == nil && out == "lk\nv\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("get --consistency s: %v: %q", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := ctl("lease", "timetolive", "2a", "--keys"); err != nil || !strings.Contains(out, "granted with TTL(60s)") || !strings.Contains(out, "attached keys([lk])") {
		t.Fatalf("timetolive: %v: %q", err, out)
	}
	if out, err := ctl("lease", "keep-alive", "--once", "2a"); err != nil || out != "lease 000000000000002a keepalived with TTL(60)\n" {
		t.Fatalf("keep-alive --once: %v: %q", err, out)
	}
	if out, err := ctl("lease", "list"); err != nil || out != "found 1 leases\n000000000000002a\n" {
		t.Fatalf("list: %v: %q", err, out)
	}
	if out, err := ctl("lease", "revoke", "2a"); err != nil || out != "lease 000000000000002a revoked\n" {
		t.Fatalf("revoke: %v: %q", err, out)
	}
	if out, err := ctl("get", "lk"); err != nil || out != "" {
		t.Fatalf("the revoked lease's key: %v: %q", err, out)
	}
	if out, err := ctl("put", "lk", "v", "--lease", "2a"); err == nil || !strings.Contains(out, "requested lease not found") {
		t.Fatalf("put with a revoked lease: %v: %q", err, out)
	}
	if out, err := ctl("lease", "revoke", "zz"); err == nil || !strings.Contains(out, "bad lease ID") {
		t.Fatalf("bad ID: %v: %q", err, out)
	}
}

// `basalt ctl status` sums the cluster up, and says so when a store is
// killed; `region show` and `region transfer-leader` work on a live region;
// bad arguments give one line on stderr and a non-zero exit.
func TestCtlStatusRegionShowTransferLeader(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	c.Client(t)
	pd := waitReplicated(t, c)
	ctl := func(args ...string) (string, error) {
		out, err := exec.Command(procs.Binary(t), append([]string{"ctl", "--pd", c.PDEndpoints()}, args...)...).CombinedOutput()
		return string(out), err
	}
	// A peer just added can be reported down until it catches up: poll.
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := ctl("status")
		if err == nil && strings.Contains(out, "PD: 1 members, leader pd1") && strings.Contains(out, "stores: 3 up, 0 not up") &&
			strings.Contains(out, "0 without a leader, 0 under-replicated") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: %v: %s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var out string
	var err error
	out, err = ctl("region", "show", "a")
	if err != nil || !strings.HasPrefix(out, "region ") || strings.Count(out, "(voter)") != 3 {
		t.Fatalf("region show: %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r, err := pd.GetRegion(ctx, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	var to uint64
	for _, p := range r.GetRegion().GetPeers() {
		if p.GetStoreId() != r.GetLeader().GetStoreId() {
			to = p.GetStoreId()
		}
	}
	out, err = ctl("region", "transfer-leader", fmt.Sprint(r.GetRegion().GetId()), fmt.Sprint(to))
	if err != nil || out != fmt.Sprintf("region %d is led from store %d\n", r.GetRegion().GetId(), to) {
		t.Fatalf("transfer-leader: %v: %s", err, out)
	}
	for _, bad := range [][]string{{"region", "transfer-leader", "x", "1"}, {"lease", "grant", "-5"}, {"get"}, {"get", "k", "--consistency", "x"}} {
		out, err := ctl(bad...)
		if err == nil || strings.Count(strings.TrimSpace(out), "\n") > 0 && !strings.Contains(out, "Usage") {
			t.Fatalf("ctl %v: want one error line and a failure: %v: %q", bad, err, out)
		}
	}
	victim := c.Stores[2]
	c.Signal(victim, syscall.SIGKILL)
	for {
		out, err := ctl("status", "-w", "json")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, `"stores_not_up": 1`) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("status never showed the killed store: %s", out)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
