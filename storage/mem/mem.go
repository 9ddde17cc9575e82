// Package mem is a shard store in memory: real code, not a mock, for tests
// that need a store without a disk. Its zero value is ready to use.
package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/storage"
)

// Store is a storage.Storage in a map.
type Store struct {
	mu     sync.RWMutex
	shards map[storage.Ref]shard
	used   int64
}

type shard struct {
	data []byte
	mod  time.Time
}

var _ storage.Storage = (*Store)(nil)

// Fetch returns a reader over a copy-free view of ref's bytes (stored
// shards are never modified in place).
func (s *Store) Fetch(ctx context.Context, ref storage.Ref) (io.ReadCloser, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sh, ok := s.shards[ref]
	if !ok {
		return nil, fmt.Errorf("shard %s: %w", ref, blob.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(sh.data)), nil
}

// Receive reads r whole, then stores it.
func (s *Store) Receive(ctx context.Context, ref storage.Ref, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shards == nil {
		s.shards = map[storage.Ref]shard{}
	}
	s.used += int64(len(data)) - int64(len(s.shards[ref].data))
	s.shards[ref] = shard{data, time.Now()}
	return nil
}

// Stat describes ref.
func (s *Store) Stat(ctx context.Context, ref storage.Ref) (storage.Info, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sh, ok := s.shards[ref]
	if !ok {
		return storage.Info{}, fmt.Errorf("shard %s: %w", ref, blob.ErrNotFound)
	}
	return storage.Info{Size: int64(len(sh.data)), ModTime: sh.mod}, nil
}

// Walk calls fn for a snapshot of the shards held, without holding the lock.
func (s *Store) Walk(ctx context.Context, fn func(storage.Ref, storage.Info) error) error {
	type entry struct {
		ref  storage.Ref
		info storage.Info
	}
	s.mu.RLock()
	all := make([]entry, 0, len(s.shards))
	for ref, sh := range s.shards {
		all = append(all, entry{ref, storage.Info{Size: int64(len(sh.data)), ModTime: sh.mod}})
	}
	s.mu.RUnlock()
	for _, e := range all {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e.ref, e.info); err != nil {
			return err
		}
	}
	return nil
}

// RemoveIfOlder deletes ref if it was stored before cutoff.
func (s *Store) RemoveIfOlder(ctx context.Context, ref storage.Ref, cutoff time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.shards[ref]
	if !ok || !sh.mod.Before(cutoff) {
		return false, nil
	}
	delete(s.shards, ref)
	s.used -= int64(len(sh.data))
	return true, nil
}

// Used returns the bytes held.
func (s *Store) Used() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.used
}
