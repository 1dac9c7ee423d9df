package pd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	"github.com/basaltdb/basalt/proto/pdpb"
	"github.com/basaltdb/basalt/raftstore"
	"github.com/basaltdb/basalt/region"
)

// PD's durable state is one Raft group (region pdRegionID, covering every
// key) on the members' raftstore. Its state machine keeps the state both in
// memory (every member, so a new leader starts warm) and in pebble under the
// 'z' prefix:
//
//	z c            cluster ID (8 bytes)
//	z b            metapb.Cluster, written by the store bootstrap
//	z s <id>       metapb.Store
//	z r <id>       metapb.Region (the last descriptor persisted)
//	z m <id>       pdpb.Member
//	z t            TSO window upper bound, physical ms (8 bytes)
//	z i            ID window upper bound (8 bytes)
//	z k            compaction revision (8 bytes)
//	z g            scheduling config (JSON)
//
// <id> is 8 bytes big-endian. The layout is frozen.
const pdRegionID = 1

var (
	keyClusterID  = []byte("zc")
	keyCluster    = []byte("zb")
	keyTSOWindow  = []byte("zt")
	keyIDWindow   = []byte("zi")
	keyCompactRev = []byte("zk")
	keyConfig     = []byte("zg")
	prefixStore   = []byte("zs")
	prefixRegion  = []byte("zr")
	prefixMember  = []byte("zm")
)

func idKey(prefix []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), id)
}

// errAlreadyBootstrapped is the result of a second BootstrapCommand.
var errAlreadyBootstrapped = errors.New("pd: cluster is already bootstrapped")

// fsm is PD's state machine.
type fsm struct {
	db *pebble.DB

	mu         sync.RWMutex
	clusterID  uint64
	cluster    *metapb.Cluster // nil until a store bootstrapped the cluster
	stores     map[uint64]*metapb.Store
	regions    *region.RegionTree
	members    map[uint64]*pdpb.Member
	tsoWindow  uint64
	idWindow   uint64
	compactRev uint64
	config     []byte
}

var _ raftstore.StateMachine = (*fsm)(nil)

func newFSM(db *pebble.DB) (*fsm, error) {
	f := &fsm{db: db}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

// load rebuilds the in-memory state from pebble.
func (f *fsm) load() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clusterID, f.cluster = 0, nil
	f.stores = make(map[uint64]*metapb.Store)
	f.regions = region.NewRegionTree()
	f.members = make(map[uint64]*pdpb.Member)
	f.tsoWindow, f.idWindow, f.compactRev, f.config = 0, 0, 0, nil

	it, err := f.db.NewIter(&pebble.IterOptions{LowerBound: []byte("z"), UpperBound: []byte("{")})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) < 2 {
			continue
		}
		switch k[1] {
		case 'c':
			f.clusterID = binary.BigEndian.Uint64(v)
		case 'b':
			c := &metapb.Cluster{}
			if err := proto.Unmarshal(v, c); err != nil {
				return err
			}
			f.cluster = c
		case 's':
			st := &metapb.Store{}
			if err := proto.Unmarshal(v, st); err != nil {
				return err
			}
			f.stores[st.GetId()] = st
		case 'r':
			r := &metapb.Region{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			if _, err := f.regions.Update(r); err != nil {
				return fmt.Errorf("pd: persisted regions overlap: %w", err)
			}
		case 'm':
			m := &pdpb.Member{}
			if err := proto.Unmarshal(v, m); err != nil {
				return err
			}
			f.members[m.GetMemberId()] = m
		case 't':
			f.tsoWindow = binary.BigEndian.Uint64(v)
		case 'i':
			f.idWindow = binary.BigEndian.Uint64(v)
		case 'k':
			f.compactRev = binary.BigEndian.Uint64(v)
		case 'g':
			f.config = append([]byte(nil), v...)
		}
	}
	return it.Error()
}

func (f *fsm) DataSpans(start, end []byte) []raftstore.Span {
	return []raftstore.Span{{Start: []byte("z"), End: []byte("{")}}
}

// MergeState: PD's one region never merges.
func (f *fsm) MergeState(target, _ []byte) []byte { return target }

func (f *fsm) RegionChanged(regionID uint64, r *metapb.Region, _ []byte) {
	// A snapshot replaced the data wholesale: rebuild memory from pebble.
	if r != nil {
		if err := f.load(); err != nil {
			panic(fmt.Sprintf("pd: reloading state after a region change: %v", err))
		}
	}
}

func set(ab *raftstore.ApplyBatch, k []byte, m proto.Message) {
	v, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	if err := ab.Set(k, v, nil); err != nil {
		panic(err)
	}
}

func setUint(ab *raftstore.ApplyBatch, k []byte, v uint64) {
	if err := ab.Set(k, binary.BigEndian.AppendUint64(nil, v), nil); err != nil {
		panic(err)
	}
}

// Apply applies one PD command. Results: nil, or an error value for a
// command rejected deterministically.
func (f *fsm) Apply(ab *raftstore.ApplyBatch, c raftstore.Command) any {
	cmd := &pdpb.Command{}
	if err := proto.Unmarshal(c.Data, cmd); err != nil {
		panic(fmt.Sprintf("pd: entry %d: %v", c.Index, err))
	}
	return f.apply(ab, cmd)
}

func (f *fsm) apply(ab *raftstore.ApplyBatch, cmd *pdpb.Command) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch c := cmd.GetCmd().(type) {
	case *pdpb.Command_InitClusterId:
		if f.clusterID == 0 {
			f.clusterID = c.InitClusterId
			setUint(ab, keyClusterID, f.clusterID)
		}
		return f.clusterID
	case *pdpb.Command_Bootstrap:
		if f.cluster != nil {
			return errAlreadyBootstrapped
		}
		b := c.Bootstrap
		f.cluster = b.GetCluster()
		set(ab, keyCluster, f.cluster)
		f.stores[b.GetStore().GetId()] = b.GetStore()
		set(ab, idKey(prefixStore, b.GetStore().GetId()), b.GetStore())
		if _, err := f.regions.Update(b.GetRegion()); err != nil {
			panic(err)
		}
		set(ab, idKey(prefixRegion, b.GetRegion().GetId()), b.GetRegion())
	case *pdpb.Command_PutStore:
		st := c.PutStore
		if old := f.stores[st.GetId()]; old != nil && old.GetState() == metapb.StoreState_Tombstone {
			return fmt.Errorf("pd: store %d is a tombstone", st.GetId())
		}
		f.stores[st.GetId()] = st
		set(ab, idKey(prefixStore, st.GetId()), st)
	case *pdpb.Command_PutRegions:
		for _, r := range c.PutRegions.GetRegions() {
			removed, err := f.regions.Update(r)
			if err != nil {
				continue // stale: a newer descriptor is already persisted
			}
			for _, o := range removed {
				if o.GetId() != r.GetId() {
					if err := ab.Delete(idKey(prefixRegion, o.GetId()), nil); err != nil {
						panic(err)
					}
				}
			}
			set(ab, idKey(prefixRegion, r.GetId()), r)
		}
	case *pdpb.Command_RemoveRegions:
		for _, id := range c.RemoveRegions.GetRegionIds() {
			if f.regions.Remove(id) {
				if err := ab.Delete(idKey(prefixRegion, id), nil); err != nil {
					panic(err)
				}
			}
		}
	case *pdpb.Command_SetTsoWindow:
		if c.SetTsoWindow > f.tsoWindow {
			f.tsoWindow = c.SetTsoWindow
			setUint(ab, keyTSOWindow, f.tsoWindow)
		}
		return f.tsoWindow
	case *pdpb.Command_SetIdWindow:
		if c.SetIdWindow > f.idWindow {
			f.idWindow = c.SetIdWindow
			setUint(ab, keyIDWindow, f.idWindow)
		}
		return f.idWindow
	case *pdpb.Command_PutMember:
		m := c.PutMember
		f.members[m.GetMemberId()] = m
		set(ab, idKey(prefixMember, m.GetMemberId()), m)
	case *pdpb.Command_SetCompactRevision:
		if c.SetCompactRevision > f.compactRev {
			f.compactRev = c.SetCompactRevision
			setUint(ab, keyCompactRev, f.compactRev)
		}
		return f.compactRev
	case *pdpb.Command_SetConfig:
		f.config = append([]byte(nil), c.SetConfig.GetJson()...)
		if err := ab.Set(keyConfig, f.config, nil); err != nil {
			panic(err)
		}
	default:
		panic(fmt.Sprintf("pd: unknown command %T", c))
	}
	return nil
}

// ---- read accessors (copies or immutable values) ----

func (f *fsm) getClusterID() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.clusterID
}

func (f *fsm) getCluster() *metapb.Cluster {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cluster
}

func (f *fsm) windows() (tso, id uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.tsoWindow, f.idWindow
}

func (f *fsm) getCompactRev() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.compactRev
}

func (f *fsm) getConfig() []byte {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.config
}

func (f *fsm) getStores() []*metapb.Store {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*metapb.Store, 0, len(f.stores))
	for _, s := range f.stores {
		out = append(out, s)
	}
	return out
}

func (f *fsm) getStore(id uint64) *metapb.Store {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.stores[id]
}

func (f *fsm) getMembers() []*pdpb.Member {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pdpb.Member, 0, len(f.members))
	for _, m := range f.members {
		out = append(out, m)
	}
	return out
}

// persistedRegions returns every persisted region descriptor.
func (f *fsm) persistedRegions() []*metapb.Region {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*metapb.Region, 0, f.regions.Len())
	f.regions.Ascend(nil, func(r *metapb.Region) bool {
		out = append(out, r)
		return true
	})
	return out
}
