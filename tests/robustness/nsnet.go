package robustness

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/basaltdb/basalt/tests/netns"
	"github.com/basaltdb/basalt/tests/procs"
)

// nsNetwork is TestRobustnessFullPartitions's network: every store and
// PD member in a namespace of its own on one bridge (tests/netns), the
// test, its clients and the nemesis in the root namespace, reaching them
// over the bridge. A cut is a set of drop rules on the bridge, so it
// takes everything on the ports it names: client requests, PD
// heartbeats and TSO, raft and forwarded requests, the gossip's UDP and
// TCP, ARP.
type nsNetwork struct {
	net *netns.Net
	// stores[i] is c.Stores[i]'s node, pds[i] c.PDs[i]'s.
	stores, pds []*netns.Node
}

// startNamespaced runs the full-partition test's cluster: 3 PD members
// and 4 stores, each in its own namespace, with the stores' arguments of
// TestRobustness but no proxies.
func startNamespaced(t *testing.T) (cluster, faultNet) {
	const pds, stores = 3, 4
	ns := &nsNetwork{net: netns.New(t)}
	var pdNS, storeNS []procs.Netns
	for i := range pds {
		nd := ns.net.Add(fmt.Sprintf("pd%d", i+1))
		ns.pds = append(ns.pds, nd)
		pdNS = append(pdNS, procs.Netns{Name: nd.Netns, IP: nd.IP})
	}
	for i := range stores {
		nd := ns.net.Add(fmt.Sprintf("s%d", i+1))
		ns.stores = append(ns.stores, nd)
		storeNS = append(storeNS, procs.Netns{Name: nd.Netns, IP: nd.IP})
	}
	c := procs.Start(t, procs.Options{PDs: pds, Stores: stores, StoreArgs: storeArgs, StoreNetns: storeNS, PDNetns: pdNS})
	var b strings.Builder
	for i, p := range append(append([]*procs.Proc{}, c.PDs...), c.Stores...) {
		nd := append(append([]*netns.Node{}, ns.pds...), ns.stores...)[i]
		fmt.Fprintf(&b, " %s=%s(%s)", p.Name, p.Addr, nd.Netns)
	}
	t.Logf("network %s: the test at %s;%s", ns.net.Prefix(), ns.net.Host.IP, b.String())
	return procCluster{t: t, Cluster: c}, faultNet{ns: ns}
}

// pdNode is PD member p's node.
func (ns *nsNetwork) pdNode(c *procs.Cluster, p *procs.Proc) *netns.Node {
	for i, q := range c.PDs {
		if q == p {
			return ns.pds[i]
		}
	}
	return nil
}

// others is every store's node but store si's.
func (ns *nsNetwork) others(si int) []*netns.Node {
	var out []*netns.Node
	for j, nd := range ns.stores {
		if j != si {
			out = append(out, nd)
		}
	}
	return out
}

// cutFaults are the faults that set drop rules: each kind that ran must
// have dropped something (checkCuts).
var cutFaults = map[string]bool{"isolate-store": true, "long-isolate-store": true, "isolate-pd": true, "isolate-pd-leader": true,
	"cut-from-stores": true, "cut-from-pd": true, "cut-pair": true, "cut-outbound": true, "lossy-store": true}

// checkCuts fails the run if a kind of cut dropped nothing in all the
// times it ran: its rules would then name ports nothing crosses, and the
// run would have tested no partition. (A store's clients, its gossip and
// its PD heartbeats cross its port every second at least; a PD member's
// raft heartbeats its.)
//
// cut-pair is the exception while it held less than pairQuietFor in all:
// two stores need not talk. When neither leads a region the other holds,
// only memberlist's probes cross between them, and each store probes its
// three peers in turn, one a second, so a pair can stay silent for a few
// seconds (seed 6961856031320922258: a 0.7 s cut-pair dropped nothing).
func checkCuts(t *testing.T, n *nemesis) {
	var b strings.Builder
	seen := map[string]bool{}
	held := map[string]time.Duration{}
	for _, w := range n.windows {
		held[w.fault] += time.Duration(w.end - w.start)
	}
	for _, f := range nsFaults {
		ran := n.counts[f] - n.counts[f+" skipped"]
		if !cutFaults[f] || ran == 0 || seen[f] {
			continue
		}
		seen[f] = true
		fmt.Fprintf(&b, " %s %d;", f, n.dropped[f])
		if n.dropped[f] == 0 {
			if f == "cut-pair" && held[f] < pairQuietFor {
				t.Logf("cut-pair held %v in all and dropped nothing: the pair did not talk meanwhile", held[f].Round(time.Millisecond))
				continue
			}
			t.Errorf("%s ran %d times (%v in all) and its rules dropped nothing", f, ran, held[f].Round(time.Millisecond))
		}
	}
	t.Logf("frames dropped by the cuts:%s", b.String())
}

// pairQuietFor: the longest two stores may go without a frame between
// them. memberlist probes one peer a second in a shuffled round over the
// three others, so a store probes a given peer at least once in any six
// seconds; with both stores probing, within about three.
const pairQuietFor = 6 * time.Second

// logCutWindows logs, for each cut, how many single-key writes and reads
// returned successfully while it held: not a check (a cut may stall
// writes everywhere for a while, which is liveness, not safety), but what
// to read when asking how the cluster rode a partition out.
func logCutWindows(t *testing.T, n *nemesis) {
	n.h.mu.Lock()
	ops := append([]porcupine.Operation(nil), n.h.ops...)
	n.h.mu.Unlock()
	var b strings.Builder
	for _, w := range n.windows {
		writes, reads := 0, 0
		for _, op := range ops {
			if op.Output.(kvOutput).Unknown || op.Return < w.start || op.Return > w.end {
				continue
			}
			if op.Input.(kvInput).Op == "get" {
				reads++
			} else {
				writes++
			}
		}
		fmt.Fprintf(&b, "\n  at %.1fs %s %s for %.1fs: %d writes, %d reads",
			time.Duration(w.start).Seconds(), w.fault, w.target, time.Duration(w.end-w.start).Seconds(), writes, reads)
	}
	t.Logf("single-key operations that returned ok during each cut:%s", b.String())
}
