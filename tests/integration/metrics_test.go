package integration

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/basaltdb/basalt/tests/procs"
)

// scrape GETs a /metrics page.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

// sample returns the value of the first sample named by a metric line's
// prefix (name and labels), or -1 when there is none.
func sample(page, prefix string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(prefix) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(page)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// Every store serves Prometheus metrics on its own address (HTTP/1 next to
// gRPC), PD on its client address; they move with the work done, and the
// profiler is there only when asked for.
func TestMetricsEndpoints(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3, StoreArgs: []string{"--enable-pprof"}})
	cl := c.Client(t)
	waitReplicated(t, c)
	for i := 0; i < 20; i++ {
		put(t, cl, "metrics/"+strconv.Itoa(i), "v")
	}

	var proposals, leaders float64
	for _, s := range c.Stores {
		page := scrape(t, "http://"+s.Addr+"/metrics")
		for _, want := range []string{"basalt_raftstore_sync_seconds_bucket", "basalt_raftstore_round_persisted_entries_count",
			"basalt_pdclient_tso_rpc_seconds_count", "basalt_store_watchers ", "basalt_store_disk_bytes ", "go_goroutines "} {
			if !strings.Contains(page, want) {
				t.Fatalf("store %s /metrics lacks %s", s.Name, want)
			}
		}
		proposals += sample(page, "basalt_raftstore_proposals_total")
		leaders += sample(page, `basalt_raftstore_regions{role="leader"}`)
	}
	if proposals < 20 {
		t.Fatalf("the stores report %v proposals after 20 puts", proposals)
	}
	if leaders < 1 {
		t.Fatalf("no store reports leading a region")
	}
	// /debug/regions: each store's replicas as it sees them; one of them
	// leads the region holding the keys, and all agree on its term (polled:
	// a leader move in flight can leave them apart for a moment).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var leading int
		terms := map[uint64]bool{}
		for _, s := range c.Stores {
			regions, err := c.RegionStates(s)
			if err != nil {
				t.Fatal(err)
			}
			if len(regions) != 1 || len(regions[0].Peers) != 3 {
				t.Fatalf("store %s /debug/regions: want one region with three peers, got %+v", s.Name, regions)
			}
			if regions[0].RaftState == "StateLeader" {
				leading++
			}
			terms[regions[0].Term] = true
		}
		if leading == 1 && len(terms) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/debug/regions: %d leaders, terms %v", leading, terms)
		}
	}
	// The puts went through some store's KV service.
	var puts float64
	for _, s := range c.Stores {
		if v := sample(scrape(t, "http://"+s.Addr+"/metrics"), `basalt_grpc_server_handled_total{code="OK",method="/kvpb.KV/Put"}`); v > 0 {
			puts += v
		}
	}
	if puts < 20 {
		t.Fatalf("the stores counted %v successful Put calls, want >= 20", puts)
	}

	// PD: the leader reports the cluster.
	deadline := time.Now().Add(30 * time.Second)
	for {
		page := scrape(t, "http://"+c.PDs[0].Addr+"/metrics")
		if sample(page, "basalt_pd_is_leader") == 1 && sample(page, `basalt_pd_stores{state="Up"}`) == 3 &&
			sample(page, "basalt_pd_regions") >= 1 && sample(page, "basalt_pd_tso_requests_total") > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PD metrics never showed a leader with 3 stores up:\n%s", page)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Every series the Grafana dashboard of deploy/ queries exists.
	dash, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	pages := scrape(t, "http://"+c.PDs[0].Addr+"/metrics")
	for _, s := range c.Stores {
		pages += scrape(t, "http://"+s.Addr+"/metrics")
	}
	names := regexp.MustCompile(`basalt_[a-z_]+`).FindAllString(string(dash), -1)
	if len(names) < 10 {
		t.Fatalf("the dashboard names %d series", len(names))
	}
	for _, name := range names {
		if !strings.Contains(pages, "\n"+name+" ") && !strings.Contains(pages, "\n"+name+"{") {
			t.Errorf("the dashboard queries %s, which no process exports", name)
		}
	}

	// pprof: on for the stores (flag given), off for PD.
	if resp, err := http.Get("http://" + c.Stores[0].Addr + "/debug/pprof/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("store pprof: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	if resp, err := http.Get("http://" + c.PDs[0].Addr + "/debug/pprof/"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("PD pprof without the flag: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
}
