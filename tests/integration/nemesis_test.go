package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/basaltdb/basalt/client"
	"github.com/basaltdb/basalt/client/pdclient"
	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/procs"
)

// keyModel is what one writer knows of its keys: puts acknowledged, and
// puts whose outcome is unknown (the call failed after it may have been
// sent).
type keyModel struct {
	acked, unsure int64
	last          string // value of the last acknowledged put
}

// A randomized test in the spirit of CockroachDB's kvnemesis: writers do
// puts, reads and compare-and-set transactions while a nemesis splits,
// merges, moves replicas and transfers leaders at random. Every
// acknowledged write must be there exactly once (a key's version counts
// the puts applied to it), every read must see the writer's last
// acknowledged write, and every compare-and-set must behave as it would on
// one machine.
func TestNemesisSplitMergeMove(t *testing.T) {
	// A failure names its seed; BASALT_NEMESIS_SEED replays it (the
	// schedule's timing still varies, so a replay is likely, not certain,
	// to fail the same way).
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BASALT_NEMESIS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BASALT_NEMESIS_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (BASALT_NEMESIS_SEED=%d replays it)", seed, seed)
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 4})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	setPDConfig(t, c, `{"max-merge-region-size": 1048576, "max-merge-region-keys": 100000, "split-merge-interval": "1s"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const writers, keysPerWriter = 6, 12
	stop := make(chan struct{})
	var wg sync.WaitGroup
	models := make([]map[string]*keyModel, writers)
	counters := make([]int64, writers)
	errs := make(chan error, writers+1)
	for w := 0; w < writers; w++ {
		models[w] = map[string]*keyModel{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := runWriter(ctx, cl, w, keysPerWriter, rand.New(rand.NewPCG(seed, uint64(w))), models[w], &counters[w], stop); err != nil {
				errs <- err
			}
		}()
	}
	wg.Add(1)
	var nemesisOps map[string]int
	go func() {
		defer wg.Done()
		nemesisOps = chaos{
			splitKey:     func(r *rand.Rand) []byte { return []byte(fmt.Sprintf("%c-w%d", 'a'+rune(r.IntN(26)), r.IntN(6))) },
			moveReplicas: true,
		}.run(ctx, c, cl, pd, rand.New(rand.NewPCG(seed, 99)), stop)
	}()
	time.Sleep(20 * time.Second)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("nemesis: %v", nemesisOps)
	if t.Failed() {
		return
	}
	// Check every key against the model.
	for w := 0; w < writers; w++ {
		for k, m := range models[w] {
			resp, err := cl.Range(ctx, &kvpb.RangeRequest{Key: []byte(k)})
			if err != nil {
				t.Fatal(err)
			}
			var version int64
			var value string
			if kvs := resp.GetKvs(); len(kvs) == 1 {
				version, value = kvs[0].GetVersion(), string(kvs[0].GetValue())
			}
			if version < m.acked || version > m.acked+m.unsure {
				t.Errorf("%s: version %d, but %d puts were acknowledged and %d may have applied", k, version, m.acked, m.unsure)
			}
			if m.unsure == 0 && value != m.last {
				t.Errorf("%s: value %q, last acknowledged %q", k, value, m.last)
			}
		}
	}
	var puts int64
	for w := range models {
		for _, m := range models[w] {
			puts += m.acked
		}
	}
	t.Logf("%d acknowledged puts checked", puts)
}

// runWriter puts, reads and compare-and-sets its own keys until stop.
func runWriter(ctx context.Context, cl *client.Client, w, nkeys int, r *rand.Rand, model map[string]*keyModel, counter *int64, stop <-chan struct{}) error {
	ctr := []byte(fmt.Sprintf("ctr-%d", w))
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		k := fmt.Sprintf("%c-w%d-%02d", 'a'+rune(r.IntN(26)), w, r.IntN(nkeys))
		m := model[k]
		if m == nil {
			m = &keyModel{}
			model[k] = m
		}
		switch op := r.IntN(10); {
		case op < 6:
			v := strconv.Itoa(i)
			if _, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte(k), Value: []byte(v)}); err != nil {
				m.unsure++
				continue
			}
			m.acked++
			m.last = v
		case op < 8:
			resp, err := cl.Range(ctx, &kvpb.RangeRequest{Key: []byte(k)})
			if err != nil || m.unsure > 0 {
				continue
			}
			var got string
			if kvs := resp.GetKvs(); len(kvs) == 1 {
				got = string(kvs[0].GetValue())
			}
			if got != m.last {
				return fmt.Errorf("writer %d read %s = %q after its last acknowledged put wrote %q", w, k, got, m.last)
			}
		default:
			// Compare-and-set on the writer's counter: only this writer
			// touches it, so it must succeed and count up by one.
			cur := strconv.FormatInt(*counter, 10)
			cmp := &kvpb.Compare{Key: ctr, Target: kvpb.Compare_VALUE, Result: kvpb.Compare_EQUAL, TargetUnion: &kvpb.Compare_Value{Value: []byte(cur)}}
			if *counter == 0 {
				cmp = &kvpb.Compare{Key: ctr, Target: kvpb.Compare_VERSION, Result: kvpb.Compare_EQUAL, TargetUnion: &kvpb.Compare_Version{Version: 0}}
			}
			next := strconv.FormatInt(*counter+1, 10)
			resp, err := cl.Txn(ctx, &kvpb.TxnRequest{Compare: []*kvpb.Compare{cmp},
				Success: []*kvpb.RequestOp{{Request: &kvpb.RequestOp_RequestPut{RequestPut: &kvpb.PutRequest{Key: ctr, Value: []byte(next)}}}}})
			if err != nil {
				// Unknown outcome: learn the counter back.
				rr, rerr := cl.Range(ctx, &kvpb.RangeRequest{Key: ctr})
				if rerr != nil {
					return fmt.Errorf("writer %d: counter unreadable after a failed CAS: %v", w, rerr)
				}
				if kvs := rr.GetKvs(); len(kvs) == 1 {
					n, _ := strconv.ParseInt(string(kvs[0].GetValue()), 10, 64)
					if n != *counter && n != *counter+1 {
						return fmt.Errorf("writer %d: counter %d after a failed CAS from %d", w, n, *counter)
					}
					*counter = n
				}
				continue
			}
			if !resp.GetSucceeded() {
				return fmt.Errorf("writer %d: CAS of its own counter from %s failed", w, cur)
			}
			*counter++
		}
	}
}

// runNemesis splits, merges, moves replicas and transfers leaders at
// random until stop, and counts what it did.
// chaos says what a chaos loop does to which regions.
type chaos struct {
	start, end []byte                  // the regions overlapping [start, end)
	splitKey   func(*rand.Rand) []byte // where to split
	minPause   time.Duration           // plus up to 200 ms between steps
	// moveReplicas adds a replica on a random store (PD's replica checker
	// then removes one of the others).
	moveReplicas bool
}

// run splits, merges neighbours, transfers leaders and maybe moves
// replicas at random until stop, and counts what succeeded.
func (ch chaos) run(ctx context.Context, c *procs.Cluster, cl *client.Client, pd *pdclient.Client, r *rand.Rand, stop <-chan struct{}) map[string]int {
	done := map[string]int{}
	kinds := 3
	if ch.moveReplicas {
		kinds = 4
	}
	for {
		select {
		case <-stop:
			return done
		case <-time.After(ch.minPause + time.Duration(r.IntN(200))*time.Millisecond):
		}
		rs, err := pd.ScanRegions(ctx, ch.start, ch.end, 0)
		if err != nil || len(rs) == 0 {
			continue
		}
		stores, err := pd.GetAllStores(ctx, true)
		if err != nil {
			continue
		}
		id := rs[r.IntN(len(rs))].GetRegion().GetId()
		switch r.IntN(kinds) {
		case 0:
			if _, err := cl.SplitRegions(ctx, [][]byte{ch.splitKey(r)}); err == nil {
				done["split"]++
			}
		case 1:
			if len(rs) < 2 {
				continue
			}
			i := r.IntN(len(rs) - 1)
			if _, err := cl.MergeRegions(ctx, rs[i+1].GetRegion().GetId(), rs[i].GetRegion().GetId()); err == nil {
				done["merge"]++
			}
		case 2:
			to := stores[r.IntN(len(stores))].GetId()
			if err := tryOperator(c, fmt.Sprintf(`{"name": "transfer-leader", "region_id": %d, "to_store_id": %d}`, id, to)); err == nil {
				done["transfer-leader"]++
			}
		case 3:
			to := stores[r.IntN(len(stores))].GetId()
			if err := tryOperator(c, fmt.Sprintf(`{"name": "add-peer", "region_id": %d, "store_id": %d}`, id, to)); err == nil {
				done["move-replica"]++
			}
		}
	}
}
