package faultfs

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// A synced pebble write waits the delay; with none set it does not.
func TestSyncWaitsTheDelay(t *testing.T) {
	fs := New(vfs.NewMem())
	db, err := pebble.Open("db", &pebble.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const delay = 200 * time.Millisecond
	fs.SetSyncDelay(delay)
	start := time.Now()
	if err := db.Set([]byte("k"), []byte("v"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < delay {
		t.Fatalf("a synced write took %v with a sync delay of %v", took, delay)
	}
	fs.SetSyncDelay(0)
	if fs.SyncDelay() != 0 {
		t.Fatal("the delay did not clear")
	}
	// Unsynced writes never wait.
	fs.SetSyncDelay(5 * time.Second)
	start = time.Now()
	if err := db.Set([]byte("k2"), []byte("v"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= 5*time.Second {
		t.Fatalf("an unsynced write took %v", took)
	}
	fs.SetSyncDelay(0)
}

// Clearing the delay releases a sync already waiting on it.
func TestClearingReleasesWaitingSyncs(t *testing.T) {
	fs := New(vfs.NewMem())
	f, err := fs.Create("f", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fs.SetSyncDelay(time.Hour)
	done := make(chan error, 1)
	go func() { done <- f.Sync() }()
	// However the clear lands (before the sync looked at the delay, or
	// while it waits), the sync returns.
	fs.SetSyncDelay(0)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a sync waited on a delay that was cleared")
	}
}

func TestParseDelay(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, " \n": 0, "750ms\n": 750 * time.Millisecond, "2s": 2 * time.Second} {
		if got, err := ParseDelay(in); err != nil || got != want {
			t.Errorf("ParseDelay(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"soon", "-1s", "5"} {
		if _, err := ParseDelay(in); err == nil {
			t.Errorf("ParseDelay(%q) accepted", in)
		}
	}
}

// The control file sets the delay while it exists; a bad one is reported
// once and changes nothing; removing it clears the delay.
func TestFollowControlFile(t *testing.T) {
	fs := New(vfs.NewMem())
	path := filepath.Join(t.TempDir(), "sync-delay")
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var errs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		fs.Follow(ctx, path, 5*time.Millisecond, func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() })
	}()
	defer func() { cancel(); <-done }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("300ms\n")
	waitFor("the delay to be set", func() bool { return fs.SyncDelay() == 300*time.Millisecond })
	write("not a duration")
	nerrs := func() int { mu.Lock(); defer mu.Unlock(); return len(errs) }
	waitFor("the bad file to be reported", func() bool { return nerrs() == 1 })
	// The polls that read the same bad content again report nothing new
	// (counted at the end).
	write("1s")
	waitFor("the delay to change", func() bool { return fs.SyncDelay() == time.Second })
	write("still not")
	waitFor("the second bad file to be reported", func() bool { return nerrs() == 2 })
	if fs.SyncDelay() != time.Second {
		t.Fatalf("a bad file changed the delay to %v", fs.SyncDelay())
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor("the delay to clear", func() bool { return fs.SyncDelay() == 0 })
	if n := nerrs(); n != 2 {
		t.Fatalf("%d errors reported, want 2", n)
	}
}
