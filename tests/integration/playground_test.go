package integration

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/tests/procs"
)

// The README's first command: `basalt playground` starts three PD members
// and three stores, says where they are and that it is ready; ctl
// round-trips a key in simple, table and json output through it; SIGINT
// stops every process and the playground exits cleanly, keeping the data
// directory it was given.
func TestPlayground(t *testing.T) {
	dir := t.TempDir()
	pg := exec.Command(procs.Binary(t), "playground", "--pd", "3", "--pd-addr", "127.0.0.1:0", "--store-port", "0", "--dir", dir)
	out, err := pg.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	pg.Stderr = pg.Stdout
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- pg.Wait()
	}()
	t.Cleanup(func() {
		_ = pg.Process.Kill()
	})

	var pdAddr string
	var stores []string
	deadline := time.After(2 * time.Minute)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the playground exited before it was ready: %v", <-exited)
			}
			switch {
			case strings.HasPrefix(l, "PD:"):
				pdAddr = strings.TrimSpace(strings.TrimPrefix(l, "PD:"))
			case strings.HasPrefix(l, "store"):
				stores = append(stores, strings.TrimSpace(l[strings.Index(l, ":")+1:]))
			case l == "basalt playground ready":
				ready = true
			}
		case <-deadline:
			t.Fatal("the playground never said it was ready")
		}
	}
	if len(strings.Split(pdAddr, ",")) != 3 || len(stores) != 3 {
		t.Fatalf("the playground named PD %q and stores %v", pdAddr, stores)
	}
	ctl := func(args ...string) string {
		t.Helper()
		b, err := exec.Command(procs.Binary(t), append([]string{"ctl", "--pd", pdAddr}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctl %v: %v: %s", args, err, b)
		}
		return string(b)
	}
	if got := ctl("put", "pg/k", "v1"); got != "OK\n" {
		t.Fatalf("put: %q", got)
	}
	if got := ctl("get", "pg/k"); got != "pg/k\nv1\n" {
		t.Fatalf("get: %q", got)
	}
	if _, rows := tableRows(t, ctl("get", "pg/k", "-w", "table")); len(rows) != 1 || rows[0][0] != "pg/k" || rows[0][1] != "v1" {
		t.Fatalf("get -w table: %v", rows)
	}
	if _, rows := tableRows(t, ctl("member", "list", "-w", "table")); len(rows) != 3 {
		t.Fatalf("member list -w table: %v", rows)
	}
	var resp struct {
		Kvs []struct {
			Key, Value string
		}
		Count int64 `json:"count"`
	}
	if err := json.Unmarshal([]byte(ctl("get", "pg/", "--prefix", "-w", "json")), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || resp.Count != 1 {
		t.Fatalf("get (json): %+v", resp)
	}
	k, _ := base64.StdEncoding.DecodeString(resp.Kvs[0].Key)
	v, _ := base64.StdEncoding.DecodeString(resp.Kvs[0].Value)
	if string(k) != "pg/k" || string(v) != "v1" {
		t.Fatalf("get (json): key %q value %q", k, v)
	}

	if err := pg.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the playground exited with %v after SIGINT", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the playground did not exit after SIGINT")
	}
	// Every child is gone: nothing listens on the addresses any more.
	for _, a := range append(strings.Split(pdAddr, ","), stores...) {
		if conn, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			conn.Close()
			t.Fatalf("%s still accepts connections after the playground stopped", a)
		}
	}
	if _, err := os.Stat(filepath.Join(dir)); err != nil {
		t.Fatalf("the data directory given with --dir is gone: %v", err)
	}
}

// An interrupt while the playground is still starting stops the children
// it started and removes the temporary data directory, as one after
// "ready" does.
func TestPlaygroundInterruptedWhileStarting(t *testing.T) {
	tmp := t.TempDir()
	pg := exec.Command(procs.Binary(t), "playground", "--pd-addr", "127.0.0.1:0", "--store-port", "0")
	pg.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out strings.Builder
	pg.Stdout, pg.Stderr = &out, &out
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- pg.Wait() }()
	t.Cleanup(func() { _ = pg.Process.Kill() })

	// Interrupt once PD has been started and before the stores are ready.
	var dataDir string
	for deadline := time.Now().Add(time.Minute); ; {
		logs, _ := filepath.Glob(filepath.Join(tmp, "basalt-playground-*", "pd1.log"))
		if len(logs) == 1 {
			dataDir = filepath.Dir(logs[0])
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the playground never started PD")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := pg.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the playground exited with %v after an early SIGINT: %s", err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the playground did not exit after an early SIGINT")
	}
	if strings.Contains(out.String(), "ready") {
		t.Fatalf("the interrupt came after the playground was ready; the test checks nothing: %s", out.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("the temporary data directory is still there: %v", left)
	}
	// No child outlives the playground: no process names the data directory.
	procDirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procDirs {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), dataDir) {
			t.Fatalf("%s still runs: %q", f, b)
		}
	}
}
