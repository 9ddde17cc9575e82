package erasure

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/atollstore/atoll/blob"
)

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestRoundTripLosingShards(t *testing.T) {
	c, err := New(6, 3)
	if err != nil {
		t.Fatal(err)
	}
	const maxChunk = 1 << 16
	st := c.NewStripe(maxChunk)
	for _, size := range []int{1, 63, 64, 65, 6 * 64, maxChunk - 1, maxChunk} {
		data := randBytes(size, uint64(size))
		if _, err := st.Fill(bytes.NewReader(data), maxChunk); err != nil {
			t.Fatal(err)
		}
		if err := st.Encode(); err != nil {
			t.Fatal(err)
		}
		id := blob.Sum(data)
		// Lose every combination of up to m shards drawn from a fixed pattern.
		for _, lost := range [][]int{nil, {0}, {8}, {0, 1, 2}, {3, 6, 7}, {5, 6, 8}} {
			shards := make([][]byte, c.N())
			for i := range shards {
				h, p := st.Shard(id, i)
				hb := h.Marshal()
				h2, err := ParseHeader(hb[:])
				if err != nil || h2 != h {
					t.Fatalf("header round trip: %v %+v != %+v", err, h2, h)
				}
				if err := h2.Verify(p); err != nil {
					t.Fatal(err)
				}
				shards[i] = bytes.Clone(p)
			}
			for _, i := range lost {
				shards[i] = nil
			}
			var out bytes.Buffer
			if err := c.Decode(shards, int64(size), &out); err != nil {
				t.Fatalf("size %d lost %v: %v", size, lost, err)
			}
			if !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("size %d lost %v: decoded bytes differ", size, lost)
			}
		}
	}
}

func TestTooFewShards(t *testing.T) {
	c, _ := New(6, 3)
	st := c.NewStripe(1024)
	st.Fill(bytes.NewReader(randBytes(1000, 1)), 1024)
	st.Encode()
	shards := make([][]byte, 9)
	for i := 0; i < 5; i++ {
		_, p := st.Shard(blob.ID{}, i)
		shards[i] = p
	}
	if err := c.Decode(shards, 1000, &bytes.Buffer{}); !errors.Is(err, ErrTooFewShards) {
		t.Fatalf("got %v, want ErrTooFewShards", err)
	}
}

func TestCorruptionDetected(t *testing.T) {
	c, _ := New(6, 3)
	st := c.NewStripe(4096)
	data := randBytes(4000, 7)
	st.Fill(bytes.NewReader(data), 4096)
	st.Encode()
	h, p := st.Shard(blob.Sum(data), 2)
	hb := h.Marshal()
	for i := range HeaderSize {
		bad := hb
		bad[i] ^= 0x10
		if _, err := ParseHeader(bad[:]); !errors.Is(err, blob.ErrCorrupt) {
			t.Fatalf("flipping header byte %d: got %v, want ErrCorrupt", i, err)
		}
	}
	bad := bytes.Clone(p)
	bad[len(bad)/2] ^= 1
	if err := h.Verify(bad); !errors.Is(err, blob.ErrCorrupt) {
		t.Fatalf("flipped payload bit: got %v", err)
	}
	if err := h.Verify(p[:len(p)-1]); !errors.Is(err, blob.ErrCorrupt) {
		t.Fatalf("truncated payload: got %v", err)
	}
}

func FuzzParseHeader(f *testing.F) {
	h := Header{K: 6, M: 3, Index: 4, ChunkLen: 1000, ShardLen: int(ShardSize(1000, 6))}
	hb := h.Marshal()
	f.Add(hb[:])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		again := h.Marshal()
		if !bytes.Equal(again[:60], b[:60]) {
			t.Fatalf("accepted header does not round-trip")
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	for _, cfg := range []struct{ k, m, chunk int }{{6, 3, 4 << 20}, {6, 3, 6 << 20}, {8, 4, 8 << 20}, {10, 4, 10 << 20}} {
		b.Run(name(cfg.k, cfg.m, cfg.chunk), func(b *testing.B) {
			c, _ := New(cfg.k, cfg.m)
			st := c.NewStripe(cfg.chunk)
			st.Fill(bytes.NewReader(randBytes(cfg.chunk, 1)), cfg.chunk)
			b.SetBytes(int64(cfg.chunk))
			for b.Loop() {
				if err := st.Encode(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, lost := range []int{1, 3} { // data shards lost: reconstruction needed
		b.Run(fmt.Sprintf("6+3/4MiB/lost%d", lost), func(b *testing.B) {
			const chunk = 4 << 20
			c, _ := New(6, 3)
			st := c.NewStripe(chunk)
			st.Fill(bytes.NewReader(randBytes(chunk, 1)), chunk)
			st.Encode()
			orig := make([][]byte, 9)
			for i := range orig {
				_, p := st.Shard(blob.ID{}, i)
				orig[i] = bytes.Clone(p)
			}
			shards := make([][]byte, 9)
			b.SetBytes(chunk)
			for b.Loop() {
				copy(shards, orig)
				for i := 0; i < lost; i++ {
					shards[i] = nil // lose data shards: the worst case
				}
				if err := c.Decode(shards, chunk, discard{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func name(k, m, chunk int) string { return fmt.Sprintf("%d+%d/%dMiB", k, m, chunk>>20) }

type truncated struct{ left int }

func (t *truncated) Read(p []byte) (int, error) {
	if t.left == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := min(len(p), t.left)
	t.left -= n
	return n, nil
}

func TestFillReportsTruncation(t *testing.T) {
	c, _ := New(2, 1)
	st := c.NewStripe(1000)
	if n, err := st.Fill(&truncated{left: 10}, 1000); err != io.ErrUnexpectedEOF || n != 10 {
		t.Fatalf("truncated source: n=%d err=%v, want 10, io.ErrUnexpectedEOF", n, err)
	}
	if n, err := st.Fill(bytes.NewReader(make([]byte, 10)), 1000); err != nil || n != 10 {
		t.Fatalf("short final chunk: n=%d err=%v", n, err)
	}
	if n, err := st.Fill(bytes.NewReader(nil), 1000); err != io.EOF || n != 0 {
		t.Fatalf("empty source: n=%d err=%v", n, err)
	}
}
