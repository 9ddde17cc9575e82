package node

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
)

// shardStore keeps shards as files: <dir>/<first two chars of chunk ID>/<chunk ID>.<index>.
// Each file is the shard exactly as erasure defines it (header + payload).
// The file system is the index: a shard exists iff its file does.
type shardStore struct {
	dir   string
	used  atomic.Int64   // bytes in shard files, approximate
	locks [64]sync.Mutex // striped by shard path: orders writes against reclamation
}

func (s *shardStore) lock(chunk blob.ID, index int) *sync.Mutex {
	return &s.locks[(int(chunk[0])+index)%len(s.locks)]
}

func openShardStore(dir string) (*shardStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &shardStore{dir: dir}
	// Leftover temp files are writes a crash interrupted: never visible, so drop them.
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

func (s *shardStore) path(chunk blob.ID, index int) string {
	id := chunk.String()
	return filepath.Join(s.dir, id[:2], id+"."+strconv.Itoa(index))
}

// write stores a shard read from r (header + payload) after checking it
// belongs at (chunk, index) and that its payload matches its checksum. The
// shard becomes visible atomically, and only once it is on disk.
func (s *shardStore) write(chunk blob.ID, index int, r io.Reader) error {
	var hb [erasure.HeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return fmt.Errorf("shard %s/%d: reading header: %w", chunk, index, err)
	}
	h, err := erasure.ParseHeader(hb[:])
	if err != nil {
		return err
	}
	if h.Chunk != chunk || h.Index != index {
		return fmt.Errorf("%w: shard header names %s/%d, stored at %s/%d", blob.ErrCorrupt, h.Chunk, h.Index, chunk, index)
	}
	final := s.path(chunk, index)
	mu := s.lock(chunk, index)
	mu.Lock()
	defer mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
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
	crc := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	if _, err := f.Write(hb[:]); err != nil {
		return diskErr(err)
	}
	n, err := io.Copy(io.MultiWriter(f, crc), io.LimitReader(r, int64(h.ShardLen)))
	if err != nil {
		return diskErr(err)
	}
	if n != int64(h.ShardLen) {
		return fmt.Errorf("shard %s/%d: %w: got %d of %d payload bytes", chunk, index, io.ErrUnexpectedEOF, n, h.ShardLen)
	}
	if crc.Sum32() != h.Checksum {
		return fmt.Errorf("%w: shard %s/%d payload checksum mismatch in transfer", blob.ErrCorrupt, chunk, index)
	}
	if err := f.Sync(); err != nil {
		return diskErr(err)
	}
	if err := f.Close(); err != nil {
		return diskErr(err)
	}
	var replaced int64 // an identical shard rewritten in place (same content, same name)
	if info, err := os.Stat(final); err == nil {
		replaced = info.Size()
	}
	if err := os.Rename(tmp, final); err != nil {
		return diskErr(err)
	}
	ok = true
	s.used.Add(int64(erasure.HeaderSize+h.ShardLen) - replaced)
	return syncDir(filepath.Dir(final))
}

// read returns a shard's header and payload after verifying both. A missing
// shard is blob.ErrNotFound; a damaged one is blob.ErrCorrupt.
func (s *shardStore) read(chunk blob.ID, index int) (erasure.Header, []byte, error) {
	b, err := os.ReadFile(s.path(chunk, index))
	if errors.Is(err, fs.ErrNotExist) {
		return erasure.Header{}, nil, fmt.Errorf("shard %s/%d: %w", chunk, index, blob.ErrNotFound)
	}
	if err != nil {
		return erasure.Header{}, nil, err
	}
	h, err := erasure.ParseHeader(b)
	if err != nil {
		return h, nil, fmt.Errorf("shard %s/%d: %w", chunk, index, err)
	}
	if h.Chunk != chunk || h.Index != index {
		return h, nil, fmt.Errorf("%w: file for %s/%d holds %s/%d", blob.ErrCorrupt, chunk, index, h.Chunk, h.Index)
	}
	payload := b[erasure.HeaderSize:]
	if err := h.Verify(payload); err != nil {
		return h, nil, err
	}
	return h, payload, nil
}

// removeIfOlder deletes a shard file if it was last written before cutoff.
// Under the shard's lock, so a shard rewritten meanwhile (a move back to
// this node) is never the one deleted.
func (s *shardStore) removeIfOlder(chunk blob.ID, index int, cutoff time.Time) bool {
	mu := s.lock(chunk, index)
	mu.Lock()
	defer mu.Unlock()
	p := s.path(chunk, index)
	info, err := os.Stat(p)
	if err != nil || info.ModTime().After(cutoff) {
		return false
	}
	if os.Remove(p) != nil {
		return false
	}
	s.used.Add(-info.Size())
	syncDir(filepath.Dir(p))
	return true
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
