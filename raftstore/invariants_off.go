//go:build !invariants

package raftstore

const invariants = false
