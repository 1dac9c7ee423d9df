package client

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/region"
)

// putKV answers every Put with RegionNotFound (missing) or success, and
// counts them.
type putKV struct {
	kvpb.UnimplementedKVServer
	missing bool
	puts    atomic.Int32
}

func (k *putKV) Put(_ context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	k.puts.Add(1)
	if k.missing {
		return &kvpb.PutResponse{Header: &kvpb.ResponseHeader{RegionError: region.RegionNotFound(req.GetContext().GetRegionId()).Proto()}}, nil
	}
	return &kvpb.PutResponse{Header: &kvpb.ResponseHeader{Revision: 7}}, nil
}

func serveKV(t *testing.T, kv kvpb.KVServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	kvpb.RegisterKVServer(srv, kv)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

func testRegion(id uint64, version uint64, storeIDs ...uint64) *metapb.Region {
	r := &metapb.Region{Id: id, RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: version}}
	for _, s := range storeIDs {
		r.Peers = append(r.Peers, &metapb.Peer{Id: id*10 + s, StoreId: s})
	}
	return r
}

// A store that has no replica of the region (the peer was removed; the
// descriptor came from a PD that has not caught up) sends the request to
// the descriptor's next peer, not back to PD, which could answer with the
// same stale descriptor again and again. Here the client has no PD at all:
// asking it would panic.
func TestRegionNotFoundTriesTheOtherPeers(t *testing.T) {
	gone1, gone2, live := &putKV{missing: true}, &putKV{missing: true}, &putKV{}
	c := &Client{
		opts:    Options{RetryBudget: 10 * time.Second},
		regions: region.NewRegionTree(), leaders: map[uint64]*metapb.Peer{},
		stores: map[uint64]string{1: serveKV(t, gone1), 2: serveKV(t, gone2), 3: serveKV(t, live)},
		conns:  map[string]*grpc.ClientConn{},
	}
	defer func() {
		for _, cc := range c.conns {
			cc.Close()
		}
	}()
	r := testRegion(5, 1, 1, 2, 3)
	if !c.learn(r, r.GetPeers()[0]) {
		t.Fatal("the empty cache refused a region")
	}
	resp, err := c.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	if err != nil || resp.GetHeader().GetRevision() != 7 {
		t.Fatalf("put: %v %v", resp, err)
	}
	if n1, n2, n3 := gone1.puts.Load(), gone2.puts.Load(), live.puts.Load(); n1 != 1 || n2 != 1 || n3 != 1 {
		t.Fatalf("puts per store: %d %d %d, want each store tried once", n1, n2, n3)
	}
	// The store that served it is the region's leader guess now; the
	// stores without the region are not tried again.
	if _, err := c.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if n1, n3 := gone1.puts.Load(), live.puts.Load(); n1 != 1 || n3 != 2 {
		t.Fatalf("second put: store 1 asked %d times, store 3 %d times; want 1 and 2", n1, n3)
	}
}

// Once every peer of the descriptor said it has no replica, the region is
// dropped from the cache, so the next attempt asks PD.
func TestRegionNotFoundEverywhereDropsTheRegion(t *testing.T) {
	c := &Client{regions: region.NewRegionTree(), leaders: map[uint64]*metapb.Peer{}}
	r := testRegion(5, 1, 1, 2, 3)
	c.learn(r, r.GetPeers()[1])
	for i, want := range []uint64{3, 1} {
		c.onRegionNotFound(route{region: r, leader: c.leaders[5]})
		if got := c.leaders[5].GetStoreId(); got != want {
			t.Fatalf("after %d not-found answers the client tries store %d, want %d", i+1, got, want)
		}
	}
	c.onRegionNotFound(route{region: r, leader: c.leaders[5]})
	if got, ok := c.CachedRegion([]byte("k")); ok || c.leaders[5] != nil || c.missingPeers[5] != nil {
		t.Fatalf("after every peer said not found the cache still holds %v (leader %v, missing %v)", got, c.leaders[5], c.missingPeers[5])
	}
}

// PD's answer older than the cached region (a new PD leader not yet
// corrected by the stores) does not replace it, and the request goes by
// the cached one.
func TestOlderRegionFromPDLosesToTheCache(t *testing.T) {
	c := &Client{regions: region.NewRegionTree(), leaders: map[uint64]*metapb.Peer{}}
	newer := testRegion(5, 3, 2, 3, 4)
	c.learn(newer, nil)
	older := testRegion(5, 2, 1, 2, 3)
	if c.learn(older, older.GetPeers()[0]) {
		t.Fatal("an older epoch replaced the cached region")
	}
	r, l := c.preferCached([]byte("k"), older, older.GetPeers()[0])
	if !proto.Equal(r, newer) || l.GetStoreId() != 2 {
		t.Fatalf("routed to region %v leader %v, want the cached epoch and a peer it names", r, l)
	}
	// PD's leader is kept when the cached region still has that peer.
	r, l = c.preferCached([]byte("k"), older, older.GetPeers()[2])
	if !proto.Equal(r, newer) || l != older.GetPeers()[2] {
		t.Fatalf("routed to region %v leader %v, want PD's leader %v", r, l, older.GetPeers()[2])
	}
}

// A RegionNotFound answered for a route that was not the cached
// descriptor (PD's older one, used while the cache held a newer epoch)
// drops only the leader guess: the newer cached region stays, and no peer
// of the stale descriptor becomes the guess for it.
func TestRegionNotFoundForAStaleRouteKeepsTheCache(t *testing.T) {
	c := &Client{regions: region.NewRegionTree(), leaders: map[uint64]*metapb.Peer{}}
	newer := testRegion(5, 3, 2, 3, 4)
	c.learn(newer, newer.GetPeers()[0])
	older := testRegion(5, 2, 1, 2, 3)
	c.onRegionNotFound(route{region: older, leader: older.GetPeers()[0]})
	if got := c.regions.GetByID(5); got == nil || got.GetRegionEpoch().GetVersion() != 3 {
		t.Fatalf("the cache holds %v, want the newer region", got)
	}
	if c.leaders[5] != nil || len(c.missingPeers[5]) != 0 {
		t.Fatalf("leader guess %v, missing %v: want neither", c.leaders[5], c.missingPeers[5])
	}
}
