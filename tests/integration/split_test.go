package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/procs"
)

// Manual splits through the client, writes and reads on either side, and
// a repeated split that changes nothing.
func TestManualSplit(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, k := range []string{"a", "c", "e", "g"} {
		put(t, cl, k, "before")
	}
	regions, err := cl.SplitRegions(ctx, [][]byte{[]byte("f"), []byte("b"), []byte("d"), []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range regions {
		got = append(got, fmt.Sprintf("[%s,%s)", r.GetStartKey(), r.GetEndKey()))
	}
	if want := "[[,b) [b,d) [d,f) [f,)]"; fmt.Sprint(got) != want {
		t.Fatalf("split made %v, want %s", got, want)
	}
	again, err := cl.SplitRegions(ctx, [][]byte{[]byte("b"), []byte("d")})
	if err != nil || len(again) != 0 {
		t.Fatalf("splitting at existing boundaries: %v %v", again, err)
	}
	// PD knows the new layout; every region serves reads and writes.
	resp, err := pd.ScanRegions(ctx, nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp) != 4 {
		t.Fatalf("PD knows %d regions, want 4", len(resp))
	}
	for _, k := range []string{"a", "c", "e", "g"} {
		if v, ok := get(t, cl, k); !ok || v != "before" {
			t.Fatalf("%s after the split: %q %v", k, v, ok)
		}
		put(t, cl, k, "after")
		if v, _ := get(t, cl, k); v != "after" {
			t.Fatalf("%s written after the split: %q", k, v)
		}
	}
	// Bad split requests change nothing.
	if _, err := cl.SplitRegionInHalf(ctx, []byte("b")); err == nil || !strings.Contains(err.Error(), "cannot be split") {
		t.Fatalf("halving a region with one key: %v", err)
	}
	resp, _ = pd.ScanRegions(ctx, nil, nil, 0)
	if len(resp) != 4 {
		t.Fatalf("PD knows %d regions after a refused split, want 4", len(resp))
	}
}

// A region that grows past region-max-size is split by its leader into
// pieces of region-split-size.
func TestSplitBySize(t *testing.T) {
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3, StoreArgs: []string{
		"--region-max-size", "96KiB", "--region-split-size", "64KiB", "--split-check-interval", "100ms"}})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	val := strings.Repeat("x", 1000)
	for i := 0; i < 1000; i++ { // about 1 MB
		if _, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte(fmt.Sprintf("k%05d", i)), Value: []byte(val)}); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	for ctx.Err() == nil {
		rs, err := pd.ScanRegions(ctx, nil, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n = len(rs); n >= 10 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n < 10 {
		t.Fatalf("1 MB with a 96 KiB region-max-size made %d regions", n)
	}
	for i := 0; i < 1000; i += 37 {
		k := fmt.Sprintf("k%05d", i)
		if v, ok := get(t, cl, k); !ok || v != val {
			t.Fatalf("%s after splits: %d bytes, found %v", k, len(v), ok)
		}
	}
}
