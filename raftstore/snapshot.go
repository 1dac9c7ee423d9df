package raftstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
	"github.com/basaltdb/basalt/region"
)

// Snapshots. raft asks a leader's Storage for a snapshot when a follower
// needs entries the log no longer has (a new replica always does: its log is
// empty and a region's log starts at initLogIndex). The snapshot raft sees is
// small: metadata plus a SnapshotHeader naming a pebble snapshot taken at the
// applied index. The data goes on its own stream, in chunks, straight from
// that pebble snapshot; the receiver writes it into an SST and only then
// hands raft the MsgSnap. When raft accepts it, the SST is ingested:
//
//  1. one synced batch: clear the region's data spans and raft log, write the
//     truncated state and hard state, and mark the region Applying;
//  2. ingest the SST (pebble makes it durable);
//  3. one synced batch: the region back to Normal with the snapshot's applied
//     index; then the SST file is removed.
//
// A crash between 1 and 3 leaves the region Applying with its SST still on
// disk; reopening the store repeats 2 and 3.

// snapRegistry holds the pebble snapshots behind generated raft snapshots.
type snapRegistry struct {
	mu    sync.Mutex
	next  uint64
	snaps map[uint64]*genSnap
}

type genSnap struct {
	snap    *pebble.Snapshot
	region  *metapb.Region
	index   uint64
	created time.Time
	refs    int
	expired bool
}

func (r *snapRegistry) register(g *genSnap) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.snaps == nil {
		r.snaps = make(map[uint64]*genSnap)
	}
	r.next++
	r.snaps[r.next] = g
	return r.next
}

func (r *snapRegistry) acquire(id uint64) *genSnap {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.snaps[id]
	if g == nil || g.expired {
		return nil
	}
	g.refs++
	return g
}

func (r *snapRegistry) release(g *genSnap) {
	r.mu.Lock()
	g.refs--
	closeNow := g.expired && g.refs == 0
	r.mu.Unlock()
	if closeNow {
		_ = g.snap.Close()
	}
}

// gc drops snapshots older than ttl (or all, when ttl is 0).
func (r *snapRegistry) gc(ttl time.Duration) {
	now := time.Now()
	var closeNow []*pebble.Snapshot
	r.mu.Lock()
	for id, g := range r.snaps {
		if ttl == 0 || now.Sub(g.created) > ttl {
			delete(r.snaps, id)
			g.expired = true
			if g.refs == 0 {
				closeNow = append(closeNow, g.snap)
			}
		}
	}
	r.mu.Unlock()
	for _, s := range closeNow {
		_ = s.Close()
	}
}

func (r *snapRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.snaps)
}

// generateSnapshot is the peer's Storage.Snapshot: the applied state, now.
// It runs on the worker, after the previous apply batch was committed, so
// pebble holds exactly the state at appliedIndex.
func (p *peer) generateSnapshot() (*pb.Snapshot, error) {
	s := p.storage
	if !p.isInitialized() || p.applying {
		// Mid-apply (raft can ask while a conf change applies), pebble does
		// not hold the applied state yet: raft asks again later.
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	if c := p.lastSnap; c != nil && c.GetMetadata().GetIndex() == s.appliedIndex &&
		p.store.snaps.acquireCheck(p.lastSnapID) {
		return c, nil
	}
	g := &genSnap{snap: p.store.eng.DB.NewSnapshot(), region: p.region, index: s.appliedIndex, created: time.Now()}
	id := p.store.snaps.register(g)
	var ms *rspb.MergeState
	if p.isMerging() {
		ms = s.regionState.GetMergeState()
	}
	hdr, err := proto.Marshal(&rspb.SnapshotHeader{Region: p.region, SnapshotId: id, StoreId: p.store.cfg.StoreID,
		StateMachine: s.smState, MergeState: ms})
	if err != nil {
		return nil, err
	}
	cs := proto.Clone(s.regionState.GetConfState()).(*pb.ConfState)
	snap := &pb.Snapshot{
		Data:     hdr,
		Metadata: &pb.SnapshotMetadata{ConfState: cs, Index: new(s.appliedIndex), Term: new(s.appliedTerm)},
	}
	p.lastSnap, p.lastSnapID = snap, id
	p.store.stats.SnapshotsGenerated.Add(1)
	return snap, nil
}

// acquireCheck reports whether snapshot id is still registered.
func (r *snapRegistry) acquireCheck(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.snaps[id]
	return g != nil && !g.expired
}

// sendSnapshot streams the data behind a MsgSnap to its target store and
// reports the outcome to raft. It runs on its own goroutine, bounded by
// MaxConcurrentSnapshots.
func (s *Store) sendSnapshot(p *peer, rm *rspb.RaftMessage) {
	to := rm.GetMessage().GetTo()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := s.streamSnapshot(rm)
		status := raft.SnapshotFinish
		if err != nil {
			status = raft.SnapshotFailure
			s.stats.SnapshotSendFailures.Add(1)
			s.log.Debug("snapshot send failed", "region", rm.GetRegionId(), "to_store", rm.GetToPeer().GetStoreId(), "err", err)
		} else {
			s.stats.SnapshotsSent.Add(1)
		}
		p.pushOp(func(p *peer) { p.rn.ReportSnapshot(to, status) })
	}()
}

func (s *Store) streamSnapshot(rm *rspb.RaftMessage) error {
	select {
	case s.snapSem <- struct{}{}:
		defer func() { <-s.snapSem }()
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
	var hdr rspb.SnapshotHeader
	if err := proto.Unmarshal(rm.GetMessage().GetSnapshot().GetData(), &hdr); err != nil {
		return err
	}
	g := s.snaps.acquire(hdr.GetSnapshotId())
	if g == nil {
		return fmt.Errorf("snapshot %d expired", hdr.GetSnapshotId())
	}
	defer s.snaps.release(g)

	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Minute)
	defer cancel()
	stream, err := s.trans.OpenSnapshotStream(ctx, rm.GetToPeer().GetStoreId())
	if err != nil {
		return err
	}
	if err := stream.Send(&rspb.SnapshotChunk{Header: rm}); err != nil {
		return err
	}
	buf := make([]byte, 0, s.cfg.SnapshotChunkBytes+4096)
	for _, sp := range s.sm.DataSpans(g.region.GetStartKey(), g.region.GetEndKey()) {
		it, err := g.snap.NewIter(&pebble.IterOptions{LowerBound: sp.Start, UpperBound: sp.End})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; valid = it.Next() {
			buf = appendKV(buf, it.Key(), it.Value())
			if len(buf) >= s.cfg.SnapshotChunkBytes {
				if err := stream.Send(&rspb.SnapshotChunk{Data: buf}); err != nil {
					it.Close()
					return err
				}
				buf = make([]byte, 0, cap(buf))
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	if len(buf) > 0 {
		if err := stream.Send(&rspb.SnapshotChunk{Data: buf}); err != nil {
			return err
		}
	}
	return stream.CloseAndRecv()
}

func appendKV(dst, k, v []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(k)))
	dst = append(dst, k...)
	dst = binary.AppendUvarint(dst, uint64(len(v)))
	return append(dst, v...)
}

func nextKV(b []byte) (k, v, rest []byte, err error) {
	kl, n := binary.Uvarint(b)
	if n <= 0 || uint64(len(b)-n) < kl {
		return nil, nil, nil, errors.New("raftstore: corrupt snapshot chunk")
	}
	k, b = b[n:n+int(kl)], b[n+int(kl):]
	vl, n := binary.Uvarint(b)
	if n <= 0 || uint64(len(b)-n) < vl {
		return nil, nil, nil, errors.New("raftstore: corrupt snapshot chunk")
	}
	return k, b[n : n+int(vl)], b[n+int(vl):], nil
}

// recvSnap is snapshot data received and written to an SST, waiting for raft
// to accept the MsgSnap.
type recvSnap struct {
	path        string
	index, term uint64
	keys        int
	region      *metapb.Region
	smState     []byte
	merge       *rspb.MergeState // the region was a merge source in Merging state
	// absorbed: merge sources on this store the snapshot's region took in
	// (it was merged after this store's replica fell behind).
	absorbed []*metapb.Region
	received time.Time
}

// SnapshotStream is the receiving end of one snapshot stream.
type SnapshotStream interface {
	Recv() (*rspb.SnapshotChunk, error)
}

// ReceiveSnapshot consumes one snapshot stream: the MsgSnap header, then the
// data, written to an SST in the store's snapshot directory. The MsgSnap is
// delivered to the region only once the SST is complete and synced.
func (s *Store) ReceiveSnapshot(stream SnapshotStream) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	rm := first.GetHeader()
	m := rm.GetMessage()
	if rm == nil || m.GetType() != pb.MsgSnap || m.GetSnapshot() == nil {
		return errors.New("raftstore: snapshot stream must start with a MsgSnap header")
	}
	if rm.GetToPeer().GetStoreId() != s.cfg.StoreID {
		return region.StoreNotMatch(rm.GetToPeer().GetStoreId(), s.cfg.StoreID)
	}
	var hdr rspb.SnapshotHeader
	if err := proto.Unmarshal(m.GetSnapshot().GetData(), &hdr); err != nil {
		return fmt.Errorf("raftstore: bad snapshot header: %w", err)
	}
	meta := m.GetSnapshot().GetMetadata()
	s.snapSeq.Add(1)
	path := s.eng.FS.PathJoin(s.snapDir, fmt.Sprintf("recv_%d_%d_%d_%d.sst", rm.GetRegionId(), meta.GetTerm(), meta.GetIndex(), s.snapSeq.Load()))
	keys, err := s.writeSnapshotSST(path, stream)
	if err != nil {
		_ = s.eng.FS.Remove(path)
		return err
	}
	rs := &recvSnap{path: path, index: meta.GetIndex(), term: meta.GetTerm(), keys: keys, region: hdr.GetRegion(),
		smState: hdr.GetStateMachine(), merge: hdr.GetMergeState(), received: time.Now()}
	s.snapMu.Lock()
	if old := s.recvSnaps[rm.GetRegionId()]; old != nil {
		_ = s.eng.FS.Remove(old.path)
	}
	s.recvSnaps[rm.GetRegionId()] = rs
	s.snapMu.Unlock()
	s.stats.SnapshotsReceived.Add(1)
	s.HandleRaftMessage(rm)
	return nil
}

func (s *Store) writeSnapshotSST(path string, stream SnapshotStream) (int, error) {
	f, err := s.eng.FS.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return 0, err
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), s.eng.Opts.MakeWriterOptions(6, s.eng.DB.TableFormat()))
	keys := 0
	var lastKey []byte
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = w.Close()
			return 0, err
		}
		b := c.GetData()
		for len(b) > 0 {
			k, v, rest, err := nextKV(b)
			if err != nil {
				_ = w.Close()
				return 0, err
			}
			if lastKey != nil && string(k) <= string(lastKey) {
				_ = w.Close()
				return 0, errors.New("raftstore: snapshot keys out of order")
			}
			lastKey = append(lastKey[:0], k...)
			if err := w.Set(k, v); err != nil {
				_ = w.Close()
				return 0, err
			}
			keys++
			b = rest
		}
	}
	// Close finishes the table and syncs the file.
	return keys, w.Close()
}

// gcRecvSnaps deletes received snapshot data no region claimed in time.
func (s *Store) gcRecvSnaps(ttl time.Duration) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	for id, rs := range s.recvSnaps {
		if time.Since(rs.received) > ttl {
			_ = s.eng.FS.Remove(rs.path)
			delete(s.recvSnaps, id)
		}
	}
}

// takeRecvSnap returns the received data for a snapshot raft accepted.
func (s *Store) takeRecvSnap(regionID, index, term uint64) *recvSnap {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	rs := s.recvSnaps[regionID]
	if rs == nil || rs.index != index || rs.term != term {
		return nil
	}
	delete(s.recvSnaps, regionID)
	return rs
}

// peekRecvSnap returns the received data for a MsgSnap without taking it.
func (s *Store) peekRecvSnap(regionID, index, term uint64) *recvSnap {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	rs := s.recvSnaps[regionID]
	if rs == nil || rs.index != index || rs.term != term {
		return nil
	}
	return rs
}

func applyingSSTPath(fs vfs.FS, dir string, regionID, term, index uint64) string {
	return fs.PathJoin(dir, fmt.Sprintf("apply_%d_%d_%d.sst", regionID, term, index))
}

// checkSnapshot decides, before raft sees it, whether a MsgSnap can be
// applied here: its data arrived, it includes this peer, and its range does
// not overlap another initialized region on this store (that region must
// split, merge or go first). An accepted snapshot's data is claimed by the
// peer, so a newer snapshot arriving meanwhile cannot take it away; data
// raft then does not use is deleted at the end of the round.
func (p *peer) checkSnapshot(rm *rspb.RaftMessage) bool {
	meta := rm.GetMessage().GetSnapshot().GetMetadata()
	if c := p.claimedSnap; c != nil && meta.GetIndex() <= c.index {
		return false
	}
	rs := p.store.peekRecvSnap(p.regionID, meta.GetIndex(), meta.GetTerm())
	if rs == nil {
		return false
	}
	if region.FindPeerByID(rs.region, p.peerID) == nil {
		return false
	}
	if p.isInitialized() && region.IsStale(rs.region.GetRegionEpoch(), p.region.GetRegionEpoch()) {
		return false
	}
	absorbed, ok := p.store.canTakeRange(p.regionID, rs.region)
	if !ok {
		return false
	}
	if rs = p.store.takeRecvSnap(p.regionID, meta.GetIndex(), meta.GetTerm()); rs == nil {
		return false
	}
	p.dropClaimedSnap()
	p.claimedSnap = rs
	rs.absorbed = absorbed
	return true
}

// dropClaimedSnap deletes claimed snapshot data raft did not accept.
func (p *peer) dropClaimedSnap() {
	if c := p.claimedSnap; c != nil {
		_ = p.store.eng.FS.Remove(c.path)
		p.claimedSnap = nil
	}
}

// applySnapshot installs a snapshot raft accepted (see the protocol above).
func (p *peer) applySnapshot(snap *pb.Snapshot, hs *pb.HardState) {
	s := p.store
	meta := snap.GetMetadata()
	index, term := meta.GetIndex(), meta.GetTerm()
	rs := p.claimedSnap
	if rs == nil || rs.index != index || rs.term != term {
		panic(fmt.Sprintf("raftstore: region %d: raft accepted snapshot %d/%d whose data was not claimed", p.regionID, term, index))
	}
	p.claimedSnap = nil
	// Readers that started before must not trust what they read: the data
	// is about to be replaced.
	p.dataGen.Add(1)
	fs := s.eng.FS
	applyPath := applyingSSTPath(fs, s.snapDir, p.regionID, term, index)
	if err := fs.Rename(rs.path, applyPath); err != nil {
		panic(err)
	}
	if err := syncDir(fs, s.snapDir); err != nil {
		panic(err)
	}
	newRegion := rs.region
	if hs == nil || raft.IsEmptyHardState(hs) {
		hs = proto.Clone(p.storage.hardState).(*pb.HardState)
		if hs == nil {
			hs = &pb.HardState{}
		}
	}
	if hs.GetCommit() < index {
		hs.Commit = new(index)
	}
	// Step 1 is synced before the Ready's entries are written, so the hard
	// state it persists may not claim a commit beyond the snapshot: the
	// full hard state goes in the round's raft batch with the entries.
	hs1 := proto.Clone(hs).(*pb.HardState)
	if hs1.GetCommit() > index {
		hs1.Commit = new(index)
	}

	// 1. Clear and mark Applying.
	wb := s.eng.DB.NewBatch()
	if p.isInitialized() {
		for _, sp := range s.sm.DataSpans(p.region.GetStartKey(), p.region.GetEndKey()) {
			mustDeleteRange(wb, sp)
		}
	}
	for _, sp := range s.sm.DataSpans(newRegion.GetStartKey(), newRegion.GetEndKey()) {
		mustDeleteRange(wb, sp)
	}
	mustDeleteRange(wb, Span{Start: logKey(p.regionID, 0), End: logKey(p.regionID, ^uint64(0))})
	mustSetProto(wb, truncatedStateKey(p.regionID), &rspb.RaftTruncatedState{Index: index, Term: term})
	mustSetProto(wb, hardStateKey(p.regionID), hs1)
	applying := &rspb.RegionLocalState{State: rspb.PeerState_Applying, Region: newRegion, ConfState: meta.GetConfState(),
		ApplyingSnapshot: meta, ApplyingSnapshotKeys: uint64(rs.keys), ApplyingStateMachine: rs.smState, MergeState: rs.merge}
	mustSetProto(wb, regionStateKey(p.regionID), applying)
	for _, src := range rs.absorbed {
		// As a CommitMerge would have: the source's raft state goes, a
		// tombstone stays; its data was cleared with the range above.
		mustDeleteRange(wb, raftLocalSpan(src.GetId()))
		mustSetProto(wb, regionStateKey(src.GetId()), &rspb.RegionLocalState{State: rspb.PeerState_Tombstone, Region: src,
			TombstonePeerId: region.FindPeer(src, s.cfg.StoreID).GetId()})
	}
	mustCommit(wb, pebble.Sync)

	// 2 and 3.
	s.finishApplyingSnapshot(p.regionID, applying)

	st := p.storage
	st.hardState = hs1
	st.truncIndex, st.truncTerm = index, term
	st.lastIndex, st.lastTerm = index, term
	st.appliedIndex, st.appliedTerm = index, term
	st.smState = rs.smState
	st.regionState = afterSnapshot(applying)
	s.cache.drop(p.regionID)
	p.peerState = st.regionState.GetState()
	p.region = newRegion
	p.lastSnap = nil
	if len(rs.absorbed) > 0 {
		p.mergedSources = rs.absorbed
		p.absorbMerged()
	} else {
		s.indexRegion(p)
	}
	p.regionChanged = true
	s.stats.SnapshotsApplied.Add(1)
}

// finishApplyingSnapshot does steps 2 and 3 for a region whose state says
// Applying (also on restart).
func (s *Store) finishApplyingSnapshot(regionID uint64, applying *rspb.RegionLocalState) {
	meta := applying.GetApplyingSnapshot()
	fs := s.eng.FS
	path := applyingSSTPath(fs, s.snapDir, regionID, meta.GetTerm(), meta.GetIndex())
	if applying.GetApplyingSnapshotKeys() > 0 {
		// pebble removes what it ingests; ingest a second name so the data
		// stays on disk until step 3 is durable, for a restart to redo.
		link := path + ".ingest"
		_ = fs.Remove(link)
		if err := fs.Link(path, link); err != nil {
			panic(fmt.Sprintf("raftstore: region %d: link snapshot for ingestion: %v", regionID, err))
		}
		if err := s.eng.DB.Ingest(context.Background(), []string{link}); err != nil {
			panic(fmt.Sprintf("raftstore: region %d: ingest snapshot: %v", regionID, err))
		}
	}
	wb := s.eng.DB.NewBatch()
	mustSetProto(wb, regionStateKey(regionID), afterSnapshot(applying))
	mustSetProto(wb, applyStateKey(regionID), &rspb.RaftApplyState{AppliedIndex: meta.GetIndex(), AppliedTerm: meta.GetTerm(),
		StateMachine: applying.GetApplyingStateMachine()})
	mustCommit(wb, pebble.Sync)
	_ = fs.Remove(path)
	if n, ok := s.sm.(DataReplacedNotifier); ok {
		n.DataReplaced(applying.GetRegion())
	}
}

// afterSnapshot is the region state once the snapshot recorded in applying
// is in: Normal, or Merging when the snapshot came from a merge source.
func afterSnapshot(applying *rspb.RegionLocalState) *rspb.RegionLocalState {
	rs := &rspb.RegionLocalState{State: rspb.PeerState_Normal, Region: applying.GetRegion(), ConfState: applying.GetConfState()}
	if ms := applying.GetMergeState(); ms != nil {
		rs.State, rs.MergeState = rspb.PeerState_Merging, ms
	}
	return rs
}

func mustDeleteRange(wb *pebble.Batch, sp Span) {
	if err := wb.DeleteRange(sp.Start, sp.End, nil); err != nil {
		panic(err)
	}
}

func mustCommit(wb *pebble.Batch, opts *pebble.WriteOptions) {
	if err := wb.Commit(opts); err != nil {
		panic(fmt.Sprintf("raftstore: pebble commit failed: %v", err))
	}
	_ = wb.Close()
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
