package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/procs"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

// recordedWatch collects a client watch's responses.
type recordedWatch struct {
	w       *client.Watch
	mu      sync.Mutex
	resps   []watchcheck.Response
	created int64
	top     int64 // highest revision heard (events or progress)
	ended   *client.WatchResponse
	done    chan struct{}
}

// lockedBuffer is a bytes.Buffer safe for a logger's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// prefixChaos splits, merges and moves the leaders of prefix's regions.
func prefixChaos(prefix string) chaos {
	return chaos{
		start: []byte(prefix),
		end:   client.PrefixEnd([]byte(prefix)),
		splitKey: func(r *rand.Rand) []byte {
			return []byte(fmt.Sprintf("%s%c%d", prefix, 'a'+rune(r.IntN(26)), r.IntN(10)))
		},
		minPause: 100 * time.Millisecond,
	}
}

func startWatch(t *testing.T, cl *client.Client, req *kvpb.WatchCreateRequest) *recordedWatch {
	t.Helper()
	return startWatchWith(t, cl, req, client.WatchOptions{})
}

// startWatchWith is startWatch with options (created notifications and a
// 200 ms progress interval are always on).
func startWatchWith(t *testing.T, cl *client.Client, req *kvpb.WatchCreateRequest, opts client.WatchOptions) *recordedWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	opts.CreatedNotify, opts.ProgressInterval = true, 200*time.Millisecond
	rw := &recordedWatch{w: cl.Watch(ctx, req, opts), done: make(chan struct{})}
	t.Cleanup(func() { cancel(); rw.w.Close() })
	createdc := make(chan int64, 1)
	go func() {
		defer close(rw.done)
		for r := range rw.w.C {
			rw.mu.Lock()
			switch {
			case r.Created:
				createdc <- r.Header.GetRevision()
				rw.created = r.Header.GetRevision()
			case r.Canceled:
				rw.ended = r
			default:
				rw.resps = append(rw.resps, watchcheck.Response{Revision: r.Header.GetRevision(), Progress: r.IsProgressNotify(), Events: r.Events})
				rw.top = max(rw.top, r.Header.GetRevision())
			}
			rw.mu.Unlock()
		}
	}()
	select {
	case <-createdc:
	case <-time.After(30 * time.Second):
		t.Fatal("the watch was not created within 30 s")
	}
	return rw
}

// waitPast asks for progress until the watch heard of rev (or ended).
func (rw *recordedWatch) waitPast(t *testing.T, rev int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		rw.mu.Lock()
		top, ended := rw.top, rw.ended
		rw.mu.Unlock()
		if ended != nil {
			t.Fatalf("the watch ended: %v", ended.Err)
		}
		if top >= rev {
			return
		}
		rw.w.RequestProgress()
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the watch never reached revision %d", rev)
}

func (rw *recordedWatch) responses() []watchcheck.Response {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return append([]watchcheck.Response(nil), rw.resps...)
}

// One watch on a prefix over a dozen regions, while those regions split,
// merge and change leaders under writes: it delivers every acknowledged
// write once, in revision order, whole revisions per response, never
// below a bookmark, with correct prev_kv; a second watch resumed from a
// revision in the middle sees exactly the same events from there. A third
// watch, with a buffer of 1 KiB, parks the pieces ahead whenever one lags
// (client/watch.go) and must keep every guarantee too.
func TestWatchAcrossRegionsUnderSplitMergeAndLeaderMoves(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	splitPrefix(t, cl, "w/", 12)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req := &kvpb.WatchCreateRequest{Key: []byte("w/"), RangeEnd: []byte("w0"), PrevKv: true, ProgressNotify: true}
	first := startWatch(t, cl, req)
	tightLog := &lockedBuffer{}
	tightClient := c.ClientWith(t, client.Options{Logger: slog.New(slog.NewTextHandler(tightLog, nil))})
	tight := startWatchWith(t, tightClient, req, client.WatchOptions{MaxBufferedBytes: 1 << 10})
	log := &watchcheck.Log{}
	stop := make(chan struct{})
	writers := runPrefixWriters(ctx, cl, "w/", 4, 0, log, stop)
	var chaos map[string]int
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		chaos = prefixChaos("w/").run(ctx, c, cl, pd, rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)), stop)
	}()
	time.Sleep(6 * time.Second)
	// Resume a second watch from a revision in the middle.
	var mid int64
	for _, w := range log.All() {
		mid = max(mid, w.Rev)
	}
	second := startWatch(t, cl, &kvpb.WatchCreateRequest{Key: []byte("w/"), RangeEnd: []byte("w0"), StartRevision: mid, PrevKv: true})
	time.Sleep(6 * time.Second)
	close(stop)
	writers.Wait()
	<-chaosDone
	writes := log.All()
	var top int64
	for _, w := range writes {
		top = max(top, w.Rev)
	}
	first.waitPast(t, top)
	second.waitPast(t, top)
	tight.waitPast(t, top)
	h := watchcheck.NewHistory(writes)
	resps := first.responses()
	for _, err := range watchcheck.Check(h, first.created+1, top, true, resps) {
		t.Error(err)
	}
	for _, err := range watchcheck.Check(h, tight.created+1, top, true, tight.responses()) {
		t.Errorf("the watch with a 1 KiB buffer: %v", err)
	}
	parks := strings.Count(tightLog.String(), "watch buffer full")
	t.Logf("the watch with a 1 KiB buffer parked pieces %d times", parks)
	if parks == 0 {
		t.Error("the watch with a 1 KiB buffer never filled it: the test did not exercise parking")
	}
	for _, err := range watchcheck.CheckResumed(resps, second.responses(), mid) {
		t.Error(err)
	}
	events, multi := 0, 0
	for _, r := range resps {
		events += len(r.Events)
		for i := 1; i < len(r.Events); i++ {
			if r.Events[i].GetKv().GetModRevision() == r.Events[i-1].GetKv().GetModRevision() {
				multi++
				break
			}
		}
	}
	t.Logf("%d writes, %d events in %d responses (%d with a revision of several events); chaos: %v", len(writes), events, len(resps), multi, chaos)
	if multi == 0 {
		t.Error("no revision had several events: the atomicity check was not exercised")
	}
	if chaos["split"] == 0 || chaos["merge"] == 0 || chaos["transfer-leader"] == 0 {
		t.Errorf("the chaos did not split, merge and move leaders: %v", chaos)
	}
	if events < 100 {
		t.Errorf("only %d events", events)
	}
}

// A watch over several regions from a compacted revision ends at once with
// the compaction revision, as etcd's does.
func TestWatchAcrossRegionsFromCompactedRevision(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	splitPrefix(t, cl, "c/", 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var first, last int64
	for i := 0; i < 30; i++ {
		resp, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte(fmt.Sprintf("c/%c", 'a'+rune(i%26))), Value: []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
		if first == 0 {
			first = resp.GetHeader().GetRevision()
		}
		last = resp.GetHeader().GetRevision()
	}
	if err := cl.Compact(ctx, last, false); err != nil {
		t.Fatal(err)
	}
	// Compact returns once every store marked the regions it leads, so the
	// first watch already finds every region compacted: it must end with
	// the compaction revision and deliver no event, as etcd's does.
	for attempt := 0; attempt < 3; attempt++ {
		w := cl.Watch(ctx, &kvpb.WatchCreateRequest{Key: []byte("c/"), RangeEnd: []byte("c0"), StartRevision: first}, client.WatchOptions{})
		var end *client.WatchResponse
		for r := range w.C {
			if len(r.Events) > 0 {
				w.Close()
				t.Fatalf("a watch from compacted revision %d delivered %d events (first at %d)", first, len(r.Events), r.Events[0].GetKv().GetModRevision())
			}
			if r.Canceled {
				end = r
				break
			}
		}
		w.Close()
		if end == nil {
			// Seen once in a full run: no response at all for a minute.
			dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer dcancel()
			describeRegions(t, dctx, c, pd, []byte("c/"), []byte("c0"))
			t.Fatal("the watch never reported the compaction")
		}
		if !errors.Is(end.Err, client.ErrCompacted) || end.CompactRevision < first || end.CompactRevision > last {
			t.Fatalf("canceled with %v, compact revision %d (compacted at %d)", end.Err, end.CompactRevision, last)
		}
	}
}

// A watch over several regions keeps every guarantee while a store is
// killed (its led regions elect new leaders elsewhere) and comes back.
func TestWatchAcrossRegionsSurvivesStoreKill(t *testing.T) {
	// Info logs: a failure prints their tails (elections, routing).
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3, StoreArgs: []string{"--log-level", "info"}})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	splitPrefix(t, cl, "k/", 6)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Every piece on all three stores first: a store killed before the
	// others applied a split leaves the new region waiting for two
	// elections in a row (the parent's, then its own), several seconds
	// under load, and every writer ends up waiting on it.
	if err := procs.WaitSettled(ctx, pd, []byte("k/"), []byte("k0"), 3); err != nil {
		t.Fatal(err)
	}
	watch := startWatch(t, cl, &kvpb.WatchCreateRequest{Key: []byte("k/"), RangeEnd: []byte("k0"), PrevKv: true, ProgressNotify: true})
	log := &watchcheck.Log{}
	stop := make(chan struct{})
	// Writes give up after a second: a region that waits long for its new
	// leader (seen in CI: 9 s, not understood yet) must not stop the
	// writes to the others, whose events the watch must still deliver.
	writers := runPrefixWriters(ctx, cl, "k/", 4, time.Second, log, stop)
	time.Sleep(3 * time.Second)
	var atKill int64
	for _, w := range log.All() {
		atKill = max(atKill, w.Rev)
	}
	victim := c.Stores[0]
	c.Signal(victim, syscall.SIGKILL)
	killed := time.Now()
	elections := watchLeadersMove(ctx, pd, victim, []byte("k/"), []byte("k0"))
	time.Sleep(5 * time.Second)
	c.Restart(victim)
	time.Sleep(4 * time.Second)
	close(stop)
	writers.Wait()
	t.Logf("after the kill: %s", elections(killed))
	writes := log.All()
	var top int64
	acked, afterKill := 0, 0
	for _, w := range writes {
		top = max(top, w.Rev)
		if w.Rev != 0 {
			acked++
		}
		if w.Rev > atKill {
			afterKill++
		}
	}
	watch.waitPast(t, top)
	resps := watch.responses()
	for _, err := range watchcheck.Check(watchcheck.NewHistory(writes), watch.created+1, top, true, resps) {
		t.Error(err)
	}
	t.Logf("%d writes (%d acknowledged, %d after the kill), %d responses", len(writes), acked, afterKill, len(resps))
	if afterKill < 100 {
		t.Errorf("only %d writes acknowledged after the kill", afterKill)
		c.DumpState(t, 6000)
	}
}

// watchLeadersMove polls PD, from now until ctx ends or the returned
// function is called, for the leaders of [start, end)'s regions, and
// reports when each region led by victim's store at the first poll first
// had a leader elsewhere (a region slow to elect shows in a failure).
func watchLeadersMove(ctx context.Context, pd *pdclient.Client, victim *procs.Proc, start, end []byte) func(since time.Time) string {
	var victimID uint64
	if stores, err := pd.GetAllStores(ctx, true); err == nil {
		for _, st := range stores {
			if st.GetAddress() == victim.Addr {
				victimID = st.GetId()
			}
		}
	}
	if victimID == 0 {
		return func(time.Time) string { return "the killed store's ID was not found in PD" }
	}
	var mu sync.Mutex
	led := map[uint64]bool{}        // regions the victim led at the first poll that answered
	moved := map[uint64]time.Time{} // when a region of led first had another leader
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for first := true; pctx.Err() == nil; {
			rctx, rcancel := context.WithTimeout(pctx, time.Second)
			regions, err := pd.ScanRegions(rctx, start, end, 100)
			rcancel()
			now := time.Now()
			mu.Lock()
			for _, r := range regions {
				id := r.GetRegion().GetId()
				onVictim := r.GetLeader().GetStoreId() == victimID
				if first && onVictim {
					led[id] = true
				}
				if led[id] && !onVictim && r.GetLeader() != nil && moved[id].IsZero() {
					moved[id] = now
				}
			}
			first = first && err != nil
			mu.Unlock()
			select {
			case <-pctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func(since time.Time) string {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		var parts []string
		for id := range led {
			if at := moved[id]; at.IsZero() {
				parts = append(parts, fmt.Sprintf("region %d: no new leader known to PD", id))
			} else {
				parts = append(parts, fmt.Sprintf("region %d: new leader known to PD after %v", id, at.Sub(since).Round(10*time.Millisecond)))
			}
		}
		sort.Strings(parts)
		if len(parts) == 0 {
			return "the killed store led none of the regions"
		}
		return strings.Join(parts, "; ")
	}
}

// TestWatchAcrossRegionsAsksForResolvedRevisions: the stores publish
// resolved revisions unasked only once an hour here, so an event in one
// region of a two-region watch is released only because the watch asks
// the other region to resolve when it holds the event.
func TestWatchAcrossRegionsAsksForResolvedRevisions(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3, StoreArgs: []string{"--resolve-interval", "1h"}})
	cl := c.Client(t)
	waitReplicated(t, c)
	splitPrefix(t, cl, "od/", 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rw := startWatch(t, cl, &kvpb.WatchCreateRequest{Key: []byte("od/"), RangeEnd: []byte("od0")})
	var revs []int64
	for _, k := range []string{"od/a", "od/z", "od/b"} {
		resp, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte(k), Value: []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, resp.GetHeader().GetRevision())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []int64
		for _, r := range rw.responses() {
			for _, e := range r.Events {
				got = append(got, e.GetKv().GetModRevision())
			}
		}
		if slices.Equal(got, revs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events at %v delivered, want %v", got, revs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A watch over several regions keeps every guarantee across a PD leader
// kill: the client's routing subscription and region lookups move to the
// new PD leader, and regions that split and change leaders after the
// failover are found through it. The old leader comes back as a follower.
func TestWatchAcrossRegionsSurvivesPDFailover(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 3, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	splitPrefix(t, cl, "f/", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	watch := startWatch(t, cl, &kvpb.WatchCreateRequest{Key: []byte("f/"), RangeEnd: []byte("f0"), PrevKv: true, ProgressNotify: true})
	log := &watchcheck.Log{}
	stop := make(chan struct{})
	writers := runPrefixWriters(ctx, cl, "f/", 4, time.Second, log, stop)
	waitWrites := func(n int) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for acked := 0; acked < n; {
			acked = 0
			for _, w := range log.All() {
				if w.Rev > 0 {
					acked++
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d writes acknowledged", acked, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitWrites(200)
	old := c.PDs[pdLeaderIndex(ctx, t, c, pd)]
	c.Signal(old, syscall.SIGKILL)
	// Changes only the new leader can route: splits (IDs from it) and
	// leader moves, while the writes go on.
	if _, err := cl.SplitRegions(ctx, [][]byte{[]byte("f/c5"), []byte("f/q5")}); err != nil {
		t.Fatalf("split after the PD failover: %v", err)
	}
	for _, key := range []string{"f/a", "f/k", "f/x"} {
		if err := transferLeaderAway(ctx, pd, []byte(key)); err != nil {
			t.Logf("moving %s's leader: %v", key, err)
		}
	}
	waitWrites(len(log.All()) + 200)
	c.Restart(old)
	waitWrites(len(log.All()) + 100)
	close(stop)
	writers.Wait()
	writes := log.All()
	var top int64
	for _, w := range writes {
		top = max(top, w.Rev)
	}
	watch.waitPast(t, top)
	for _, err := range watchcheck.Check(watchcheck.NewHistory(writes), watch.created+1, top, true, watch.responses()) {
		t.Error(err)
	}
	t.Logf("%d writes checked across the PD failover", len(writes))
}

// transferLeaderAway asks the PD leader (through its HTTP API) to move the
// leadership of key's region to another of its voters.
func transferLeaderAway(ctx context.Context, pd *pdclient.Client, key []byte) error {
	r, err := pd.GetRegion(ctx, key)
	if err != nil {
		return err
	}
	m, err := pd.Members(ctx)
	if err != nil {
		return err
	}
	for _, p := range r.GetRegion().GetPeers() {
		if p.GetStoreId() == r.GetLeader().GetStoreId() {
			continue
		}
		body := fmt.Sprintf(`{"name": "transfer-leader", "region_id": %d, "to_store_id": %d}`, r.GetRegion().GetId(), p.GetStoreId())
		resp, err := http.Post("http://"+m.GetLeader().GetClientAddr()+"/pd/api/v1/operators", "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("add operator %s: %s: %s", body, resp.Status, b)
		}
		return nil
	}
	return fmt.Errorf("region %v has no other voter", r.GetRegion())
}
