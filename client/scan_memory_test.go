package client

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// millionKV serves a region of 1,000,000 keys k0000000..k0999999 with
// 100-byte values, made up as they are asked for, honouring key, range end
// and limit as a store does.
type millionKV struct {
	kvpb.UnimplementedKVServer
	maxLimit atomic.Int64
}

const millionKeys = 1_000_000

func (m *millionKV) Range(_ context.Context, req *kvpb.RangeRequest) (*kvpb.RangeResponse, error) {
	limit := req.GetLimit()
	asked := limit
	if limit == 0 {
		asked = millionKeys // no limit: everything
	}
	if asked > m.maxLimit.Load() {
		m.maxLimit.Store(asked)
	}
	var start int
	if k := req.GetKey(); len(k) > 0 {
		fmt.Sscanf(string(k), "k%07d", &start)
		if string(k) > fmt.Sprintf("k%07d", start) {
			start++ // a key just after start's
		}
	}
	resp := &kvpb.RangeResponse{Header: &kvpb.ResponseHeader{Revision: req.GetRevision()}}
	value := bytes.Repeat([]byte("v"), 100)
	for i := start; i < millionKeys; i++ {
		key := []byte(fmt.Sprintf("k%07d", i))
		if end := req.GetRangeEnd(); len(end) > 0 && !(len(end) == 1 && end[0] == 0) && bytes.Compare(key, end) >= 0 {
			break
		}
		if limit > 0 && int64(len(resp.Kvs)) == limit {
			resp.More = true
			break
		}
		resp.Kvs = append(resp.Kvs, &kvpb.KeyValue{Key: key, Value: value, ModRevision: 1, CreateRevision: 1, Version: 1})
	}
	resp.Count = int64(len(resp.Kvs))
	return resp, nil
}

// Scan streams a range of a million keys page by page: no request asks
// for more than a page, the caller never holds more than one, and the
// heap stays far below what the whole range would take (about 200 MB as
// KeyValues).
func TestScanOfAMillionKeysStaysBounded(t *testing.T) {
	kv := &millionKV{}
	c := &Client{
		opts:    Options{RetryBudget: time.Minute},
		regions: region.NewRegionTree(), leaders: map[uint64]*metapb.Peer{},
		stores: map[uint64]string{1: serveKV(t, kv)},
		conns:  map[string]*grpc.ClientConn{},
	}
	defer func() {
		for _, cc := range c.conns {
			cc.Close()
		}
	}()
	r := testRegion(5, 1, 1)
	c.learn(r, r.GetPeers()[0])
	const page = 1000
	var seen, maxPage, samples int
	var maxHeap uint64
	var ms runtime.MemStats
	next := 0
	// An explicit revision: no timestamp from PD (this client has none).
	_, err := c.Scan(context.Background(), &kvpb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Revision: 7}, page, func(kvs []*kvpb.KeyValue) error {
		for _, k := range kvs {
			if want := fmt.Sprintf("k%07d", next); string(k.GetKey()) != want {
				return fmt.Errorf("key %q, want %q", k.GetKey(), want)
			}
			next++
		}
		before := seen
		seen += len(kvs)
		maxPage = max(maxPage, len(kvs))
		if seen/(100*page) > before/(100*page) { // every 100,000 keys
			runtime.GC()
			runtime.ReadMemStats(&ms)
			maxHeap = max(maxHeap, ms.HeapAlloc)
			samples++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != millionKeys || maxPage > page || kv.maxLimit.Load() > page {
		t.Fatalf("saw %d keys, pages of up to %d, requests for up to %d keys; want %d keys in pages of at most %d",
			seen, maxPage, kv.maxLimit.Load(), millionKeys, page)
	}
	// The whole range as KeyValues would be about 200 MB; a page is about
	// 200 KB. Allow the test binary, gRPC and the server side their share.
	if samples < 9 {
		t.Fatalf("the heap was sampled %d times", samples)
	}
	if maxHeap > 64<<20 {
		t.Fatalf("heap reached %d MB while scanning", maxHeap>>20)
	}
	t.Logf("1,000,000 keys in pages of %d; heap at most %d MB", page, maxHeap>>20)
}
