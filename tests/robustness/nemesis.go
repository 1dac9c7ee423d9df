package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/tests/procs"
)

// nemesis injects one fault at a time into a running cluster and heals it
// before the next. Every fault keeps a quorum of each region's replicas (3
// stores, 3 replicas, one store touched at a time), so the cluster must
// keep serving, and what it served must stay linearizable.
type nemesis struct {
	t   *testing.T
	c   *procs.Cluster
	pd  *pdclient.Client
	rng *rand.Rand
	// keys the traffic uses: splits cut between them.
	keys   []string
	counts map[string]int
}

var faults = []string{"kill-store", "pause-store", "transfer-leader", "split", "restart-pd"}

// inject runs one fault chosen by the seed and heals it.
func (n *nemesis) inject(ctx context.Context) {
	f := faults[n.rng.IntN(len(faults))]
	n.counts[f]++
	store := n.c.Stores[n.rng.IntN(len(n.c.Stores))]
	hold := time.Duration(500+n.rng.IntN(2500)) * time.Millisecond
	switch f {
	case "kill-store":
		n.c.Signal(store, syscall.SIGKILL)
		sleep(ctx, hold)
		n.c.Restart(store)
	case "pause-store":
		n.c.Signal(store, syscall.SIGSTOP)
		sleep(ctx, hold)
		n.c.Signal(store, syscall.SIGCONT)
	case "restart-pd":
		pd := n.c.PDs[0]
		n.c.Signal(pd, syscall.SIGKILL)
		sleep(ctx, hold/2)
		n.c.Restart(pd)
	case "transfer-leader":
		key := n.keys[n.rng.IntN(len(n.keys))]
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := n.pd.GetRegion(rctx, []byte(key))
		cancel()
		if err != nil || r.GetLeader() == nil {
			n.counts[f+" skipped"]++
			return
		}
		var to []uint64
		for _, p := range r.GetRegion().GetPeers() {
			if p.GetStoreId() != r.GetLeader().GetStoreId() {
				to = append(to, p.GetStoreId())
			}
		}
		if len(to) == 0 {
			n.counts[f+" skipped"]++
			return
		}
		if out, err := n.ctl("region", "transfer-leader", fmt.Sprint(r.GetRegion().GetId()), fmt.Sprint(to[n.rng.IntN(len(to))])); err != nil {
			n.counts[f+" failed"]++
			n.t.Logf("transfer-leader: %v: %s", err, strings.TrimSpace(out))
		}
	case "split":
		key := n.keys[1+n.rng.IntN(len(n.keys)-1)]
		if out, err := n.ctl("region", "split", key); err != nil {
			n.counts[f+" failed"]++
			n.t.Logf("split at %s: %v: %s", key, err, strings.TrimSpace(out))
		}
	}
}

func (n *nemesis) ctl(args ...string) (string, error) {
	cmd := exec.Command(procs.Binary(n.t), append([]string{"ctl", "--pd", n.c.PDEndpoints()}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
