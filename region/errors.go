package region

import (
	"fmt"

	"github.com/basaltdb/basalt/proto/errorpb"
	"github.com/basaltdb/basalt/proto/metapb"
)

// Error is a region error: an expected condition a store reports when it
// cannot serve a request for a region, carrying what the client needs to
// correct its routing. All region errors are retryable after the client
// updates its cache (or backs off, for ServerBusy).
//
// Match a kind with errors.Is(err, region.ErrNotLeader) and read the details
// with errors.As(err, &regionErr) and regionErr.Proto().
type Error struct {
	pb *errorpb.Error
}

// Sentinels for errors.Is. They carry no detail.
var (
	ErrNotLeader             = &Error{pb: &errorpb.Error{Detail: &errorpb.Error_NotLeader{NotLeader: &errorpb.NotLeader{}}}}
	ErrEpochNotMatch         = &Error{pb: &errorpb.Error{Detail: &errorpb.Error_EpochNotMatch{EpochNotMatch: &errorpb.EpochNotMatch{}}}}
	ErrKeyNotInRegion        = &Error{pb: &errorpb.Error{Detail: &errorpb.Error_KeyNotInRegion{KeyNotInRegion: &errorpb.KeyNotInRegion{}}}}
	ErrRegionNotFound        = &Error{pb: &errorpb.Error{Detail: &errorpb.Error_RegionNotFound{RegionNotFound: &errorpb.RegionNotFound{}}}}
	ErrServerBusy            = &Error{pb: &errorpb.Error{Detail: &errorpb.Error_ServerBusy{ServerBusy: &errorpb.ServerBusy{}}}}
	ErrStaleCommand          = &Error{pb: &errorpb.Error{Detail: &errorpb.Error_StaleCommand{StaleCommand: &errorpb.StaleCommand{}}}}
	ErrStoreNotMatch         = &Error{pb: &errorpb.Error{Detail: &errorpb.Error_StoreNotMatch{StoreNotMatch: &errorpb.StoreNotMatch{}}}}
	ErrRaftEntryTooLarge     = &Error{pb: &errorpb.Error{Detail: &errorpb.Error_RaftEntryTooLarge{RaftEntryTooLarge: &errorpb.RaftEntryTooLarge{}}}}
	ErrProposalInMergingMode = &Error{pb: &errorpb.Error{Detail: &errorpb.Error_ProposalInMergingMode{ProposalInMergingMode: &errorpb.ProposalInMergingMode{}}}}
	ErrRegionNotInitialized  = &Error{pb: &errorpb.Error{Detail: &errorpb.Error_RegionNotInitialized{RegionNotInitialized: &errorpb.RegionNotInitialized{}}}}
)

// FromProto wraps a region error received on the wire. It returns nil for nil.
func FromProto(pb *errorpb.Error) *Error {
	if pb == nil {
		return nil
	}
	return &Error{pb: pb}
}

// Proto returns the wire form. Callers must not modify it.
func (e *Error) Proto() *errorpb.Error { return e.pb }

func (e *Error) Error() string {
	if m := e.pb.GetMessage(); m != "" {
		return m
	}
	return e.describe()
}

// Is matches errors of the same kind, so errors.Is(err, ErrNotLeader) holds
// for every NotLeader error whatever its details.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return e.kind() == t.kind()
}

// kind numbers the detail's type; 0 for an error with no detail.
func (e *Error) kind() int {
	switch e.pb.GetDetail().(type) {
	case *errorpb.Error_NotLeader:
		return 1
	case *errorpb.Error_EpochNotMatch:
		return 2
	case *errorpb.Error_KeyNotInRegion:
		return 3
	case *errorpb.Error_RegionNotFound:
		return 4
	case *errorpb.Error_ServerBusy:
		return 5
	case *errorpb.Error_StaleCommand:
		return 6
	case *errorpb.Error_StoreNotMatch:
		return 7
	case *errorpb.Error_RaftEntryTooLarge:
		return 8
	case *errorpb.Error_ProposalInMergingMode:
		return 9
	case *errorpb.Error_RegionNotInitialized:
		return 10
	}
	return 0
}

func (e *Error) describe() string {
	switch d := e.pb.GetDetail().(type) {
	case *errorpb.Error_NotLeader:
		if l := d.NotLeader.GetLeader(); l != nil {
			return fmt.Sprintf("region %d: not leader; leader is peer %d on store %d", d.NotLeader.GetRegionId(), l.GetId(), l.GetStoreId())
		}
		return fmt.Sprintf("region %d: not leader; leader unknown", d.NotLeader.GetRegionId())
	case *errorpb.Error_EpochNotMatch:
		return fmt.Sprintf("region epoch not match; current regions: %s", describeRegions(d.EpochNotMatch.GetCurrentRegions()))
	case *errorpb.Error_KeyNotInRegion:
		k := d.KeyNotInRegion
		return fmt.Sprintf("key %q not in region %d [%q, %q)", k.GetKey(), k.GetRegionId(), k.GetStartKey(), k.GetEndKey())
	case *errorpb.Error_RegionNotFound:
		return fmt.Sprintf("region %d not found on this store", d.RegionNotFound.GetRegionId())
	case *errorpb.Error_ServerBusy:
		return fmt.Sprintf("server busy: %s (retry after %d ms)", d.ServerBusy.GetReason(), d.ServerBusy.GetBackoffMs())
	case *errorpb.Error_StaleCommand:
		return "stale command: lost to a leader change before it committed; retry"
	case *errorpb.Error_StoreNotMatch:
		return fmt.Sprintf("request for store %d reached store %d", d.StoreNotMatch.GetRequestStoreId(), d.StoreNotMatch.GetActualStoreId())
	case *errorpb.Error_RaftEntryTooLarge:
		return fmt.Sprintf("region %d: raft entry of %d bytes is too large", d.RaftEntryTooLarge.GetRegionId(), d.RaftEntryTooLarge.GetEntrySize())
	case *errorpb.Error_ProposalInMergingMode:
		return fmt.Sprintf("region %d is being merged and takes no writes", d.ProposalInMergingMode.GetRegionId())
	case *errorpb.Error_RegionNotInitialized:
		return fmt.Sprintf("region %d is not initialized on this store yet", d.RegionNotInitialized.GetRegionId())
	}
	return "region error"
}

func describeRegions(rs []*metapb.Region) string {
	s := "["
	for i, r := range rs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%d[%q,%q) v%d/c%d", r.GetId(), r.GetStartKey(), r.GetEndKey(),
			r.GetRegionEpoch().GetVersion(), r.GetRegionEpoch().GetConfVer())
	}
	return s + "]"
}

// NotLeader reports that the addressed peer is not the leader of regionID.
// leader may be nil when no leader is known.
func NotLeader(regionID uint64, leader *metapb.Peer) *Error {
	return &Error{pb: &errorpb.Error{Detail: &errorpb.Error_NotLeader{NotLeader: &errorpb.NotLeader{RegionId: regionID, Leader: leader}}}}
}

// EpochNotMatch reports a stale epoch; current holds the regions as known now.
func EpochNotMatch(current ...*metapb.Region) *Error {
	return &Error{pb: &errorpb.Error{Detail: &errorpb.Error_EpochNotMatch{EpochNotMatch: &errorpb.EpochNotMatch{CurrentRegions: current}}}}
}

// KeyNotInRegion reports a key outside r's range.
func KeyNotInRegion(key []byte, r *metapb.Region) *Error {
	return &Error{pb: &errorpb.Error{Detail: &errorpb.Error_KeyNotInRegion{KeyNotInRegion: &errorpb.KeyNotInRegion{
		Key: key, RegionId: r.GetId(), StartKey: r.GetStartKey(), EndKey: r.GetEndKey()}}}}
}

// RegionNotFound reports that this store has no peer of regionID.
func RegionNotFound(regionID uint64) *Error {
	return &Error{pb: &errorpb.Error{Detail: &errorpb.Error_RegionNotFound{RegionNotFound: &errorpb.RegionNotFound{RegionId: regionID}}}}
}

// ServerBusy asks the client to back off.
func ServerBusy(reason string, backoffMs uint64) *Error {
	return &Error{pb: &errorpb.Error{Detail: &errorpb.Error_ServerBusy{ServerBusy: &errorpb.ServerBusy{Reason: reason, BackoffMs: backoffMs}}}}
}

// StaleCommand reports a proposal that was certainly not applied.
func StaleCommand() *Error {
	return &Error{pb: &errorpb.Error{Detail: &errorpb.Error_StaleCommand{StaleCommand: &errorpb.StaleCommand{}}}}
}

// StoreNotMatch reports a request addressed to another store.
func StoreNotMatch(requested, actual uint64) *Error {
	return &Error{pb: &errorpb.Error{Detail: &errorpb.Error_StoreNotMatch{StoreNotMatch: &errorpb.StoreNotMatch{RequestStoreId: requested, ActualStoreId: actual}}}}
}

// RaftEntryTooLarge reports a proposal above the entry size limit.
func RaftEntryTooLarge(regionID, size uint64) *Error {
	return &Error{pb: &errorpb.Error{Detail: &errorpb.Error_RaftEntryTooLarge{RaftEntryTooLarge: &errorpb.RaftEntryTooLarge{RegionId: regionID, EntrySize: size}}}}
}

// ProposalInMergingMode reports a write to a region being merged away.
func ProposalInMergingMode(regionID uint64) *Error {
	return &Error{pb: &errorpb.Error{Detail: &errorpb.Error_ProposalInMergingMode{ProposalInMergingMode: &errorpb.ProposalInMergingMode{RegionId: regionID}}}}
}

// RegionNotInitialized reports a peer still waiting for its first snapshot.
func RegionNotInitialized(regionID uint64) *Error {
	return &Error{pb: &errorpb.Error{Detail: &errorpb.Error_RegionNotInitialized{RegionNotInitialized: &errorpb.RegionNotInitialized{RegionId: regionID}}}}
}
