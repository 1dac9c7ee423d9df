package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/spf13/cobra"

	"github.com/basaltdb/basalt/internal/faultfs"
	"github.com/basaltdb/basalt/internal/tlsutil"
	"github.com/basaltdb/basalt/pd"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/storenode"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// fsyncPs is how many extra Ps a store or PD process gets: threads blocked
// in fsync keep their P until the runtime takes it back, which can leave
// the CPU idle while work waits (docs/raftstore.md).
const fsyncPs = 2

func tuneGOMAXPROCS() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(runtime.NumCPU() + fsyncPs)
	}
}

// logger is the process's logger at --log-level. It also becomes slog's
// default, which raft's and pebble's adapters log through, so they follow
// the same level and format.
func logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	slog.SetDefault(log)
	// SetDefault also routes the log package (net/http's server errors)
	// into slog, at Info by default: at --log-level warn they would vanish.
	slog.SetLogLoggerLevel(slog.LevelError)
	return log, nil
}

// untilSignal runs until SIGINT or SIGTERM.
func untilSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	<-ch
}

func pdCmd() *cobra.Command {
	var (
		name, dataDir, clientAddr, peerAddr, advertise, initial, logLevel string
		maxReplicas                                                       int
		maxStoreDown                                                      time.Duration
		locationLabels                                                    []string
		pprof                                                             bool
	)
	cmd := &cobra.Command{
		Use:   "pd",
		Short: "Run a placement driver member",
		RunE: func(cmd *cobra.Command, _ []string) error {
			tuneGOMAXPROCS()
			if initial == "" {
				initial = name + "=" + peerAddr
			}
			log, err := logger(logLevel)
			if err != nil {
				return err
			}
			sc := pd.DefaultScheduleConfig()
			sc.MaxReplicas = maxReplicas
			sc.MaxStoreDownTime = pd.Duration{Duration: maxStoreDown}
			sc.LocationLabels = locationLabels
			s, err := pd.NewServer(pd.Config{
				Name: name, DataDir: dataDir, ClientAddr: clientAddr, PeerAddr: peerAddr,
				AdvertiseClientAddr: advertise, InitialCluster: initial, Schedule: sc,
				Logger: log, EnablePprof: pprof,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pd %s serving on %s (peer %s)\n", name, s.ClientAddr(), peerAddr)
			untilSignal()
			s.Close()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "pd1", "this member's name in --initial-cluster")
	f.StringVar(&dataDir, "data-dir", "pd-data", "where the member keeps its data")
	f.StringVar(&clientAddr, "client-addr", "127.0.0.1:2379", "address for clients (gRPC and the HTTP API)")
	f.StringVar(&peerAddr, "peer-addr", "127.0.0.1:2380", "address for the other PD members")
	f.StringVar(&advertise, "advertise-client-addr", "", "client address to publish (default: --client-addr)")
	f.StringVar(&initial, "initial-cluster", "", "every member as name=peer-addr, comma separated (default: this member alone)")
	f.IntVar(&maxReplicas, "max-replicas", 3, "replicas per region")
	f.DurationVar(&maxStoreDown, "max-store-down-time", 30*time.Minute, "how long a store may be silent before its replicas are re-created elsewhere")
	f.StringSliceVar(&locationLabels, "location-labels", nil, "store label keys from the widest to the narrowest (zone,host): a region's replicas go to stores that differ at the widest one they can")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&pprof, "enable-pprof", false, "serve Go's profiler at /debug/pprof on the client address (/metrics is always there)")
	addConfigFlag(cmd)
	return cmd
}

func storeCmd() *cobra.Command {
	var (
		dataDir, addr, advertise, pdAddrs, labels, logLevel string
		tick                                                time.Duration
		heartbeat                                           time.Duration
		resolveInterval                                     time.Duration
		maxSize, splitSize                                  string
		maxKeys, splitKeys                                  int64
		splitCheck                                          time.Duration
		splitQPS                                            int
		splitLoadFor                                        time.Duration
		etcdProgress                                        time.Duration
		pprof                                               bool
		gossipAddr                                          string
		syncDelayFile                                       string
		peerAddrMap                                         string
		etcdListen                                          string
		etcdAdvertise                                       []string
		etcdTLS                                             tlsutil.ServerFiles
		maxKeySize, maxRequestBytes, blockCache, memTable   string
		maxTxnOps                                           int
	)
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Run a store",
		RunE: func(cmd *cobra.Command, _ []string) error {
			tuneGOMAXPROCS()
			lbl := map[string]string{}
			if labels != "" {
				for _, kv := range strings.Split(labels, ",") {
					k, v, ok := strings.Cut(kv, "=")
					if !ok {
						return fmt.Errorf("--labels wants key=value pairs, not %q", kv)
					}
					lbl[k] = v
				}
			}
			peerMap, err := parsePeerAddrMap(peerAddrMap)
			if err != nil {
				return fmt.Errorf("--peer-addr-map: %w", err)
			}
			split := storenode.SplitConfig{RegionMaxKeys: maxKeys, RegionSplitKeys: splitKeys, CheckInterval: splitCheck}
			if split.RegionMaxSize, err = parseSizeFlag("region-max-size", maxSize); err != nil {
				return err
			}
			if split.RegionSplitSize, err = parseSizeFlag("region-split-size", splitSize); err != nil {
				return err
			}
			if split.RegionSplitSize > split.RegionMaxSize || split.RegionSplitKeys > split.RegionMaxKeys {
				return errors.New("a region's split size (keys) cannot exceed its max size (keys)")
			}
			if resolveInterval <= 0 {
				return errors.New("--resolve-interval must be positive")
			}
			limits, err := parseLimits(maxKeySize, maxRequestBytes, maxTxnOps)
			if err != nil {
				return err
			}
			engine, err := parseEngineSizes(blockCache, memTable)
			if err != nil {
				return err
			}
			if splitQPS < 0 || splitLoadFor <= 0 {
				return errors.New("--split-qps-threshold cannot be negative and --split-load-duration must be positive")
			}
			loadSplit := storenode.LoadSplitConfig{QPSThreshold: splitQPS, Duration: splitLoadFor}
			if splitQPS == 0 {
				loadSplit.QPSThreshold = -1 // off
			}
			var etcdTLSConfig *tls.Config
			if !etcdTLS.Empty() {
				if etcdTLSConfig, err = etcdTLS.ServerConfig(); err != nil {
					return fmt.Errorf("the etcd listener's TLS files: %w", err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rcfg := raftstore.Config{TickInterval: tick}
			log, err := logger(logLevel)
			if err != nil {
				return err
			}
			var fs vfs.FS
			if syncDelayFile != "" {
				if !filepath.IsAbs(syncDelayFile) {
					syncDelayFile = filepath.Join(dataDir, syncDelayFile)
				}
				ffs := faultfs.New(vfs.Default)
				fctx, fcancel := context.WithCancel(context.Background())
				followed := make(chan struct{})
				go func() {
					defer close(followed)
					ffs.Follow(fctx, syncDelayFile, 50*time.Millisecond, func(err error) {
						log.Warn("--fault-sync-delay-file: ignored", "err", err)
					})
				}()
				defer func() { fcancel(); <-followed }()
				fs = ffs
			}
			s, err := storenode.Start(ctx, storenode.Config{
				DataDir: dataDir, Addr: addr, AdvertiseAddr: advertise, PD: strings.Split(pdAddrs, ","), FS: fs,
				Labels: lbl, Raft: rcfg, StoreHeartbeat: heartbeat, RegionHeartbeat: heartbeat, Logger: log,
				Split: split, LoadSplit: loadSplit, EtcdProgressNotifyInterval: etcdProgress, EnablePprof: pprof, GossipAddr: gossipAddr,
				PeerAddrMap: peerMap, ResolveInterval: resolveInterval, EtcdListenURL: etcdListen, EtcdAdvertiseURLs: etcdAdvertise, EtcdTLS: etcdTLSConfig,
				Limits: limits, Engine: engine,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "store %d serving on %s\n", s.StoreID(), s.Addr())
			for _, u := range s.EtcdURLs() {
				fmt.Fprintf(cmd.OutOrStdout(), "store %d serving the etcd API on %s\n", s.StoreID(), u)
			}
			untilSignal()
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			s.Shutdown(sctx)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "store-data", "where the store keeps its data")
	f.StringVar(&addr, "addr", "127.0.0.1:20160", "address for clients and other stores")
	f.StringVar(&advertise, "advertise-addr", "", "address to publish (default: --addr)")
	f.StringVar(&pdAddrs, "pd", "127.0.0.1:2379", "PD client addresses, comma separated")
	f.StringVar(&labels, "labels", "", "store labels as key=value, comma separated (zone=a,host=h1)")
	f.DurationVar(&tick, "raft-tick", 100*time.Millisecond, "raft tick; elections take 10 ticks, heartbeats 1")
	f.DurationVar(&heartbeat, "heartbeat-interval", 10*time.Second, "how often the store reports itself and its regions to PD")
	f.DurationVar(&resolveInterval, "resolve-interval", 100*time.Millisecond, "how often a led region with watchers publishes a resolved revision unasked (a watch across regions asks for one when it holds events)")
	f.StringVar(&maxKeySize, "max-key-size", "8KiB", "refuse a key longer than this")
	f.StringVar(&maxRequestBytes, "max-request-bytes", "1536KiB", "refuse a request larger than this, as etcd's --max-request-bytes (at most 7MiB: raft takes entries up to 8MiB)")
	f.IntVar(&maxTxnOps, "max-txn-ops", 128, "refuse a transaction with more operations than this in a branch, as etcd's --max-txn-ops")
	f.StringVar(&blockCache, "block-cache-size", "256MiB", "pebble's block cache: recently read data blocks, shared by every region of the store")
	f.StringVar(&memTable, "memtable-size", "64MiB", "pebble's memtable: writes collect in one this size before it is flushed to a table; up to four may wait for their flush")
	f.StringVar(&maxSize, "region-max-size", "144MiB", "split a region that grows past this size")
	f.StringVar(&splitSize, "region-split-size", "96MiB", "into pieces of this size")
	f.Int64Var(&maxKeys, "region-max-keys", 1_440_000, "split a region holding more stored versions than this")
	f.Int64Var(&splitKeys, "region-split-keys", 960_000, "into pieces of this many versions")
	f.DurationVar(&splitCheck, "split-check-interval", 10*time.Second, "how often led regions are checked for size")
	f.IntVar(&splitQPS, "split-qps-threshold", 3000, "split a region serving more requests a second than this (at the median key of its load); 0 turns load splits off")
	f.DurationVar(&splitLoadFor, "split-load-duration", 10*time.Second, "for this long")
	f.DurationVar(&etcdProgress, "etcd-progress-notify-interval", 10*time.Minute, "how often a quiet etcd watch asking for progress notifications gets one")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&pprof, "enable-pprof", false, "serve Go's profiler at /debug/pprof on --addr (/metrics is always there)")
	f.StringVar(&gossipAddr, "gossip-addr", "", "address for the liveness gossip (default: --advertise-addr's host, any port)")
	f.StringVar(&syncDelayFile, "fault-sync-delay-file", "", "for fault-injection tests: while this file holds a duration (\"800ms\"), every fsync of the store's data waits that long first (a relative path is in --data-dir)")
	f.StringVar(&peerAddrMap, "peer-addr-map", "", "FROM=TO pairs, comma separated: dial TO for another store that published address FROM, or a PD member whose client address is FROM (NAT, fault-injection proxies; the gossip is not mapped)")
	f.StringVar(&etcdListen, "etcd-listen-url", "", "serve the etcd v3 API, and only it, here too: https://host:port with --etcd-cert-file and --etcd-key-file, or http://host:port (--addr always serves it, unencrypted)")
	f.StringSliceVar(&etcdAdvertise, "etcd-advertise-urls", nil, "the etcd listener's URLs as clients reach them, comma separated; etcd's member list reports them (default: --etcd-listen-url)")
	f.StringVar(&etcdTLS.CertFile, "etcd-cert-file", "", "PEM certificate of the etcd listener (reloaded when the file changes)")
	f.StringVar(&etcdTLS.KeyFile, "etcd-key-file", "", "PEM key of --etcd-cert-file")
	f.StringVar(&etcdTLS.TrustedCAFile, "etcd-trusted-ca-file", "", "PEM CA bundle that etcd clients' certificates must chain to (checked whenever a client presents one)")
	f.BoolVar(&etcdTLS.ClientCertAuth, "etcd-client-cert-auth", false, "require every etcd client to present a certificate of --etcd-trusted-ca-file")
	addConfigFlag(cmd)
	return cmd
}

// parsePeerAddrMap reads FROM=TO[,FROM=TO...], both sides host:port. A
// typo would otherwise show up only as a store that cannot reach some
// peers, so every pair is checked before anything starts.
func parsePeerAddrMap(s string) (map[string]string, error) {
	m := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	for _, pair := range strings.Split(s, ",") {
		from, to, ok := strings.Cut(strings.TrimSpace(pair), "=")
		from, to = strings.TrimSpace(from), strings.TrimSpace(to)
		if !ok || from == "" || to == "" {
			return nil, fmt.Errorf("want FROM=TO pairs of host:port addresses, not %q", pair)
		}
		for _, a := range []string{from, to} {
			if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
				return nil, fmt.Errorf("%q in %q is not a host:port address", a, pair)
			}
		}
		if prev, dup := m[from]; dup && prev != to {
			return nil, fmt.Errorf("%s is mapped twice (to %s and %s)", from, prev, to)
		}
		m[from] = to
	}
	return m, nil
}

// maxRequestBytesCap keeps a request, once a raft entry with its envelope,
// under the largest entry raft takes (raftstore's MaxEntryBytes, 8 MiB;
// larger proposals fail with RaftEntryTooLarge).
var maxRequestBytesCap = int64(raftstore.DefaultConfig().MaxEntryBytes - 1<<20)

// parseLimits checks the store's request limits: bad values are refused
// before anything starts.
func parseLimits(keySize, requestBytes string, txnOps int) (mvcc.Limits, error) {
	k, err := parseSizeFlag("max-key-size", keySize)
	if err != nil {
		return mvcc.Limits{}, err
	}
	r, err := parseSizeFlag("max-request-bytes", requestBytes)
	if err != nil {
		return mvcc.Limits{}, err
	}
	switch {
	case k <= 0:
		return mvcc.Limits{}, errors.New("--max-key-size must be positive")
	case r <= 0 || r > maxRequestBytesCap:
		return mvcc.Limits{}, fmt.Errorf("--max-request-bytes must be between 1 and %d", maxRequestBytesCap)
	case k >= r:
		return mvcc.Limits{}, errors.New("--max-key-size must be below --max-request-bytes")
	case txnOps <= 0:
		return mvcc.Limits{}, errors.New("--max-txn-ops must be positive")
	}
	return mvcc.Limits{MaxKeyBytes: int(k), MaxRequestBytes: int(r), MaxTxnOps: txnOps}, nil
}

// parseEngineSizes checks the pebble sizes: pebble panics on a memtable of
// 4 GiB or more, and a tiny one would flush on every few writes.
func parseEngineSizes(blockCache, memTable string) (raftstore.EngineOptions, error) {
	c, err := parseSizeFlag("block-cache-size", blockCache)
	if err != nil {
		return raftstore.EngineOptions{}, err
	}
	m, err := parseSizeFlag("memtable-size", memTable)
	if err != nil {
		return raftstore.EngineOptions{}, err
	}
	switch {
	case c < 1<<20:
		return raftstore.EngineOptions{}, errors.New("--block-cache-size must be at least 1MiB")
	case m < 1<<20 || m >= 4<<30:
		return raftstore.EngineOptions{}, errors.New("--memtable-size must be at least 1MiB and below 4GiB")
	}
	return raftstore.EngineOptions{CacheBytes: c, MemTableBytes: m}, nil
}

// parseSizeFlag is parseSize for flag --name, whose name its error carries.
func parseSizeFlag(name, value string) (int64, error) {
	n, err := parseSize(value)
	if err != nil {
		return 0, fmt.Errorf("--%s: %w", name, err)
	}
	return n, nil
}

// parseSize reads a byte size: a number with an optional B, KiB, MiB or
// GiB suffix (KB, MB, GB mean the same powers of two, as in TiKV).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a positive size like 96MiB", s)
	}
	return n * mult, nil
}
