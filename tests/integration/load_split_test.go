package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/procs"
)

// A region kept busy by reads spread over its keys is split by its leader
// at the median of the keys read, and the regions' heartbeats carry their
// traffic to PD (whose merge checker then leaves them alone).
func TestLoadSplit(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3, StoreArgs: []string{
		"--split-qps-threshold", "200", "--split-load-duration", "2s"}})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	// Busy at 50 keys/s, so the halves (about 100 requests/s each under
	// the load below, and more) are not merged back.
	setPDConfig(t, c, `{"hot-region-min-key-rate": 50, "split-merge-interval": "1s"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	const n = 200
	key := func(i int) []byte { return []byte(fmt.Sprintf("load/%03d", i)) }
	for i := 0; i < n; i++ {
		if _, err := cl.Put(ctx, &kvpb.PutRequest{Key: key(i), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := pd.GetRegion(ctx, key(0))
	if err != nil {
		t.Fatal(err)
	}

	// Readers over every key, until the keys are in two regions.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i = (i + 7) % n {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = cl.Range(ctx, &kvpb.RangeRequest{Key: key(i)})
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	var boundary []byte
	for boundary == nil {
		if ctx.Err() != nil {
			t.Fatalf("region %d, read by 8 clients over %d keys, was never split for load", before.GetRegion().GetId(), n)
		}
		rs, err := pd.ScanRegions(ctx, key(0), key(n), 0)
		if err == nil && len(rs) > 1 {
			boundary = rs[1].GetRegion().GetStartKey()
		} else {
			time.Sleep(100 * time.Millisecond) // poll until the split shows
		}
	}
	// The cut is near the median of the keys read, not at an edge.
	if bytes.Compare(boundary, key(n/4)) < 0 || bytes.Compare(boundary, key(3*n/4)) > 0 {
		t.Fatalf("split for load at %q, want between %q and %q", boundary, key(n/4), key(3*n/4))
	}
	t.Logf("split for load at %q", boundary)

	// Both halves report reads to PD.
	type regionJSON struct {
		ID       uint64 `json:"id"`
		StartKey string `json:"start_key"`
		ReadKeys uint64 `json:"read_keys"`
		Interval uint64 `json:"interval"`
	}
	eventually(t, "PD to hear both halves' reads", 30*time.Second, func() (string, error) {
		resp, err := http.Get("http://" + c.PDs[0].Addr + "/pd/api/v1/regions")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var out struct {
			Regions []regionJSON `json:"regions"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return "", err
		}
		busy := 0
		for _, r := range out.Regions {
			if r.ReadKeys > 0 && r.Interval > 0 {
				busy++
			}
		}
		if busy < 2 {
			return fmt.Sprintf("%+v", out.Regions), fmt.Errorf("%d regions report reads", busy)
		}
		return "", nil
	})
}
