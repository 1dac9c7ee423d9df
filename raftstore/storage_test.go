package raftstore

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/basaltdb/basalt/proto/metapb"
)

func ent(index, term uint64, data string) *pb.Entry {
	return &pb.Entry{Index: new(index), Term: new(term), Type: pb.EntryNormal.Enum(), Data: []byte(data)}
}

func TestEntryCacheEvictsWholeRegionsLeastRecentFirst(t *testing.T) {
	c := newEntryCache(3 * entrySize(ent(1, 1, "xxxxxxxx")))
	c.append(1, []*pb.Entry{ent(1, 1, "xxxxxxxx")})
	c.append(2, []*pb.Entry{ent(1, 1, "xxxxxxxx")})
	c.append(3, []*pb.Entry{ent(1, 1, "xxxxxxxx")})
	c.append(2, []*pb.Entry{ent(2, 1, "xxxxxxxx")}) // over the limit: region 1 goes
	if _, ok := c.get(1, 1, 2, 1<<20); ok {
		t.Fatal("least recently appended region survived eviction")
	}
	if got, ok := c.get(2, 1, 3, 1<<20); !ok || len(got) != 2 {
		t.Fatalf("region 2: %v %v", got, ok)
	}
	if c.size() > c.maxBytes {
		t.Fatalf("cache holds %d bytes over its %d limit", c.size(), c.maxBytes)
	}
	// One region alone over the limit keeps its newest entries.
	c2 := newEntryCache(2 * entrySize(ent(1, 1, "xxxxxxxx")))
	c2.append(9, []*pb.Entry{ent(1, 1, "xxxxxxxx"), ent(2, 1, "xxxxxxxx"), ent(3, 1, "xxxxxxxx"), ent(4, 1, "xxxxxxxx")})
	if _, ok := c2.get(9, 4, 5, 1<<20); !ok {
		t.Fatal("newest entry evicted")
	}
	if c2.size() > c2.maxBytes {
		t.Fatal("over the limit")
	}
}

func TestEntryCacheConflictAndTruncate(t *testing.T) {
	c := newEntryCache(1 << 20)
	c.append(1, []*pb.Entry{ent(5, 1, "a"), ent(6, 1, "b"), ent(7, 1, "c")})
	// A new leader overwrites from 6.
	c.append(1, []*pb.Entry{ent(6, 2, "B")})
	if _, ok := c.get(1, 7, 8, 1<<20); ok {
		t.Fatal("overwritten suffix still cached")
	}
	if tm, ok := c.term(1, 6); !ok || tm != 2 {
		t.Fatalf("term of 6 = %d %v", tm, ok)
	}
	// A gap restarts the run.
	c.append(1, []*pb.Entry{ent(10, 2, "x")})
	if _, ok := c.get(1, 5, 6, 1<<20); ok {
		t.Fatal("run with a gap kept old entries")
	}
	c.truncateTo(1, 10)
	if _, ok := c.get(1, 10, 11, 1<<20); ok {
		t.Fatal("truncated entry still cached")
	}
	// maxSize returns at least one entry.
	c.append(2, []*pb.Entry{ent(1, 1, "aaaa"), ent(2, 1, "bbbb")})
	if got, _ := c.get(2, 1, 3, 1); len(got) != 1 {
		t.Fatalf("maxSize: got %d entries", len(got))
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	b := encodeEnvelope(cmdUser, 42, &metapb.RegionEpoch{Version: 3, ConfVer: 9}, []byte("payload"))
	if id, ok := peekProposalID(b); !ok || id != 42 {
		t.Fatalf("peek: %d %v", id, ok)
	}
	env, err := decodeEnvelope(b)
	if err != nil || env.kind != cmdUser || env.version != 3 || env.confVer != 9 || string(env.payload) != "payload" {
		t.Fatalf("decode: kind %d epoch %d/%d payload %q: %v", env.kind, env.version, env.confVer, env.payload, err)
	}
	if _, err := decodeEnvelope(b[:10]); err == nil {
		t.Fatal("short envelope accepted")
	}
	b[0] = 7
	if _, err := decodeEnvelope(b); err == nil {
		t.Fatal("unknown version accepted")
	}
	if _, ok := peekProposalID(nil); ok {
		t.Fatal("empty entry has a proposal ID")
	}
}

// peerStorage answers raft's questions from pebble and the cache alike, and
// a reload from pebble sees the same log.
func TestPeerStorageLog(t *testing.T) {
	eng, err := OpenEngine("/s", vfs.NewMem())
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	cache := newEntryCache(1 << 20)
	s := &peerStorage{regionID: 7, db: eng.DB, cache: cache, truncIndex: 5, truncTerm: 5, lastIndex: 5, lastTerm: 5}
	wb := eng.DB.NewBatch()
	var ents []*pb.Entry
	for i := uint64(6); i <= 20; i++ {
		ents = append(ents, ent(i, 6, "d"))
	}
	s.append(wb, ents)
	s.setHardState(wb, &pb.HardState{Term: new(uint64(6)), Commit: new(uint64(14))})
	mustCommit(wb, pebble.Sync)
	// Conflict: a new leader rewrites from 15 with a shorter log.
	wb = eng.DB.NewBatch()
	s.append(wb, []*pb.Entry{ent(15, 7, "n"), ent(16, 7, "n")})
	mustCommit(wb, pebble.Sync)

	check := func(s *peerStorage, what string) {
		t.Helper()
		if li, _ := s.LastIndex(); li != 16 {
			t.Fatalf("%s: last index %d", what, li)
		}
		if fi, _ := s.FirstIndex(); fi != 6 {
			t.Fatalf("%s: first index %d", what, fi)
		}
		if tm, _ := s.Term(15); tm != 7 {
			t.Fatalf("%s: term(15)=%d", what, tm)
		}
		if tm, _ := s.Term(5); tm != 5 {
			t.Fatalf("%s: term(5)=%d", what, tm)
		}
		if _, err := s.Term(4); !errors.Is(err, raft.ErrCompacted) {
			t.Fatalf("%s: term(4): %v", what, err)
		}
		if _, err := s.Entries(6, 18, 1<<20); !errors.Is(err, raft.ErrUnavailable) {
			t.Fatalf("%s: entries past the end: %v", what, err)
		}
		got, err := s.Entries(6, 17, 1<<20)
		if err != nil || len(got) != 11 || got[10].GetTerm() != 7 || got[0].GetTerm() != 6 {
			t.Fatalf("%s: entries: %d %v", what, len(got), err)
		}
	}
	check(s, "live")
	cache.drop(7)
	check(s, "from pebble")
	re, err := loadPeerStorage(eng.DB, cache, 7, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The reload has no truncated state written, so its log starts at 1;
	// the entries and hard state must still match.
	if re.lastIndex != 16 || re.lastTerm != 7 || re.hardState.GetCommit() != 14 {
		t.Fatalf("reload: last %d/%d commit %d", re.lastIndex, re.lastTerm, re.hardState.GetCommit())
	}

	// Truncation removes entries and moves the first index.
	s.appliedIndex = 16
	wb = eng.DB.NewBatch()
	if err := s.truncateTo(wb, 10); err != nil {
		t.Fatal(err)
	}
	mustCommit(wb, pebble.NoSync)
	s.truncated(10, 6)
	if _, err := s.Entries(10, 12, 1<<20); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("truncated entries still readable: %v", err)
	}
	if tm, _ := s.Term(10); tm != 6 {
		t.Fatalf("term at the truncation point: %d", tm)
	}
	if _, closer, err := eng.DB.Get(logKey(7, 9)); err == nil {
		closer.Close()
		t.Fatal("truncated entry still in pebble")
	}
}
