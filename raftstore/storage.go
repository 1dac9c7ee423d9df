package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
)

// Log indexes and terms of a freshly bootstrapped region. Starting above
// zero means a brand-new, uninitialized peer (whose log is empty) can never
// match the leader's log and always gets a snapshot first, which carries the
// region descriptor. (TiKV uses the same trick.)
const (
	initLogIndex = 5
	initLogTerm  = 5
)

// peerStorage is raft.Storage for one region replica on the store's pebble.
// raft calls it only from the worker processing the peer, and the worker is
// the only writer, so it needs no lock.
type peerStorage struct {
	regionID uint64
	db       *pebble.DB
	cache    *entryCache
	// snapshot generates a snapshot of the applied state; set by the peer.
	snapshot func() (*pb.Snapshot, error)

	hardState *pb.HardState
	// Entries at or below truncIndex are gone; truncTerm is the term of
	// entry truncIndex.
	truncIndex, truncTerm uint64
	lastIndex, lastTerm   uint64
	// appliedIndex/appliedTerm as of the last committed apply batch.
	appliedIndex, appliedTerm uint64
	// smState is the state machine's per-region state at appliedIndex.
	smState []byte
	// regionState is the region descriptor and conf state as of appliedIndex.
	regionState *rspb.RegionLocalState
}

var _ raft.Storage = (*peerStorage)(nil)

// isInitialized reports whether the peer has a region descriptor (from
// bootstrap, a split or a snapshot).
func (s *peerStorage) isInitialized() bool {
	return s.regionState != nil && s.regionState.GetRegion().GetRegionEpoch().GetConfVer() > 0
}

func (s *peerStorage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	hs := s.hardState
	if hs == nil {
		hs = &pb.HardState{}
	}
	cs := s.regionState.GetConfState()
	if cs == nil || !s.isInitialized() {
		cs = &pb.ConfState{}
	}
	return proto.Clone(hs).(*pb.HardState), proto.Clone(cs).(*pb.ConfState), nil
}

func (s *peerStorage) FirstIndex() (uint64, error) { return s.truncIndex + 1, nil }
func (s *peerStorage) LastIndex() (uint64, error)  { return s.lastIndex, nil }

func (s *peerStorage) Term(i uint64) (uint64, error) {
	switch {
	case i == s.truncIndex:
		return s.truncTerm, nil
	case i < s.truncIndex:
		return 0, raft.ErrCompacted
	case i > s.lastIndex:
		return 0, raft.ErrUnavailable
	case i == s.lastIndex:
		return s.lastTerm, nil
	}
	if t, ok := s.cache.term(s.regionID, i); ok {
		return t, nil
	}
	v, closer, err := s.db.Get(logKey(s.regionID, i))
	if err != nil {
		return 0, fmt.Errorf("raftstore: region %d: term of entry %d: %w", s.regionID, i, err)
	}
	defer closer.Close()
	t, _ := binary.Uvarint(v)
	return t, nil
}

func (s *peerStorage) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	if lo <= s.truncIndex {
		return nil, raft.ErrCompacted
	}
	if hi > s.lastIndex+1 {
		return nil, raft.ErrUnavailable
	}
	if lo >= hi {
		return nil, nil
	}
	if ents, ok := s.cache.get(s.regionID, lo, hi, maxSize); ok {
		return ents, nil
	}
	return s.readEntries(lo, hi, maxSize)
}

func (s *peerStorage) readEntries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: logKey(s.regionID, lo),
		UpperBound: logKey(s.regionID, hi),
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var ents []*pb.Entry
	var size uint64
	next := lo
	for valid := it.First(); valid; valid = it.Next() {
		idx := logIndexFromKey(it.Key())
		if idx != next {
			return nil, fmt.Errorf("raftstore: region %d: log hole: want entry %d, found %d", s.regionID, next, idx)
		}
		e, err := decodeEntry(idx, it.Value())
		if err != nil {
			return nil, err
		}
		size += uint64(len(e.GetData())) + 24
		if len(ents) > 0 && size > maxSize {
			break
		}
		ents = append(ents, e)
		next++
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if len(ents) == 0 {
		return nil, fmt.Errorf("raftstore: region %d: entries [%d, %d) missing from pebble", s.regionID, lo, hi)
	}
	return ents, nil
}

func (s *peerStorage) Snapshot() (*pb.Snapshot, error) {
	if s.snapshot == nil {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	return s.snapshot()
}

// encodeEntry is the value of a log key: uvarint(term) type data. The index
// is in the key.
func encodeEntry(dst []byte, e *pb.Entry) []byte {
	dst = binary.AppendUvarint(dst, e.GetTerm())
	dst = append(dst, byte(e.GetType()))
	return append(dst, e.GetData()...)
}

func decodeEntry(index uint64, v []byte) (*pb.Entry, error) {
	term, n := binary.Uvarint(v)
	if n <= 0 || len(v) < n+1 {
		return nil, fmt.Errorf("raftstore: corrupt log entry %d", index)
	}
	typ := pb.EntryType(v[n])
	data := v[n+1:]
	var d []byte
	if len(data) > 0 {
		d = append([]byte(nil), data...)
	}
	return &pb.Entry{Term: new(term), Index: new(index), Type: typ.Enum(), Data: d}, nil
}

// append writes entries to wb (replacing any conflicting suffix) and updates
// the in-memory view. The caller commits wb before raft learns the entries
// are stable (Advance).
func (s *peerStorage) append(wb *pebble.Batch, ents []*pb.Entry) {
	if len(ents) == 0 {
		return
	}
	first := ents[0].GetIndex()
	if first <= s.truncIndex {
		panic(fmt.Sprintf("raftstore: region %d: appending entry %d at or below truncated index %d", s.regionID, first, s.truncIndex))
	}
	maxLen := 0
	for _, e := range ents {
		maxLen = max(maxLen, len(e.GetData()))
	}
	buf := make([]byte, 0, maxLen+16)
	key := make([]byte, 0, 18)
	for _, e := range ents {
		buf = encodeEntry(buf[:0], e)
		key = appendLogKey(key[:0], s.regionID, e.GetIndex())
		if err := wb.Set(key, buf, nil); err != nil {
			panic(err)
		}
	}
	last := ents[len(ents)-1]
	if last.GetIndex() < s.lastIndex {
		// A leader overwrote our suffix: drop what follows the new tail.
		if err := wb.DeleteRange(logKey(s.regionID, last.GetIndex()+1), logKey(s.regionID, s.lastIndex+1), nil); err != nil {
			panic(err)
		}
	}
	s.lastIndex, s.lastTerm = last.GetIndex(), last.GetTerm()
	s.cache.append(s.regionID, ents)
}

func (s *peerStorage) setHardState(wb *pebble.Batch, hs *pb.HardState) {
	if s.noteHardState(hs) {
		mustSetProto(wb, hardStateKey(s.regionID), hs)
	}
}

// noteHardState keeps hs in memory only; it reports whether hs is not empty.
func (s *peerStorage) noteHardState(hs *pb.HardState) bool {
	if raft.IsEmptyHardState(hs) {
		return false
	}
	s.hardState = proto.Clone(hs).(*pb.HardState)
	return true
}

// truncateTo writes the truncation of the log up to index into wb. The entry
// at index must exist (truncIndex < index <= appliedIndex).
func (s *peerStorage) truncateTo(wb *pebble.Batch, index uint64) error {
	if index <= s.truncIndex || index > s.appliedIndex {
		panic(fmt.Sprintf("raftstore: region %d: truncate to %d outside (%d, %d]", s.regionID, index, s.truncIndex, s.appliedIndex))
	}
	term, err := s.Term(index)
	if err != nil {
		return err
	}
	if err := wb.DeleteRange(logKey(s.regionID, s.truncIndex+1), logKey(s.regionID, index+1), nil); err != nil {
		return err
	}
	mustSetProto(wb, truncatedStateKey(s.regionID), &rspb.RaftTruncatedState{Index: index, Term: term})
	return nil
}

// truncated records a committed truncation in memory.
func (s *peerStorage) truncated(index uint64, term uint64) {
	s.truncIndex, s.truncTerm = index, term
	s.cache.truncateTo(s.regionID, index)
}

func mustSetProto(wb *pebble.Batch, key []byte, m proto.Message) {
	v, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	if err := wb.Set(key, v, nil); err != nil {
		panic(err)
	}
}

// getProto reads key into m; found is false when the key is absent.
func getProto(r pebble.Reader, key []byte, m proto.Message) (found bool, err error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	return true, proto.Unmarshal(v, m)
}

// loadPeerStorage reads a region's raft state from pebble. rs is its
// RegionLocalState (nil for an uninitialized peer that has only raft state).
func loadPeerStorage(db *pebble.DB, cache *entryCache, regionID uint64, rs *rspb.RegionLocalState) (*peerStorage, error) {
	s := &peerStorage{regionID: regionID, db: db, cache: cache, regionState: rs}
	hs := &pb.HardState{}
	if ok, err := getProto(db, hardStateKey(regionID), hs); err != nil {
		return nil, err
	} else if ok {
		s.hardState = hs
	}
	ts := &rspb.RaftTruncatedState{}
	if _, err := getProto(db, truncatedStateKey(regionID), ts); err != nil {
		return nil, err
	}
	s.truncIndex, s.truncTerm = ts.GetIndex(), ts.GetTerm()
	as := &rspb.RaftApplyState{}
	if _, err := getProto(db, applyStateKey(regionID), as); err != nil {
		return nil, err
	}
	s.appliedIndex, s.appliedTerm = as.GetAppliedIndex(), as.GetAppliedTerm()
	s.smState = as.GetStateMachine()
	if s.appliedIndex < s.truncIndex {
		return nil, fmt.Errorf("raftstore: region %d: applied index %d below truncated index %d", regionID, s.appliedIndex, s.truncIndex)
	}

	s.lastIndex, s.lastTerm = s.truncIndex, s.truncTerm
	it, err := db.NewIter(&pebble.IterOptions{
		LowerBound: logKey(regionID, 0),
		UpperBound: logKey(regionID, math.MaxUint64),
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	if it.Last() {
		idx := logIndexFromKey(it.Key())
		if idx > s.truncIndex {
			t, _ := binary.Uvarint(it.Value())
			s.lastIndex, s.lastTerm = idx, t
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if c := s.hardState.GetCommit(); c > s.lastIndex {
		return nil, fmt.Errorf("raftstore: region %d: commit %d beyond last index %d", regionID, c, s.lastIndex)
	}
	if s.hardState != nil && s.hardState.GetCommit() < s.truncIndex {
		// Entries up to the truncated index are committed by definition;
		// an older hard state written by an uninitialized replica a split
		// replaced (versions before 2026-12-02) can say less.
		s.hardState.Commit = new(s.truncIndex)
	}
	return s, nil
}
