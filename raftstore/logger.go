package raftstore

import (
	"fmt"
	"log/slog"

	"go.etcd.io/raft/v3"
)

var sprintf = fmt.Sprintf

// raftLog adapts raft's logger to slog. raft logs every election and
// conf change at Info; at thousands of regions that is noise, so Info goes to
// Debug.
type raftLog struct{}

var raftLogger raft.Logger = raftLog{}

func (raftLog) Debug(v ...any) { slog.Debug(fmt.Sprint(v...), "component", "raft") }
func (raftLog) Debugf(format string, v ...any) {
	slog.Debug(fmt.Sprintf(format, v...), "component", "raft")
}
func (raftLog) Info(v ...any) { slog.Debug(fmt.Sprint(v...), "component", "raft") }
func (raftLog) Infof(format string, v ...any) {
	slog.Debug(fmt.Sprintf(format, v...), "component", "raft")
}
func (raftLog) Warning(v ...any) { slog.Warn(fmt.Sprint(v...), "component", "raft") }
func (raftLog) Warningf(format string, v ...any) {
	slog.Warn(fmt.Sprintf(format, v...), "component", "raft")
}
func (raftLog) Error(v ...any) { slog.Error(fmt.Sprint(v...), "component", "raft") }
func (raftLog) Errorf(format string, v ...any) {
	slog.Error(fmt.Sprintf(format, v...), "component", "raft")
}
func (raftLog) Fatal(v ...any)                 { panic(fmt.Sprint(v...)) }
func (raftLog) Fatalf(format string, v ...any) { panic(fmt.Sprintf(format, v...)) }
func (raftLog) Panic(v ...any)                 { panic(fmt.Sprint(v...)) }
func (raftLog) Panicf(format string, v ...any) { panic(fmt.Sprintf(format, v...)) }
