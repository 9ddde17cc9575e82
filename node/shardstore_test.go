package node

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
)

func testShard(t *testing.T) (erasure.Header, []byte, []byte) {
	t.Helper()
	c, _ := erasure.New(2, 1)
	st := c.NewStripe(1000)
	data := bytes.Repeat([]byte("abc"), 300)
	st.Fill(bytes.NewReader(data), 1000)
	st.Encode()
	h, p := st.Shard(blob.Sum(data), 1)
	hb := h.Marshal()
	return h, p, append(hb[:], p...)
}

func TestShardStoreRoundTripAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := openShardStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	h, p, file := testShard(t)
	if err := s.write(h.Chunk, 1, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	got, payload, err := s.read(h.Chunk, 1)
	if err != nil || got != h || !bytes.Equal(payload, p) {
		t.Fatalf("read back %+v %v", got, err)
	}
	if _, _, err := s.read(h.Chunk, 0); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing shard: %v", err)
	}
	// Rewriting the same shard replaces it and is not counted twice.
	if err := s.write(h.Chunk, 1, bytes.NewReader(file)); err != nil || s.used.Load() != int64(len(file)) {
		t.Fatalf("rewrite: used = %d (want %d), err %v", s.used.Load(), len(file), err)
	}
	// A crash mid-write leaves a temp file: it is never visible and is
	// removed at the next open; usage counts only real shards.
	leftover := filepath.Join(filepath.Dir(s.path(h.Chunk, 1)), "x.1.123.tmp")
	os.WriteFile(leftover, []byte("half a shard"), 0o644)
	s2, err := openShardStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("leftover temp file survived reopen")
	}
	if s2.used.Load() != int64(len(file)) {
		t.Fatalf("used = %d, want %d", s2.used.Load(), len(file))
	}
}

func TestShardStoreRefusesBadShards(t *testing.T) {
	s, _ := openShardStore(t.TempDir())
	h, _, file := testShard(t)
	for name, tc := range map[string]struct {
		body  []byte
		index int
		want  error
	}{
		"wrong slot":        {file, 0, blob.ErrCorrupt},
		"flipped payload":   {flip(file, erasure.HeaderSize+5), 1, blob.ErrCorrupt},
		"flipped header":    {flip(file, 9), 1, blob.ErrCorrupt},
		"truncated payload": {file[:len(file)-10], 1, io.ErrUnexpectedEOF},
		"truncated header":  {file[:30], 1, io.ErrUnexpectedEOF},
	} {
		err := s.write(h.Chunk, tc.index, bytes.NewReader(tc.body))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
		if _, _, err := s.read(h.Chunk, tc.index); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("%s: a refused shard is visible (%v)", name, err)
		}
	}
	// Rot on disk after a good write is caught on read.
	if err := s.write(h.Chunk, 1, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(s.path(h.Chunk, 1), flip(file, len(file)-1), 0o644)
	if _, _, err := s.read(h.Chunk, 1); !errors.Is(err, blob.ErrCorrupt) {
		t.Fatalf("bit rot: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

func TestWindow(t *testing.T) {
	var out bytes.Buffer
	w := &window{w: &out, skip: 3, left: 5}
	for _, p := range []string{"ab", "cdef", "ghij", "kl"} {
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	if out.String() != "defgh" {
		t.Fatalf("window passed %q, want %q", out.String(), "defgh")
	}
}
