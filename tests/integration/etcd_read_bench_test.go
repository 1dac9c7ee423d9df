package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/tests/procs"
)

// BenchmarkEtcdLinearizableGet: one clientv3 client, one key, a
// linearizable Get at a time through the store leading the key's region
// and through one that follows. The follower asks the leader for a
// resolved revision and waits to apply the leader's read index.
func BenchmarkEtcdLinearizableGet(b *testing.B) {
	c := procs.Start(b, procs.Options{PDs: 1, Stores: 3})
	pd := waitReplicated(b, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var leaderAddr, followerAddr string
	for _, s := range c.Stores {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Addr}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := cli.Put(ctx, "bench/k", "v"); err != nil {
			b.Fatal(err)
		}
		cli.Close()
	}
	r, err := pd.GetRegion(ctx, []byte("bench/k"))
	if err != nil {
		b.Fatal(err)
	}
	stores, err := pd.GetAllStores(ctx, true)
	if err != nil {
		b.Fatal(err)
	}
	for _, st := range stores {
		if st.GetId() == r.GetLeader().GetStoreId() {
			leaderAddr = st.GetAddress()
		} else if followerAddr == "" {
			followerAddr = st.GetAddress()
		}
	}
	for _, tc := range []struct{ name, addr string }{{"leader", leaderAddr}, {"follower", followerAddr}} {
		b.Run(tc.name, func(b *testing.B) {
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{tc.addr}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				b.Fatal(err)
			}
			defer cli.Close()
			for range 100 { // connections and caches warm
				if _, err := cli.Get(ctx, "bench/k"); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				resp, err := cli.Get(ctx, "bench/k")
				if err != nil || len(resp.Kvs) != 1 {
					b.Fatal(fmt.Sprint(resp, err))
				}
			}
		})
	}
}
