package raftstore

import (
	"github.com/cockroachdb/pebble/v2"

	"github.com/basaltdb/basalt/proto/metapb"
)

// StateMachine is the replicated state the regions of a store apply their
// logs to (storenode's MVCC). One instance serves every region. The raftstore
// calls it from its workers, several regions at a time, never two calls for
// the same region at once.
type StateMachine interface {
	// DataSpans maps the user key range [start, end) (end empty = unbounded)
	// to the sorted, non-overlapping pebble spans holding its data. Snapshots
	// copy these spans and destroying a replica clears them.
	DataSpans(start, end []byte) []Span

	// Apply applies one committed command of a region. It must be
	// deterministic: every replica applies the same commands in the same
	// order and must reach the same state. Writes go to ab, which also holds
	// the applied index; reads through ab see the writes of earlier commands
	// of the same round. The return value is delivered to the proposer when
	// the command was proposed on this store; errors that are outcomes of the
	// command (a failed compare, a rejected revision) belong in the result.
	Apply(ab *ApplyBatch, cmd Command) any

	// RegionChanged tells the state machine that a region's descriptor
	// changed on this store: created (bootstrap, split, snapshot, restart),
	// changed (conf change, split, merge), or destroyed (region is nil).
	// state is the region's state-machine state (see Command.State). Called
	// from the worker after the change is committed to pebble, or, for the
	// regions loaded at start, from Start.
	RegionChanged(regionID uint64, region *metapb.Region, state []byte)

	// MergeState returns the state-machine state of a region that absorbed
	// another in a merge, from the two regions' states. Deterministic.
	MergeState(target, source []byte) []byte
}

// DataReplacedNotifier is implemented by a state machine that keeps
// in-memory indexes over its data: DataReplaced is called after a snapshot
// replaced the data of region's range with data that never went through
// Apply on this store (on the worker, or from NewStore for a snapshot a
// crash interrupted).
type DataReplacedNotifier interface {
	DataReplaced(region *metapb.Region)
}

// Command is a committed user command.
type Command struct {
	RegionID uint64
	// Region is the descriptor the command applies under. Read only.
	Region *metapb.Region
	Index  uint64
	Term   uint64
	// Data is the payload given to Propose. The state machine must not keep
	// it past the call: it aliases the log entry.
	Data []byte
	// State is the region's state-machine state, opaque to the raftstore:
	// what the previous command left. Apply may replace *State (never
	// mutate the old slice in place). It is persisted with the applied
	// index, travels with snapshots, and a region created by a split
	// starts with its parent's.
	State *[]byte
}

// ApplyBatch is one round's apply batch: an indexed pebble batch committed
// (unsynced) after every command of the round was applied, followed by the
// callbacks registered with AfterCommit.
type ApplyBatch struct {
	*pebble.Batch
	afterCommit []func()
}

// AfterCommit registers fn to run after the batch is committed to pebble
// (for example, to publish watch events). fn runs on the worker; keep it short.
func (ab *ApplyBatch) AfterCommit(fn func()) { ab.afterCommit = append(ab.afterCommit, fn) }

// NewApplyBatch wraps an indexed batch (state machine tests apply commands
// the way the worker does).
func NewApplyBatch(b *pebble.Batch) *ApplyBatch { return &ApplyBatch{Batch: b} }

// Commit commits the batch (unsynced, as apply batches are) and runs the
// AfterCommit callbacks. It closes the batch.
func (ab *ApplyBatch) Commit() {
	if ab.Empty() {
		_ = ab.Close()
	} else {
		mustCommit(ab.Batch, pebble.NoSync)
	}
	for _, fn := range ab.afterCommit {
		fn()
	}
	ab.afterCommit = nil
}
