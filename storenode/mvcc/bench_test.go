package mvcc

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/raftstore"
)

// The MVCC layer alone (no Raft), on the real disk, one region holding
// 1,000,000 keys with 256-byte values:
//
//	go test -run '^$' -bench 'MVCC' -benchtime 200000x ./storenode/mvcc/
const benchKeys = 1_000_000

var (
	benchOnce sync.Once
	benchTR   *testRegion
	benchDir  string
)

func benchKey(i int) []byte { return []byte(fmt.Sprintf("key/%08d", i)) }

// benchRegion loads the region once per test binary.
func benchRegion(b *testing.B) *testRegion {
	benchOnce.Do(func() {
		dir, err := makeBenchDir()
		if err != nil {
			b.Fatal(err)
		}
		benchDir = dir
		// A store's options; BASALT_BENCH_BYTEWISE=1 measures a database
		// made before Comparer.
		cmp := Comparer
		if os.Getenv("BASALT_BENCH_BYTEWISE") == "1" {
			cmp = pebble.DefaultComparer
		}
		eng, err := raftstore.OpenEngineWith(dir, nil, raftstore.EngineOptions{Comparer: cmp})
		if err != nil {
			b.Fatal(err)
		}
		db := eng.DB
		m, err := New(db, eng.Opts.Comparer, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		tr := &testRegion{t: b, db: db, m: m,
			desc: &metapb.Region{Id: 1, RegionEpoch: &metapb.RegionEpoch{ConfVer: 1, Version: 1}}}
		tr.m.RegionChanged(1, tr.desc, nil)
		value := make([]byte, 256)
		for start := 0; start < benchKeys; start += 1000 {
			ab := raftstore.NewApplyBatch(db.NewIndexedBatch())
			for i := start; i < start+1000; i++ {
				tr.applyIn(ab, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: benchKey(i), Value: value}}})
			}
			ab.Commit()
		}
		if err := db.Flush(); err != nil {
			b.Fatal(err)
		}
		benchTR = tr
	})
	return benchTR
}

// applyIn applies one write into an open apply batch, as the worker does
// for each command of a round.
func (tr *testRegion) applyIn(ab *raftstore.ApplyBatch, wc *kvpb.WriteCommand) *WriteResult {
	if wc.Revision == 0 {
		wc.Revision = decodeRegionState(tr.state).lastRev + 1
	}
	data, err := proto.Marshal(wc)
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.index++
	return tr.m.Apply(ab, raftstore.Command{RegionID: 1, Region: tr.desc, Index: tr.index, Data: data, State: &tr.state}).(*WriteResult)
}

func BenchmarkMVCCPut(b *testing.B) {
	tr := benchRegion(b)
	rng := rand.New(rand.NewPCG(1, 2))
	value := make([]byte, 256)
	b.ResetTimer()
	const perBatch = 64
	for done := 0; done < b.N; done += perBatch {
		ab := raftstore.NewApplyBatch(tr.db.NewIndexedBatch())
		for i := 0; i < perBatch && done+i < b.N; i++ {
			res := tr.applyIn(ab, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: benchKey(rng.IntN(benchKeys)), Value: value}}})
			if res.Err != nil {
				b.Fatal(res.Err)
			}
		}
		ab.Commit()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
}

func BenchmarkMVCCGet(b *testing.B) {
	tr := benchRegion(b)
	r := tr.region()
	rng := rand.New(rand.NewPCG(3, 4))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := tr.m.Range(r, &kvpb.RangeRequest{Key: benchKey(rng.IntN(benchKeys))}, r.Revision())
		if err != nil || len(resp.GetKvs()) != 1 {
			b.Fatalf("get: %v %v", resp, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "gets/s")
}

// A range over 100,000 keys with limit 1,000: etcd's count still covers
// every key of the range, so the walk dominates.
func BenchmarkMVCCRangeLimitCount(b *testing.B) {
	tr := benchRegion(b)
	r := tr.region()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := tr.m.Range(r, &kvpb.RangeRequest{Key: benchKey(0), RangeEnd: benchKey(100_000), Limit: 1000}, r.Revision())
		if err != nil || len(resp.GetKvs()) != 1000 || resp.GetCount() != 100_000 || !resp.GetMore() {
			b.Fatalf("range: %d kvs, count %d, %v", len(resp.GetKvs()), resp.GetCount(), err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ranges/s")
}
