package mvcc

import (
	"os"
	"testing"
)

// TestMain removes the benchmarks' on-disk region (benchRegion), shared by
// every benchmark of the binary, after the last one.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchTR != nil {
		benchTR.m.Wait()
		benchTR.db.Close()
	}
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}
