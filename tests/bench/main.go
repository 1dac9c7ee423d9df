// Command bench runs etcd's own benchmark tool against a 3-member etcd 3.7
// cluster and a Basalt cluster (1 PD, 3 stores, 3 replicas) on this
// machine, one system at a time, alternating, for several rounds, and
// prints (and with -write appends to docs/benchmarks.md) one table of
// medians and Basalt/etcd ratios. `make bench-vs-etcd` runs it.
//
// etcd, etcdctl and the benchmark tool come from the Go module proxy
// (scripts/build-etcd.sh); Basalt is built from this checkout.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/basaltdb/basalt/tests/procs"
)

// workload is one benchmark invocation, the same for both systems: the
// benchmark tool's arguments, or the harness's own run.
type workload struct {
	name string
	args []string
	run  func(c *cluster) (result, error)
}

// The workloads of issue 11. Keys are the benchmark tool's (8-byte
// varints); values 256 bytes.
func workloads(quick bool) []workload {
	n := func(full, small int) string {
		if quick {
			return strconv.Itoa(small)
		}
		return strconv.Itoa(full)
	}
	return []workload{
		{name: "put, 1 client", args: []string{"--conns=1", "--clients=1", "put", "--key-size=8", "--sequential-keys", "--key-space-size=100000", "--val-size=256", "--total=" + n(2000, 300)}},
		{name: "put, 1,000 clients", args: []string{"--conns=100", "--clients=1000", "put", "--key-size=8", "--sequential-keys", "--key-space-size=100000", "--val-size=256", "--total=" + n(50000, 5000)}},
		{name: "range (linearizable), 1,000 clients", args: []string{"--conns=100", "--clients=1000", "range", "foo", "--consistency=l", "--total=" + n(50000, 5000)}},
		{name: "range (serializable), 1,000 clients", args: []string{"--conns=100", "--clients=1000", "range", "foo", "--consistency=s", "--total=" + n(50000, 5000)}},
		{name: "txn-put, 1,000 clients", args: []string{"--conns=100", "--clients=1000", "txn-put", "--key-size=8", "--key-space-size=100000", "--val-size=256", "--total=" + n(20000, 3000)}},
		{name: "watch latency (100 watchers)", args: []string{"--conns=10", "--clients=10", "watch-latency", "--put-total=" + n(1000, 200), "--put-rate=100", "--streams=10", "--watchers-per-stream=10"}},
		{name: "watch latency, prefix over 16 regions (100 watchers)", run: func(c *cluster) (result, error) {
			total := 1000
			if quick {
				total = 200
			}
			return runWatchSpan(c.endpoints, total)
		}},
		{name: "range 100,000 keys, limit 1,000", args: []string{"--conns=10", "--clients=100", "range", "\x01", "\xfe", "--limit=1000", "--consistency=l", "--total=" + n(2000, 300)}},
		// Each read is a list of the whole key space with limit 500 (and its
		// count): Basalt counts by walking versions, so this is its slowest
		// workload (docs/benchmarks.md); the totals keep a run finite.
		{name: "Kubernetes-shaped mix (80% ranges of 500, 20% puts)", args: []string{"--conns=100", "--clients=1000", "txn-mixed", "--rw-ratio=4", "--limit=500", "--key-size=8", "--key-space-size=100000", "--val-size=256", "--total=" + n(1000, 100)}},
	}
}

// preload puts the 100,000 keys the range workloads read.
var preload = []string{"--conns=100", "--clients=1000", "put", "--key-size=8", "--sequential-keys", "--key-space-size=100000", "--val-size=256", "--total=100000"}

// result is one run of one workload on one system.
type result struct {
	rps, p50, p99 float64 // requests/s, seconds
	peakRSS       int64   // bytes, the largest process of the system
}

// cluster is a running system.
type cluster struct {
	name      string
	endpoints string
	pids      []int
	stop      func()
	// layout, when set, describes the cluster's regions (Basalt's split
	// for load during the preload; the log says so).
	layout func() string
	// split, when set, cuts the cluster's key space at these keys (Basalt's
	// regions; etcd has one raft group).
	split func(keys []string) error
}

func main() {
	rounds := flag.Int("rounds", 3, "rounds; each runs every workload on each system once")
	quick := flag.Bool("quick", false, "small request counts (a smoke run; not for the record)")
	write := flag.Bool("write", false, "append the table to docs/benchmarks.md")
	only := flag.String("only", "", "run only the workloads whose names contain this text (a profiling aid; not for the record)")
	flag.Parse()
	log.SetFlags(log.Ltime)

	root, err := os.Getwd()
	must(err)
	work, err := os.MkdirTemp("", "basalt-bench-")
	must(err)
	defer os.RemoveAll(work)

	buildEtcd := exec.Command(filepath.Join(root, "scripts", "build-etcd.sh"))
	buildEtcd.Env = append(os.Environ(), "WITH_BENCHMARK=1")
	out, err := buildEtcd.Output()
	if err != nil {
		log.Fatalf("build etcd: %v", err)
	}
	bins := strings.Fields(string(out))
	if len(bins) != 3 {
		log.Fatalf("build-etcd.sh printed %q", out)
	}
	etcdBin, benchBin := bins[0], bins[2]
	basaltBin := filepath.Join(work, "basalt")
	build := exec.Command("go", "build", "-o", basaltBin, "./cmd/basalt")
	build.Stderr = os.Stderr
	must(build.Run())

	fsync50, fsync99 := fsyncLatency(work)
	log.Printf("fsync latency on %s: p50 %v, p99 %v", work, fsync50, fsync99)

	etcd := startEtcd(etcdBin, filepath.Join(work, "etcd"))
	defer etcd.stop()
	basalt := startBasalt(basaltBin, filepath.Join(work, "basalt-data"))
	defer basalt.stop()
	systems := []*cluster{etcd, basalt}
	for _, c := range systems {
		log.Printf("%s: preloading 100,000 keys", c.name)
		if _, err := runBenchmark(benchBin, c, preload); err != nil {
			log.Fatalf("%s: preload: %v", c.name, err)
		}
		if c.split != nil {
			if err := c.split(watchSpanSplits()); err != nil {
				log.Fatalf("%s: split %s into %d regions: %v", c.name, watchSpanPrefix, watchSpanRegions, err)
			}
		}
		if c.layout != nil {
			log.Printf("%s after the preload: %s", c.name, c.layout())
		}
	}

	wls := workloads(*quick)
	if *only != "" {
		var kept []workload
		for _, w := range wls {
			if strings.Contains(w.name, *only) {
				kept = append(kept, w)
			}
		}
		if len(kept) == 0 {
			log.Fatalf("-only %q matches no workload", *only)
		}
		wls = kept
	}
	results := map[string]map[string][]result{} // workload → system → runs
	for r := 0; r < *rounds; r++ {
		order := systems
		if r%2 == 1 {
			order = []*cluster{basalt, etcd}
		}
		for _, w := range wls {
			for _, c := range order {
				run := func() (result, error) { return runBenchmark(benchBin, c, w.args) }
				if w.run != nil {
					run = func() (result, error) { return w.run(c) }
				}
				res, err := measure(c, run)
				if err != nil {
					log.Printf("round %d, %s, %s: %v", r+1, w.name, c.name, err)
					continue
				}
				log.Printf("round %d, %s, %s: %.0f req/s, p50 %.1f ms, p99 %.1f ms, peak RSS %d MiB", r+1, w.name, c.name,
					res.rps, res.p50*1000, res.p99*1000, res.peakRSS>>20)
				if results[w.name] == nil {
					results[w.name] = map[string][]result{}
				}
				results[w.name][c.name] = append(results[w.name][c.name], res)
			}
		}
	}
	for _, c := range systems {
		if c.layout != nil {
			log.Printf("%s at the end: %s", c.name, c.layout())
		}
	}
	table := render(wls, results, *rounds, fsync50, fsync99, *quick)
	fmt.Print(table)
	if *write {
		f, err := os.OpenFile(filepath.Join(root, "docs", "benchmarks.md"), os.O_APPEND|os.O_WRONLY, 0)
		must(err)
		_, err = f.WriteString("\n" + table)
		must(err)
		must(f.Close())
	}
}

// measure runs one workload against a cluster and samples the cluster's
// resident memory meanwhile.
func measure(c *cluster, run func() (result, error)) (result, error) {
	done := make(chan struct{})
	var peak int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for _, pid := range c.pids {
				peak = max(peak, procs.RSS(pid))
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	res, err := run()
	close(done)
	wg.Wait()
	res.peakRSS = peak
	return res, err
}

// runBenchmark runs the benchmark tool against a cluster.
func runBenchmark(bin string, c *cluster, args []string) (result, error) {
	cmd := exec.Command(bin, append([]string{"--endpoints=" + c.endpoints}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("%v: %s", err, tail(stderr.String()+stdout.String()))
	}
	return parseSummary(stdout.String())
}

var (
	rpsRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	pctRe = regexp.MustCompile(`(?m)^\s*(50|99)(?:\.0+)?% in ([0-9.]+) secs`)
)

// parseSummary reads the benchmark tool's last summary: watch-latency
// prints the puts' first and the watch events' last.
func parseSummary(out string) (result, error) {
	i := strings.LastIndex(out, "Summary:")
	if i < 0 {
		return result{}, fmt.Errorf("no summary in %q", tail(out))
	}
	s := out[i:]
	var r result
	if m := rpsRe.FindStringSubmatch(s); m != nil {
		r.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	for _, m := range pctRe.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		if m[1] == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	return r, nil
}

func tail(s string) string {
	if len(s) > 600 {
		return s[len(s)-600:]
	}
	return s
}

// fsyncLatency times 200 4 KiB write+fsync rounds in dir.
func fsyncLatency(dir string) (p50, p99 time.Duration) {
	f, err := os.Create(filepath.Join(dir, "fsync-probe"))
	must(err)
	defer f.Close()
	buf := make([]byte, 4096)
	var d []time.Duration
	for i := 0; i < 200; i++ {
		t := time.Now()
		_, err := f.Write(buf)
		must(err)
		must(f.Sync())
		d = append(d, time.Since(t))
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[len(d)*99/100]
}

// freeAddr picks a loopback port below the ephemeral range (see
// tests/procs.FreeAddr for why).
func freeAddr() string {
	for {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 10000+rand.IntN(22000)))
		if err != nil {
			continue
		}
		a := l.Addr().String()
		l.Close()
		return a
	}
}

// startEtcd runs a 3-member etcd cluster with its defaults (heartbeat
// 100 ms, election 1 s: Basalt's raft tick and election are the same),
// fsync on.
func startEtcd(bin, dir string) *cluster {
	var names, peers, clients []string
	for i := 1; i <= 3; i++ {
		names = append(names, fmt.Sprintf("e%d", i))
		peers = append(peers, freeAddr())
		clients = append(clients, freeAddr())
	}
	var initial []string
	for i := range names {
		initial = append(initial, names[i]+"=http://"+peers[i])
	}
	c := &cluster{name: "etcd 3.7.3", endpoints: strings.Join(clients, ",")}
	var procs []*exec.Cmd
	for i := range names {
		cmd := exec.Command(bin, "--name", names[i], "--data-dir", filepath.Join(dir, names[i]),
			"--listen-client-urls", "http://"+clients[i], "--advertise-client-urls", "http://"+clients[i],
			"--listen-peer-urls", "http://"+peers[i], "--initial-advertise-peer-urls", "http://"+peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--heartbeat-interval", "100", "--election-timeout", "1000",
			"--log-level", "error", "--quota-backend-bytes", strconv.Itoa(8<<30))
		must(cmd.Start())
		procs = append(procs, cmd)
		c.pids = append(c.pids, cmd.Process.Pid)
	}
	c.stop = func() { stopAll(procs) }
	ctl := strings.Replace(bin, "/etcd-", "/etcdctl-", 1)
	waitFor("etcd", func() bool { return exec.Command(ctl, "--endpoints", c.endpoints, "endpoint", "health").Run() == nil })
	return c
}

// startBasalt runs 1 PD and 3 stores.
func startBasalt(bin, dir string) *cluster {
	pdAddr, pdPeer := freeAddr(), freeAddr()
	pd := exec.Command(bin, "pd", "--name", "pd1", "--data-dir", filepath.Join(dir, "pd1"), "--client-addr", pdAddr,
		"--peer-addr", pdPeer, "--initial-cluster", "pd1="+pdPeer)
	must(pd.Start())
	procs := []*exec.Cmd{pd}
	c := &cluster{name: "Basalt"}
	var stores []string
	for i := 1; i <= 3; i++ {
		addr := freeAddr()
		stores = append(stores, addr)
		s := exec.Command(bin, "store", "--data-dir", filepath.Join(dir, fmt.Sprintf("store%d", i)), "--addr", addr,
			"--pd", pdAddr, "--log-level", "warn", "--enable-pprof")
		must(s.Start())
		procs = append(procs, s)
		c.pids = append(c.pids, s.Process.Pid)
	}
	c.pids = append(c.pids, pd.Process.Pid)
	c.endpoints = strings.Join(stores, ",")
	c.stop = func() { stopAll(procs) }
	// Profiles while a workload runs: go tool pprof http://STORE/debug/pprof/profile
	log.Printf("Basalt stores (pprof on): %s", c.endpoints)
	waitFor("Basalt", func() bool {
		out, err := exec.Command(bin, "ctl", "--pd", pdAddr, "status").Output()
		return err == nil && bytes.Contains(out, []byte("stores: 3 up")) && bytes.Contains(out, []byte(", 0 without a leader, 0 under-replicated"))
	})
	c.split = func(keys []string) error {
		out, err := exec.Command(bin, append([]string{"ctl", "--pd", pdAddr, "region", "split"}, keys...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	c.layout = func() string {
		out, err := exec.Command(bin, "ctl", "--pd", pdAddr, "status").Output()
		if err != nil {
			return err.Error()
		}
		// The region count, and each store's regions and leaders.
		var parts []string
		for _, l := range strings.Split(string(out), "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, "regions:") || strings.Contains(l, " leaders ") {
				parts = append(parts, l)
			}
		}
		return strings.Join(parts, "; ")
	}
	return c
}

func stopAll(procs []*exec.Cmd) {
	for _, p := range procs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}
}

func waitFor(what string, ok func() bool) {
	deadline := time.Now().Add(2 * time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			log.Fatalf("%s did not start", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func median(rs []result, f func(result) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func render(wls []workload, results map[string]map[string][]result, rounds int, fsync50, fsync99 time.Duration, quick bool) string {
	var b strings.Builder
	mem := "unknown"
	if m, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(m))
		if sc.Scan() {
			mem = strings.Join(strings.Fields(sc.Text())[1:], " ")
		}
	}
	title := "Basalt vs etcd 3.7.3, side by side"
	if quick {
		title += " (quick smoke run: small request counts, not comparable)"
	}
	fmt.Fprintf(&b, "### %s, %s\n\n", title, time.Now().Format("2006-01-02"))
	fmt.Fprintf(&b, "    go run ./tests/bench %s\n\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(&b, "Machine: %d cores, %s memory, fsync of 4 KiB p50 %v / p99 %v. etcd: 3 members (heartbeat 100 ms, election 1 s). Basalt: 1 PD, 3 stores, 3 replicas (raft tick 100 ms, election 10 ticks). Medians of %d rounds, systems alternating; the same `benchmark` (etcd v3.6.8 tools) command against each, except the 16-region watch row: the harness's own clientv3 workload (tests/bench/watchspan.go; 10 clients × 10 prefix watches, 100 puts/s round the 16 regions, latency from a put's start to each watcher's event as etcd's watch-latency; on Basalt the prefix is split into 16 regions first).\n\n",
		runtime.NumCPU(), mem, fsync50.Round(time.Microsecond), fsync99.Round(time.Microsecond), rounds)
	b.WriteString("| workload | etcd req/s | Basalt req/s | Basalt/etcd | etcd p50 / p99 ms | Basalt p50 / p99 ms | etcd peak RSS | Basalt peak RSS |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, w := range wls {
		e, bs := results[w.name]["etcd 3.7.3"], results[w.name]["Basalt"]
		rps := func(r result) float64 { return r.rps }
		p50 := func(r result) float64 { return r.p50 * 1000 }
		p99 := func(r result) float64 { return r.p99 * 1000 }
		rssMiB := func(r result) float64 { return float64(r.peakRSS >> 20) }
		ratio := "—"
		if median(e, rps) > 0 {
			ratio = fmt.Sprintf("%.2f", median(bs, rps)/median(e, rps))
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %s | %.1f / %.1f | %.1f / %.1f | %.0f MiB | %.0f MiB |\n", w.name,
			median(e, rps), median(bs, rps), ratio, median(e, p50), median(e, p99), median(bs, p50), median(bs, p99),
			median(e, rssMiB), median(bs, rssMiB))
	}
	return b.String()
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
