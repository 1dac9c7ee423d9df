package storenode

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Stores gossip liveness with memberlist. Raft notices a dead leader only
// where followers tick, and idle regions hibernate; a store memberlist
// declares dead wakes every region led there, so those regions elect a new
// leader at once instead of at the next request. Stores find each other
// through PD (each registers its gossip address).

type gossip struct {
	s    *Server
	ml   *memberlist.Memberlist
	addr string
}

const gossipNodePrefix = "store-"

// startGossip binds memberlist on addr (host:port; port 0 picks one).
func (s *Server) startGossip(addr string) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("storenode: gossip address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("storenode: gossip port %q: %w", portStr, err)
	}
	// memberlist wants IPs: a store advertising a name (a container's or a
	// pod's) gossips on the address that name resolves to here.
	ip := net.ParseIP(host)
	if ip == nil {
		addrs, err := net.LookupIP(host)
		if err != nil || len(addrs) == 0 {
			return nil, fmt.Errorf("storenode: gossip host %q does not resolve: %v", host, err)
		}
		ip = addrs[0]
		for _, a := range addrs {
			if a.To4() != nil {
				ip = a
				break
			}
		}
	}
	g := &gossip{s: s}
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = fmt.Sprintf("%s%d", gossipNodePrefix, s.storeID)
	cfg.BindAddr, cfg.BindPort = ip.String(), port
	cfg.AdvertiseAddr, cfg.AdvertisePort = ip.String(), port
	if ip.IsUnspecified() {
		cfg.AdvertiseAddr = "" // memberlist picks this host's private address
	}
	cfg.Events = g
	cfg.Logger = log.New(io.Discard, "", 0)
	if g.ml, err = memberlist.Create(cfg); err != nil {
		return nil, fmt.Errorf("storenode: start gossip: %w", err)
	}
	n := g.ml.LocalNode()
	g.addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	return g, nil
}

// NotifyJoin implements memberlist.EventDelegate.
func (g *gossip) NotifyJoin(*memberlist.Node) {}

// NotifyUpdate implements memberlist.EventDelegate.
func (g *gossip) NotifyUpdate(*memberlist.Node) {}

// NotifyLeave is called when a member leaves or is declared dead.
func (g *gossip) NotifyLeave(n *memberlist.Node) {
	id, err := strconv.ParseUint(strings.TrimPrefix(n.Name, gossipNodePrefix), 10, 64)
	if err != nil || id == g.s.storeID {
		return
	}
	g.s.log.Warn("store left the gossip (dead or stopped)", "peer_store", id)
	if g.s.store != nil {
		g.s.store.ReportStoreUnreachable(id)
	}
}

// joinLoop joins the other stores PD knows that are not members yet, every
// second. It must not wait long: stores starting together register with PD
// one by one, so the first attempt often finds no one to join, and until a
// store is a member its death goes unnoticed (no NotifyLeave, so the
// hibernating followers of the regions it led never wake and elect). An
// attempt with everyone joined costs one PD call.
func (g *gossip) joinLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		g.joinKnown()
		select {
		case <-g.s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (g *gossip) joinKnown() {
	ctx, cancel := context.WithTimeout(g.s.ctx, 5*time.Second)
	defer cancel()
	stores, err := g.s.pd.GetAllStores(ctx, true)
	if err != nil {
		return
	}
	members := map[string]bool{}
	for _, m := range g.ml.Members() {
		members[m.Name] = true
	}
	var seeds []string
	for _, st := range stores {
		name := fmt.Sprintf("%s%d", gossipNodePrefix, st.GetId())
		if st.GetId() != g.s.storeID && st.GetGossipAddress() != "" && !members[name] {
			seeds = append(seeds, st.GetGossipAddress())
		}
	}
	if len(seeds) > 0 {
		_, _ = g.ml.Join(seeds)
	}
}

func (g *gossip) stop() {
	_ = g.ml.Leave(time.Second)
	_ = g.ml.Shutdown()
}
