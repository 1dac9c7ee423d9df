package robustness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/tests/netns"
	"github.com/basaltdb/basalt/tests/procs"
)

// A cluster in namespaces, as the full-partition test runs it: each
// process is basalt itself in its node's namespace (ip netns exec execs in
// place, so the nemesis's SIGSTOP and SIGKILL reach basalt, not a wrapper),
// the test reaches the store over the bridge, an isolated store is cut
// off from the test's client, and a store killed and restarted comes back
// in its namespace.
func TestNamespacedCluster(t *testing.T) {
	nw := netns.New(t)
	pdNode, storeNode := nw.Add("pd1"), nw.Add("s1")
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 1, StoreArgs: storeArgs,
		PDNetns: []procs.Netns{{Name: pdNode.Netns, IP: pdNode.IP}}, StoreNetns: []procs.Netns{{Name: storeNode.Netns, IP: storeNode.IP}}})
	store := c.Stores[0]
	if !strings.HasPrefix(store.Addr, storeNode.IP+":") || !strings.HasPrefix(c.PDs[0].Addr, pdNode.IP+":") {
		t.Fatalf("addresses: store %s in %s, PD %s in %s", store.Addr, storeNode.IP, c.PDs[0].Addr, pdNode.IP)
	}
	inNamespace := func(p *procs.Proc, nd *netns.Node) {
		t.Helper()
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID()))
		if err != nil {
			t.Fatal(err)
		}
		if bin, _ := filepath.EvalSymlinks(procs.Binary(t)); exe != bin {
			t.Fatalf("%s's PID %d runs %s, not basalt (%s)", p.Name, p.PID(), exe, bin)
		}
		var st syscall.Stat_t
		if err := syscall.Stat("/run/netns/"+nd.Netns, &st); err != nil {
			t.Fatal(err)
		}
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.PID())); ns != fmt.Sprintf("net:[%d]", st.Ino) {
			t.Fatalf("%s is in %s, not in %s (net:[%d])", p.Name, ns, nd.Netns, st.Ino)
		}
	}
	inNamespace(c.PDs[0], pdNode)
	inNamespace(store, storeNode)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{store.Addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// get reads the key with a short timeout: nil once the store serves.
	get := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Get(ctx, "k")
		return err
	}
	serves := func(what string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			err := get()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				c.DumpState(t, 4000)
				t.Fatalf("%s: the store never served: %v", what, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	serves("at the start")

	c.Signal(store, syscall.SIGSTOP)
	deadline := time.Now().Add(10 * time.Second)
	for procState(store.PID()) != "T" {
		if time.Now().After(deadline) {
			t.Fatalf("SIGSTOP: %s is in state %s", store.Name, procState(store.PID()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := get(); err == nil {
		t.Fatal("the store answered while stopped")
	}
	c.Signal(store, syscall.SIGCONT)
	serves("after SIGCONT")

	if err := nw.Cut(netns.Isolate(storeNode)...); err != nil {
		t.Fatal(err)
	}
	if err := get(); err == nil {
		t.Fatal("the store answered while cut off")
	}
	if d, err := nw.Heal(); err != nil || d == 0 {
		t.Fatalf("heal: %d frames dropped, %v", d, err)
	}
	serves("after the heal")

	c.Signal(store, syscall.SIGKILL)
	c.Restart(store)
	inNamespace(store, storeNode)
	serves("after a restart")
}

// procState is a process's state letter in /proc (T: stopped).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err.Error()
	}
	s := string(b)
	if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 {
		return f[0]
	}
	return "?"
}
