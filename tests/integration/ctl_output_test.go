package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/tests/procs"
)

// ctlRun runs `basalt ctl ARGS...` with env added to the environment and
// returns its stdout, its stderr and its error, kept apart: errors must go
// to stderr, one line, and nothing to stdout.
func ctlRun(t *testing.T, env []string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(procs.Binary(t), append([]string{"ctl"}, args...)...)
	// No BASALT_* setting of the test's own environment leaks in.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BASALT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// tableRows parses a -w table output: its header and rows, cells trimmed.
// It fails the test unless the output is one bordered table.
func tableRows(t *testing.T, out string) (header []string, rows [][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	rule := regexp.MustCompile(`^(\+-+)+\+$`)
	if len(lines) < 3 || !rule.MatchString(lines[0]) || !rule.MatchString(lines[2]) {
		t.Fatalf("not a table:\n%s", out)
	}
	cells := func(l string) []string {
		if !strings.HasPrefix(l, "|") || !strings.HasSuffix(l, "|") || len(l) != len(lines[0]) {
			t.Fatalf("not a table row: %q in\n%s", l, out)
		}
		var cs []string
		for _, c := range strings.Split(l[1:len(l)-1], "|") {
			cs = append(cs, strings.TrimSpace(c))
		}
		return cs
	}
	header = cells(lines[1])
	if len(lines) == 3 {
		return header, nil
	}
	if !rule.MatchString(lines[len(lines)-1]) {
		t.Fatalf("the table does not end with a rule:\n%s", out)
	}
	for _, l := range lines[3 : len(lines)-1] {
		rows = append(rows, cells(l))
	}
	return header, rows
}

// Every ctl command round-trips through a real cluster in its three
// output formats, and the table and JSON outputs say the same thing as
// the simple one. ctl's own settings also come from the environment and a
// config file, and PD's HTTP commands get past a dead first --pd address.
func TestCtlRoundTripsInEveryFormat(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	c.Client(t)
	waitReplicated(t, c)
	pd := c.PDEndpoints()
	ctl := func(args ...string) string {
		t.Helper()
		out, errOut, err := ctlRun(t, nil, append([]string{"--pd", pd}, args...)...)
		if err != nil || errOut != "" {
			t.Fatalf("ctl %v: %v: %s%s", args, err, out, errOut)
		}
		return out
	}
	ctlJSON := func(v any, args ...string) {
		t.Helper()
		out := ctl(append(args, "-w", "json")...)
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("ctl %v -w json: %v:\n%s", args, err, out)
		}
	}
	b64 := func(s string) string {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("%q is not base64: %v", s, err)
		}
		return string(b)
	}
	type kv struct {
		Key, Value     string
		ModRevision    int64 `json:"mod_revision"`
		CreateRevision int64 `json:"create_revision"`
		Version        int64
		Lease          int64
	}
	type header struct {
		Revision int64
	}

	// put and get.
	if out := ctl("put", "rt/a", "v1"); out != "OK\n" {
		t.Fatalf("put: %q", out)
	}
	var put struct {
		Header header
		PrevKv *kv `json:"prev_kv"`
	}
	ctlJSON(&put, "put", "rt/a", "v2", "--prev-kv")
	if put.Header.Revision <= 0 || put.PrevKv == nil || b64(put.PrevKv.Value) != "v1" {
		t.Fatalf("put --prev-kv -w json: %+v", put)
	}
	firstRev := put.PrevKv.ModRevision
	h, rows := tableRows(t, ctl("put", "rt/b", "w1", "-w", "table"))
	if strings.Join(h, ",") != "KEY,REVISION" || len(rows) != 1 || rows[0][0] != "rt/b" {
		t.Fatalf("put -w table: %v %v", h, rows)
	}
	if rev, err := strconv.ParseInt(rows[0][1], 10, 64); err != nil || rev <= put.Header.Revision {
		t.Fatalf("put -w table: revision %q after %d", rows[0][1], put.Header.Revision)
	}

	if out := ctl("get", "rt/", "--prefix"); out != "rt/a\nv2\nrt/b\nw1\n" {
		t.Fatalf("get --prefix: %q", out)
	}
	var get struct {
		Header header
		Kvs    []kv
		Count  int64
		More   bool
	}
	ctlJSON(&get, "get", "rt/", "--prefix")
	if get.Count != 2 || len(get.Kvs) != 2 || b64(get.Kvs[0].Key) != "rt/a" || b64(get.Kvs[0].Value) != "v2" || get.Kvs[0].Version != 2 {
		t.Fatalf("get -w json: %+v", get)
	}
	h, rows = tableRows(t, ctl("get", "rt/", "--prefix", "-w", "table"))
	if strings.Join(h, ",") != "KEY,VALUE,CREATE_REV,MOD_REV,VERSION,LEASE" || len(rows) != 2 ||
		rows[0][0] != "rt/a" || rows[0][1] != "v2" || rows[0][4] != "2" || rows[1][0] != "rt/b" ||
		rows[0][2] != fmt.Sprint(firstRev) || rows[0][3] != fmt.Sprint(get.Kvs[0].ModRevision) {
		t.Fatalf("get -w table: %v %v (json said %+v)", h, rows, get.Kvs)
	}
	if out := ctl("get", "rt/a", "--rev", fmt.Sprint(firstRev)); out != "rt/a\nv1\n" {
		t.Fatalf("get --rev %d: %q", firstRev, out)
	}
	if out := ctl("get", "rt/", "--prefix", "--keys-only", "--limit", "1"); out != "rt/a\n" {
		t.Fatalf("get --keys-only --limit 1: %q", out)
	}
	if out := ctl("get", "rt/a", "--range-end", "rt/c", "--count-only"); out != "2\n" {
		t.Fatalf("get --count-only: %q", out)
	}
	h, rows = tableRows(t, ctl("get", "rt/", "--prefix", "--count-only", "-w", "table"))
	if h[0] != "COUNT" || len(rows) != 1 || rows[0][0] != "2" {
		t.Fatalf("get --count-only -w table: %v %v", h, rows)
	}
	h, rows = tableRows(t, ctl("get", "", "--prefix", "--keys-only", "-w", "table"))
	if h[0] != "KEY" || len(rows) < 2 {
		t.Fatalf(`get "" --prefix (every key) -w table: %v %v`, h, rows)
	}

	// watch from a past revision replays both puts, the second with its
	// previous value, then runs until interrupted and exits cleanly.
	// The context ends a watch that prints nothing, so the scan below fails
	// instead of waiting for the test binary's timeout.
	watchCtx, stopWatch := context.WithTimeout(context.Background(), time.Minute)
	defer stopWatch()
	watch := exec.CommandContext(watchCtx, procs.Binary(t), "ctl", "--pd", pd, "watch", "rt/a", "--rev", fmt.Sprint(firstRev), "--prev-kv")
	watchOut, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = watch.Process.Kill() })
	want := []string{"PUT", "rt/a", "v1", "PUT", "rt/a", "v1", "rt/a", "v2"}
	sc := bufio.NewScanner(watchOut)
	for i := 0; i < len(want); i++ {
		if !sc.Scan() || sc.Text() != want[i] {
			t.Fatalf("watch --rev --prev-kv: line %d is %q (%v), want %q of %q", i, sc.Text(), sc.Err(), want[i], want)
		}
	}
	if err := watch.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := watch.Wait(); err != nil {
		t.Fatalf("watch exited with %v after SIGINT", err)
	}

	// txn, interactively and as a table.
	itxn := exec.Command(procs.Binary(t), "ctl", "--pd", pd, "txn", "-i")
	itxn.Stdin = strings.NewReader("mod(\"rt/a\") > \"0\"\n\nget rt/a\n\n\n")
	if out, err := itxn.CombinedOutput(); err != nil ||
		string(out) != "compares:\n\nsuccess requests (get, put, del):\n\nfailure requests (get, put, del):\nSUCCESS\n\nrt/a\nv2\n" {
		t.Fatalf("txn -i: %v: %q", err, out)
	}
	txn := exec.Command(procs.Binary(t), "ctl", "--pd", pd, "txn", "-w", "table")
	txn.Stdin = strings.NewReader("value(\"rt/a\") = \"v2\"\n\nput rt/a v3\nget rt/a\n\nput rt/a lost\n")
	out, err := txn.CombinedOutput()
	if err != nil {
		t.Fatalf("txn -w table: %v: %s", err, out)
	}
	if !regexp.MustCompile(`\|\s*true\s*\|`).Match(out) || !regexp.MustCompile(`\|\s*2\s*\|\s*get\s*\|\s*rt/a\s*\|\s*v3\s*\|`).Match(out) {
		t.Fatalf("txn -w table:\n%s", out)
	}

	// Leases.
	var grant struct {
		ID  int64
		TTL int64
	}
	ctlJSON(&grant, "lease", "grant", "600")
	if grant.ID == 0 || grant.TTL != 600 {
		t.Fatalf("lease grant -w json: %+v", grant)
	}
	id := fmt.Sprintf("%016x", grant.ID)
	ctl("put", "rt/leased", "x", "--lease", id)
	var ttl struct {
		GrantedTTL int64
		TTL        int64
		Keys       []string
	}
	ctlJSON(&ttl, "lease", "timetolive", id, "--keys")
	if ttl.GrantedTTL != 600 || len(ttl.Keys) != 1 || b64(ttl.Keys[0]) != "rt/leased" {
		t.Fatalf("lease timetolive --keys -w json: %+v", ttl)
	}
	h, rows = tableRows(t, ctl("lease", "list", "-w", "table"))
	if h[0] != "ID" || len(rows) != 1 || rows[0][0] != id {
		t.Fatalf("lease list -w table: %v %v, want %s", h, rows, id)
	}
	h, rows = tableRows(t, ctl("lease", "revoke", id, "-w", "table"))
	if len(rows) != 1 || rows[0][0] != id || rows[0][1] != "true" {
		t.Fatalf("lease revoke -w table: %v %v", h, rows)
	}
	if out := ctl("get", "rt/leased"); out != "" {
		t.Fatalf("the revoked lease's key is still there: %q", out)
	}

	// del and compact.
	var del struct {
		Header  header
		Deleted int64
		PrevKvs []kv `json:"prev_kvs"`
	}
	ctlJSON(&del, "del", "rt/b", "--prev-kv")
	if del.Deleted != 1 || len(del.PrevKvs) != 1 || b64(del.PrevKvs[0].Value) != "w1" {
		t.Fatalf("del --prev-kv -w json: %+v", del)
	}
	var compacted struct {
		Rev int64 `json:"compacted_revision"`
	}
	ctlJSON(&compacted, "compact", fmt.Sprint(del.Header.Revision))
	if compacted.Rev != del.Header.Revision {
		t.Fatalf("compact -w json: %+v, want %d", compacted, del.Header.Revision)
	}
	if o, e, err := ctlRun(t, nil, "--pd", pd, "get", "rt/a", "--rev", fmt.Sprint(firstRev)); err == nil || o != "" ||
		strings.Count(e, "\n") != 1 || !strings.Contains(e, "compacted") {
		t.Fatalf("a read below the compacted revision: %v: stdout %q stderr %q", err, o, e)
	}

	// Regions, stores, members, status.
	var split []struct {
		ID       uint64
		StartKey string `json:"start_key"`
	}
	ctlJSON(&split, "region", "split", "rt/m")
	if len(split) != 2 || b64(split[1].StartKey) != "rt/m" {
		t.Fatalf("region split -w json: %+v", split)
	}
	h, rows = tableRows(t, ctl("region", "list", "-w", "table"))
	if h[0] != "ID" || h[4] != "LEADER_STORE" || len(rows) < 2 {
		t.Fatalf("region list -w table: %v %v", h, rows)
	}
	found := false
	for _, r := range rows {
		if r[0] == fmt.Sprint(split[1].ID) && r[1] == `"rt/m"` && len(strings.Split(r[5], ",")) == 3 {
			found = true
		}
	}
	if !found {
		t.Fatalf("region list -w table has no row for region %d at rt/m with 3 voters: %v", split[1].ID, rows)
	}
	h, rows = tableRows(t, ctl("region", "merge", fmt.Sprint(split[1].ID), fmt.Sprint(split[0].ID), "-w", "table"))
	if len(rows) != 1 || rows[0][0] != fmt.Sprint(split[0].ID) {
		t.Fatalf("region merge -w table: %v %v", h, rows)
	}

	var stores struct {
		Count  int
		Stores []struct {
			State string
		}
	}
	ctlJSON(&stores, "store", "list")
	if stores.Count != 3 || len(stores.Stores) != 3 {
		t.Fatalf("store list -w json: %+v", stores)
	}
	h, rows = tableRows(t, ctl("store", "list", "-w", "table"))
	if strings.Join(h, ",") != "ID,ADDRESS,STATE,REGIONS,LEADERS" || len(rows) != 3 {
		t.Fatalf("store list -w table: %v %v", h, rows)
	}
	if out := ctl("store", "list"); strings.Count(out, "\n") != 3 || !strings.HasPrefix(out, "store ") {
		t.Fatalf("store list: %q", out)
	}
	var members struct {
		Members []struct{ Name string }
		Leader  struct{ Name string }
	}
	ctlJSON(&members, "member", "list")
	if len(members.Members) != 1 || members.Leader.Name != members.Members[0].Name {
		t.Fatalf("member list -w json: %+v", members)
	}
	h, rows = tableRows(t, ctl("member", "list", "-w", "table"))
	if strings.Join(h, ",") != "ID,STATUS,NAME,PEER ADDRS,CLIENT ADDRS,IS LEARNER,IS LEADER" || len(rows) != 1 ||
		rows[0][2] != members.Members[0].Name || rows[0][4] != "http://"+pd || rows[0][6] != "true" {
		t.Fatalf("member list -w table: %v %v", h, rows)
	}
	// etcdctl's simple member list: ID, status, name, peer URLs, client URLs, is learner.
	if out := ctl("member", "list"); !regexp.MustCompile(`^[0-9a-f]+, started, ` + members.Members[0].Name + `, http://\S+, http://` + regexp.QuoteMeta(pd) + `, false\n$`).MatchString(out) {
		t.Fatalf("member list: %q", out)
	}
	_, rows = tableRows(t, ctl("status", "-w", "table"))
	status := map[string]string{}
	for _, r := range rows {
		status[r[0]] = r[1]
	}
	if status["PD members"] != "1" || status["stores up"] != "3" || status["stores not up"] != "0" {
		t.Fatalf("status -w table: %v", rows)
	}

	// Settings from the environment and a config file; a dead PD first.
	dead := procs.FreeAddr(t)
	if o, e, err := ctlRun(t, []string{"BASALT_PD=" + dead + "," + pd, "BASALT_WRITE_OUT=table"}, "store", "list"); err != nil || e != "" {
		t.Fatalf("BASALT_PD with a dead member first: %v: %s%s", err, o, e)
	} else if _, rows := tableRows(t, o); len(rows) != 3 {
		t.Fatalf("store list through BASALT_PD: %v", rows)
	}
	cfg := filepath.Join(t.TempDir(), "ctl.yaml")
	if err := os.WriteFile(cfg, []byte("pd: ["+strconv.Quote(dead)+", "+strconv.Quote(pd)+"]\nwrite-out: json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, e, err := ctlRun(t, nil, "--config", cfg, "get", "rt/a")
	if err != nil || e != "" {
		t.Fatalf("ctl --config: %v: %s%s", err, o, e)
	}
	if err := json.Unmarshal([]byte(o), &get); err != nil || len(get.Kvs) != 1 || b64(get.Kvs[0].Value) != "v3" {
		t.Fatalf("get through the config file: %v: %s", err, o)
	}
	// A flag on the command line wins over the file.
	if o, _, err := ctlRun(t, nil, "--config", cfg, "-w", "simple", "get", "rt/a"); err != nil || o != "rt/a\nv3\n" {
		t.Fatalf("-w simple over the file's json: %v: %q", err, o)
	}
}

// Bad arguments fail before anything is sent: a non-zero exit, nothing on
// stdout, and one line on stderr saying what was wrong.
func TestCtlBadArgumentsFailWithOneLine(t *testing.T) {
	// Nothing listens here: a command that got past its checks would fail
	// on the connection instead, with a different message.
	pd := procs.FreeAddr(t)
	cases := []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"frob"}, nil, `unknown command "frob"`},
		{[]string{"lease"}, nil, "needs a command: grant"},
		{[]string{"region", "frob"}, nil, `unknown command "frob" for basalt ctl region`},
		{[]string{"-w", "xml", "get", "a"}, nil, `--write-out "xml"`},
		{[]string{"get", "a"}, []string{"BASALT_WRITE_OUT=yaml"}, `--write-out "yaml"`},
		{[]string{"get", "a"}, []string{"BASALT_TIMEOUT=soon"}, "BASALT_TIMEOUT"},
		{[]string{"get"}, nil, "accepts 1 arg(s)"},
		{[]string{"get", "a", "--prefix", "--range-end", "b"}, nil, "not both"},
		{[]string{"get", "a", "--limit", "-1"}, nil, "cannot be negative"},
		{[]string{"get", "a", "--consistency", "x"}, nil, "--consistency"},
		{[]string{"compact", "12abc"}, nil, `revision "12abc" is not a positive number`},
		{[]string{"region", "merge", "1", "2x"}, nil, `region ID "2x"`},
		{[]string{"region", "split"}, nil, "give the split keys"},
		{[]string{"region", "split", "a", ""}, nil, "a split key cannot be empty"},
		{[]string{"region", "transfer-leader", "x", "1"}, nil, "positive numbers"},
		{[]string{"store", "list", "extra"}, nil, `unknown command "extra"`},
		{[]string{"lease", "grant", "0"}, nil, "bad TTL"},
		{[]string{"lease", "revoke", "xyz"}, nil, "bad lease ID"},
		{[]string{"put", "k", "v", "--lease", "-3"}, nil, "bad lease ID"},
		{[]string{"watch", "k", "-w", "table"}, nil, "not a table"},
		{[]string{"--config", "/nonexistent/ctl.yaml", "get", "a"}, nil, "config file"},
		{[]string{"get", "a"}, []string{"BASALT_CTL_CONFIG=/nonexistent/ctl.yaml"}, "config file"},
	}
	for _, tc := range cases {
		out, errOut, err := ctlRun(t, tc.env, append([]string{"--pd", pd}, tc.args...)...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("ctl %v: want a non-zero exit, got %v", tc.args, err)
		}
		if out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasSuffix(errOut, "\n") || !strings.Contains(errOut, tc.want) {
			t.Errorf("ctl %v: want one stderr line containing %q and no stdout; stdout %q, stderr %q", tc.args, tc.want, out, errOut)
		}
	}
}
