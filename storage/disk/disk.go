// Package disk is the shard store of a node's data directory. A shard is
// kept exactly as package erasure defines it (header + payload): a small
// one (at most SmallShard bytes) as a record in the volume's append-only
// segments, <dir>/volumes/<seq>.seg (volume.go), a larger one as a file,
// <dir>/<first two chars of the chunk ID>/<chunk ID>.<index>.
//
// A shard appears whole or not at all, and only once durable: a small one
// once its record is synced (concurrent appends share one fdatasync), a
// larger one once its temp file is fsync'd, renamed into place and its
// directory fsync'd. A crash mid-write leaves a *.tmp file, removed at the
// next Open, or a torn last record, which the next Open ignores.
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
	"golang.org/x/sync/errgroup"
)

// Store is a storage.Storage in a directory.
type Store struct {
	dir   string
	used  atomic.Int64    // bytes in shard files
	locks [256]sync.Mutex // striped by shard: orders writes, removal and cleaning
	made  sync.Map        // fan-out directories known to exist durably
	v     *volume         // small shards
	bufs  sync.Pool       // records being received

	cleaner    sync.WaitGroup
	minGarbage int64 // the cleaner leaves less garbage than this alone
}

// cleanEvery is how often the cleaner looks for garbage in the volume.
const cleanEvery = 2 * time.Second

var _ storage.Storage = (*Store)(nil)

// Open opens (creating it if needed) the store in dir, dropping the temp
// files of writes a crash interrupted (they were never visible) and
// reading the volume's index. Close it to stop the volume's writer and
// cleaner.
func Open(dir string) (*Store, error) { return open(dir, 64<<20) }

// open opens the store with segments sealed at segMax bytes.
func open(dir string, segMax int64) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	v, err := openVolume(filepath.Join(dir, volumeDir), segMax)
	if err != nil {
		return nil, fmt.Errorf("disk: reading the volume: %w", err)
	}
	s := &Store{dir: dir, v: v, minGarbage: segMax}
	s.bufs.New = func() any { return make([]byte, recordHead+bodyHead+SmallShard+1) }
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if err == nil && p == v.dir {
				return fs.SkipDir
			}
			return err
		}
		if filepath.Ext(p) == ".tmp" {
			return os.Remove(p)
		}
		if ref, ok := storage.ParseFileName(d.Name()); ok {
			if _, held := v.get(ref); held {
				return os.Remove(p) // rewritten as a small shard; its removal was lost
			}
		}
		if info, err := d.Info(); err == nil {
			s.used.Add(info.Size())
		}
		return nil
	})
	if err != nil {
		v.close()
		return nil, err
	}
	s.cleaner.Go(s.clean)
	return s, nil
}

// Close stops the volume's writer and cleaner. The store must not be used
// after.
func (s *Store) Close() {
	s.v.shut()
	s.cleaner.Wait()
	s.v.close()
}

// Path is where ref's file lives, if it is not small.
func (s *Store) Path(ref storage.Ref) string {
	id := ref.Chunk.String()
	return filepath.Join(s.dir, id[:2], ref.FileName())
}

func (s *Store) lock(ref storage.Ref) *sync.Mutex {
	return &s.locks[(int(ref.Chunk[0])+ref.Index)%len(s.locks)]
}

// Used returns the bytes of the shards held.
func (s *Store) Used() int64 {
	s.v.mu.RLock()
	defer s.v.mu.RUnlock()
	return s.used.Load() + s.v.bytes
}

// Fetch returns ref's bytes from the volume, or opens its file.
func (s *Store) Fetch(ctx context.Context, ref storage.Ref) (io.ReadCloser, error) {
	for try := 0; ; try++ {
		l, ok := s.v.get(ref)
		if !ok {
			break
		}
		b, err := l.read()
		switch {
		case errors.Is(err, os.ErrClosed) && try < 3:
			continue // cleaned away meanwhile: look again
		case errors.Is(err, os.ErrClosed):
			return nil, fmt.Errorf("%w: shard %s: the store is closed", blob.ErrUnavailable, ref)
		case err == io.ErrUnexpectedEOF:
			return nil, fmt.Errorf("%w: shard %s: its volume segment is cut short", blob.ErrCorrupt, ref)
		case err != nil:
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	f, err := os.Open(s.Path(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("shard %s: %w", ref, blob.ErrNotFound)
	}
	return f, err
}

// Stat describes ref.
func (s *Store) Stat(ctx context.Context, ref storage.Ref) (storage.Info, error) {
	if l, ok := s.v.get(ref); ok {
		return storage.Info{Size: int64(l.n), ModTime: l.mod}, nil
	}
	fi, err := os.Stat(s.Path(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return storage.Info{}, fmt.Errorf("shard %s: %w", ref, blob.ErrNotFound)
	}
	if err != nil {
		return storage.Info{}, err
	}
	return storage.Info{Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Receive stores a small shard in the volume, a larger one (or any while
// the volume cannot be written) in a file.
func (s *Store) Receive(ctx context.Context, ref storage.Ref, r io.Reader) error {
	mu := s.lock(ref)
	mu.Lock()
	defer mu.Unlock()
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
	if err := s.writeFile(ctx, ref, r); err != nil {
		return err
	}
	_, err = s.v.note(kindForget, ref) // NB: if this fails, the volume's copy (as good) wins at the next Open
	return err
}

// receiveSmall makes the shard file in rec (a record with its heads to
// fill) durable in the volume. done is false if the volume could not take
// it: nothing happened.
func (s *Store) receiveSmall(ref storage.Ref, rec []byte) (done bool, err error) {
	now := time.Now()
	seg, off, err := s.v.append(sealRecord(rec, kindPut, ref, now))
	if err != nil {
		return false, nil
	}
	s.v.set(ref, loc{seg: seg, off: off + recordHead + bodyHead, n: len(rec) - recordHead - bodyHead, mod: now})
	p := s.Path(ref)
	if info, err := os.Lstat(p); err == nil && os.Remove(p) == nil { // a larger version, now stale
		s.used.Add(-info.Size())
	}
	return true, nil
}

// writeFile writes r to a temp file, fsyncs it, renames it into place and
// fsyncs its directory.
func (s *Store) writeFile(ctx context.Context, ref storage.Ref, r io.Reader) error {
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

// Walk lists the volume's shards, then the shard files.
func (s *Store) Walk(ctx context.Context, fn func(storage.Ref, storage.Info) error) error {
	s.v.mu.RLock()
	small := make(map[storage.Ref]storage.Info, len(s.v.index))
	for ref, l := range s.v.index {
		small[ref] = storage.Info{Size: int64(l.n), ModTime: l.mod}
	}
	s.v.mu.RUnlock()
	for ref, info := range small {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(ref, info); err != nil {
			return err
		}
	}
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
			if p == s.v.dir {
				return fs.SkipDir
			}
			return nil
		}
		ref, ok := storage.ParseFileName(d.Name())
		if _, dup := small[ref]; !ok || dup {
			return nil // temp files, strays, a stale version of a small shard
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed during the walk
		}
		return fn(ref, storage.Info{Size: info.Size(), ModTime: info.ModTime()})
	})
}

// RemoveIfOlder deletes ref if it was last written before cutoff.
func (s *Store) RemoveIfOlder(ctx context.Context, ref storage.Ref, cutoff time.Time) (bool, error) {
	mu := s.lock(ref)
	mu.Lock()
	defer mu.Unlock()
	if l, ok := s.v.get(ref); ok {
		if !l.mod.Before(cutoff) {
			return false, nil
		}
		return s.v.note(kindRemove, ref)
	}
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

// clean is the cleaner goroutine: every cleanEvery, while the volume is
// more than half garbage, it moves the live shards of the oldest segment
// to the head of the log and deletes the segment.
func (s *Store) clean() {
	t := time.NewTicker(cleanEvery)
	defer t.Stop()
	for {
		select {
		case <-s.v.stop:
			return
		case <-t.C:
		}
		for seg := s.v.oldestIfDirty(s.minGarbage); seg != nil; seg = s.v.oldestIfDirty(s.minGarbage) {
			if s.compact(seg) != nil {
				break // NB: a full disk, or a closed store; the next round tries again
			}
		}
	}
}

// compact rewrites seg's live shards at the head of the log, then
// deletes it. seg is the oldest segment, so its remove and forget records
// have nothing older left to shadow and go with it.
func (s *Store) compact(seg *segment) error {
	var refs []storage.Ref
	s.v.mu.RLock()
	for ref, l := range s.v.index {
		if l.seg == seg {
			refs = append(refs, ref)
		}
	}
	s.v.mu.RUnlock()
	var g errgroup.Group
	g.SetLimit(16) // moves share the writer's syncs
	for _, ref := range refs {
		g.Go(func() error { return s.move(ref, seg) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	s.v.mu.RLock()
	live := seg.live
	s.v.mu.RUnlock()
	if live != 0 {
		return fmt.Errorf("disk: segment %d still holds %d live bytes", seg.seq, live)
	}
	return s.v.drop(seg)
}

// move rewrites ref at the head of the log if it is still in seg.
func (s *Store) move(ref storage.Ref, seg *segment) error {
	mu := s.lock(ref)
	mu.Lock()
	defer mu.Unlock()
	l, ok := s.v.get(ref)
	if !ok || l.seg != seg {
		return nil // rewritten or removed meanwhile
	}
	file, err := l.read()
	if err != nil {
		return err
	}
	to, off, err := s.v.append(sealRecord(append(make([]byte, recordHead+bodyHead), file...), kindPut, ref, l.mod))
	if err != nil {
		return err
	}
	s.v.set(ref, loc{seg: to, off: off + recordHead + bodyHead, n: l.n, mod: l.mod})
	return nil
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
