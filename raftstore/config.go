package raftstore

import (
	"errors"
	"runtime"
	"time"
)

// Config tunes a Store. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// StoreID is this store's ID, unique in the cluster. Required.
	StoreID uint64

	// TickInterval is raft's logical clock; elections and heartbeats are
	// multiples of it.
	TickInterval time.Duration
	// ElectionTicks: a follower that hears nothing from its leader for this
	// many ticks (randomized up to twice as many) campaigns.
	ElectionTicks int
	// HeartbeatTicks between leader heartbeats.
	HeartbeatTicks int
	// HibernateTicks: an idle region stops ticking after this many ticks with
	// nothing to do. Zero or negative disables hibernation.
	HibernateTicks int
	// DownPeerTicks: a follower not heard from for this many ticks no longer
	// keeps its region awake.
	DownPeerTicks int
	// LeaseRatio is the leader lease as a fraction of the election timeout.
	// Must be below 1: the lease must end before a new leader can exist.
	LeaseRatio float64

	// Workers is the size of the pool that serves every region.
	Workers int
	// MaxRegionsPerRound bounds how many regions one worker handles in one
	// round (one raft batch with one sync).
	MaxRegionsPerRound int

	// MaxSizePerMsg and MaxInflightMsgs are raft's flow control.
	MaxSizePerMsg   uint64
	MaxInflightMsgs int
	// MaxEntryBytes rejects larger proposals with RaftEntryTooLarge.
	MaxEntryBytes int
	// MaxUncommittedBytes bounds a leader's uncommitted log (raft drops
	// proposals beyond it; they fail with ServerBusy).
	MaxUncommittedBytes uint64

	// EntryCacheBytes bounds the store-wide cache of recent log entries.
	EntryCacheBytes int64
	// LogGCThreshold: a region's log is truncated once it holds this many
	// applied entries.
	LogGCThreshold uint64
	// LogMaxLagEntries: a leader keeps entries for a lagging follower until
	// the log holds this many; beyond it the follower gets a snapshot.
	LogMaxLagEntries uint64
	// MergeMaxLogGap: a source region is frozen for a merge only while
	// each of its replicas has matched the leader's log to within this
	// many entries of the commit index (a replica further behind, or one
	// waiting for a snapshot, would keep the frozen source from taking
	// writes until it caught up).
	MergeMaxLogGap uint64

	// SnapshotChunkBytes is the size of one snapshot stream chunk.
	SnapshotChunkBytes int
	// MaxConcurrentSnapshots sent at once by this store.
	MaxConcurrentSnapshots int
	// SnapshotTTL: a generated snapshot not sent within this time is dropped.
	SnapshotTTL time.Duration
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		TickInterval:           100 * time.Millisecond,
		ElectionTicks:          10,
		HeartbeatTicks:         1,
		HibernateTicks:         20,
		DownPeerTicks:          100,
		LeaseRatio:             0.8,
		Workers:                max(2, runtime.GOMAXPROCS(0)),
		MaxRegionsPerRound:     256,
		MaxSizePerMsg:          1 << 20,
		MaxInflightMsgs:        256,
		MaxEntryBytes:          8 << 20,
		MaxUncommittedBytes:    64 << 20,
		EntryCacheBytes:        64 << 20,
		LogGCThreshold:         1024,
		LogMaxLagEntries:       64 * 1024,
		MergeMaxLogGap:         128,
		SnapshotChunkBytes:     1 << 20,
		MaxConcurrentSnapshots: 4,
		SnapshotTTL:            5 * time.Minute,
	}
}

func (c *Config) fillDefaults() {
	d := DefaultConfig()
	setDur := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	setInt := func(v *int, dv int) {
		if *v == 0 {
			*v = dv
		}
	}
	setDur(&c.TickInterval, d.TickInterval)
	setInt(&c.ElectionTicks, d.ElectionTicks)
	setInt(&c.HeartbeatTicks, d.HeartbeatTicks)
	setInt(&c.HibernateTicks, d.HibernateTicks)
	setInt(&c.DownPeerTicks, d.DownPeerTicks)
	if c.LeaseRatio == 0 {
		c.LeaseRatio = d.LeaseRatio
	}
	setInt(&c.Workers, d.Workers)
	setInt(&c.MaxRegionsPerRound, d.MaxRegionsPerRound)
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = d.MaxSizePerMsg
	}
	setInt(&c.MaxInflightMsgs, d.MaxInflightMsgs)
	setInt(&c.MaxEntryBytes, d.MaxEntryBytes)
	if c.MaxUncommittedBytes == 0 {
		c.MaxUncommittedBytes = d.MaxUncommittedBytes
	}
	if c.EntryCacheBytes == 0 {
		c.EntryCacheBytes = d.EntryCacheBytes
	}
	if c.LogGCThreshold == 0 {
		c.LogGCThreshold = d.LogGCThreshold
	}
	if c.LogMaxLagEntries == 0 {
		c.LogMaxLagEntries = d.LogMaxLagEntries
	}
	if c.MergeMaxLogGap == 0 {
		c.MergeMaxLogGap = d.MergeMaxLogGap
	}
	setInt(&c.SnapshotChunkBytes, d.SnapshotChunkBytes)
	setInt(&c.MaxConcurrentSnapshots, d.MaxConcurrentSnapshots)
	setDur(&c.SnapshotTTL, d.SnapshotTTL)
}

func (c *Config) validate() error {
	switch {
	case c.StoreID == 0:
		return errors.New("raftstore: config: StoreID is required")
	case c.HeartbeatTicks >= c.ElectionTicks:
		return errors.New("raftstore: config: HeartbeatTicks must be below ElectionTicks")
	case c.LeaseRatio <= 0 || c.LeaseRatio >= 1:
		return errors.New("raftstore: config: LeaseRatio must be in (0, 1)")
	case c.HibernateTicks > 0 && c.HibernateTicks <= c.HeartbeatTicks:
		return errors.New("raftstore: config: HibernateTicks must exceed HeartbeatTicks so followers learn the commit index first")
	}
	return nil
}

// leaseDuration is how long after a quorum acknowledged the leader no other
// leader can exist, minus a safety margin.
func (c *Config) leaseDuration() time.Duration {
	return time.Duration(float64(time.Duration(c.ElectionTicks)*c.TickInterval) * c.LeaseRatio)
}
