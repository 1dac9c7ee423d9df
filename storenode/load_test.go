package storenode

import (
	"fmt"
	"testing"
	"time"

	"github.com/basaltdb/basalt/proto/kvpb"
)

func keys(format string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte(fmt.Sprintf(format, i))
	}
	return out
}

func repeat(key string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte(key)
	}
	return out
}

// The split key is the median sample, and only when it spreads the
// requests: a region busy on one key stays whole.
func TestLoadSplitKey(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples [][]byte
		want    string
	}{
		{"too few samples", keys("k%02d", 3), ""},
		{"spread keys split at the median", keys("k%02d", 40), "k20"},
		{"one hot key", append(repeat("hot", 30), []byte("a"), []byte("z")), ""},
		{"two hot keys split between them", append(repeat("a", 20), repeat("b", 20)...), "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(loadSplitKey(tc.samples)); got != tc.want {
				t.Fatalf("split key %q, want %q", got, tc.want)
			}
		})
	}
}

// A region is split only after Duration of seconds each over the
// threshold; a quiet second restarts the count.
func TestBusySecondsBeforeSplit(t *testing.T) {
	cfg := LoadSplitConfig{QPSThreshold: 100, Duration: 3 * time.Second}
	tr := newLoadTracker()
	second := func(requests int) []byte {
		for i := 0; i < requests; i++ {
			tr.recordRead(7, []byte(fmt.Sprintf("k%04d", i)), nil)
		}
		return tr.get(7).busySecond(cfg, time.Second)
	}
	for i, tc := range []struct {
		requests int
		split    bool
	}{{150, false}, {150, false}, {50, false}, {150, false}, {150, false}, {150, true}, {150, false}} {
		if key := second(tc.requests); (key != nil) != tc.split {
			t.Fatalf("second %d (%d requests): split key %q, want a split: %v", i, tc.requests, key, tc.split)
		}
	}
}

// Reservoir sampling keeps a uniform sample: with keys spread evenly, the
// median sample lands near the middle of the key space.
func TestLoadSamplesAreUniform(t *testing.T) {
	tr := newLoadTracker()
	l := tr.get(1)
	var all [][]byte
	for s := 0; s < 10; s++ {
		for i := 0; i < 10000; i++ {
			l.sample([]byte(fmt.Sprintf("k%05d", i)))
		}
		n, samples := l.takeSecond()
		if n != 10000 || len(samples) != loadSamplesPerSecond {
			t.Fatalf("second %d: %d requests and %d samples", s, n, len(samples))
		}
		all = append(all, samples...)
	}
	key := string(loadSplitKey(all))
	if key < "k02500" || key > "k07500" {
		t.Fatalf("median of 200 uniform samples over k00000..k09999 is %q", key)
	}
}

// A heartbeat reports the traffic since the last one; one sent sooner
// than the minimum interval repeats the last report.
func TestTakeFlow(t *testing.T) {
	tr := newLoadTracker()
	start := tr.get(3).lastTake
	tr.recordWrite(3, &kvpb.WriteCommand{Op: &kvpb.WriteCommand_Put{Put: &kvpb.PutRequest{Key: []byte("k"), Value: []byte("vvv")}}})
	tr.recordRead(3, []byte("k"), []*kvpb.KeyValue{{Key: []byte("k"), Value: []byte("vvv")}, {Key: []byte("l"), Value: []byte("v")}})
	f := tr.takeFlow(3, start.Add(10*time.Second), time.Second)
	if f != (flow{bytesWritten: 4, keysWritten: 1, bytesRead: 6, keysRead: 2, seconds: 10}) {
		t.Fatalf("first report %+v", f)
	}
	tr.recordRead(3, []byte("k"), nil)
	if again := tr.takeFlow(3, start.Add(10*time.Second+time.Millisecond), time.Second); again != f {
		t.Fatalf("a report right after another is %+v, want the last one again %+v", again, f)
	}
	if next := tr.takeFlow(3, start.Add(12*time.Second), time.Second); next != (flow{keysRead: 1, seconds: 2}) {
		t.Fatalf("next report %+v", next)
	}
}
