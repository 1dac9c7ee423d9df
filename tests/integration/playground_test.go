package integration

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/tests/procs"
)

// The README's first command: `basalt playground` starts PD and three
// stores, says where they are and that it is ready; ctl round-trips a key
// in table and json output through it; SIGINT stops every process and the
// playground exits cleanly, keeping the data directory it was given.
func TestPlayground(t *testing.T) {
	dir := t.TempDir()
	pg := exec.Command(procs.Binary(t), "playground", "--pd-addr", "127.0.0.1:0", "--store-port", "0", "--dir", dir)
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
	if pdAddr == "" || len(stores) != 3 {
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
		t.Fatalf("get (table): %q", got)
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
	for _, a := range append([]string{pdAddr}, stores...) {
		if b, err := exec.Command(procs.Binary(t), "ctl", "--pd", a, "status").CombinedOutput(); err == nil {
			t.Fatalf("%s still answers after the playground stopped: %s", a, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir)); err != nil {
		t.Fatalf("the data directory given with --dir is gone: %v", err)
	}
}
