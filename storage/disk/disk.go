// Package disk is the shard store of a node's data directory: one file per
// shard, <dir>/<first two chars of the chunk ID>/<chunk ID>.<index>, holding
// the shard exactly as package erasure defines it (header + payload). The
// file system is the index: a shard is held iff its file exists.
//
// A shard is written to a temp file, fsync'd, renamed into place, and then
// its directory is fsync'd, so it appears whole or not at all, and only
// once durable. A crash mid-write leaves a *.tmp file, removed at the next
// Open.
package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/internal/ctxio"
	"github.com/atollstore/atoll/storage"
)

// Store is a storage.Storage in a directory.
type Store struct {
	dir   string
	used  atomic.Int64   // bytes in shard files
	locks [64]sync.Mutex // striped by shard: orders writes against removal
	made  sync.Map       // fan-out directories known to exist durably
}

var _ storage.Storage = (*Store)(nil)

// Open opens (creating it if needed) the store in dir, dropping the temp
// files of writes a crash interrupted: they were never visible.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	s := &Store{dir: dir}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if filepath.Ext(p) == ".tmp" {
			return os.Remove(p)
		}
		if info, err := d.Info(); err == nil {
			s.used.Add(info.Size())
		}
		return nil
	})
	return s, err
}

// Path is where ref's file lives (tests corrupt shards through it).
func (s *Store) Path(ref storage.Ref) string {
	id := ref.Chunk.String()
	return filepath.Join(s.dir, id[:2], ref.FileName())
}

func (s *Store) lock(ref storage.Ref) *sync.Mutex {
	return &s.locks[(int(ref.Chunk[0])+ref.Index)%len(s.locks)]
}

// Used returns the bytes held in shard files.
func (s *Store) Used() int64 { return s.used.Load() }

// Fetch opens ref's file.
func (s *Store) Fetch(ctx context.Context, ref storage.Ref) (io.ReadCloser, error) {
	f, err := os.Open(s.Path(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("shard %s: %w", ref, blob.ErrNotFound)
	}
	return f, err
}

// Stat describes ref's file.
func (s *Store) Stat(ctx context.Context, ref storage.Ref) (storage.Info, error) {
	fi, err := os.Stat(s.Path(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return storage.Info{}, fmt.Errorf("shard %s: %w", ref, blob.ErrNotFound)
	}
	if err != nil {
		return storage.Info{}, err
	}
	return storage.Info{Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Receive writes r to a temp file, syncs it and renames it into place.
func (s *Store) Receive(ctx context.Context, ref storage.Ref, r io.Reader) error {
	final := s.Path(ref)
	mu := s.lock(ref)
	mu.Lock()
	defer mu.Unlock()
	if err := s.mkdir(filepath.Dir(final)); err != nil {
		return diskErr(err)
	}
	f, err := os.CreateTemp(filepath.Dir(final), filepath.Base(final)+".*.tmp")
	if err != nil {
		return diskErr(err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// NB: a write error is the disk's, a read error the sender's; only the
	// first may mean a full disk.
	n, err := io.Copy(diskWriter{f}, ctxio.Reader(ctx, r))
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return diskErr(err)
	}
	if err := f.Close(); err != nil {
		return diskErr(err)
	}
	var replaced int64 // a shard rewritten in place (same name)
	if info, err := os.Stat(final); err == nil {
		replaced = info.Size()
	}
	if err := os.Rename(tmp, final); err != nil {
		return diskErr(err)
	}
	ok = true
	s.used.Add(n - replaced)
	return syncDir(filepath.Dir(final))
}

// Walk lists the shard files.
func (s *Store) Walk(ctx context.Context, fn func(storage.Ref, storage.Info) error) error {
	return filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed during the walk
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		ref, ok := storage.ParseFileName(d.Name())
		if !ok {
			return nil // temp files, strays
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed during the walk
		}
		return fn(ref, storage.Info{Size: info.Size(), ModTime: info.ModTime()})
	})
}

// RemoveIfOlder deletes ref's file if it was last written before cutoff.
func (s *Store) RemoveIfOlder(ctx context.Context, ref storage.Ref, cutoff time.Time) (bool, error) {
	mu := s.lock(ref)
	mu.Lock()
	defer mu.Unlock()
	p := s.Path(ref)
	info, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil || !info.ModTime().Before(cutoff) {
		return false, err
	}
	if err := os.Remove(p); err != nil {
		return false, err
	}
	s.used.Add(-info.Size())
	return true, syncDir(filepath.Dir(p))
}

// mkdir makes sure the fan-out directory dir exists and its entry is
// durable (a shard's fsync'd directory is no use if the directory itself
// can vanish in a crash), once per directory and process.
func (s *Store) mkdir(dir string) error {
	if _, ok := s.made.Load(dir); ok {
		return nil
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	s.made.Store(dir, true)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// diskErr marks a full disk so callers can place the shard elsewhere.
func diskErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %v", blob.ErrNoSpace, err)
	}
	return err
}

type diskWriter struct{ f *os.File }

func (w diskWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	return n, diskErr(err)
}
