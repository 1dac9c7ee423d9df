package raftstore

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/metapb"
	rspb "github.com/basaltdb/basalt/proto/raftserverpb"
)

// Engine is a store's single pebble database and the file system it lives
// on. Everything of a store (raft logs, region metadata, state-machine data,
// snapshot files) is in it.
type Engine struct {
	DB   *pebble.DB
	Opts *pebble.Options
	FS   vfs.FS
	Dir  string
}

// EngineOptions tune the pebble database.
type EngineOptions struct {
	// CacheBytes is pebble's block cache (default 256 MiB).
	CacheBytes int64
	// MemTableBytes is the size of one memtable (default 64 MiB); up to
	// four fill and wait for their flush before writes stall.
	MemTableBytes int64
	// Comparer orders the keys of a new database (default pebble's
	// bytewise comparer). One with a Split gets bloom filters of key
	// prefixes in every table. An existing database keeps the comparer it
	// was made with: its name is in the database's OPTIONS file, and the
	// bytewise one is always known; Engine.Opts.Comparer says which.
	Comparer *pebble.Comparer
}

// OpenEngine opens (creating if needed) the pebble database in dir with the
// default options. fs is vfs.Default in production and a (crashable)
// in-memory FS in tests.
func OpenEngine(dir string, fs vfs.FS) (*Engine, error) {
	return OpenEngineWith(dir, fs, EngineOptions{})
}

// OpenEngineWith is OpenEngine with options.
func OpenEngineWith(dir string, fs vfs.FS, eo EngineOptions) (*Engine, error) {
	if eo.CacheBytes <= 0 {
		eo.CacheBytes = 256 << 20
	}
	if eo.MemTableBytes <= 0 {
		eo.MemTableBytes = 64 << 20
	}
	if fs == nil {
		fs = vfs.Default
	}
	dbDir := fs.PathJoin(dir, "db")
	if err := mkdirAllDurable(fs, dbDir); err != nil {
		return nil, err
	}
	cmp, recorded, err := engineComparer(fs, dbDir, eo.Comparer)
	if err != nil {
		return nil, err
	}
	eng, err := openEngineOrdered(dir, dbDir, fs, eo, cmp)
	if err != nil && !recorded && cmp != pebble.DefaultComparer && strings.Contains(err.Error(), "comparer name") {
		// A database that names no comparer in an OPTIONS file (made by a
		// binary that stopped between its manifest and its OPTIONS) and
		// whose manifest names another: one made before the requested
		// comparer, which is bytewise.
		return openEngineOrdered(dir, dbDir, fs, eo, pebble.DefaultComparer)
	}
	return eng, err
}

func openEngineOrdered(dir, dbDir string, fs vfs.FS, eo EngineOptions, cmp *pebble.Comparer) (*Engine, error) {
	cache := pebble.NewCache(eo.CacheBytes)
	defer cache.Unref() // the DB holds its own reference
	opts := &pebble.Options{
		Cache:                       cache,
		FS:                          fs,
		FormatMajorVersion:          pebble.FormatNewest,
		MemTableSize:                uint64(eo.MemTableBytes),
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
		LBaseMaxBytes:               256 << 20,
		Logger:                      quietPebbleLogger{},
		Comparer:                    cmp,
	}
	if cmp != pebble.DefaultComparer {
		// Ten bits per prefix: about 1% false positives. L0 too, where
		// a write-heavy store's recent tables pile up.
		for i := range opts.Levels {
			opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		}
	}
	opts.EnsureDefaults()
	db, err := pebble.Open(dbDir, opts)
	if err != nil {
		return nil, err
	}
	return &Engine{DB: db, Opts: opts, FS: fs, Dir: dir}, nil
}

// engineComparer is the comparer to open the database in dbDir with: the
// one it was created with, or want (default bytewise) for a new one.
// pebble refuses a database whose recorded comparer name differs.
// recorded: the database's OPTIONS file named it (false for a new database,
// and for one with no OPTIONS file).
func engineComparer(fs vfs.FS, dbDir string, want *pebble.Comparer) (cmp *pebble.Comparer, recorded bool, err error) {
	if want == nil {
		want = pebble.DefaultComparer
	}
	desc, err := pebble.Peek(dbDir, fs)
	if err != nil {
		return nil, false, err
	}
	if !desc.Exists || desc.OptionsFilename == "" {
		return want, false, nil
	}
	name, err := recordedComparerName(fs, desc.OptionsFilename)
	if err != nil {
		return nil, false, err
	}
	switch name {
	case want.Name:
		return want, true, nil
	case pebble.DefaultComparer.Name:
		return pebble.DefaultComparer, true, nil
	}
	return nil, false, fmt.Errorf("raftstore: the database in %s was made with comparer %q, which this binary does not have (a store's data opened by PD, or by an older binary?)", dbDir, name)
}

// recordedComparerName reads the comparer's name from a pebble OPTIONS
// file (an INI file; the name is the [Options] section's comparer).
func recordedComparerName(fs vfs.FS, path string) (string, error) {
	f, err := fs.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return "", err
	}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && section == "[Options]" && strings.TrimSpace(k) == "comparer" {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("raftstore: %s names no comparer", path)
}

// Close closes the database.
func (e *Engine) Close() error { return e.DB.Close() }

// LoadStoreIdent returns the store identity written when the store joined a
// cluster, or nil for a fresh engine.
func (e *Engine) LoadStoreIdent() (*rspb.StoreIdent, error) {
	id := &rspb.StoreIdent{}
	ok, err := getProto(e.DB, []byte(storeIdentKey), id)
	if err != nil || !ok {
		return nil, err
	}
	return id, nil
}

// WriteStoreIdent records the store identity, synced. It is written once.
func (e *Engine) WriteStoreIdent(id *rspb.StoreIdent) error {
	v, err := proto.Marshal(id)
	if err != nil {
		return err
	}
	return e.DB.Set([]byte(storeIdentKey), v, pebble.Sync)
}

// mkdirAllDurable creates dir and its missing parents, syncing each parent
// after adding an entry to it: a directory that exists only in the page
// cache disappears in a power loss with everything written under it.
func mkdirAllDurable(fs vfs.FS, dir string) error {
	if _, err := fs.Stat(dir); err == nil {
		return nil
	}
	parent := fs.PathDir(dir)
	if parent != dir {
		if err := mkdirAllDurable(fs, parent); err != nil {
			return err
		}
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if parent == dir {
		return nil
	}
	return syncDir(fs, parent)
}

// SavePrepareBootstrap records, synced, the first region this store is about
// to ask PD to bootstrap the cluster with: after a crash between that and
// creating the region locally, the restart knows which region it was.
func (e *Engine) SavePrepareBootstrap(r *metapb.Region) error {
	v, err := proto.Marshal(r)
	if err != nil {
		return err
	}
	return e.DB.Set([]byte(prepareBootstrapKey), v, pebble.Sync)
}

// LoadPrepareBootstrap returns the region SavePrepareBootstrap recorded, or
// nil.
func (e *Engine) LoadPrepareBootstrap() (*metapb.Region, error) {
	r := &metapb.Region{}
	ok, err := getProto(e.DB, []byte(prepareBootstrapKey), r)
	if err != nil || !ok {
		return nil, err
	}
	return r, nil
}

// ClearPrepareBootstrap forgets the recorded bootstrap region.
func (e *Engine) ClearPrepareBootstrap() error {
	return e.DB.Delete([]byte(prepareBootstrapKey), pebble.Sync)
}

type quietPebbleLogger struct{}

func (quietPebbleLogger) Infof(string, ...any) {}
func (quietPebbleLogger) Errorf(format string, args ...any) {
	// slog's default at the time of the call: the binary sets it from
	// --log-level after this package is initialised.
	slog.Error("pebble", "msg", sprintf(format, args...))
}
func (quietPebbleLogger) Fatalf(format string, args ...any) {
	panic(sprintf(format, args...))
}
