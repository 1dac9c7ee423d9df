package robustness

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestRobustnessInProcessCrash is TestRobustness's traffic and checks on a
// cluster running in the test's process (inprocess.go), whose stores sit
// on pebble's crashable in-memory file system, so a store can crash for
// real: crash-store cuts a store off from everything, clones its file
// system as a crash would leave it (all it synced, a part of what it did
// not), and starts it again on the clone. An acknowledged write that was
// not synced on a quorum is lost that way, and the checks find it. The
// other faults (kill-store keeping everything, leader transfers, splits,
// merges, replica moves, the proxies' cuts and delays between stores,
// stall-disk) run in the same schedule, so crashes meet them. Everything
// it started must be gone once it ends.
func TestRobustnessInProcessCrash(t *testing.T) {
	checkNoGoroutinesLeft(t)
	runRobustness(t, inprocFaults, startInProcess)
}

// checkNoGoroutinesLeft fails t if, once everything else t set up was
// cleaned up, goroutines running Basalt's code (or the suite's) that t
// started remain after 30 s.
func checkNoGoroutinesLeft(t *testing.T) {
	before := map[string]bool{}
	for _, g := range ourGoroutines() {
		before[goroutineID(g)] = true
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			var left strings.Builder
			for _, g := range ourGoroutines() {
				if !before[goroutineID(g)] {
					left.WriteString("\n")
					left.WriteString(g)
				}
			}
			if left.Len() == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines left running 30 s after the test:%s", left.String())
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// ourGoroutines is the stacks of the goroutines running Basalt's code,
// but the caller's and the tests' own.
func ourGoroutines() []string {
	buf := make([]byte, 16<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i > 0 && strings.Contains(g, "github.com/basaltdb/basalt/") && !strings.Contains(g, "testing.tRunner") {
			out = append(out, g)
		}
	}
	return out
}

// goroutineID is the "goroutine N" a stack starts with.
func goroutineID(stack string) string {
	id, _, _ := strings.Cut(stack, " [")
	return id
}
