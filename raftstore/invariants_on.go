//go:build invariants

package raftstore

// invariants turns on expensive consistency checks after every round. Tests
// build with -tags invariants.
const invariants = true
