// Package faultfs makes a store's disk slow on demand, for fault-injection
// tests: while a control file names a duration, every sync of a file of the
// store's pebble database (the raft log's fsync, the WAL's, a flushed
// table's) waits that long before it syncs. A disk that stalls is how a
// failing device or a saturated volume looks to the process; the raft
// worker that syncs blocks, and the other replicas must carry on without
// it.
//
// Only syncs wait: that is where a stalled device blocks a writer (writes
// land in the page cache), and it is the one call every durable write of
// the store goes through.
package faultfs

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// FS is a vfs.FS whose files' syncs wait the current sync delay first.
type FS struct {
	vfs.FS
	delay atomic.Int64 // nanoseconds

	mu sync.Mutex
	// changed is closed (and replaced) when the delay changes, releasing
	// the syncs waiting on the old one: a healed disk (or a mistyped
	// "1h" put right) frees its writers at once.
	changed chan struct{}
}

// New wraps inner.
func New(inner vfs.FS) *FS { return &FS{FS: inner, changed: make(chan struct{})} }

// SetSyncDelay sets how long every sync waits from now on (0: none).
// Syncs waiting on the previous delay go on at once.
func (fs *FS) SetSyncDelay(d time.Duration) {
	d = max(d, 0)
	if fs.delay.Swap(int64(d)) == int64(d) {
		return
	}
	fs.mu.Lock()
	close(fs.changed)
	fs.changed = make(chan struct{})
	fs.mu.Unlock()
}

// SyncDelay is the current delay.
func (fs *FS) SyncDelay() time.Duration { return time.Duration(fs.delay.Load()) }

func (fs *FS) wait() {
	if fs.delay.Load() <= 0 {
		return
	}
	fs.mu.Lock()
	changed := fs.changed
	fs.mu.Unlock()
	// Read after the channel: a change between the two closes this one.
	d := fs.delay.Load()
	if d <= 0 {
		return
	}
	t := time.NewTimer(time.Duration(d))
	defer t.Stop()
	select {
	case <-t.C:
	case <-changed:
	}
}

func (fs *FS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &file{File: f, fs: fs}, nil
}

func (fs *FS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, c))
}

func (fs *FS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.Open(name, opts...))
}

func (fs *FS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, c, opts...))
}

func (fs *FS) OpenDir(name string) (vfs.File, error) { return fs.wrap(fs.FS.OpenDir(name)) }

func (fs *FS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, c))
}

// Unwrap returns the wrapped FS (pebble looks through wrappers with it).
func (fs *FS) Unwrap() vfs.FS { return fs.FS }

type file struct {
	vfs.File
	fs *FS
}

func (f *file) Sync() error {
	f.fs.wait()
	return f.File.Sync()
}

func (f *file) SyncData() error {
	f.fs.wait()
	return f.File.SyncData()
}

func (f *file) SyncTo(length int64) (bool, error) {
	f.fs.wait()
	return f.File.SyncTo(length)
}

// ParseDelay reads a control file's content: a Go duration ("750ms"), or
// nothing for no delay.
func ParseDelay(content string) (time.Duration, error) {
	s := strings.TrimSpace(content)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("faultfs: sync delay %q: %w", s, err)
	}
	if d < 0 {
		return 0, fmt.Errorf("faultfs: sync delay %q is negative", s)
	}
	return d, nil
}

// Follow sets fs's sync delay from the file at path every interval until
// ctx ends: the delay the file names while it exists, none once it is
// removed. A file that does not parse leaves the delay as it was and is
// reported once through onError (until its content changes).
func (fs *FS) Follow(ctx context.Context, path string, interval time.Duration, onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	// reported: the failure last reported, so a bad file is reported once
	// and again only when it changes.
	var reported string
	report := func(what string, err error) {
		if what != reported && onError != nil {
			onError(err)
		}
		reported = what
	}
	for {
		b, err := os.ReadFile(path)
		switch {
		case os.IsNotExist(err):
			fs.SetSyncDelay(0)
			reported = ""
		case err != nil:
			report("read: "+err.Error(), err)
		default:
			if d, err := ParseDelay(string(b)); err != nil {
				report("content: "+string(b), err)
			} else {
				fs.SetSyncDelay(d)
				reported = ""
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
