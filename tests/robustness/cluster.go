package robustness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/tests/procs"
)

// cluster is what the suite (runRobustness, the nemesis's faults that any
// cluster takes) needs of a running cluster: procCluster runs basalt
// processes (TestRobustness, TestRobustnessFullPartitions),
// inprocCluster runs PD and the stores in the test's process on pebble's
// crashable in-memory file system (TestRobustnessInProcessCrash).
type cluster interface {
	// storeCount is how many stores run; storeName names store i (from 0)
	// in the log.
	storeCount() int
	storeName(i int) string
	// clientAddr is where a client reaches store i's etcd API.
	clientAddr(i int) string
	// pdEndpoints are PD's client addresses (gRPC and the HTTP API).
	pdEndpoints() []string
	// split makes every key a region boundary (ctl region split); out is
	// what to log when it fails.
	split(keys ...string) (out string, err error)
	// transferLeader moves a region's leadership to its replica on store
	// and waits for it (ctl region transfer-leader).
	transferLeader(region, store uint64) (out string, err error)
	// killStore kills store i, losing nothing it wrote (a SIGKILL: the
	// page cache survives a process), and restarts it after down.
	killStore(ctx context.Context, i int, down time.Duration)
	// stallDisk makes every fsync of store i wait delay (0: none).
	stallDisk(i int, delay time.Duration) error
	// dumpState logs what a failed run leaves to read (the last tail
	// bytes of each log, the stores' state). It may end the stores.
	dumpState(t testing.TB, tail int)
}

// procCluster is a cluster of basalt processes.
type procCluster struct {
	t testing.TB
	*procs.Cluster
}

func (c procCluster) storeCount() int         { return len(c.Stores) }
func (c procCluster) storeName(i int) string  { return c.Stores[i].Name }
func (c procCluster) clientAddr(i int) string { return c.Stores[i].Addr }
func (c procCluster) pdEndpoints() []string   { return strings.Split(c.PDEndpoints(), ",") }

func (c procCluster) split(keys ...string) (string, error) {
	return c.ctl(append([]string{"region", "split"}, keys...)...)
}

func (c procCluster) transferLeader(region, store uint64) (string, error) {
	return c.ctl("region", "transfer-leader", fmt.Sprint(region), fmt.Sprint(store))
}

func (c procCluster) ctl(args ...string) (string, error) {
	cmd := exec.Command(procs.Binary(c.t), append([]string{"ctl", "--pd", c.PDEndpoints()}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c procCluster) killStore(ctx context.Context, i int, down time.Duration) {
	c.Signal(c.Stores[i], syscall.SIGKILL)
	sleep(ctx, down)
	c.Restart(c.Stores[i])
}

// stallDisk writes the delay to the store's --fault-sync-delay-file, or
// removes the file.
func (c procCluster) stallDisk(i int, delay time.Duration) error {
	control := filepath.Join(c.Stores[i].Dir, syncDelayFile)
	if delay == 0 {
		return os.Remove(control)
	}
	return os.WriteFile(control, []byte(delay.String()), 0o644)
}

func (c procCluster) dumpState(t testing.TB, tail int) { c.DumpState(t, tail) }
