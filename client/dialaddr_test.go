package client

import (
	"context"
	"testing"

	"google.golang.org/grpc"
)

// A store is dialed where DialAddr says and its connection is kept under
// the address it published, which is what region errors and PD name.
func TestDialAddrMapsStoreAddresses(t *testing.T) {
	c := &Client{
		opts: Options{DialAddr: func(a string) string {
			if a == "10.0.0.5:20160" {
				return "127.0.0.1:3001"
			}
			return a
		}},
		stores: map[uint64]string{1: "10.0.0.5:20160", 2: "10.0.0.6:20160"},
		conns:  map[string]*grpc.ClientConn{},
	}
	defer func() {
		for _, cc := range c.conns {
			cc.Close()
		}
	}()
	for id, want := range map[uint64]string{1: "127.0.0.1:3001", 2: "10.0.0.6:20160"} {
		cc, err := c.storeConn(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cc.Target() != want || c.conns[c.stores[id]] != cc {
			t.Fatalf("store %d: dialed %s, want %s (kept under %q: %v)", id, cc.Target(), want, c.stores[id], c.conns[c.stores[id]] == cc)
		}
	}
}
