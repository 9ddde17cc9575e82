package disk_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/atollstore/atoll/storage"
	"github.com/atollstore/atoll/storage/disk"
	"github.com/atollstore/atoll/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Test(t, func(t *testing.T) storage.Shards {
		s, err := disk.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// A crash mid-write leaves a temp file: it is never visible, is removed at
// the next Open, and usage counts only real shards.
func TestReopenDropsTempFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := disk.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	sh := storagetest.MakeShards(t, 1, 1<<20, 2, 1)[1] // large: a file of its own
	if err := storage.Write(ctx, s, sh.Header, sh.Payload); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(filepath.Dir(s.Path(sh.Ref())), sh.Ref().FileName()+".123.tmp")
	if err := os.WriteFile(leftover, []byte("half a shard"), 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := disk.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("leftover temp file survived reopen")
	}
	if s2.Used() != int64(len(sh.File())) {
		t.Fatalf("used = %d, want %d", s2.Used(), len(sh.File()))
	}
	if _, p, err := storage.Read(ctx, s2, sh.Ref()); err != nil || !bytes.Equal(p, sh.Payload) {
		t.Fatalf("after reopen: %v", err)
	}
	n := 0
	s2.Walk(ctx, func(storage.Ref, storage.Info) error { n++; return nil })
	if n != 1 {
		t.Fatalf("walk saw %d shards, want 1", n)
	}
}
