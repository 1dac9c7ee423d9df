// Package storenode is a Basalt store: the raftstore engine with the MVCC
// state machine on every region, the KV gRPC service, PD heartbeats and
// operator execution, and the background work (compaction, resolved
// revisions) that keeps regions serving.
package storenode

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/internal/status"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/storenode/etcdapi"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// Version is what stores report to PD.
const Version = "0.1.0"

// Config configures a store.
type Config struct {
	DataDir string
	// Addr serves the KV service and the raft transport (one gRPC port).
	Addr string
	// AdvertiseAddr is what PD and the other stores are told (default: the
	// bound address).
	AdvertiseAddr string
	// PD lists PD client addresses.
	PD     []string
	Labels map[string]string

	Raft   raftstore.Config
	Limits mvcc.Limits
	// Engine sizes the store's pebble (block cache, memtables); its
	// comparer is always mvcc.Comparer.
	Engine raftstore.EngineOptions

	// StoreHeartbeat and RegionHeartbeat intervals (defaults 10 s).
	StoreHeartbeat  time.Duration
	RegionHeartbeat time.Duration
	// ResolveInterval: how often regions with watchers publish a resolved
	// revision (default 100 ms).
	ResolveInterval time.Duration

	// Split: when regions this store leads are split by size.
	Split SplitConfig
	// LoadSplit: when regions this store leads are split by load.
	LoadSplit LoadSplitConfig
	// MergeResumeInterval: how often the store looks for merges it leads
	// whose driver stopped (default 2 s).
	MergeResumeInterval time.Duration

	// EtcdProgressNotifyInterval: how often an etcd watch asking for
	// progress notifications gets one while quiet (default 10 min, etcd's).
	EtcdProgressNotifyInterval time.Duration

	// EnablePprof serves /debug/pprof next to /metrics (HTTP/1 on Addr).
	EnablePprof bool

	// GossipAddr binds the liveness gossip (default: Addr's host, any port).
	GossipAddr string

	// PeerAddrMap: when this store dials another store whose published
	// address is a key, or a PD member whose client address is a key, it
	// dials the value instead (NAT'd deployments, fault-injection
	// proxies). It covers every store-to-store connection (the raft
	// transport, requests forwarded to region leaders) and every
	// connection to PD (the store's own PD client and its router's), not
	// the gossip, which finds its members by the addresses they gossip.
	PeerAddrMap map[string]string

	// EtcdListenURL, when set, serves the etcd v3 API, and only it, on a
	// second listener: "https://host:port" with EtcdTLS, "http://host:port"
	// without. The etcd API stays on Addr as well: Addr is the cluster's
	// own address (peers, Basalt clients, no authentication) and belongs
	// on a private network.
	EtcdListenURL string
	// EtcdAdvertiseURLs are the URLs etcd clients are told to dial
	// (MemberList); default: EtcdListenURL with its actual port.
	EtcdAdvertiseURLs []string
	// EtcdTLS is the etcd listener's TLS configuration (internal/tlsutil
	// builds it from --etcd-cert-file and the others).
	EtcdTLS *tls.Config

	// Listener, when set, is used instead of listening on Addr.
	Listener net.Listener
	FS       vfs.FS
	Logger   *slog.Logger
}

func (c *Config) engineOptions() raftstore.EngineOptions {
	eo := c.Engine
	eo.Comparer = mvcc.Comparer
	return eo
}

func (c *Config) fillDefaults() {
	if c.StoreHeartbeat == 0 {
		c.StoreHeartbeat = 10 * time.Second
	}
	if c.RegionHeartbeat == 0 {
		c.RegionHeartbeat = 10 * time.Second
	}
	if c.ResolveInterval == 0 {
		c.ResolveInterval = 100 * time.Millisecond
	}
	if c.MergeResumeInterval == 0 {
		c.MergeResumeInterval = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Split.fillDefaults()
	c.LoadSplit.fillDefaults()
}

// Server is one store.
type Server struct {
	cfg     Config
	log     *slog.Logger
	storeID uint64
	addr    string

	eng   *raftstore.Engine
	mvcc  *mvcc.MVCC
	store *raftstore.Store
	trans *raftstore.GRPCTransport
	pd    *pdclient.Client
	grpc  *grpc.Server
	lis   net.Listener
	// etcdGRPC serves the etcd API alone on etcdLis (EtcdListenURL), whose
	// published URLs are etcdURLs.
	etcdGRPC *grpc.Server
	etcdLis  net.Listener
	etcdURLs []string
	// mux splits lis: gRPC (clients, raft, etcd) and HTTP/1 (/metrics).
	mux    *status.ListenMux
	status *status.Server

	seq     *sequencer
	watches *watchHub
	load    *loadTracker
	// router reaches other regions' leaders (lease owners, data regions
	// during a revoke).
	router      *client.Client
	leases      *leaseOwner
	leaseChecks *leaseChecks
	hb          *heartbeater
	gossip      *gossip
	merges      merges

	compactWake chan struct{}
	demands     *resolveDemands
	// resolves: latest reads of regions this store leads share resolves;
	// remoteResolves: reads of regions led elsewhere share ResolveRevision
	// calls to the leader.
	resolves, remoteResolves *resolveShares
	gcMu                     sync.Mutex
	gc                       map[uint64]*gcProgress

	addrMu sync.Mutex
	addrs  map[uint64]string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start opens (or creates) a store, joins the cluster through PD, and
// serves.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg.fillDefaults()
	if cfg.DataDir == "" || len(cfg.PD) == 0 {
		return nil, errors.New("storenode: --data-dir and --pd are required")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, addrs: map[uint64]string{}, compactWake: make(chan struct{}, 1), gc: map[uint64]*gcProgress{}, demands: newResolveDemands(),
		load: newLoadTracker()}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.resolves, s.remoteResolves = newResolveShares(s.ctx), newResolveShares(s.ctx)
	if err := s.start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(ctx context.Context) error {
	var err error
	if s.lis = s.cfg.Listener; s.lis == nil {
		if s.lis, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("storenode: listen on %s: %w", s.cfg.Addr, err)
		}
	}
	s.addr = s.cfg.AdvertiseAddr
	if s.addr == "" {
		s.addr = s.lis.Addr().String()
	}
	if err := s.listenEtcd(); err != nil {
		return err
	}
	if s.eng, err = raftstore.OpenEngineWith(s.cfg.DataDir, s.cfg.FS, s.cfg.engineOptions()); err != nil {
		return err
	}
	if s.pd, err = pdclient.New(ctx, s.cfg.PD, pdclient.Options{Logger: s.log, DialAddr: s.dialAddr}); err != nil {
		return err
	}
	if s.storeID, err = s.storeIdent(ctx); err != nil {
		return err
	}
	s.log = s.log.With("store", s.storeID)
	if s.mvcc, err = mvcc.New(s.eng.DB, s.eng.Opts.Comparer, s.cfg.Limits); err != nil {
		return err
	}
	local := &kvService{s: s}
	if s.router, err = client.New(ctx, s.cfg.PD, client.Options{LocalStoreID: s.storeID, Logger: s.log, DialAddr: s.dialAddr, ForwardWrites: true,
		LocalKV: func(remote kvpb.KVClient) kvpb.KVClient { return localKV{KVClient: remote, k: local} }}); err != nil {
		return err
	}
	s.leases = newLeaseOwner(s)
	s.leaseChecks = newLeaseChecks(s)
	s.watches = newWatchHub(s)
	s.mvcc.OnEvents = s.watches.publish
	s.trans = raftstore.NewGRPCTransport(raftstore.GRPCTransportOptions{
		Resolver: raftstore.ResolverFunc(func(storeID uint64) (string, error) {
			a, err := s.storeAddr(storeID)
			return s.dialAddr(a), err
		}),
		OnUnreachable: func(to uint64, msgs []*rspb.RaftMessage) {
			s.forgetAddr(to)
			if s.store != nil {
				s.store.ReportUnreachable(to, msgs)
			}
		},
		Logger: s.log,
	})
	rcfg := s.cfg.Raft
	rcfg.StoreID = s.storeID
	s.hb = newHeartbeater(s)
	s.store, err = raftstore.NewStore(raftstore.Options{
		Config: rcfg, Engine: s.eng, StateMachine: s.regionHook(), Transport: s.trans, Logger: s.log,
		OnRoleChange: s.hb.roleChanged,
	})
	if err != nil {
		return err
	}
	if err := s.bootstrapIfNeeded(ctx); err != nil {
		return err
	}
	gaddr := s.cfg.GossipAddr
	if gaddr == "" {
		host, _, _ := net.SplitHostPort(s.addr)
		gaddr = net.JoinHostPort(host, "0")
	}
	if s.gossip, err = s.startGossip(gaddr); err != nil {
		return err
	}
	labels := make([]*metapb.StoreLabel, 0, len(s.cfg.Labels))
	for k, v := range s.cfg.Labels {
		labels = append(labels, &metapb.StoreLabel{Key: k, Value: v})
	}
	if err := s.pd.PutStore(ctx, &metapb.Store{Id: s.storeID, Address: s.addr, PeerAddress: s.addr, Labels: labels,
		Version: Version, StartTimestamp: time.Now().Unix(), GossipAddress: s.gossip.addr, EtcdClientUrls: s.etcdURLs}); err != nil {
		return fmt.Errorf("storenode: register with PD: %w", err)
	}

	reg, gm := s.newRegistry()
	s.grpc = grpc.NewServer(append(gm.ServerOptions(), raftstore.ServerOptions()...)...)
	rspb.RegisterRaftTransportServer(s.grpc, raftstore.NewRaftServer(s.store))
	kvpb.RegisterKVServer(s.grpc, &kvService{s: s, metrics: gm})
	kvpb.RegisterAdminServer(s.grpc, &adminService{s: s})
	etcdCfg := etcdapi.Config{Client: s.router, PD: s.pd, StoreID: s.storeID, Info: s.etcdInfo, LocalRange: s.localRange, LocalReadTxn: s.localReadTxn,
		MaxRequestBytes: s.mvcc.Limits().MaxRequestBytes, ProgressNotifyInterval: s.cfg.EtcdProgressNotifyInterval}
	etcdapi.Register(s.grpc, etcdCfg)
	s.mux = status.NewListenMux(s.lis)
	s.status = status.Serve(s.mux.HTTP(), reg, s.cfg.EnablePprof, s.registerDebugRoutes)
	s.seq = newSequencer(s)
	s.store.Start()
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.mux.Serve() }()
	go func() { defer s.wg.Done(); _ = s.grpc.Serve(s.mux.GRPC()) }()
	s.serveEtcd(gm, etcdCfg)
	for _, fn := range []func(){s.seq.run, s.hb.run, s.resolveLoop, s.compactionLoop, s.splitCheckLoop, s.loadSplitLoop, s.mergeResumeLoop, s.gossip.joinLoop, s.leases.run} {
		s.wg.Add(1)
		go func(fn func()) { defer s.wg.Done(); fn() }(fn)
	}
	s.log.Info("store serving", "addr", s.addr, "data_dir", s.cfg.DataDir)
	return nil
}

// storeIdent returns this store's ID, registering a new store with PD the
// first time.
func (s *Server) storeIdent(ctx context.Context) (uint64, error) {
	id, err := s.eng.LoadStoreIdent()
	if err != nil {
		return 0, err
	}
	if id != nil {
		if c := s.pd.ClusterID(); c != 0 && id.GetClusterId() != c {
			return 0, fmt.Errorf("storenode: data directory belongs to cluster %d, PD serves cluster %d", id.GetClusterId(), c)
		}
		return id.GetStoreId(), nil
	}
	sid, err := s.pd.AllocID(ctx, 1)
	if err != nil {
		return 0, fmt.Errorf("storenode: allocate a store ID: %w", err)
	}
	if err := s.eng.WriteStoreIdent(&rspb.StoreIdent{ClusterId: s.pd.ClusterID(), StoreId: sid}); err != nil {
		return 0, err
	}
	return sid, nil
}

// bootstrapIfNeeded creates the cluster's first region here when no store
// did yet. The region is recorded locally before PD is asked, so a crash in
// between is finished on restart, and dropped if another store won.
func (s *Server) bootstrapIfNeeded(ctx context.Context) error {
	prepared, err := s.eng.LoadPrepareBootstrap()
	if err != nil {
		return err
	}
	ok, err := s.pd.IsBootstrapped(ctx)
	if err != nil {
		return err
	}
	if !ok {
		if prepared == nil {
			ids, err := s.pd.AllocID(ctx, 2)
			if err != nil {
				return err
			}
			prepared = &metapb.Region{Id: ids, RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1},
				Peers: []*metapb.Peer{{Id: ids + 1, StoreId: s.storeID}}}
			if err := s.eng.SavePrepareBootstrap(prepared); err != nil {
				return err
			}
		}
		st := &metapb.Store{Id: s.storeID, Address: s.addr, PeerAddress: s.addr, Version: Version}
		if err := s.pd.Bootstrap(ctx, st, prepared); err != nil && !errors.Is(err, pdclient.ErrAlreadyBootstrapped) {
			return fmt.Errorf("storenode: bootstrap the cluster: %w", err)
		}
	}
	if prepared == nil {
		return nil
	}
	// Did our bootstrap win? Then the first region is ours to create.
	r, err := s.pd.GetRegionByID(ctx, prepared.GetId())
	if err != nil {
		return err
	}
	if r.GetRegion().GetId() == prepared.GetId() && s.store.RegionStatus(prepared.GetId()) == nil {
		if err := s.store.BootstrapRegion(prepared); err != nil {
			return err
		}
		s.log.Info("bootstrapped the cluster", "region", prepared.GetId())
	}
	return s.eng.ClearPrepareBootstrap()
}

// storeAddr maps a store ID to its address through PD, cached.
func (s *Server) storeAddr(storeID uint64) (string, error) {
	s.addrMu.Lock()
	a, ok := s.addrs[storeID]
	s.addrMu.Unlock()
	if ok {
		return a, nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, 3*time.Second)
	defer cancel()
	st, err := s.pd.GetStore(ctx, storeID)
	if err != nil {
		return "", err
	}
	if st.GetState() == metapb.StoreState_Tombstone {
		return "", fmt.Errorf("storenode: store %d is a tombstone", storeID)
	}
	s.addrMu.Lock()
	s.addrs[storeID] = st.GetPeerAddress()
	s.addrMu.Unlock()
	return st.GetPeerAddress(), nil
}

// dialAddr is where to dial a store that published addr.
func (s *Server) dialAddr(addr string) string {
	if to, ok := s.cfg.PeerAddrMap[addr]; ok {
		return to
	}
	return addr
}

func (s *Server) forgetAddr(storeID uint64) {
	s.addrMu.Lock()
	delete(s.addrs, storeID)
	s.addrMu.Unlock()
}

// StoreID returns this store's ID.
func (s *Server) StoreID() uint64 { return s.storeID }

// Addr returns the address this store serves on.
func (s *Server) Addr() string { return s.addr }

// Raft returns the store's raftstore (tests, ctl).
func (s *Server) Raft() *raftstore.Store { return s.store }

// Shutdown moves this store's leaders away (bounded by ctx), then closes.
func (s *Server) Shutdown(ctx context.Context) {
	if s.store != nil {
		s.transferLeadersAway(ctx)
	}
	s.Close()
}

// transferLeadersAway asks every region this store leads to hand
// leadership to another voter, and waits (until ctx ends) for it.
func (s *Server) transferLeadersAway(ctx context.Context) {
	// Raft abandons a transfer whose target does not take over within an
	// election timeout (it is down, cut off, or too far behind); each such
	// round asks every region still led here of its next voter, so one
	// dead store does not keep the leaderships here until the deadline.
	d := raftstore.DefaultConfig()
	tick, ticks := s.cfg.Raft.TickInterval, s.cfg.Raft.ElectionTicks
	if tick == 0 {
		tick = d.TickInterval
	}
	if ticks == 0 {
		ticks = d.ElectionTicks
	}
	round := tick * time.Duration(ticks)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		leading := 0
		for _, st := range s.store.Regions() {
			if st == nil || !st.IsLeader() {
				continue
			}
			var voters []*metapb.Peer
			for _, p := range st.Region.GetPeers() {
				if p.GetStoreId() != s.storeID && p.GetRole() == metapb.PeerRole_Voter {
					voters = append(voters, p)
				}
			}
			if len(voters) == 0 {
				continue
			}
			leading++
			// Offset by region so the first round spreads the leaders.
			to := voters[(attempt+int(st.Region.GetId()%uint64(len(voters))))%len(voters)]
			_ = s.store.TransferLeader(ctx, st.Region.GetId(), st.Region.GetRegionEpoch(), to.GetId())
		}
		if leading == 0 {
			return
		}
		deadline := time.Now().Add(round)
		for time.Now().Before(deadline) && ctx.Err() == nil && s.leadsAnyReplicated() {
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// leadsAnyReplicated reports whether this store leads a region with a voter
// on another store.
func (s *Server) leadsAnyReplicated() bool {
	for _, st := range s.store.Regions() {
		if st == nil || !st.IsLeader() {
			continue
		}
		for _, p := range st.Region.GetPeers() {
			if p.GetStoreId() != s.storeID && p.GetRole() == metapb.PeerRole_Voter {
				return true
			}
		}
	}
	return false
}

// Close stops the store at once.
func (s *Server) Close() {
	s.cancel()
	if s.status != nil {
		s.status.Close()
	}
	if s.grpc != nil {
		s.grpc.Stop()
	} else if s.lis != nil {
		_ = s.lis.Close() // Start failed before serving it
	}
	if s.etcdGRPC != nil {
		s.etcdGRPC.Stop()
	} else if s.etcdLis != nil {
		_ = s.etcdLis.Close()
	}
	if s.seq != nil {
		s.seq.stop()
	}
	if s.store != nil {
		s.store.Stop()
	}
	s.wg.Wait()
	if s.leases != nil {
		s.leases.stop()
	}
	if s.gossip != nil {
		s.gossip.stop()
	}
	if s.watches != nil {
		s.watches.closeAll()
	}
	if s.trans != nil {
		s.trans.Close()
	}
	if s.router != nil {
		s.router.Close()
	}
	if s.pd != nil {
		s.pd.Close()
	}
	if s.mvcc != nil {
		s.mvcc.Wait()
	}
	if s.eng != nil {
		_ = s.eng.Close()
	}
}

// etcdInfo is what the etcd front end's Status reports about this store.
func (s *Server) etcdInfo() etcdapi.StoreInfo {
	var info etcdapi.StoreInfo
	m := s.eng.DB.Metrics()
	info.DBSize = int64(m.DiskSpaceUsage())
	info.DBSizeInUse = info.DBSize
	for _, st := range s.store.Regions() {
		if st == nil {
			continue
		}
		info.RaftIndex = max(info.RaftIndex, st.Commit)
		info.RaftAppliedIndex = max(info.RaftAppliedIndex, st.Applied)
		info.RaftTerm = max(info.RaftTerm, st.Term)
	}
	return info
}
