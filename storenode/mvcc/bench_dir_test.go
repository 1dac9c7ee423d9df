package mvcc

import "os"

func makeBenchDir() (string, error) { return os.MkdirTemp("", "basalt-mvcc-bench-") }
