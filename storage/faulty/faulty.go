// Package faulty wraps a shard store and injects the faults real disks
// have — errors (EIO, a full disk), bit flips, latency and torn writes —
// on chosen operations and shards, in the spirit of Pebble's errorfs.
// Chaos tests use it to make a node's disk fail or a shard rot between
// its write and its read. With no fault injected it only passes calls on.
package faulty

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"syscall"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/storage"
)

// Op names the operations a fault can hit.
type Op int

const (
	Fetch Op = 1 << iota
	Receive
	Stat
	Walk
	Remove
	Any = Fetch | Receive | Stat | Walk | Remove
)

// Errors real disks return.
var (
	ErrIO      = &fs.PathError{Op: "io", Path: "shard", Err: syscall.EIO}
	ErrNoSpace = fmt.Errorf("%w: %v", blob.ErrNoSpace, syscall.ENOSPC)
)

// Fault is one injected misbehaviour.
type Fault struct {
	Ops   Op                     // operations it hits
	Match func(storage.Ref) bool // shards it hits; nil: all (Walk ignores it)
	Times int                    // how many hits before it wears off; 0: forever

	Err   error         // returned instead of doing the operation
	Delay time.Duration // waited before the operation (or until ctx ends)
	// FlipBit flips one bit of the bytes that pass: a Fetch returns rotted
	// bytes, a Receive stores them (rot after the writer's checks).
	FlipBit bool
	// Torn makes a Receive hand only the first half of the shard to the
	// store and then fail, as a crash mid-write would.
	Torn bool
}

// Store wraps a storage.Storage with injected faults.
type Store struct {
	inner storage.Storage

	mu     sync.Mutex
	faults []*Fault
	hits   int // faults that fired, for tests to assert on
}

var _ storage.Storage = (*Store)(nil)

// New wraps inner.
func New(inner storage.Storage) *Store { return &Store{inner: inner} }

// Inner returns the wrapped store.
func (s *Store) Inner() storage.Storage { return s.inner }

// Inject adds a fault.
func (s *Store) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// Clear removes every fault.
func (s *Store) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Hits returns how many times faults fired.
func (s *Store) Hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// fault returns the faults op on ref meets, merged, and uses them up.
func (s *Store) fault(op Op, ref *storage.Ref) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var got Fault
	hit := false
	for i := 0; i < len(s.faults); i++ {
		f := s.faults[i]
		if f.Ops&op == 0 || (ref != nil && f.Match != nil && !f.Match(*ref)) {
			continue
		}
		hit = true
		got.Delay += f.Delay
		got.FlipBit = got.FlipBit || f.FlipBit
		got.Torn = got.Torn || f.Torn
		if got.Err == nil {
			got.Err = f.Err
		}
		if f.Times > 0 {
			if f.Times--; f.Times == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
				i--
			}
		}
	}
	if hit {
		s.hits++
	}
	return got, hit
}

// before applies a fault's delay and error.
func before(ctx context.Context, f Fault) error {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.Err
}

func (s *Store) Fetch(ctx context.Context, ref storage.Ref) (io.ReadCloser, error) {
	f, hit := s.fault(Fetch, &ref)
	if hit {
		if err := before(ctx, f); err != nil {
			return nil, err
		}
	}
	rc, err := s.inner.Fetch(ctx, ref)
	if err != nil || !f.FlipBit {
		return rc, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	flip(b)
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *Store) Receive(ctx context.Context, ref storage.Ref, r io.Reader) error {
	f, hit := s.fault(Receive, &ref)
	if !hit {
		return s.inner.Receive(ctx, ref, r)
	}
	if err := before(ctx, f); err != nil {
		return err
	}
	if !f.FlipBit && !f.Torn {
		return s.inner.Receive(ctx, ref, r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if f.Torn {
		err := fmt.Errorf("faulty: torn write of shard %s", ref)
		return s.inner.Receive(ctx, ref, io.MultiReader(bytes.NewReader(b[:len(b)/2]), errReader{err}))
	}
	flip(b)
	return s.inner.Receive(ctx, ref, bytes.NewReader(b))
}

func (s *Store) Stat(ctx context.Context, ref storage.Ref) (storage.Info, error) {
	if f, hit := s.fault(Stat, &ref); hit {
		if err := before(ctx, f); err != nil {
			return storage.Info{}, err
		}
	}
	return s.inner.Stat(ctx, ref)
}

func (s *Store) Walk(ctx context.Context, fn func(storage.Ref, storage.Info) error) error {
	if f, hit := s.fault(Walk, nil); hit {
		if err := before(ctx, f); err != nil {
			return err
		}
	}
	return s.inner.Walk(ctx, fn)
}

func (s *Store) RemoveIfOlder(ctx context.Context, ref storage.Ref, cutoff time.Time) (bool, error) {
	if f, hit := s.fault(Remove, &ref); hit {
		if err := before(ctx, f); err != nil {
			return false, err
		}
	}
	return s.inner.RemoveIfOlder(ctx, ref, cutoff)
}

func (s *Store) Used() int64 { return s.inner.Used() }

// flip flips one bit in the middle of b (past a 64-byte shard header when
// there is one, so the rot is in the payload).
func flip(b []byte) {
	if len(b) == 0 {
		return
	}
	i := len(b) / 2
	if len(b) > 64 {
		i = 64 + (len(b)-64)/2
	}
	b[i] ^= 0x10
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
