package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/tests/procs"
)

// compose runs docker-compose on deploy/docker-compose.yml as one project.
type compose struct {
	t       *testing.T
	root    string
	project string
	image   string
}

func (c *compose) run(args ...string) (string, error) {
	cmd := exec.Command("docker-compose", append([]string{"-f", filepath.Join(c.root, "deploy", "docker-compose.yml"), "-p", c.project}, args...)...)
	cmd.Env = append(os.Environ(), "BASALT_IMAGE="+c.image)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ctl runs basalt ctl inside store1's container, on the compose network.
func (c *compose) ctl(args ...string) (string, error) {
	return c.run(append([]string{"exec", "-T", "store1", "/basalt", "ctl", "--pd", "pd1:2379,pd2:2379,pd3:2379"}, args...)...)
}

// eventually retries fn until it succeeds or the deadline passes.
func eventually(t *testing.T, what string, d time.Duration, fn func() (string, error)) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, err := fn()
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// The compose cluster of deploy/ (3 PD members, 3 stores, the FROM scratch
// image) comes up on this machine's Docker engine, serves writes and reads
// through ctl and through the etcd API on a published port, and keeps
// serving them after one store's container is stopped.
func TestComposeCluster(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	procs.Binary(t) // the packages compile before the image is built
	suffix := fmt.Sprintf("%d%d", os.Getpid(), time.Now().UnixNano()%100000)
	c := &compose{t: t, root: root, project: "basalttest" + suffix, image: "basalt:test" + suffix}
	build := exec.Command(filepath.Join(root, "scripts", "docker-build.sh"), c.image)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker-build.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.run("logs", "--tail", "40")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := c.run("down", "-v", "--timeout", "5"); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
		_ = exec.Command("docker", "rmi", "-f", c.image).Run()
	})
	if out, err := c.run("up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}

	eventually(t, "cluster up", 3*time.Minute, func() (string, error) {
		out, err := c.ctl("status")
		if err == nil && (!strings.Contains(out, "stores: 3 up") || !strings.Contains(out, "0 without a leader, 0 under-replicated")) {
			err = fmt.Errorf("not ready")
		}
		return out, err
	})
	if out, err := c.ctl("put", "compose/a", "1"); err != nil {
		t.Fatalf("put: %v\n%s", err, out)
	}
	if out, err := c.ctl("get", "compose/a"); err != nil || !strings.Contains(out, "compose/a\n1") {
		t.Fatalf("get: %v\n%q", err, out)
	}

	// The etcd API from the host, through store2's published port.
	port, err := c.run("port", "store2", "20160")
	if err != nil {
		t.Fatalf("compose port: %v\n%s", err, port)
	}
	ep := strings.TrimSpace(port)
	ep = "127.0.0.1" + ep[strings.LastIndex(ep, ":"):]
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cli.Put(ctx, "compose/etcd", "2"); err != nil {
		t.Fatalf("etcd put: %v", err)
	}
	if resp, err := cli.Get(ctx, "compose/", clientv3.WithPrefix()); err != nil || resp.Count != 2 {
		t.Fatalf("etcd get: %v %v", resp, err)
	}

	// One store stops: every region keeps two of three replicas.
	if out, err := c.run("stop", "--timeout", "5", "store3"); err != nil {
		t.Fatalf("stop store3: %v\n%s", err, out)
	}
	eventually(t, "put with store3 stopped", time.Minute, func() (string, error) { return c.ctl("put", "compose/b", "3") })
	out := eventually(t, "get with store3 stopped", time.Minute, func() (string, error) { return c.ctl("get", "compose/", "--prefix") })
	if !strings.Contains(out, "compose/b\n3") || !strings.Contains(out, "compose/a\n1") {
		t.Fatalf("get after the stop: %q", out)
	}
	if resp, err := cli.Get(ctx, "compose/", clientv3.WithPrefix()); err != nil || resp.Count != 3 {
		t.Fatalf("etcd get after the stop: %v %v", resp, err)
	}
}
