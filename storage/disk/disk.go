// Package disk is the shard store of a node's data directory: one file per
// shard, <dir>/<first two chars of the chunk ID>/<chunk ID>.<index>, holding
// the shard exactly as package erasure defines it (header + payload). The
// file system is the index: a shard is held iff its file exists.
//
// A shard appears whole or not at all, and only once durable. A small one
// (at most SmallShard bytes) is first appended to the journal, which
// group-commits concurrent writes with one fdatasync, then written to its
// file without a sync of its own (journal.go); a larger one is written to a
// temp file, fsync'd, renamed into place, and then its directory is
// fsync'd. A crash mid-write leaves a *.tmp file, removed at the next Open,
// and journal segments, replayed then.
package disk

import (
	"bytes"
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
	used  atomic.Int64    // bytes in shard files
	locks [256]sync.Mutex // striped by shard: orders writes against removal
	made  sync.Map        // fan-out directories known to exist durably
	j     *journal        // nil where the system has no syncfs
	bufs  sync.Pool       // journal records being received
}

// journalDir is the journal's directory inside the store's.
const journalDir = "journal"

var _ storage.Storage = (*Store)(nil)

// Open opens (creating it if needed) the store in dir, dropping the temp
// files of writes a crash interrupted (they were never visible) and
// replaying its journal. Close it to stop the journal.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	s := &Store{dir: dir}
	s.bufs.New = func() any { return make([]byte, recordHead+bodyHead+SmallShard+1) }
	if journalOn {
		j, err := openJournal(filepath.Join(dir, journalDir), s)
		if err != nil {
			return nil, err
		}
		s.j = j
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if err == nil && p == filepath.Join(dir, journalDir) {
				return fs.SkipDir
			}
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
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close stops the journal; what it holds is replayed at the next Open.
// The store must not be used after.
func (s *Store) Close() {
	if s.j != nil {
		s.j.close()
	}
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

// Receive stores a small shard through the journal, a larger one (or any
// when the journal is unavailable) in a temp file it syncs and renames
// into place.
func (s *Store) Receive(ctx context.Context, ref storage.Ref, r io.Reader) error {
	mu := s.lock(ref)
	mu.Lock()
	defer mu.Unlock()
	if s.j == nil {
		return s.writeFile(ctx, ref, r, true)
	}
	buf := s.bufs.Get().([]byte)
	defer s.bufs.Put(buf)
	file := buf[recordHead+bodyHead:]
	n, err := io.ReadFull(ctxio.Reader(ctx, r), file)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF: // small
		if done, err := s.receiveSmall(ref, buf[:recordHead+bodyHead+n]); done {
			return err
		}
		r = bytes.NewReader(file[:n])
	case err != nil:
		return err
	default:
		r = io.MultiReader(bytes.NewReader(file), r)
	}
	if err := s.j.note(kindForget, ref); err != nil {
		return err
	}
	return s.writeFile(ctx, ref, r, true)
}

// receiveSmall makes the shard file in rec (a record with its heads to
// fill) durable in the journal, then puts it in place without a sync.
// done is false if the journal could not take it: nothing happened.
func (s *Store) receiveSmall(ref storage.Ref, rec []byte) (done bool, err error) {
	s.j.gate.RLock()
	defer s.j.gate.RUnlock()
	seq, err := s.j.append(sealRecord(rec, kindPut, ref, time.Now()))
	if err != nil {
		return false, nil // NB: if it is durable after all, replay writes these same bytes
	}
	s.j.mark(ref, seq)
	return true, s.writeFile(context.Background(), ref, bytes.NewReader(rec[recordHead+bodyHead:]), false)
}

// writeFile writes r to a temp file and renames it into place. With
// durable it fsyncs the file before and its directory after; without, the
// journal holds the bytes until a checkpoint has synced the file system.
func (s *Store) writeFile(ctx context.Context, ref storage.Ref, r io.Reader, durable bool) error {
	final := s.Path(ref)
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
	if durable {
		if err := f.Sync(); err != nil {
			return diskErr(err)
		}
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
	if !durable {
		return nil
	}
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
			if p == filepath.Join(s.dir, journalDir) {
				return fs.SkipDir
			}
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
	if s.j != nil {
		if err := s.j.note(kindRemove, ref); err != nil {
			return false, err
		}
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
