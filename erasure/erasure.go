// Package erasure turns a chunk of bytes into k data + m parity shards and
// back, and owns the on-disk shard format.
//
// # Shard format (version 1)
//
// Every shard is stored and transferred as a 64-byte header followed by its
// payload. All integers are big-endian.
//
//	offset size field
//	0      4    magic "ATSH"
//	4      1    format version (1)
//	5      1    k (data shards)
//	6      1    m (parity shards)
//	7      1    shard index (0..k+m-1; < k is data)
//	8      8    chunk length in bytes (the data before padding)
//	16     4    payload length in bytes
//	20     32   chunk ID (BLAKE3-256 of the chunk's bytes)
//	52     4    CRC-32C of the payload
//	56     4    reserved, zero
//	60     4    CRC-32C of bytes 0..59
//
// A shard read back alone can therefore be checked without any metadata;
// one that fails the check is treated as missing and never decoded.
//
// The Reed–Solomon matrix is the library's default Vandermonde matrix; it is
// part of the format and must never change for version 1.
//
// Codec methods are safe for concurrent use; a Stripe is not.
package erasure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/atollstore/atoll/blob"
	"github.com/klauspost/reedsolomon"
)

// HeaderSize is the size of a shard header in bytes.
const HeaderSize = 64

const (
	magic   = "ATSH"
	version = 1
	align   = 64 // shard sizes are multiples of this, for the SIMD kernels
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C used for shard payloads.
func Checksum(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// Header describes one stored shard.
type Header struct {
	K, M     int
	Index    int
	ChunkLen int64
	ShardLen int
	Chunk    blob.ID
	Checksum uint32 // CRC-32C of the payload
}

// Marshal encodes h in the version-1 layout.
func (h Header) Marshal() [HeaderSize]byte {
	var b [HeaderSize]byte
	copy(b[0:4], magic)
	b[4] = version
	b[5], b[6], b[7] = byte(h.K), byte(h.M), byte(h.Index)
	binary.BigEndian.PutUint64(b[8:16], uint64(h.ChunkLen))
	binary.BigEndian.PutUint32(b[16:20], uint32(h.ShardLen))
	copy(b[20:52], h.Chunk[:])
	binary.BigEndian.PutUint32(b[52:56], h.Checksum)
	binary.BigEndian.PutUint32(b[60:64], Checksum(b[:60]))
	return b
}

// ParseHeader decodes and checks a header. Any damage yields an error
// wrapping blob.ErrCorrupt.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: shard header is %d bytes, want %d", blob.ErrCorrupt, len(b), HeaderSize)
	}
	if string(b[0:4]) != magic {
		return Header{}, fmt.Errorf("%w: bad shard magic %q", blob.ErrCorrupt, b[0:4])
	}
	if got, want := binary.BigEndian.Uint32(b[60:64]), Checksum(b[:60]); got != want {
		return Header{}, fmt.Errorf("%w: shard header checksum %08x, want %08x", blob.ErrCorrupt, got, want)
	}
	if b[4] != version {
		return Header{}, fmt.Errorf("%w: unknown shard format version %d", blob.ErrCorrupt, b[4])
	}
	h := Header{
		K: int(b[5]), M: int(b[6]), Index: int(b[7]),
		ChunkLen: int64(binary.BigEndian.Uint64(b[8:16])),
		ShardLen: int(binary.BigEndian.Uint32(b[16:20])),
		Checksum: binary.BigEndian.Uint32(b[52:56]),
	}
	copy(h.Chunk[:], b[20:52])
	if h.K < 1 || h.M < 0 || h.Index >= h.K+h.M || h.ChunkLen < 0 || int64(h.ShardLen) != ShardSize(h.ChunkLen, h.K) {
		return Header{}, fmt.Errorf("%w: inconsistent shard header %+v", blob.ErrCorrupt, h)
	}
	return h, nil
}

// Verify checks payload against h.
func (h Header) Verify(payload []byte) error {
	if len(payload) != h.ShardLen {
		return fmt.Errorf("%w: shard payload is %d bytes, header says %d", blob.ErrCorrupt, len(payload), h.ShardLen)
	}
	if got := Checksum(payload); got != h.Checksum {
		return fmt.Errorf("%w: shard %s/%d payload checksum %08x, want %08x", blob.ErrCorrupt, h.Chunk, h.Index, got, h.Checksum)
	}
	return nil
}

// ShardSize is the payload size of each shard of a chunk of chunkLen bytes:
// ceil(chunkLen/k) rounded up to a multiple of 64.
func ShardSize(chunkLen int64, k int) int64 {
	s := (chunkLen + int64(k) - 1) / int64(k)
	return (s + align - 1) / align * align
}

// Codec encodes and decodes chunks for one (k, m).
type Codec struct {
	k, m int
	rs   reedsolomon.Encoder
}

// New returns a Codec with k data and m parity shards.
func New(k, m int) (*Codec, error) {
	if k < 1 || m < 1 || k+m > 256 {
		return nil, fmt.Errorf("erasure: invalid k=%d m=%d (need k,m >= 1, k+m <= 256)", k, m)
	}
	// NB: one goroutine per encode; callers run one stripe per core instead,
	// which scales better than splitting a stripe (see shared/DEPS.md §3.2).
	rs, err := reedsolomon.New(k, m, reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return nil, err
	}
	return &Codec{k: k, m: m, rs: rs}, nil
}

// K returns the number of data shards.
func (c *Codec) K() int { return c.k }

// M returns the number of parity shards.
func (c *Codec) M() int { return c.m }

// N returns k+m.
func (c *Codec) N() int { return c.k + c.m }

// Stripe is the working memory for one chunk: the chunk's bytes laid out
// contiguously so that the data shards are views into them (no copy), plus
// parity. It costs about maxChunk·(k+m)/k bytes and is reusable.
type Stripe struct {
	c      *Codec
	data   []byte   // k·maxShard bytes, 64-byte aligned
	parity [][]byte // m slices of maxShard bytes
	n      int      // chunk length currently held
	shards [][]byte // views valid after Encode
}

// NewStripe allocates a stripe for chunks of up to maxChunk bytes.
func (c *Codec) NewStripe(maxChunk int) *Stripe {
	ss := int(ShardSize(int64(maxChunk), c.k))
	s := &Stripe{c: c, data: alignedBytes(c.k * ss), shards: make([][]byte, c.N())}
	for i := 0; i < c.m; i++ {
		s.parity = append(s.parity, alignedBytes(ss))
	}
	return s
}

func alignedBytes(n int) []byte {
	b := make([]byte, n+align)
	off := 0
	if r := int(uintptrOf(b) % align); r != 0 {
		off = align - r
	}
	return b[off : off+n : off+n]
}

// Fill reads the next chunk (up to max bytes, capped by the stripe's
// capacity) from r. It returns the number of bytes read; 0 with io.EOF means
// r was already exhausted. A short chunk ended by a clean io.EOF is not an
// error, but any other error — including io.ErrUnexpectedEOF from r, which
// is how a truncated HTTP body reports — is returned, never mistaken for
// the end of the data.
func (s *Stripe) Fill(r io.Reader, max int) (int, error) {
	if max > len(s.data) {
		max = len(s.data)
	}
	n := 0
	var err error
	for n < max && err == nil {
		var nn int
		nn, err = r.Read(s.data[n:max])
		n += nn
	}
	s.n = n
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// SetLen declares the first n bytes of Data() to be the chunk, for callers
// that filled the buffer themselves.
func (s *Stripe) SetLen(n int) { s.n = n }

// Buffer returns the whole data area, for filling by hand.
func (s *Stripe) Buffer() []byte { return s.data }

// Data returns the chunk's bytes.
func (s *Stripe) Data() []byte { return s.data[:s.n] }

// Encode pads the chunk and computes parity. Afterwards Shard(i) returns the
// payload of shard i.
func (s *Stripe) Encode() error {
	ss := int(ShardSize(int64(s.n), s.c.k))
	clear(s.data[s.n : s.c.k*ss])
	for i := 0; i < s.c.k; i++ {
		s.shards[i] = s.data[i*ss : (i+1)*ss]
	}
	for i := 0; i < s.c.m; i++ {
		s.shards[s.c.k+i] = s.parity[i][:ss]
	}
	if ss == 0 {
		return nil
	}
	return s.c.rs.Encode(s.shards)
}

// Shard returns shard i's header and payload. Valid until the next Fill.
func (s *Stripe) Shard(id blob.ID, i int) (Header, []byte) {
	p := s.shards[i]
	return Header{K: s.c.k, M: s.c.m, Index: i, ChunkLen: int64(s.n), ShardLen: len(p), Chunk: id, Checksum: Checksum(p)}, p
}

// ErrTooFewShards means fewer than k shards were supplied to Decode.
var ErrTooFewShards = errors.New("erasure: too few shards")

// Decode rebuilds a chunk of chunkLen bytes from shards (nil = missing; all
// present shards verified by the caller) and writes it to w. Data shards are
// rebuilt only if missing; parity is never rebuilt. shards may be modified.
func (c *Codec) Decode(shards [][]byte, chunkLen int64, w io.Writer) error {
	if len(shards) != c.N() {
		return fmt.Errorf("erasure: got %d shards, want %d", len(shards), c.N())
	}
	have, dataMissing := 0, false
	for i, s := range shards {
		if s != nil {
			have++
		} else if i < c.k {
			dataMissing = true
		}
	}
	if have < c.k {
		return fmt.Errorf("%w: have %d of %d needed", ErrTooFewShards, have, c.k)
	}
	if dataMissing && chunkLen > 0 {
		if err := c.rs.ReconstructData(shards); err != nil {
			return fmt.Errorf("erasure: reconstruct: %w", err)
		}
	}
	left := chunkLen
	for i := 0; i < c.k && left > 0; i++ {
		p := shards[i]
		if int64(len(p)) > left {
			p = p[:left]
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
		left -= int64(len(p))
	}
	return nil
}

// Reconstruct rebuilds every missing shard (data and parity) in place, for
// repair. Missing entries must be nil or have capacity for the shard size.
func (c *Codec) Reconstruct(shards [][]byte) error { return c.rs.Reconstruct(shards) }
