// Package pd is the placement driver: it hands out timestamps and IDs, knows
// every store and region, answers routing queries, and schedules replicas
// and leaders. Its state is one Raft group on the members' own raftstore;
// the Raft leader is the PD leader.
package pd

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/internal/status"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/raftstore"
)

// Config configures a PD member.
type Config struct {
	// Name of this member in InitialCluster.
	Name    string
	DataDir string
	// ClientAddr serves the PD gRPC service and the HTTP API (one port).
	ClientAddr string
	// PeerAddr serves the raft transport between members.
	PeerAddr string
	// AdvertiseClientAddr is what clients are told (default: the bound
	// client address).
	AdvertiseClientAddr string
	// InitialCluster lists every member as name=peerAddr, comma separated.
	// A member's ID is its position in the list, from 1.
	InitialCluster string

	// ClientListener and PeerListener, when set, are used instead of
	// listening on ClientAddr and PeerAddr (tests pass :0 listeners).
	ClientListener, PeerListener net.Listener

	// Raft tunes the PD group's raftstore (tick, election). StoreID is set
	// from the member ID.
	Raft raftstore.Config
	// TSOWindow is how far ahead of the clock the leader reserves
	// timestamps through Raft.
	TSOWindow time.Duration
	// Schedule is the initial scheduling configuration (PD persists changes
	// made through the API).
	Schedule ScheduleConfig

	// FS is the file system for the data (default: the OS).
	FS     vfs.FS
	Logger *slog.Logger

	// EnablePprof serves /debug/pprof on the client address's HTTP API
	// (/metrics is always served there).
	EnablePprof bool

	// Now is the clock the TSO reads (default time.Now). Tests set a
	// member's clock behind another's to show timestamps never go back.
	Now func() time.Time
}

type member struct {
	name     string
	id       uint64
	peerAddr string
}

func parseInitialCluster(s string) ([]member, error) {
	var ms []member
	seen := map[string]bool{}
	for i, part := range strings.Split(s, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("pd: --initial-cluster entry %q is not name=peer-address", part)
		}
		if seen[name] {
			return nil, fmt.Errorf("pd: --initial-cluster names member %q twice", name)
		}
		seen[name] = true
		ms = append(ms, member{name: name, id: uint64(i + 1), peerAddr: addr})
	}
	if len(ms) == 0 {
		return nil, errors.New("pd: --initial-cluster is empty")
	}
	return ms, nil
}

// Server is one PD member.
type Server struct {
	cfg      Config
	log      *slog.Logger
	memberID uint64
	members  []member
	self     *pdpb.Member

	eng   *raftstore.Engine
	fsm   *fsm
	store *raftstore.Store
	trans *raftstore.GRPCTransport

	peerSrv   *grpc.Server
	clientSrv *grpc.Server
	httpSrv   *http.Server
	mux       *status.ListenMux
	peerLis   net.Listener

	tso     *tsoAllocator
	ids     *idAllocator
	cluster *cluster
	watch   *watchHub

	roleCh  chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	leading atomic.Bool // leader and initialized: serving

	leaderMu     sync.Mutex
	leaderCancel context.CancelFunc
	leaderDone   chan struct{}
}

// NewServer opens (creating if needed) a PD member's data and starts
// serving.
func NewServer(cfg Config) (*Server, error) {
	members, err := parseInitialCluster(cfg.InitialCluster)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, members: members, roleCh: make(chan struct{}, 1)}
	for _, m := range members {
		if m.name == cfg.Name {
			s.memberID = m.id
		}
	}
	if s.memberID == 0 {
		return nil, fmt.Errorf("pd: member %q is not in --initial-cluster %q", cfg.Name, cfg.InitialCluster)
	}
	s.log = cfg.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("pd", cfg.Name)
	if s.cfg.TSOWindow == 0 {
		s.cfg.TSOWindow = 3 * time.Second
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.start(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	cfg := s.cfg
	var err error
	if s.peerLis = cfg.PeerListener; s.peerLis == nil {
		if s.peerLis, err = net.Listen("tcp", cfg.PeerAddr); err != nil {
			return fmt.Errorf("pd: listen on peer address: %w", err)
		}
	}
	clientLis := cfg.ClientListener
	if clientLis == nil {
		if clientLis, err = net.Listen("tcp", cfg.ClientAddr); err != nil {
			return fmt.Errorf("pd: listen on client address: %w", err)
		}
	}
	adv := cfg.AdvertiseClientAddr
	if adv == "" {
		adv = clientLis.Addr().String()
	}
	var peerAddr string
	for _, m := range s.members {
		if m.id == s.memberID {
			peerAddr = m.peerAddr
		}
	}
	s.self = &pdpb.Member{Name: cfg.Name, MemberId: s.memberID, ClientAddr: adv, PeerAddr: peerAddr}

	s.eng, err = raftstore.OpenEngine(cfg.DataDir, cfg.FS)
	if err != nil {
		return err
	}
	if s.fsm, err = newFSM(s.eng.DB); err != nil {
		return err
	}
	s.watch = newWatchHub()
	s.tso = newTSOAllocator(s)
	s.ids = newIDAllocator(s)
	s.cluster = newCluster(s)

	peerAddrs := map[uint64]string{}
	for _, m := range s.members {
		peerAddrs[m.id] = m.peerAddr
	}
	s.trans = raftstore.NewGRPCTransport(raftstore.GRPCTransportOptions{
		Resolver: raftstore.ResolverFunc(func(id uint64) (string, error) {
			if a, ok := peerAddrs[id]; ok {
				return a, nil
			}
			return "", fmt.Errorf("pd: unknown member %d", id)
		}),
		OnUnreachable: func(to uint64, msgs []*rspb.RaftMessage) {
			if s.store != nil {
				s.store.ReportUnreachable(to, msgs)
			}
		},
		Logger: s.log,
	})
	rcfg := cfg.Raft
	rcfg.StoreID = s.memberID
	rcfg.HibernateTicks = -1 // the PD group is never idle: it serves TSO
	s.store, err = raftstore.NewStore(raftstore.Options{
		Config: rcfg, Engine: s.eng, StateMachine: s.fsm, Transport: s.trans, Logger: s.log,
		OnRoleChange: func(uint64, bool, uint64) {
			select {
			case s.roleCh <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		return err
	}
	if s.store.RegionStatus(pdRegionID) == nil {
		desc := &metapb.Region{Id: pdRegionID, RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1}}
		for _, m := range s.members {
			desc.Peers = append(desc.Peers, &metapb.Peer{Id: m.id, StoreId: m.id})
		}
		if err := s.store.BootstrapRegion(desc); err != nil {
			return err
		}
	}

	reg, gm := s.newRegistry()
	grpcOpts := append(gm.ServerOptions(), raftstore.ServerOptions()...)
	s.peerSrv = grpc.NewServer(grpcOpts...)
	rspb.RegisterRaftTransportServer(s.peerSrv, raftstore.NewRaftServer(s.store))
	pdpb.RegisterPDServer(s.peerSrv, &grpcService{s: s})
	s.clientSrv = grpc.NewServer(grpcOpts...)
	pdpb.RegisterPDServer(s.clientSrv, &grpcService{s: s})
	s.mux = status.NewListenMux(clientLis)
	s.httpSrv = &http.Server{Handler: s.httpHandler(reg), ReadHeaderTimeout: 10 * time.Second}

	s.store.Start()
	s.wg.Add(5)
	go func() { defer s.wg.Done(); _ = s.peerSrv.Serve(s.peerLis) }()
	go func() { defer s.wg.Done(); s.mux.Serve() }()
	go func() { defer s.wg.Done(); _ = s.clientSrv.Serve(s.mux.GRPC()) }()
	go func() { defer s.wg.Done(); _ = s.httpSrv.Serve(s.mux.HTTP()) }()
	go func() { defer s.wg.Done(); s.leaderLoop() }()
	if len(s.members) == 1 {
		_ = s.store.Campaign(pdRegionID)
	}
	return nil
}

// Close stops the member.
func (s *Server) Close() {
	s.cancel()
	s.stopLeader()
	if s.httpSrv != nil {
		_ = s.httpSrv.Close()
	}
	if s.clientSrv != nil {
		s.clientSrv.Stop()
	}
	if s.peerSrv != nil {
		s.peerSrv.Stop()
	}
	if s.mux != nil {
		s.mux.Close()
	}
	if s.store != nil {
		s.store.Stop()
	}
	s.wg.Wait()
	if s.watch != nil {
		s.watch.closeAll()
	}
	if s.trans != nil {
		s.trans.Close()
	}
	if s.eng != nil {
		_ = s.eng.Close()
	}
}

// ClientAddr is the address clients reach this member at.
func (s *Server) ClientAddr() string { return s.self.GetClientAddr() }

// MemberID is this member's ID.
func (s *Server) MemberID() uint64 { return s.memberID }

// IsLeader reports whether this member is the serving PD leader.
func (s *Server) IsLeader() bool { return s.leading.Load() }

// leaderLoop starts and stops the leader's work as raft leadership moves.
func (s *Server) leaderLoop() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.roleCh:
		case <-t.C:
		}
		st := s.store.RegionStatus(pdRegionID)
		isLeader := st != nil && st.IsLeader()
		s.leaderMu.Lock()
		running := s.leaderCancel != nil
		s.leaderMu.Unlock()
		switch {
		case isLeader && !running:
			s.startLeader()
		case !isLeader && running:
			s.stopLeader()
		case !isLeader:
			s.registerSelf()
		}
	}
}

func (s *Server) startLeader() {
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan struct{})
	s.leaderMu.Lock()
	s.leaderCancel, s.leaderDone = cancel, done
	s.leaderMu.Unlock()
	go func() {
		defer close(done)
		if err := s.runLeader(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("leader work ended", "err", err)
			// Let the loop retry: drop the running state.
			go s.stopLeader()
		}
	}()
}

func (s *Server) stopLeader() {
	s.leaderMu.Lock()
	cancel, done := s.leaderCancel, s.leaderDone
	s.leaderCancel, s.leaderDone = nil, nil
	s.leaderMu.Unlock()
	if cancel == nil {
		return
	}
	s.leading.Store(false)
	// Routing subscribers must move to the next leader: this member
	// publishes nothing from now on. Done after leading is cleared, so a
	// subscriber that registers later sees IsLeader false (WatchRegions).
	s.watch.closeAll()
	s.tso.reset()
	s.ids.reset()
	cancel()
	<-done
	s.cluster.reset()
	s.log.Info("no longer PD leader")
}

// runLeader prepares a new leader and runs its background work until
// leadership ends.
func (s *Server) runLeader(ctx context.Context) error {
	// A ReadIndex round: the leader has applied everything earlier leaders
	// committed (TSO and ID windows included) and holds the lease.
	if err := s.store.RenewLease(ctx, pdRegionID); err != nil {
		return err
	}
	if s.fsm.getClusterID() == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id := binary.BigEndian.Uint64(b[:]) >> 1
		if id == 0 {
			id = 1
		}
		if _, err := s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_InitClusterId{InitClusterId: id}}); err != nil {
			return err
		}
	}
	if _, err := s.propose(ctx, &pdpb.Command{Cmd: &pdpb.Command_PutMember{PutMember: s.self}}); err != nil {
		return err
	}
	if err := s.tso.init(ctx); err != nil {
		return err
	}
	s.ids.init()
	s.cluster.load()
	s.leading.Store(true)
	s.log.Info("PD leader serving", "cluster_id", s.fsm.getClusterID())

	var wg sync.WaitGroup
	for _, fn := range []func(context.Context){s.tso.maintain, s.cluster.persistLoop, s.cluster.scheduleLoop} {
		wg.Add(1)
		go func(fn func(context.Context)) {
			defer wg.Done()
			fn(ctx)
		}(fn)
	}
	wg.Wait()
	return nil
}

// registerSelf makes sure the leader published this member's addresses.
func (s *Server) registerSelf() {
	for _, m := range s.fsm.getMembers() {
		if proto.Equal(m, s.self) {
			return
		}
	}
	addr := s.leaderPeerAddr()
	if addr == "" {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, time.Second)
	defer cancel()
	cc, err := grpc.NewClient(addr, grpcDialOptions()...)
	if err != nil {
		return
	}
	defer cc.Close()
	_, _ = pdpb.NewPDClient(cc).RegisterMember(ctx, &pdpb.RegisterMemberRequest{Member: s.self})
}

func (s *Server) leaderPeerAddr() string {
	st := s.store.RegionStatus(pdRegionID)
	if st == nil || st.Leader == nil {
		return ""
	}
	for _, m := range s.members {
		if m.id == st.Leader.GetStoreId() {
			return m.peerAddr
		}
	}
	return ""
}

// leaderMember returns the published leader, or nil.
func (s *Server) leaderMember() *pdpb.Member {
	st := s.store.RegionStatus(pdRegionID)
	if st == nil || st.Leader == nil {
		return nil
	}
	for _, m := range s.fsm.getMembers() {
		if m.GetMemberId() == st.Leader.GetStoreId() {
			return m
		}
	}
	return nil
}

// members returns every member, published addresses where known.
func (s *Server) allMembers() []*pdpb.Member {
	pub := map[uint64]*pdpb.Member{}
	for _, m := range s.fsm.getMembers() {
		pub[m.GetMemberId()] = m
	}
	var out []*pdpb.Member
	for _, m := range s.members {
		if p := pub[m.id]; p != nil {
			out = append(out, p)
		} else {
			out = append(out, &pdpb.Member{Name: m.name, MemberId: m.id, PeerAddr: m.peerAddr})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetMemberId() < out[j].GetMemberId() })
	return out
}

// propose replicates a PD command and returns its result.
func (s *Server) propose(ctx context.Context, cmd *pdpb.Command) (any, error) {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	st := s.store.RegionStatus(pdRegionID)
	if st == nil {
		return nil, errNotLeader
	}
	res, err := s.store.Propose(ctx, pdRegionID, st.Region.GetRegionEpoch(), data)
	if err != nil {
		return nil, err
	}
	if e, ok := res.(error); ok {
		return nil, e
	}
	return res, nil
}

func grpcDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(insecureCreds())}
}
