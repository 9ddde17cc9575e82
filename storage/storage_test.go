package storage_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/storage"
	"github.com/atollstore/atoll/storage/mem"
	"github.com/atollstore/atoll/storage/storagetest"
)

// FuzzReceive feeds arbitrary bytes to Receive as the shard file for a
// slot: it must never panic, and whatever it accepts must read back
// verified and byte-identical.
func FuzzReceive(f *testing.F) {
	shards := storagetest.MakeShards(f, 1, 1000, 2, 1)
	f.Add(shards[0].File(), 0)
	f.Add(shards[1].File(), 1)
	f.Add(shards[0].File()[:70], 0)
	f.Add([]byte{}, 2)
	ref := shards[0].Ref()
	f.Fuzz(func(t *testing.T, file []byte, index int) {
		ctx := context.Background()
		r := storage.Ref{Chunk: ref.Chunk, Index: index & 0xff}
		s := new(mem.Store)
		if err := storage.Receive(ctx, s, r, bytes.NewReader(file)); err != nil {
			if s.Used() != 0 {
				t.Fatalf("a refused shard was stored: %v", err)
			}
			return
		}
		h, p, err := storage.Read(ctx, s, r)
		if err != nil {
			t.Fatalf("an accepted shard does not read back: %v", err)
		}
		hb := h.Marshal()
		if !bytes.Equal(append(hb[:], p...), file[:len(hb)+len(p)]) {
			t.Fatal("an accepted shard reads back different bytes")
		}
	})
}

// FuzzParseFileName: names that parse are exactly those Ref.FileName
// makes.
func FuzzParseFileName(f *testing.F) {
	ref := storagetest.MakeShards(f, 1, 10, 1, 1)[1].Ref()
	f.Add(ref.FileName())
	f.Add(ref.FileName() + ".123.tmp")
	f.Add("x.1")
	f.Fuzz(func(t *testing.T, name string) {
		r, ok := storage.ParseFileName(name)
		if ok && r.FileName() != name {
			t.Fatalf("%q parsed as %v, which is named %q", name, r, r.FileName())
		}
	})
}

// Verify accepts a whole shard file for its own slot and nothing else.
func TestVerify(t *testing.T) {
	shards := storagetest.MakeShards(t, 2, 1000, 2, 1)
	file := shards[0].File()
	if err := storage.Verify(shards[0].Ref(), file); err != nil {
		t.Fatalf("a good shard: %v", err)
	}
	flipped := bytes.Clone(file)
	flipped[len(flipped)-1] ^= 1
	for name, c := range map[string]struct {
		ref  storage.Ref
		file []byte
	}{
		"another slot": {shards[1].Ref(), file},
		"short":        {shards[0].Ref(), file[:len(file)-1]},
		"long":         {shards[0].Ref(), append(bytes.Clone(file), 0)},
		"rotted":       {shards[0].Ref(), flipped},
		"no header":    {shards[0].Ref(), file[:10]},
	} {
		if err := storage.Verify(c.ref, c.file); !errors.Is(err, blob.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}
