package faulty_test

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/storage"
	"github.com/atollstore/atoll/storage/disk"
	"github.com/atollstore/atoll/storage/faulty"
	"github.com/atollstore/atoll/storage/mem"
	"github.com/atollstore/atoll/storage/storagetest"
)

// With no fault injected, the wrapper is a conforming store.
func TestConformance(t *testing.T) {
	storagetest.Test(t, func(t *testing.T) storage.Shards { return faulty.New(new(mem.Store)) })
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	shards := storagetest.MakeShards(t, 7, 10000, 2, 1)
	a, b := shards[0], shards[1]
	onlyA := func(r storage.Ref) bool { return r == a.Ref() }

	t.Run("full disk and EIO", func(t *testing.T) {
		s := faulty.New(new(mem.Store))
		s.Inject(faulty.Fault{Ops: faulty.Receive, Err: faulty.ErrNoSpace})
		if err := storage.Write(ctx, s, a.Header, a.Payload); !errors.Is(err, blob.ErrNoSpace) {
			t.Fatalf("write to a full disk: %v", err)
		}
		s.Clear()
		if err := storage.Write(ctx, s, a.Header, a.Payload); err != nil {
			t.Fatal(err)
		}
		s.Inject(faulty.Fault{Ops: faulty.Fetch, Err: faulty.ErrIO, Match: onlyA, Times: 1})
		if _, _, err := storage.Read(ctx, s, a.Ref()); !errors.Is(err, syscall.EIO) {
			t.Fatalf("read with EIO: %v", err)
		}
		if _, p, err := storage.Read(ctx, s, a.Ref()); err != nil || !bytes.Equal(p, a.Payload) {
			t.Fatalf("a one-time fault did not wear off: %v", err)
		}
		if s.Hits() != 2 {
			t.Fatalf("hits = %d, want 2", s.Hits())
		}
	})
	t.Run("rot on read and on write", func(t *testing.T) {
		s := faulty.New(new(mem.Store))
		storage.Write(ctx, s, a.Header, a.Payload)
		s.Inject(faulty.Fault{Ops: faulty.Fetch, FlipBit: true, Match: onlyA})
		if _, _, err := storage.Read(ctx, s, a.Ref()); !errors.Is(err, blob.ErrCorrupt) {
			t.Fatalf("rotten read: %v, want ErrCorrupt", err)
		}
		s.Clear()
		// Rot after the writer's checks: the write succeeds, the read refuses.
		s.Inject(faulty.Fault{Ops: faulty.Receive, FlipBit: true, Times: 1})
		if err := storage.Write(ctx, s, b.Header, b.Payload); err != nil {
			t.Fatal(err)
		}
		if _, _, err := storage.Read(ctx, s, b.Ref()); !errors.Is(err, blob.ErrCorrupt) {
			t.Fatalf("shard rotted on write reads: %v, want ErrCorrupt", err)
		}
	})
	t.Run("torn write on disk", func(t *testing.T) {
		d, err := disk.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		s := faulty.New(d)
		s.Inject(faulty.Fault{Ops: faulty.Receive, Torn: true, Times: 1})
		if err := storage.Write(ctx, s, a.Header, a.Payload); err == nil {
			t.Fatal("a torn write succeeded")
		}
		if _, _, err := storage.Read(ctx, s, a.Ref()); !errors.Is(err, blob.ErrNotFound) || d.Used() != 0 {
			t.Fatalf("a torn write left something: %v, %d bytes", err, d.Used())
		}
	})
	t.Run("latency honours the context", func(t *testing.T) {
		s := faulty.New(new(mem.Store))
		storage.Write(ctx, s, a.Header, a.Payload)
		s.Inject(faulty.Fault{Ops: faulty.Any, Delay: time.Hour})
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		if _, _, err := storage.Read(cctx, s, a.Ref()); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("slow read: %v", err)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the delay ignored the deadline")
		}
	})
}
