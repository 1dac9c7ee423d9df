package raftstore

import (
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// splittingComparer stands in for the state machine's comparer: bytewise
// order under another name, with a Split.
var splittingComparer = func() *pebble.Comparer {
	c := *pebble.DefaultComparer
	c.Name = "test.SplittingComparator"
	c.Split = func(k []byte) int { return len(k) }
	return &c
}()

// An engine keeps the comparer its database was made with: a database made
// bytewise (before the state machine had its own comparer) reopens bytewise
// with its data, a new one takes the comparer asked for, and one made with
// a comparer this binary lacks is refused with its name.
func TestEngineKeepsTheComparerItWasMadeWith(t *testing.T) {
	fs := vfs.NewMem()
	open := func(dir string, cmp *pebble.Comparer) *Engine {
		t.Helper()
		eng, err := OpenEngineWith(dir, fs, EngineOptions{Comparer: cmp, CacheBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return eng
	}
	old := open("/old", nil)
	if err := old.DB.Set([]byte("zk"), []byte("v"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	old.Close()
	reopened := open("/old", splittingComparer)
	if reopened.Opts.Comparer != pebble.DefaultComparer {
		t.Fatalf("a bytewise database reopened with %q", reopened.Opts.Comparer.Name)
	}
	if v, closer, err := reopened.DB.Get([]byte("zk")); err != nil || string(v) != "v" {
		t.Fatalf("read after reopening: %q %v", v, err)
	} else {
		closer.Close()
	}
	reopened.Close()

	// One whose OPTIONS file is missing (its binary stopped between the
	// manifest and the OPTIONS file) is bytewise when its manifest says so.
	desc, err := pebble.Peek("/old/db", fs)
	if err != nil || desc.OptionsFilename == "" {
		t.Fatalf("peek: %+v %v", desc, err)
	}
	if err := fs.Remove(desc.OptionsFilename); err != nil {
		t.Fatal(err)
	}
	unnamed := open("/old", splittingComparer)
	if unnamed.Opts.Comparer != pebble.DefaultComparer {
		t.Fatalf("a bytewise database without OPTIONS reopened with %q", unnamed.Opts.Comparer.Name)
	}
	unnamed.Close()

	fresh := open("/new", splittingComparer)
	if fresh.Opts.Comparer != splittingComparer || fresh.Opts.Levels[0].FilterPolicy == pebble.NoFilterPolicy {
		t.Fatalf("a new database got %q, filter %v", fresh.Opts.Comparer.Name, fresh.Opts.Levels[0].FilterPolicy)
	}
	fresh.Close()
	again := open("/new", splittingComparer)
	if again.Opts.Comparer != splittingComparer {
		t.Fatalf("reopened with %q", again.Opts.Comparer.Name)
	}
	again.Close()

	_, err = OpenEngineWith("/new", fs, EngineOptions{CacheBytes: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), splittingComparer.Name) {
		t.Fatalf("a database made with a comparer the binary lacks: %v", err)
	}
}
