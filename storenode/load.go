package storenode

import (
	"bytes"
	"context"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/basaltdb/basalt/proto/kvpb"
	"github.com/basaltdb/basalt/region"
	"github.com/basaltdb/basalt/storenode/mvcc"
)

// Load: the requests each region serves on this store, for two users.
//
//   - Region heartbeats report the bytes and keys written and read since the
//     region's last heartbeat; PD's hot-region scheduler moves the leaders of
//     the regions writing most, and its merge checker leaves busy regions
//     alone (a region split for load would otherwise be merged back).
//   - The load splitter (TiKV's load-based split): a region this store leads
//     that serves more than LoadSplitConfig.QPSThreshold requests a second
//     for LoadSplitConfig.Duration is cut at the median of the keys its
//     requests touched, so its work spreads over two leaders.
//
// Recording is on every request's path: counters are atomic, and keys are
// sampled (a reservoir of loadSamplesPerSecond per region and second), so a
// request takes a lock only while the reservoir is filling or when it is
// drawn into it.
//
// Reads are counted on the replica that served them (a follower's local
// reads too); only the leader splits, so it acts on the requests it saw.

// LoadSplitConfig says when a store splits a busy region.
type LoadSplitConfig struct {
	// QPSThreshold: requests per second above which a region is busy
	// (default 3,000; negative disables load splits).
	QPSThreshold int
	// Duration: how long a region must stay busy before it is split
	// (default 10 s).
	Duration time.Duration
}

func (c *LoadSplitConfig) fillDefaults() {
	if c.QPSThreshold == 0 {
		c.QPSThreshold = 3000
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
}

// loadSamplesPerSecond is each region's key reservoir per second.
const loadSamplesPerSecond = 20

type loadTracker struct {
	mu      sync.RWMutex
	regions map[uint64]*regionLoad
}

// regionLoad is one region's load. The counters and the reservoir are
// written by requests; the rest belongs to the load splitter's goroutine.
type regionLoad struct {
	// Since the last heartbeat.
	bytesWritten, keysWritten, bytesRead, keysRead atomic.Uint64
	// This second.
	requests atomic.Uint64
	sampleMu sync.Mutex
	samples  [][]byte

	// The heartbeat's last report (see takeFlow).
	flowMu   sync.Mutex
	lastTake time.Time
	lastFlow flow

	// The splitter's: busy seconds in a row and their samples.
	busyFor     time.Duration
	busySamples [][]byte
}

// flow is what a region heartbeat reports of a region's traffic.
type flow struct {
	bytesWritten, keysWritten, bytesRead, keysRead uint64
	seconds                                        uint64
}

func newLoadTracker() *loadTracker { return &loadTracker{regions: map[uint64]*regionLoad{}} }

func (t *loadTracker) get(id uint64) *regionLoad {
	t.mu.RLock()
	l := t.regions[id]
	t.mu.RUnlock()
	if l != nil {
		return l
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if l = t.regions[id]; l == nil {
		l = &regionLoad{lastTake: time.Now()}
		t.regions[id] = l
	}
	return l
}

// forget drops a region's load: it left the store, or its range changed
// (samples and rates of the old range say nothing about the new one).
func (t *loadTracker) forget(id uint64) {
	t.mu.Lock()
	delete(t.regions, id)
	t.mu.Unlock()
}

func (t *loadTracker) snapshot() map[uint64]*regionLoad {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return maps.Clone(t.regions)
}

// recordWrite counts a write the region applied.
func (t *loadTracker) recordWrite(id uint64, cmd *kvpb.WriteCommand) {
	key, keys, size := writeLoad(cmd)
	if key == nil {
		return
	}
	l := t.get(id)
	l.keysWritten.Add(keys)
	l.bytesWritten.Add(size)
	l.sample(key)
}

// recordRead counts a read the region served: key is where it started.
func (t *loadTracker) recordRead(id uint64, key []byte, kvs []*kvpb.KeyValue) {
	l := t.get(id)
	var size uint64
	for _, kv := range kvs {
		size += uint64(len(kv.GetKey()) + len(kv.GetValue()))
	}
	l.keysRead.Add(uint64(max(len(kvs), 1)))
	l.bytesRead.Add(size)
	l.sample(key)
}

// sample counts one request and keeps key in the second's reservoir with
// the probability that keeps the reservoir uniform.
func (l *regionLoad) sample(key []byte) {
	n := l.requests.Add(1)
	slot := n - 1
	if n > loadSamplesPerSecond {
		slot = rand.Uint64N(n)
		if slot >= loadSamplesPerSecond {
			return
		}
	}
	k := bytes.Clone(key)
	l.sampleMu.Lock()
	if int(slot) < len(l.samples) {
		l.samples[slot] = k
	} else if len(l.samples) < loadSamplesPerSecond {
		l.samples = append(l.samples, k)
	}
	l.sampleMu.Unlock()
}

// takeSecond returns the requests and samples since the last call and
// starts a new second.
func (l *regionLoad) takeSecond() (uint64, [][]byte) {
	l.sampleMu.Lock()
	s := l.samples
	l.samples = nil
	n := l.requests.Swap(0)
	l.sampleMu.Unlock()
	return n, s
}

// takeFlow returns the region's traffic since its last heartbeat. A
// heartbeat less than minInterval after the last (sent because the region
// changed) repeats the last report instead of reporting a sliver: PD
// keeps only the latest, and a sliver would make a busy region look idle.
func (t *loadTracker) takeFlow(id uint64, now time.Time, minInterval time.Duration) flow {
	l := t.get(id)
	l.flowMu.Lock()
	defer l.flowMu.Unlock()
	elapsed := now.Sub(l.lastTake)
	if elapsed < minInterval {
		return l.lastFlow
	}
	l.lastTake = now
	l.lastFlow = flow{
		bytesWritten: l.bytesWritten.Swap(0), keysWritten: l.keysWritten.Swap(0),
		bytesRead: l.bytesRead.Swap(0), keysRead: l.keysRead.Swap(0),
		seconds: uint64(max((elapsed+time.Second/2)/time.Second, 1)),
	}
	return l.lastFlow
}

// writeLoad is a write's representative key (nil: not user traffic), the
// keys it writes and its bytes. A range delete counts as one key: how many
// it removes is known only at apply, and load is counted before.
func writeLoad(cmd *kvpb.WriteCommand) (key []byte, keys, size uint64) {
	switch op := cmd.GetOp().(type) {
	case *kvpb.WriteCommand_Put:
		return op.Put.GetKey(), 1, uint64(len(op.Put.GetKey()) + len(op.Put.GetValue()))
	case *kvpb.WriteCommand_DeleteRange:
		return op.DeleteRange.GetKey(), 1, uint64(len(op.DeleteRange.GetKey()))
	case *kvpb.WriteCommand_Txn:
		key = mvcc.TxnKey(op.Txn)
		for _, ops := range [][]*kvpb.RequestOp{op.Txn.GetSuccess(), op.Txn.GetFailure()} {
			for _, o := range ops {
				if p := o.GetRequestPut(); p != nil {
					keys++
					size += uint64(len(p.GetKey()) + len(p.GetValue()))
				}
			}
		}
		return key, max(keys, 1), size
	}
	return nil, 0, 0
}

// loadSplitLoop checks, every second, the load of the regions this store
// leads, and splits those that stayed busy.
func (s *Server) loadSplitLoop() {
	cfg := s.cfg.LoadSplit
	if cfg.QPSThreshold < 0 {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	var splitting sync.WaitGroup
	defer splitting.Wait()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			elapsed := now.Sub(last)
			last = now
			for id, l := range s.load.snapshot() {
				key := l.busySecond(cfg, elapsed)
				if key == nil {
					continue
				}
				st := s.store.RegionStatus(id)
				if st == nil || !st.IsLeader() || !region.ContainsKey(st.Region, key) || bytes.Equal(key, st.Region.GetStartKey()) {
					continue
				}
				splitting.Add(1)
				go func() {
					defer splitting.Done()
					ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
					defer cancel()
					regions, err := s.splitRegion(ctx, id, st.Region.GetRegionEpoch(), [][]byte{key})
					if err != nil {
						s.log.Debug("split busy region", "region", id, "err", err)
						return
					}
					s.log.Info("split busy region", "region", id, "key", string(key), "pieces", len(regions))
				}()
			}
		}
	}
}

// busySecond folds one second into the region's busy streak and returns
// the key to split it at once the streak is long enough (nil otherwise).
func (l *regionLoad) busySecond(cfg LoadSplitConfig, elapsed time.Duration) []byte {
	n, samples := l.takeSecond()
	if elapsed <= 0 || float64(n) < float64(cfg.QPSThreshold)*elapsed.Seconds() {
		l.busyFor, l.busySamples = 0, nil
		return nil
	}
	l.busyFor += elapsed
	l.busySamples = append(l.busySamples, samples...)
	if l.busyFor < cfg.Duration {
		return nil
	}
	key := loadSplitKey(l.busySamples)
	l.busyFor, l.busySamples = 0, nil
	return key
}

// loadSplitKey is the median of the sampled keys, if splitting there
// spreads the requests: at least a quarter of the samples on each side. A
// region busy on one key (or a few) is not split, as that would not
// spread anything.
func loadSplitKey(samples [][]byte) []byte {
	if len(samples) < 4 {
		return nil
	}
	sorted := slices.Clone(samples)
	slices.SortFunc(sorted, bytes.Compare)
	key := sorted[len(sorted)/2]
	left, _ := slices.BinarySearchFunc(sorted, key, bytes.Compare) // samples below key
	if quarter := len(sorted) / 4; left < quarter || len(sorted)-left < quarter {
		return nil
	}
	return key
}
