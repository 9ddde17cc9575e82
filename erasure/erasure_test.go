package erasure

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
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
	for _, f := range []Format{Plain, Dispersed} {
		for _, size := range []int{0, 1, 31, 32, 33, 63, 64, 65, 6*64 - KeySize, 6 * 64, maxChunk - 1, maxChunk} {
			data := randBytes(size, uint64(size))
			if _, err := st.Fill(bytes.NewReader(data), maxChunk); err != nil && size > 0 {
				t.Fatal(err)
			}
			if err := st.Encode(f); err != nil {
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
				out, err := c.Decode(shards, int64(size), f, []byte("prefix"))
				if err != nil {
					t.Fatalf("format %d size %d lost %v: %v", f, size, lost, err)
				}
				if !bytes.Equal(out, append([]byte("prefix"), data...)) {
					t.Fatalf("format %d size %d lost %v: decoded bytes differ", f, size, lost)
				}
			}
		}
	}
}

func TestTooFewShards(t *testing.T) {
	c, _ := New(6, 3)
	st := c.NewStripe(1024)
	st.Fill(bytes.NewReader(randBytes(1000, 1)), 1024)
	st.Encode(Dispersed)
	shards := make([][]byte, 9)
	for i := 0; i < 5; i++ {
		_, p := st.Shard(blob.ID{}, i)
		shards[i] = p
	}
	if _, err := c.Decode(shards, 1000, Dispersed, nil); !errors.Is(err, ErrTooFewShards) {
		t.Fatalf("got %v, want ErrTooFewShards", err)
	}
}

func TestCorruptionDetected(t *testing.T) {
	c, _ := New(6, 3)
	st := c.NewStripe(4096)
	data := randBytes(4000, 7)
	st.Fill(bytes.NewReader(data), 4096)
	st.Encode(Dispersed)
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
	for _, format := range []Format{Plain, Dispersed} {
		h := Header{Format: format, K: 6, M: 3, Index: 4, ChunkLen: 1000, ShardLen: int(ShardSize(format.PackageLen(1000), 6))}
		hb := h.Marshal()
		f.Add(hb[:])
	}
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
	for _, f := range []Format{Plain, Dispersed} {
		for _, cfg := range []struct{ k, m, chunk int }{{6, 3, 4 << 20}, {10, 4, 10 << 20}} {
			b.Run(fmt.Sprintf("%s/%s", f, name(cfg.k, cfg.m, cfg.chunk)), func(b *testing.B) {
				c, _ := New(cfg.k, cfg.m)
				st := c.NewStripe(cfg.chunk)
				data := randBytes(cfg.chunk, 1)
				b.SetBytes(int64(cfg.chunk))
				for b.Loop() {
					copy(st.Buffer(), data) // Dispersed encrypts in place
					st.SetLen(len(data))
					if err := st.Encode(f); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, f := range []Format{Plain, Dispersed} {
		for _, lost := range []int{0, 3} { // data shards lost: reconstruction needed
			b.Run(fmt.Sprintf("%s/6+3/4MiB/lost%d", f, lost), func(b *testing.B) {
				const chunk = 4 << 20
				c, _ := New(6, 3)
				st := c.NewStripe(chunk)
				st.Fill(bytes.NewReader(randBytes(chunk, 1)), chunk)
				st.Encode(f)
				orig := make([][]byte, 9)
				for i := range orig {
					_, p := st.Shard(blob.ID{}, i)
					orig[i] = bytes.Clone(p)
				}
				shards := make([][]byte, 9)
				out := make([]byte, 0, chunk)
				b.SetBytes(chunk)
				for b.Loop() {
					copy(shards, orig)
					for i := 0; i < lost; i++ {
						shards[i] = nil // lose data shards: the worst case
					}
					if _, err := c.Decode(shards, chunk, f, out); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

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

// TestDispersedShardsHideTheChunk: no shard of a Dispersed chunk holds
// any 32-byte window of it, any k shards decode, and the package changes
// entirely with one changed byte (no shared plaintext-dependent structure).
func TestDispersedShardsHideTheChunk(t *testing.T) {
	c, _ := New(6, 3)
	// Highly structured text: a Plain data shard would be readable.
	var text []byte
	for i := 0; len(text) < 100_000; i++ {
		text = append(text, fmt.Sprintf("line %06d: attack at dawn, the password is hunter2\n", i)...)
	}
	windows := map[string]bool{}
	for i := 0; i+32 <= len(text); i++ {
		windows[string(text[i:i+32])] = true
	}
	for _, f := range []Format{Plain, Dispersed} {
		st := c.NewStripe(len(text))
		copy(st.Buffer(), text)
		st.SetLen(len(text))
		if err := st.Encode(f); err != nil {
			t.Fatal(err)
		}
		found := 0
		for i := range c.N() {
			_, p := st.Shard(blob.Sum(text), i)
			for j := 0; j+32 <= len(p); j++ {
				if windows[string(p[j:j+32])] {
					found++
				}
			}
		}
		if f == Plain && found == 0 {
			t.Fatal("Plain shards hold no plaintext window: the test cannot see anything")
		}
		if f == Dispersed && found != 0 {
			t.Fatalf("Dispersed shards hold %d plaintext windows", found)
		}
	}
}

func TestDispersedIsConvergent(t *testing.T) {
	c, _ := New(6, 3)
	data := randBytes(10_000, 3)
	encode := func(d []byte) [][]byte {
		st := c.NewStripe(len(d))
		copy(st.Buffer(), d)
		st.SetLen(len(d))
		st.Encode(Dispersed)
		var out [][]byte
		for i := range c.N() {
			_, p := st.Shard(blob.ID{}, i)
			out = append(out, bytes.Clone(p))
		}
		return out
	}
	a, b := encode(data), encode(data)
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			t.Fatalf("shard %d differs between two encodings of one chunk: racing puts and repairs would mix packages", i)
		}
	}
	changed := bytes.Clone(data)
	changed[len(changed)-1] ^= 1
	d := encode(changed)
	if bytes.Equal(a[0][:64], d[0][:64]) {
		t.Fatal("changing the last byte left the first ciphertext bytes alone: the key does not depend on the whole chunk")
	}
}

// TestPlainFixtureStillDecodes reads shards written by the format-1 code
// (testdata, made before format 2 existed).
func TestPlainFixtureStillDecodes(t *testing.T) {
	want, err := os.ReadFile("testdata/v1-chunk")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := New(6, 3)
	shards := make([][]byte, c.N())
	var h Header
	for i := range shards {
		b, err := os.ReadFile(fmt.Sprintf("testdata/v1-shard-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if h, err = ParseHeader(b); err != nil {
			t.Fatal(err)
		}
		if h.Format != Plain || h.Chunk != blob.Sum(want) {
			t.Fatalf("fixture header %+v", h)
		}
		if err := h.Verify(b[HeaderSize:]); err != nil {
			t.Fatal(err)
		}
		shards[i] = b[HeaderSize:]
	}
	shards[1], shards[5], shards[7] = nil, nil, nil // data shards too

	got, err := c.Decode(shards, h.ChunkLen, h.Format, nil)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("decoding the format-1 fixture: err %v, equal %v", err, bytes.Equal(got, want))
	}
}

// ScanHeaders finds every shard header wherever it lies among other bytes
// (a magic with a damaged header is not one).
func TestScanHeaders(t *testing.T) {
	c, err := New(4, 2)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(5000, 7)
	st := c.NewStripe(len(data))
	st.Fill(bytes.NewReader(data), len(data))
	if err := st.Encode(Dispersed); err != nil {
		t.Fatal(err)
	}
	id := blob.Sum(data)
	disk := randBytes(100, 1)
	var want []int
	for i := range c.N() {
		h, p := st.Shard(id, i)
		hb := h.Marshal()
		want = append(want, len(disk))
		disk = append(append(append(disk, hb[:]...), p...), randBytes(i*13, uint64(i))...)
	}
	disk = append(disk, magic...)
	bad := bytes.Clone(disk[want[2] : want[2]+HeaderSize])
	bad[30] ^= 1
	disk = append(disk, bad...)
	var got []int
	ScanHeaders(disk, func(off int, h Header) {
		if h.Chunk != id || h.Index != len(got) {
			t.Fatalf("header at %d names %s/%d", off, h.Chunk, h.Index)
		}
		got = append(got, off)
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("found headers at %v, want %v", got, want)
	}
}
