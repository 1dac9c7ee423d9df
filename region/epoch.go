package region

import "github.com/basaltdb/basalt/proto/metapb"

// Epoch rules. A split or merge bumps version; a membership change bumps
// conf_ver; a merge bumps both. A descriptor supersedes another of the same
// region when its epoch is larger in (version, conf_ver) order.

// IsStale reports whether epoch a is older than b in either component. Two
// descriptors where neither is stale relative to the other are equal.
func IsStale(a, b *metapb.RegionEpoch) bool {
	return a.GetVersion() < b.GetVersion() || a.GetConfVer() < b.GetConfVer()
}

// EpochEqual reports whether a and b are the same epoch.
func EpochEqual(a, b *metapb.RegionEpoch) bool {
	return a.GetVersion() == b.GetVersion() && a.GetConfVer() == b.GetConfVer()
}

// CmdKind names a class of command for the epoch-check table.
type CmdKind int

const (
	CmdWrite          CmdKind = iota // a user write or read served through the log
	CmdRead                          // a read served without the log (ReadIndex or lease)
	CmdChangePeer                    // ConfChange / ConfChangeV2
	CmdSplit                         // BatchSplit
	CmdPrepareMerge                  // PrepareMerge on the source
	CmdCommitMerge                   // CommitMerge on the target
	CmdRollbackMerge                 // RollbackMerge on the source
	CmdTransferLeader                // leader transfer (not in the log)
	CmdCompactLog                    // log truncation
)

// EpochCheck says which epoch components a command must match when proposed
// and when applied, and which it changes.
type EpochCheck struct {
	CheckVersion bool
	CheckConfVer bool
	BumpsVersion bool
	BumpsConfVer bool
}

// epochTable is frozen: entries already in Raft logs were proposed under these
// rules, so changing a row would make replicas of different binaries disagree
// about which entries apply. Add rows for new commands; never edit one.
var epochTable = map[CmdKind]EpochCheck{
	CmdWrite:          {CheckVersion: true},
	CmdRead:           {CheckVersion: true},
	CmdChangePeer:     {CheckConfVer: true, BumpsConfVer: true},
	CmdSplit:          {CheckVersion: true, CheckConfVer: true, BumpsVersion: true},
	CmdPrepareMerge:   {CheckVersion: true, CheckConfVer: true, BumpsVersion: true, BumpsConfVer: true},
	CmdCommitMerge:    {CheckVersion: true, CheckConfVer: true, BumpsVersion: true},
	CmdRollbackMerge:  {CheckVersion: true, CheckConfVer: true, BumpsVersion: true},
	CmdTransferLeader: {CheckVersion: true, CheckConfVer: true},
	CmdCompactLog:     {},
}

// EpochCheckFor returns the row of the epoch-check table for kind.
func EpochCheckFor(kind CmdKind) EpochCheck {
	c, ok := epochTable[kind]
	if !ok {
		panic("region: command kind missing from the epoch-check table")
	}
	return c
}

// CheckEpoch reports whether a command of kind carrying epoch req may run
// against a region whose current epoch is cur.
func CheckEpoch(kind CmdKind, req, cur *metapb.RegionEpoch) bool {
	c := EpochCheckFor(kind)
	if c.CheckVersion && req.GetVersion() != cur.GetVersion() {
		return false
	}
	if c.CheckConfVer && req.GetConfVer() != cur.GetConfVer() {
		return false
	}
	return true
}
