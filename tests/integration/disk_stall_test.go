package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/tests/procs"
)

// A leader whose disk stalls (every fsync waits seconds) is replaced: its
// raft rounds block in the sync, its heartbeats come too late, and the two
// healthy replicas elect one of them, so writes go on while the stall
// lasts. Once the disk recovers the stalled replica catches up, and every
// acknowledged write is there.
func TestStalledDiskLeaderIsReplaced(t *testing.T) {
	// The control file is relative to each store's data directory.
	c := procs.Start(t, procs.Options{PDs: 1, Stores: 3, StoreArgs: []string{"--log-level", "info", "--fault-sync-delay-file", "sync-delay"}})
	cl := c.Client(t)
	pd := waitReplicated(t, c)
	// Only the stall may move the leader.
	removeSchedulers(t, c, "balance-leader", "hot-region")
	put(t, cl, "stall/0", "v0")
	stalled := leaderStoreOf(t, c, pd, []byte("stall/0"))
	control := filepath.Join(stalled.Dir, "sync-delay")
	if err := os.WriteFile(control, []byte("3s"), 0o644); err != nil {
		t.Fatal(err)
	}
	stalledAt := time.Now()
	dump := func() { c.DumpState(t, 6000) }

	// Writes, each to its own key, until a leader elsewhere has taken 20 in
	// a row; a write that fails may or may not have applied.
	acked := map[string]string{"stall/0": "v0"}
	var moved time.Duration
	inARow := 0
	deadline := time.Now().Add(90 * time.Second)
	for i := 1; inARow < 20; i++ {
		if time.Now().After(deadline) {
			dump()
			t.Fatalf("writes did not move off the stalled leader within 90 s (%d acknowledged)", len(acked))
		}
		key, val := fmt.Sprintf("stall/%d", i), fmt.Sprintf("v%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cl.Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte(val)})
		cancel()
		if err != nil {
			inARow = 0
			continue
		}
		acked[key] = val
		if moved == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := pd.GetRegion(ctx, []byte(key))
			cancel()
			if err != nil || r.GetLeader() == nil {
				continue
			}
			ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
			st, err := pd.GetStore(ctx, r.GetLeader().GetStoreId())
			cancel()
			if err != nil || st.GetAddress() == stalled.Addr {
				continue
			}
			moved = time.Since(stalledAt)
		}
		inARow++
	}
	t.Logf("leadership left the stalled store after %v; %d writes acknowledged", moved.Round(time.Millisecond), len(acked))

	// The disk recovers: the stalled replica serves every acknowledged
	// write (a serializable read is served by the replica the client
	// reached).
	if err := os.Remove(control); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{stalled.Addr}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline = time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cli.Get(ctx, "stall/", clientv3.WithPrefix(), clientv3.WithSerializable())
		cancel()
		missing := len(acked)
		if err == nil {
			missing = 0
			got := map[string]string{}
			for _, kv := range resp.Kvs {
				got[string(kv.Key)] = string(kv.Value)
			}
			for k, v := range acked {
				if got[k] != v {
					missing++
				}
			}
			if missing == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			dump()
			t.Fatalf("the recovered replica still misses %d of %d acknowledged writes (last error: %v)", missing, len(acked), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
