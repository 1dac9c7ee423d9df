package integration

import (
	"bufio"
	"context"
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
