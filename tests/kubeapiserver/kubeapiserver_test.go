// Package kubeapiserver runs the real Kubernetes API server, unchanged,
// with a Basalt cluster as its etcd, and drives it through its REST API.
package kubeapiserver

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/internal/tlsutil/tlstest"
	"github.com/basaltdb/basalt/tests/procs"
)

// The namespace the test's objects live in.
const ns = "basalt-test"

// TestKubeAPIServer: kube-apiserver on a 1 PD, 3 store cluster whose
// ConfigMaps span two regions. ConfigMaps bypass the apiserver's watch
// cache (--watch-cache-sizes=configmaps#0), so every read, list and watch
// of them is a request to Basalt's etcd API; ServiceAccounts and
// Namespaces go through the watch cache, which lists and watches Basalt and
// asks it for progress notifications to serve consistent reads.
func TestKubeAPIServer(t *testing.T) {
	bin := kubeAPIServerBinary(t)
	// The apiserver reaches the stores as it reaches a production etcd:
	// over TLS, with a client certificate the stores require.
	etcd := etcdTLS{files: tlstest.Write(t, t.TempDir(), "etcd")}
	var etcdAddrs []string
	for range 3 {
		etcdAddrs = append(etcdAddrs, procs.FreeAddr(t))
		etcd.urls = append(etcd.urls, "https://"+etcdAddrs[len(etcdAddrs)-1])
	}
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3,
		StoreArgs: []string{"--etcd-cert-file", etcd.files.ServerCert, "--etcd-key-file", etcd.files.ServerKey,
			"--etcd-trusted-ca-file", etcd.files.CA, "--etcd-client-cert-auth"},
		StoreArgsFor: func(i int) []string { return []string{"--etcd-listen-url", etcd.urls[i]} }})
	// Runs after the apiserver's cleanup (which prints its log) and before
	// the stores stop.
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpState(t, 4000)
		}
	})
	cl := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	pd := cl.PD()
	if err := procs.WaitVoters(ctx, pd, []byte("a"), 3); err != nil {
		t.Fatal(err)
	}
	// ConfigMaps in their own regions, the test namespace's cut in two
	// between cm-011 and cm-012.
	if _, err := cl.SplitRegions(ctx, [][]byte{[]byte("/registry/configmaps/"),
		[]byte("/registry/configmaps/" + ns + "/" + cmName(12)), []byte("/registry/configmaps0")}); err != nil {
		t.Fatal(err)
	}
	if err := procs.WaitSettled(ctx, pd, nil, nil, 3); err != nil {
		t.Fatal(err)
	}
	nsPrefix := "/registry/configmaps/" + ns + "/"
	if rs, err := pd.ScanRegions(ctx, []byte(nsPrefix), []byte(strings.TrimSuffix(nsPrefix, "/")+"0"), 0); err != nil || len(rs) != 2 {
		t.Fatalf("the namespace's ConfigMaps span %d regions (%v), want 2", len(rs), err)
	}

	a := startAPIServer(t, bin, etcd, "--watch-cache-sizes=configmaps#0")
	a.must(http.StatusCreated, http.MethodPost, "/api/v1/namespaces", "",
		object{APIVersion: "v1", Kind: "Namespace", Metadata: objectMeta{Name: ns}}, nil)

	t.Run("configmaps", func(t *testing.T) { crudWatch(t, a, "configmaps", "ConfigMap") })
	t.Run("serviceaccounts", func(t *testing.T) { crudWatch(t, a, "serviceaccounts", "ServiceAccount") })
	if t.Failed() {
		return
	}
	listRV, token := paginate(t, a, cl)
	compacted(t, a, cl, listRV, token)
	consistentReadsFromCache(t, a)
	eventsShareALease(t, a, cl)
}

// crudWatch creates, reads, updates (and fails a stale update), patches
// and deletes one object, and checks that a watch from before the create
// sees each change once, in order, at the revision the write returned.
func crudWatch(t *testing.T, a *apiServer, resource, kind string) {
	a = a.on(t)
	coll := "/api/v1/namespaces/" + ns + "/" + resource
	name := "watched-" + strings.ToLower(kind)
	path := coll + "/" + name
	var l objectList
	a.must(http.StatusOK, http.MethodGet, coll, "", nil, &l)
	w := a.watch(t, coll+"?watch=true&resourceVersion="+l.Metadata.ResourceVersion)

	obj := object{APIVersion: "v1", Kind: kind, Metadata: objectMeta{Name: name, Labels: map[string]string{"step": "created"}}}
	if kind == "ConfigMap" {
		obj.Data = map[string]string{"k": "v1"}
	}
	var created, got, updated, patched object
	a.must(http.StatusCreated, http.MethodPost, coll, "", obj, &created)
	a.must(http.StatusOK, http.MethodGet, path, "", nil, &got)
	if got.Metadata.ResourceVersion != created.Metadata.ResourceVersion || got.Metadata.UID != created.Metadata.UID ||
		got.Metadata.Labels["step"] != "created" || (kind == "ConfigMap" && got.Data["k"] != "v1") {
		t.Fatalf("get after create: %+v, created %+v", got, created)
	}

	upd := got
	upd.Metadata.Labels = map[string]string{"step": "updated"}
	if kind == "ConfigMap" {
		upd.Data = map[string]string{"k": "v2"}
	}
	a.must(http.StatusOK, http.MethodPut, path, "", upd, &updated)
	if rv(t, updated.Metadata.ResourceVersion) <= rv(t, created.Metadata.ResourceVersion) {
		t.Fatalf("update: resourceVersion %s after %s", updated.Metadata.ResourceVersion, created.Metadata.ResourceVersion)
	}
	// The same update again carries the create's resourceVersion: stale.
	a.fails(http.StatusConflict, "Conflict", http.MethodPut, path, "", upd)

	a.must(http.StatusOK, http.MethodPatch, path, "application/merge-patch+json",
		map[string]any{"metadata": map[string]any{"labels": map[string]string{"patched": "yes"}}}, &patched)
	if rv(t, patched.Metadata.ResourceVersion) <= rv(t, updated.Metadata.ResourceVersion) ||
		patched.Metadata.Labels["step"] != "updated" || patched.Metadata.Labels["patched"] != "yes" {
		t.Fatalf("patch: %+v after %+v", patched, updated)
	}
	a.must(http.StatusOK, http.MethodDelete, path, "", nil, nil)
	a.fails(http.StatusNotFound, "NotFound", http.MethodGet, path, "", nil)

	want := []struct {
		typ, rv, step string
	}{
		{"ADDED", created.Metadata.ResourceVersion, "created"},
		{"MODIFIED", updated.Metadata.ResourceVersion, "updated"},
		{"MODIFIED", patched.Metadata.ResourceVersion, "updated"},
		{"DELETED", "", "updated"},
	}
	last := rv(t, l.Metadata.ResourceVersion)
	for i, wa := range want {
		e, o := next(t, w, resource+" watch")
		if e.Type != wa.typ || o.Metadata.Name != name || (wa.rv != "" && o.Metadata.ResourceVersion != wa.rv) ||
			o.Metadata.Labels["step"] != wa.step || rv(t, o.Metadata.ResourceVersion) <= last {
			t.Fatalf("watch event %d: %s %+v, want %s of %s at resourceVersion %q (after %d)", i, e.Type, o, wa.typ, name, wa.rv, last)
		}
		last = rv(t, o.Metadata.ResourceVersion)
	}
}

// paginate creates 25 ConfigMaps, lists them 10 at a time (the second page
// crosses the region boundary at cm-012) while one changes between pages,
// and checks every page reads the first page's snapshot. It also reads a
// ConfigMap's key through Basalt's own client. It returns the list's
// resourceVersion and the first page's continue token.
func paginate(t *testing.T, a *apiServer, cl *client.Client) (listRV, firstContinue string) {
	a = a.on(t)
	coll := "/api/v1/namespaces/" + ns + "/configmaps"
	const n = 25
	var made []object
	for i := 0; i < n; i++ {
		var o object
		a.must(http.StatusCreated, http.MethodPost, coll, "",
			object{APIVersion: "v1", Kind: "ConfigMap", Metadata: objectMeta{Name: cmName(i)}, Data: map[string]string{"i": strconv.Itoa(i)}}, &o)
		made = append(made, o)
	}

	var names []string
	cont := ""
	for page := 0; ; page++ {
		var l objectList
		a.must(http.StatusOK, http.MethodGet, coll+"?limit=10&continue="+url.QueryEscape(cont), "", nil, &l)
		if page == 0 {
			listRV, firstContinue = l.Metadata.ResourceVersion, l.Metadata.Continue
			if l.Metadata.RemainingItemCount == nil || *l.Metadata.RemainingItemCount != n-10 {
				t.Fatalf("first page: remainingItemCount %v, want %d", l.Metadata.RemainingItemCount, n-10)
			}
			// A change after the first page is not in the later ones.
			changed := made[n-1]
			changed.Data = map[string]string{"i": "changed"}
			a.must(http.StatusOK, http.MethodPut, coll+"/"+changed.Metadata.Name, "", changed, nil)
		} else if l.Metadata.ResourceVersion != listRV {
			t.Fatalf("page %d at resourceVersion %s, the first at %s", page, l.Metadata.ResourceVersion, listRV)
		}
		for _, o := range l.Items {
			names = append(names, o.Metadata.Name)
			if o.Metadata.Name == made[n-1].Metadata.Name &&
				(o.Data["i"] != strconv.Itoa(n-1) || o.Metadata.ResourceVersion != made[n-1].Metadata.ResourceVersion) {
				t.Fatalf("page %d shows %s as changed after the first page: %+v", page, o.Metadata.Name, o)
			}
		}
		if len(l.Items) != 10 && l.Metadata.Continue != "" || len(l.Items) == 0 {
			t.Fatalf("page %d: %d items, continue %q", page, len(l.Items), l.Metadata.Continue)
		}
		if cont = l.Metadata.Continue; cont == "" {
			break
		}
		if page > 3 {
			t.Fatal("pagination does not end")
		}
	}
	if len(names) != n {
		t.Fatalf("paginated list: %v, want %d ConfigMaps", names, n)
	}
	for i, name := range names {
		if name != cmName(i) {
			t.Fatalf("paginated list: %v, want cm-000 ... in order", names)
		}
	}

	// The object is in Basalt, under the apiserver's key, in its storage
	// encoding, and its mod_revision is its resourceVersion.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cl.KV().Get(ctx, "/registry/configmaps/"+ns+"/"+cmName(3))
	if err != nil || len(resp.GetKvs()) != 1 {
		t.Fatalf("reading the ConfigMap's key through Basalt: %v %v", resp, err)
	}
	kv := resp.GetKvs()[0]
	if !bytes.HasPrefix(kv.GetValue(), []byte("k8s\x00")) || !bytes.Contains(kv.GetValue(), []byte(cmName(3))) ||
		strconv.FormatInt(kv.GetModRevision(), 10) != made[3].Metadata.ResourceVersion {
		t.Fatalf("the ConfigMap in Basalt: mod_revision %d (resourceVersion %s), value %q", kv.GetModRevision(),
			made[3].Metadata.ResourceVersion, kv.GetValue())
	}
	return listRV, firstContinue
}

// compacted waits until the apiserver's own compactor (a Txn on
// compact_rev_key, then Compact, every --etcd-compaction-interval) has
// compacted Basalt past the list's revision, then checks the API's answers
// to the compacted revision, as with etcd: 410 Gone for the old continue
// token (with a token to go on inconsistently), for an exact list at that
// revision, and for a watch from it.
func compacted(t *testing.T, a *apiServer, cl *client.Client, listRV, firstContinue string) {
	a = a.on(t)
	coll := "/api/v1/namespaces/" + ns + "/configmaps"
	old := rv(t, listRV)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		comp, err := cl.PD().GetCompactRevision(ctx)
		if err == nil && comp > old {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the apiserver never compacted past %d (compacted at %d, %v)", old, comp, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	resp, err := cl.KV().Get(ctx, "compact_rev_key")
	if err != nil || len(resp.GetKvs()) != 1 || resp.GetKvs()[0].GetVersion() < 2 {
		t.Fatalf("compact_rev_key: %v %v", resp, err)
	}

	st := a.fails(http.StatusGone, "Expired", http.MethodGet, coll+"?limit=10&continue="+url.QueryEscape(firstContinue), "", nil)
	if st.Metadata.Continue == "" {
		t.Fatalf("a compacted continue: %+v, want a token to go on from", st)
	}
	var rest objectList
	a.must(http.StatusOK, http.MethodGet, coll+"?limit=100&continue="+url.QueryEscape(st.Metadata.Continue), "", nil, &rest)
	if len(rest.Items) != 15 || rest.Items[0].Metadata.Name != cmName(10) || rv(t, rest.Metadata.ResourceVersion) <= old {
		t.Fatalf("the list went on from the inconsistent token: %d items from %v at %s", len(rest.Items), rest.Items, rest.Metadata.ResourceVersion)
	}
	a.fails(http.StatusGone, "Expired", http.MethodGet, coll+"?resourceVersionMatch=Exact&resourceVersion="+listRV, "", nil)

	w := a.watch(t, coll+"?watch=true&resourceVersion="+listRV)
	select {
	case e, ok := <-w:
		if !ok || e.Type != "ERROR" || !strings.Contains(string(e.Object), `"code":410`) {
			t.Fatalf("a watch from a compacted resourceVersion: %s %s (open %v), want an ERROR with code 410", e.Type, e.Object, ok)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a watch from a compacted resourceVersion: no event in 30 s")
	}
}

// consistentReadsFromCache lists namespaces without a resourceVersion (a
// consistent read) and checks, in the apiserver's metrics, that the watch
// cache served it without falling back to etcd: the cache asked Basalt for
// a progress notification and got one at or past the revision Basalt
// reported as current.
func consistentReadsFromCache(t *testing.T, a *apiServer) {
	a = a.on(t)
	var l objectList
	a.must(http.StatusOK, http.MethodGet, "/api/v1/namespaces", "", nil, &l)
	found := false
	for _, o := range l.Items {
		found = found || o.Metadata.Name == ns
	}
	if !found {
		t.Fatalf("namespaces: %+v, want %s among them", l.Items, ns)
	}
	code, body, err := a.request(http.MethodGet, "/metrics", "", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	var served, fellBack float64
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_watch_cache_consistent_read_total{") || !strings.Contains(line, `resource="namespaces"`) {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		if strings.Contains(line, `fallback="false"`) && strings.Contains(line, `success="true"`) {
			served += v
		} else {
			fellBack += v
		}
	}
	if served == 0 || fellBack != 0 {
		t.Fatalf("consistent namespace lists from the watch cache: %v served, %v fell back or failed", served, fellBack)
	}
}

// eventsShareALease creates two Events. The apiserver stores an Event with
// an etcd lease of --event-ttl (default 1 h) plus its reuse period (1
// minute), and puts the Events of one minute on one lease: both keys are in
// Basalt attached to that lease, which has the TTL the apiserver asked for.
func eventsShareALease(t *testing.T, a *apiServer, cl *client.Client) {
	a = a.on(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var leases []int64
	var keys []string
	for _, name := range []string{"event-a", "event-b"} {
		a.must(http.StatusCreated, http.MethodPost, "/api/v1/namespaces/"+ns+"/events", "", map[string]any{
			"apiVersion":     "v1",
			"kind":           "Event",
			"metadata":       map[string]any{"name": name},
			"involvedObject": map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "namespace": ns, "name": cmName(0)},
			"reason":         "BasaltTest",
			"message":        "stored with a lease",
			"type":           "Normal",
		}, nil)
		key := "/registry/events/" + ns + "/" + name
		resp, err := cl.KV().Get(ctx, key)
		if err != nil || len(resp.GetKvs()) != 1 || resp.GetKvs()[0].GetLease() == 0 {
			t.Fatalf("the Event %s in Basalt: %v %v, want it attached to a lease", key, resp, err)
		}
		leases = append(leases, resp.GetKvs()[0].GetLease())
		keys = append(keys, key)
	}
	if leases[0] != leases[1] {
		t.Fatalf("two Events a moment apart on leases %x and %x, want one reused", leases[0], leases[1])
	}
	ttl, err := cl.LeaseTimeToLive(ctx, leases[0], true)
	if err != nil || ttl.GrantedTTL != 3600+60 || ttl.TTL < 3000 {
		t.Fatalf("the Events' lease: %+v %v, want 3660 s granted", ttl, err)
	}
	attached := map[string]bool{}
	for _, k := range ttl.Keys {
		attached[string(k)] = true
	}
	for _, k := range keys {
		if !attached[k] {
			t.Fatalf("the Events' lease has keys %q, want %s among them", ttl.Keys, k)
		}
	}
}
