package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/procs"
	"github.com/basaltdb/basalt/tests/watchcheck"
)

// splitPrefix makes n regions of prefix: it splits at prefix+"b",
// prefix+"d", ... (n-1 keys spread over the letters).
func splitPrefix(tb testing.TB, cl *client.Client, prefix string, n int) {
	tb.Helper()
	splitAt(tb, cl, n, func(i int) string { return fmt.Sprintf("%s%c", prefix, 'a'+rune(i*26/n)) })
}

// splitNumbered makes n regions of the keys k0000..k<space>: it splits
// at n-1 evenly spaced ones.
func splitNumbered(tb testing.TB, cl *client.Client, n, space int) {
	tb.Helper()
	splitAt(tb, cl, n, func(i int) string { return fmt.Sprintf("k%04d", i*space/n) })
}

// splitAt splits at key(1) ... key(n-1).
func splitAt(tb testing.TB, cl *client.Client, n int, key func(i int) string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var keys [][]byte
	for i := 1; i < n; i++ {
		keys = append(keys, []byte(key(i)))
	}
	if _, err := cl.SplitRegions(ctx, keys); err != nil {
		tb.Fatal(err)
	}
}

// runPrefixWriters puts (and sometimes deletes) random keys of prefix until
// stop, logging each write with its revision when acknowledged.
//
// opTimeout, when set, bounds each write: one that times out counts as may
// or may not have happened and the writer goes on, so a region that
// cannot serve for a while does not stop the writes to the others.
func runPrefixWriters(ctx context.Context, cl *client.Client, prefix string, writers int, opTimeout time.Duration, log *watchcheck.Log, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				key := fmt.Sprintf("%s%c%d", prefix, 'a'+rune(r.IntN(26)), r.IntN(10))
				octx, cancel := ctx, context.CancelFunc(func() {})
				if opTimeout > 0 {
					octx, cancel = context.WithTimeout(ctx, opTimeout)
				}
				if r.IntN(10) == 0 {
					resp, err := cl.DeleteRange(octx, &kvpb.DeleteRangeRequest{Key: []byte(key)})
					cancel()
					if err == nil && resp.GetDeleted() == 0 {
						continue // deleted nothing: no event
					}
					log.Add(watchcheck.Write{Key: key, Delete: true, Rev: resp.GetHeader().GetRevision()})
					continue
				}
				val := fmt.Sprintf("w%d-%d", w, i)
				if r.IntN(10) == 0 {
					// Two keys in one revision, so the watch checks see
					// revisions of several events (atomic: never split
					// across responses). Same letter, so usually one
					// region; across a boundary the client refuses it and
					// nothing is applied.
					key2 := fmt.Sprintf("%s%d", key[:len(key)-1], (int(key[len(key)-1]-'0')+1+r.IntN(9))%10)
					resp, err := cl.Txn(octx, &kvpb.TxnRequest{Success: []*kvpb.RequestOp{
						{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte(key), Value: []byte(val)}}},
						{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte(key2), Value: []byte(val)}}},
					}})
					cancel()
					var spans *client.ErrTxnSpansRegions
					if errors.As(err, &spans) {
						continue
					}
					rev := resp.GetHeader().GetRevision() // 0 when it may or may not have applied
					log.Add(watchcheck.Write{Key: key, Value: val, Rev: rev})
					log.Add(watchcheck.Write{Key: key2, Value: val, Rev: rev})
					continue
				}
				resp, err := cl.Put(octx, &kvpb.PutRequest{Key: []byte(key), Value: []byte(val)})
				cancel()
				log.Add(watchcheck.Write{Key: key, Value: val, Rev: resp.GetHeader().GetRevision()})
				_ = err // a failed put may or may not have applied: Rev stays 0
			}
		}()
	}
	return &wg
}

// modelAt is what [prefix...] holds at rev by the write log, and the keys
// whose state at rev is unknown (a write that may have applied).
func modelAt(writes []watchcheck.Write, rev int64) (map[string]watchcheck.Write, map[string]bool) {
	state := map[string]watchcheck.Write{}
	unsure := map[string]bool{}
	sorted := append([]watchcheck.Write(nil), writes...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Rev < sorted[j].Rev })
	for _, w := range sorted {
		switch {
		case w.Rev == 0:
			unsure[w.Key] = true
		case w.Rev <= rev && w.Delete:
			delete(state, w.Key)
		case w.Rev <= rev:
			state[w.Key] = w
		}
	}
	return state, unsure
}

// A range over a dozen regions, read while writes go on in every region,
// is exactly the snapshot of the acknowledged writes at its revision;
// limits, counts, descending order and streaming agree with it.
func TestRangeAcrossRegionsIsASnapshot(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	waitReplicated(t, c)
	splitPrefix(t, cl, "r/", 12)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := &watchcheck.Log{}
	stop := make(chan struct{})
	wg := runPrefixWriters(ctx, cl, "r/", 4, 0, log, stop)

	type read struct {
		rev   int64
		kvs   []*kvpb.KeyValue
		count int64
		more  bool
		limit int64
		desc  bool
	}
	var reads []read
	deadline := time.Now().Add(8 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		req := &kvpb.RangeRequest{Key: []byte("r/"), RangeEnd: []byte("r0")}
		switch i % 3 {
		case 1:
			req.Limit = 7
		case 2:
			req.Limit, req.SortOrder = 5, kvpb.RangeRequest_DESCEND
		}
		resp, err := cl.Range(ctx, req)
		if err != nil {
			t.Fatalf("range: %v", err)
		}
		reads = append(reads, read{resp.GetHeader().GetRevision(), resp.GetKvs(), resp.GetCount(), resp.GetMore(), req.Limit, req.SortOrder == kvpb.RangeRequest_DESCEND})
		// The same revision again, streamed three keys at a time.
		var streamed []*kvpb.KeyValue
		rev, err := cl.Scan(ctx, &kvpb.RangeRequest{Key: []byte("r/"), RangeEnd: []byte("r0"), Revision: resp.GetHeader().GetRevision()}, 3,
			func(kvs []*kvpb.KeyValue) error {
				if len(kvs) > 3 {
					return fmt.Errorf("a page of %d keys, asked for 3", len(kvs))
				}
				streamed = append(streamed, kvs...)
				return nil
			})
		if err != nil {
			t.Fatalf("scan: %v", err)
		}
		reads = append(reads, read{rev: rev, kvs: streamed, count: -1})
	}
	close(stop)
	wg.Wait()
	writes := log.All()
	checked, compared := 0, 0
	for _, r := range reads {
		state, unsure := modelAt(writes, r.rev)
		var want []watchcheck.Write
		for _, w := range state {
			want = append(want, w)
		}
		sort.Slice(want, func(i, j int) bool { return want[i].Key < want[j].Key })
		if r.desc {
			for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
				want[i], want[j] = want[j], want[i]
			}
		}
		if len(unsure) > 0 {
			t.Logf("%d keys had a write of unknown outcome; they are skipped", len(unsure))
		}
		total := int64(len(want))
		if r.limit > 0 && int64(len(want)) > r.limit {
			want = want[:r.limit]
		}
		got := r.kvs
		gi := 0
		for _, w := range want {
			if unsure[w.Key] {
				continue
			}
			for gi < len(got) && unsure[string(got[gi].GetKey())] {
				gi++
			}
			if gi >= len(got) || string(got[gi].GetKey()) != w.Key || string(got[gi].GetValue()) != w.Value || got[gi].GetModRevision() != w.Rev {
				t.Fatalf("range at %d (limit %d, desc %v): want %s=%q@%d at position %d, got %v", r.rev, r.limit, r.desc, w.Key, w.Value, w.Rev, gi, got[min(gi, len(got)-1):])
			}
			gi++
			compared++
		}
		if len(unsure) == 0 {
			if len(got) != len(want) {
				t.Fatalf("range at %d (limit %d): %d keys, want %d", r.rev, r.limit, len(got), len(want))
			}
			if r.count >= 0 && (r.count != total || r.more != (int64(len(want)) < total)) {
				t.Fatalf("range at %d (limit %d): count %d more %v, want %d keys in all", r.rev, r.limit, r.count, r.more, total)
			}
		}
		checked++
	}
	t.Logf("%d reads over 12 regions checked against %d writes (%d keys compared)", checked, len(writes), compared)
	if checked < 10 || compared < 1000 {
		t.Fatalf("only %d reads and %d keys checked", checked, compared)
	}
	// count_only sums the regions.
	resp, err := cl.Range(ctx, &kvpb.RangeRequest{Key: []byte("r/"), RangeEnd: []byte("r0"), CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	state, unsure := modelAt(writes, resp.GetHeader().GetRevision())
	if len(unsure) == 0 && resp.GetCount() != int64(len(state)) {
		t.Fatalf("count_only: %d, want %d", resp.GetCount(), len(state))
	}
}

// A transaction over two regions fails at once, naming the boundary, and
// applies nothing.
func TestTxnAcrossRegionsFailsFast(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	waitReplicated(t, c)
	splitPrefix(t, cl, "t/", 2) // boundary t/n
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	putOp := func(k string) *kvpb.RequestOp {
		return &kvpb.RequestOp{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: []byte(k), Value: []byte("v")}}}
	}
	start := time.Now()
	_, err := cl.Txn(ctx, &kvpb.TxnRequest{Success: []*kvpb.RequestOp{putOp("t/a"), putOp("t/z")}})
	var span *client.ErrTxnSpansRegions
	if !errors.As(err, &span) {
		t.Fatalf("want ErrTxnSpansRegions, got %v", err)
	}
	if string(span.Boundary) != "t/n" || string(span.Key) != "t/z" {
		t.Fatalf("error names key %q and boundary %q: %v", span.Key, span.Boundary, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the refusal took %v", d)
	}
	if _, ok := get(t, cl, "t/a"); ok {
		t.Fatal("t/a was written by a refused transaction")
	}
	// Within one region it commits.
	resp, err := cl.Txn(ctx, &kvpb.TxnRequest{Success: []*kvpb.RequestOp{putOp("t/a"), putOp("t/b")}})
	if err != nil || !resp.GetSucceeded() {
		t.Fatalf("single-region txn: %v %v", resp, err)
	}
}

// A client's region cache follows PD's routing subscription: a split made
// by another client reaches it without it sending anything.
func TestRegionCacheFollowsPD(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	waitReplicated(t, c)
	other := c.Client(t)
	put(t, cl, "s/z", "v") // caches the region holding s/z
	if r, ok := cl.CachedRegion([]byte("s/z")); !ok || len(r.GetStartKey()) != 0 {
		t.Fatalf("cached before the split: %v %v", r, ok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := other.SplitRegions(ctx, [][]byte{[]byte("s/m")}); err != nil {
		t.Fatal(err)
	}
	for {
		if r, ok := cl.CachedRegion([]byte("s/z")); ok && string(r.GetStartKey()) == "s/m" {
			return
		}
		if ctx.Err() != nil {
			r, _ := cl.CachedRegion([]byte("s/z"))
			t.Fatalf("the cache still holds %v for s/z", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
