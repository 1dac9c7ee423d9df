package robustness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/proto/pdpb"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/tests/netns"
	"github.com/basaltdb/basalt/tests/procs"
)

// nemesis injects one fault at a time into a running cluster and heals it
// before the next. Every fault keeps a quorum of each region's replicas (4
// stores, 3 replicas, one store touched at a time; a replica move in
// flight is a joint configuration whose halves each keep two of three), so
// the cluster must keep serving, and what it served must stay
// linearizable. Merges and moves are PD operators: they go on after the
// fault returns, overlapping the next ones. The network faults also touch
// one store at a time: a store cut off from the rest, or links between two
// stores cut, in one direction or both, leave every region's other two
// replicas in touch with each other.
//
// In TestRobustnessFullPartitions the network faults are cuts of the
// namespaces' network instead (nsnet.go), again touching one store or
// one PD member at a time: a store cut off, from everything or from the
// other stores, leaves each region two replicas in touch, as a killed
// one does, and a PD member cut off leaves the other two a quorum.
type nemesis struct {
	t *testing.T
	// cl is the cluster; c the same when its stores are processes (the
	// faults that signal them or cut their namespaces need it), else nil.
	cl cluster
	c  *procs.Cluster
	pd *pdclient.Client
	// faults is the list to draw from: faults or nsFaults.
	faults []string
	// net is TestRobustness's proxies, ns the full-partition test's
	// namespaces; the other is nil.
	net *network
	ns  *nsNetwork
	rng *rand.Rand
	// keys the traffic uses: splits cut between them.
	keys   []string
	counts map[string]int
	// dropped is the frames each kind of cut dropped, in all.
	dropped map[string]uint64
	// h and windows: when each cut held, on the history's clock, for the
	// log of what got through meanwhile (logCutWindows).
	h       *history
	windows []cutWindow
}

// cutWindow is one cut: its fault, what it cut off, when it held.
type cutWindow struct {
	fault, target string
	start, end    int64
}

// storeArgs are every store's arguments in both tests.
var storeArgs = []string{"--raft-tick", "50ms", "--etcd-progress-notify-interval", "300ms", "--fault-sync-delay-file", syncDelayFile}

// faultNet is what a run's network faults act on: the proxies between the
// stores (TestRobustness) or the namespaces' network (the full
// partitions).
type faultNet struct {
	proxies *network
	ns      *nsNetwork
}

// syncDelayFile is each store's --fault-sync-delay-file, in its data
// directory.
const syncDelayFile = "sync-delay"

var faults = []string{"kill-store", "pause-store", "transfer-leader", "split", "restart-pd", "merge", "move-replica",
	"partition-store", "partition-pair", "one-way", "delay-store", "stall-disk", "kill-pd-leader", "long-partition"}

// nsFaults is TestRobustnessFullPartitions's list: the faults above that
// need no proxies, and the cuts of the namespaces' network in place of
// the proxies' faults (there is no delay: the kernel has no netem). The
// cuts are listed twice, isolate-store three times, so about three faults
// in five cut the network; the long isolation once, as long-partition
// above; lossy-store twice.
var nsFaults = []string{"kill-store", "pause-store", "transfer-leader", "split", "restart-pd", "merge", "move-replica",
	"stall-disk", "kill-pd-leader",
	"isolate-store", "isolate-store", "isolate-store", "long-isolate-store",
	"isolate-pd", "isolate-pd", "isolate-pd-leader", "isolate-pd-leader",
	"cut-from-stores", "cut-from-stores", "cut-from-pd", "cut-from-pd", "cut-pair", "cut-pair", "cut-outbound", "cut-outbound",
	"lossy-store", "lossy-store"}

// inject runs one fault chosen by the seed and heals it.
func (n *nemesis) inject(ctx context.Context) {
	f := n.faults[n.rng.IntN(len(n.faults))]
	n.counts[f]++
	si := n.rng.IntN(n.cl.storeCount())
	name := n.cl.storeName(si)
	hold := time.Duration(500+n.rng.IntN(2500)) * time.Millisecond
	if n.injectInProcess(ctx, f, si, hold) {
		return
	}
	switch f {
	case "isolate-store":
		// Cut off from everything: its clients, PD, the gossip, the other
		// stores.
		n.cut(ctx, f, name, hold, netns.Isolate(n.ns.stores[si])...)
	case "long-isolate-store":
		// The same, past the 15 s after which keepalives give a silent
		// connection up (the stores' raft transport's; PD's and the
		// clients' own), and past the gossip's suspicion timeout.
		n.cut(ctx, f, name, time.Duration(16000+n.rng.IntN(4000))*time.Millisecond, netns.Isolate(n.ns.stores[si])...)
	case "isolate-pd":
		// Any member: with three, a follower two times in three.
		p := n.c.PDs[n.rng.IntN(len(n.c.PDs))]
		n.cut(ctx, f, p.Name, hold, netns.Isolate(n.ns.pdNode(n.c, p))...)
	case "isolate-pd-leader":
		// The leader, alive but unreachable: the other two elect another,
		// and the cut-off one must stop handing out timestamps once its
		// lease runs out, though stores and clients may still be waiting
		// on it.
		p := n.pdLeader()
		if p == nil {
			n.counts[f+" skipped"]++
			return
		}
		n.cut(ctx, f, p.Name, hold, netns.Isolate(n.ns.pdNode(n.c, p))...)
	case "lossy-store":
		// Every link into and out of the store loses 10–40 % of its frames
		// at random for 2–6 s: TCP retransmits, raft messages arrive late
		// and out of step, heartbeats and leases are lost now and then;
		// nothing is cut off for good.
		loss := 10 + n.rng.IntN(31)
		n.cut(ctx, f, fmt.Sprintf("%s (%d%%)", name, loss), time.Duration(2000+n.rng.IntN(4000))*time.Millisecond,
			netns.Lossy(loss, n.ns.stores[si])...)
	case "cut-from-stores":
		// Cut from the other stores (raft, forwarded requests, gossip)
		// while its clients and PD still reach it: a leader there keeps
		// being asked, and must not answer from a lease it lost.
		n.cut(ctx, f, name, hold, netns.Between(n.ns.stores[si:si+1], n.ns.others(si))...)
	case "cut-from-pd":
		// Cut from every PD member only: no heartbeats, no timestamps,
		// while clients and the other stores still reach it.
		n.cut(ctx, f, name, hold, netns.Between(n.ns.stores[si:si+1], n.ns.pds)...)
	case "cut-pair":
		// Two stores apart, each still reaching everything else.
		j := n.other(si)
		n.cut(ctx, f, name+"|"+n.cl.storeName(j), hold, netns.Between(n.ns.stores[si:si+1], n.ns.stores[j:j+1])...)
	case "cut-outbound":
		// Everything the store sends is lost, what it is sent arrives:
		// requests reach it, its answers and TCP acknowledgements do not,
		// so every connection with it stalls both ways.
		n.cut(ctx, f, name, hold, netns.Rule{From: n.ns.stores[si]})
	case "partition-store":
		// Both ways between the store and every other.
		n.netFault(ctx, linkState{blackhole: true}, hold, n.linksOf(si)...)
	case "long-partition":
		// Like partition-store, but held past the 15 s after which the
		// stores' keepalives give a silent connection up: the links come
		// back on new connections, dialed while the cut still held them.
		n.netFault(ctx, linkState{blackhole: true}, time.Duration(16000+n.rng.IntN(4000))*time.Millisecond, n.linksOf(si)...)
	case "partition-pair":
		// Both ways between two stores, each still in touch with the others.
		j := n.other(si)
		n.netFault(ctx, linkState{blackhole: true}, hold, link{si, j}, link{j, si})
	case "one-way":
		// What the store sends the other is held until the heal; what it
		// is sent arrives.
		n.netFault(ctx, linkState{blackhole: true}, hold, link{si, n.other(si)})
	case "delay-store":
		// Every link into and out of the store, so a round trip with it
		// takes twice the delay.
		delay := time.Duration(50+n.rng.IntN(251)) * time.Millisecond
		n.netFault(ctx, linkState{delay: delay}, hold, n.linksOf(si)...)
	case "stall-disk":
		// Every fsync of the store waits (--fault-sync-delay-file): its
		// raft rounds block in the sync, so it falls behind as a follower
		// and loses what it leads, without crashing or losing anything.
		delay := time.Duration(200+n.rng.IntN(1301)) * time.Millisecond
		if err := n.cl.stallDisk(si, delay); err != nil {
			n.t.Errorf("stall-disk: %v", err)
			return
		}
		sleep(ctx, hold)
		if err := n.cl.stallDisk(si, 0); err != nil {
			n.t.Errorf("stall-disk: %v", err)
		}
	case "kill-store":
		n.cl.killStore(ctx, si, hold)
	case "pause-store":
		n.c.Signal(n.c.Stores[si], syscall.SIGSTOP)
		sleep(ctx, hold)
		n.c.Signal(n.c.Stores[si], syscall.SIGCONT)
	case "restart-pd":
		// Any member (with three, a follower two times in three).
		pd := n.c.PDs[n.rng.IntN(len(n.c.PDs))]
		n.c.Signal(pd, syscall.SIGKILL)
		sleep(ctx, hold/2)
		n.c.Restart(pd)
	case "kill-pd-leader":
		// The leader: TSO, IDs and routing move to a new one, whose
		// timestamps must stay above every one the old leader gave.
		pd := n.pdLeader()
		if pd == nil {
			n.counts[f+" skipped"]++
			return
		}
		n.c.Signal(pd, syscall.SIGKILL)
		sleep(ctx, hold)
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
		if out, err := n.cl.transferLeader(r.GetRegion().GetId(), to[n.rng.IntN(len(to))]); err != nil {
			n.counts[f+" failed"]++
			n.t.Logf("transfer-leader: %v: %s", err, strings.TrimSpace(out))
		}
	case "split":
		key := n.keys[1+n.rng.IntN(len(n.keys)-1)]
		if out, err := n.cl.split(key); err != nil {
			n.counts[f+" failed"]++
			n.t.Logf("split at %s: %v: %s", key, err, strings.TrimSpace(out))
		}
	case "merge":
		// Two neighbours among the traffic's regions; PD aligns their
		// replicas first if a move left them apart.
		rs := n.trafficRegions(ctx)
		if len(rs) < 2 {
			n.counts[f+" skipped"]++
			return
		}
		i := n.rng.IntN(len(rs) - 1)
		n.operator(f, fmt.Sprintf(`{"name": "merge-region", "source_region_id": %d, "target_region_id": %d}`,
			rs[i+1].GetRegion().GetId(), rs[i].GetRegion().GetId()))
	case "move-replica":
		// A replica on the store without one; PD's replica checker then
		// removes one of the other three.
		rs := n.trafficRegions(ctx)
		if len(rs) == 0 {
			n.counts[f+" skipped"]++
			return
		}
		r := rs[n.rng.IntN(len(rs))].GetRegion()
		var to uint64
		for _, id := range n.storeIDs(ctx) {
			if region.FindPeer(r, id) == nil {
				to = id
			}
		}
		if to == 0 {
			n.counts[f+" skipped"]++
			return
		}
		n.operator(f, fmt.Sprintf(`{"name": "add-peer", "region_id": %d, "store_id": %d}`, r.GetId(), to))
	}
}

// cut sets the namespaces' network's rules to rs for hold, then heals it;
// target names what it cut off, for the log.
func (n *nemesis) cut(ctx context.Context, f, target string, hold time.Duration, rs ...netns.Rule) {
	if err := n.ns.net.Cut(rs...); err != nil {
		n.t.Fatalf("%s: %v", f, err)
	}
	w := cutWindow{fault: f, target: target, start: n.h.now()}
	sleep(ctx, hold)
	d, err := n.ns.net.Heal()
	if err != nil {
		n.t.Fatalf("%s: heal: %v", f, err)
	}
	w.end = n.h.now()
	n.windows = append(n.windows, w)
	n.dropped[f] += d
}

// netFault sets the links to st for hold, then heals the network.
func (n *nemesis) netFault(ctx context.Context, st linkState, hold time.Duration, links ...link) {
	n.net.set(st, links...)
	sleep(ctx, hold)
	n.net.heal()
}

// other is a store other than store i, chosen by the seed.
// linksOf is every link into and out of store si.
func (n *nemesis) linksOf(si int) []link {
	var ls []link
	for j := range n.cl.storeCount() {
		if j != si {
			ls = append(ls, link{si, j}, link{j, si})
		}
	}
	return ls
}

func (n *nemesis) other(i int) int {
	return (i + 1 + n.rng.IntN(n.cl.storeCount()-1)) % n.cl.storeCount()
}

// trafficRegions are the regions holding the traffic's keys, in key order.
func (n *nemesis) trafficRegions(ctx context.Context) []*pdpb.RegionInfo {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rs, err := n.pd.ScanRegions(rctx, []byte(n.keys[0]), []byte(n.keys[len(n.keys)-1]+"\x00"), 0)
	if err != nil {
		return nil
	}
	return rs
}

func (n *nemesis) storeIDs(ctx context.Context) []uint64 {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stores, err := n.pd.GetAllStores(rctx, true)
	if err != nil {
		return nil
	}
	var ids []uint64
	for _, s := range stores {
		ids = append(ids, s.GetId())
	}
	return ids
}

// operator hands PD an operator (it runs on after this returns). PD may
// refuse one that conflicts with an operator in flight: counted, not a
// failure of the run.
func (n *nemesis) operator(fault, body string) {
	// Any member takes it (a follower redirects to the leader); one may be
	// down.
	var resp *http.Response
	var err error
	for _, addr := range n.cl.pdEndpoints() {
		if resp, err = pdHTTP.Post("http://"+addr+"/pd/api/v1/operators", "application/json", strings.NewReader(body)); err == nil {
			break
		}
	}
	if err != nil {
		n.counts[fault+" failed"]++
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		n.counts[fault+" refused"]++
		n.t.Logf("%s: PD refused %s: %s: %s", fault, body, resp.Status, strings.TrimSpace(string(b)))
	}
}

// pdHTTP calls PD's HTTP API: a member that hangs (paused, cut off) must
// not stall the nemesis.
var pdHTTP = &http.Client{Timeout: 5 * time.Second}

// pdLeader is the PD member the members API names as leader, or nil.
func (n *nemesis) pdLeader() *procs.Proc {
	for _, pd := range n.c.PDs {
		resp, err := pdHTTP.Get("http://" + pd.Addr + "/pd/api/v1/members")
		if err != nil {
			continue
		}
		var out struct {
			Leader *struct {
				Name string `json:"name"`
			} `json:"leader"`
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || out.Leader == nil {
			continue
		}
		for _, p := range n.c.PDs {
			if p.Name == out.Leader.Name {
				return p
			}
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
