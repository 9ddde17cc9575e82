// Package erasure turns a chunk of bytes into k data + m parity shards and
// back, and owns the on-disk shard format.
//
// # Shard format
//
// Every shard is stored and transferred as a 64-byte header followed by its
// payload. All integers are big-endian.
//
//	offset size field
//	0      4    magic "ATSH"
//	4      1    format version (1 Plain, 2 Dispersed)
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
// part of both formats and must never change.
//
// # Formats: what a shard reveals
//
// Plain (1): the k data shards are slices of the chunk itself, so a disk
// holding some of them holds part of the plaintext.
//
// Dispersed (2) is convergent AONT-RS (Resch and Plank, FAST 2011; the
// convergent variant is CDStore's CAONT-RS, Li et al., USENIX ATC 2015).
// Before coding, the chunk D becomes the package
//
//	C = AES-256-CTR(K, iv 0, D)   with K = BLAKE3-DeriveKey(keyContext, D)
//	P = C ‖ (K ⊕ BLAKE3(C))
//
// and P is erasure-coded instead of D. Any k shards give all of P, hence
// BLAKE3(C), K and D; fewer than k lack part of C, so BLAKE3(C) and K are
// unknown and what they hold is ciphertext under an unknown key. The key is
// stored nowhere but in the shards. It is derived from the content rather
// than drawn at random so that encoding is a function of the chunk: two
// puts of the same chunk racing to the same nodes, a repair and a read
// repair all produce identical shards, which chunk deduplication and
// shard-level repair rely on. Convergence reveals only what the chunk ID
// in every header and in the metadata already does: whether a chunk
// equals one the holder can guess exactly.
//
// Codec methods are safe for concurrent use; a Stripe is not.
package erasure

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/atollstore/atoll/blob"
	"github.com/klauspost/reedsolomon"
	"github.com/zeebo/blake3"
)

// HeaderSize is the size of a shard header in bytes.
const HeaderSize = 64

const (
	magic = "ATSH"
	align = 64 // shard sizes are multiples of this, for the SIMD kernels
)

// Format is a shard format version (see the package comment).
type Format uint8

const (
	Plain     Format = 1 // data shards are slices of the chunk
	Dispersed Format = 2 // convergent AONT-RS: below k shards, nothing
)

// Newest is the format new chunks are written in once every node reads it.
const Newest = Dispersed

// KeySize is the size of the masked key a Dispersed package appends.
const KeySize = 32

// keyContext is the BLAKE3 key-derivation context of Dispersed chunk keys;
// part of the format.
const keyContext = "atoll 2026-12-05 dispersed chunk key v2"

// PackageLen is the number of bytes a chunk of chunkLen bytes is coded as.
func (f Format) PackageLen(chunkLen int64) int64 {
	if f == Dispersed {
		return chunkLen + KeySize
	}
	return chunkLen
}

func (f Format) valid() bool { return f == Plain || f == Dispersed }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C used for shard payloads.
func Checksum(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// Header describes one stored shard.
type Header struct {
	Format   Format // zero means Plain
	K, M     int
	Index    int
	ChunkLen int64
	ShardLen int
	Chunk    blob.ID
	Checksum uint32 // CRC-32C of the payload
}

// Marshal encodes h.
func (h Header) Marshal() [HeaderSize]byte {
	var b [HeaderSize]byte
	copy(b[0:4], magic)
	b[4] = byte(h.format())
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
	f := Format(b[4])
	if !f.valid() {
		return Header{}, fmt.Errorf("%w: unknown shard format version %d", blob.ErrCorrupt, b[4])
	}
	h := Header{
		Format: f,
		K:      int(b[5]), M: int(b[6]), Index: int(b[7]),
		ChunkLen: int64(binary.BigEndian.Uint64(b[8:16])),
		ShardLen: int(binary.BigEndian.Uint32(b[16:20])),
		Checksum: binary.BigEndian.Uint32(b[52:56]),
	}
	copy(h.Chunk[:], b[20:52])
	if h.K < 1 || h.M < 0 || h.Index >= h.K+h.M || h.ChunkLen < 0 || int64(h.ShardLen) != ShardSize(f.PackageLen(h.ChunkLen), h.K) {
		return Header{}, fmt.Errorf("%w: inconsistent shard header %+v", blob.ErrCorrupt, h)
	}
	return h, nil
}

// ScanHeaders calls fn with every shard header that parses anywhere in b
// and its offset — a disk read as whoever seized it would, whatever the
// store's layout (a file per shard, or records in a volume).
func ScanHeaders(b []byte, fn func(off int, h Header)) {
	for off := 0; ; off++ {
		i := bytes.Index(b[off:], []byte(magic))
		if i < 0 {
			return
		}
		off += i
		if h, err := ParseHeader(b[off:]); err == nil {
			fn(off, h)
		}
	}
}

func (h Header) format() Format {
	if h.Format == 0 {
		return Plain
	}
	return h.Format
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

// ShardSize is the payload size of each shard of a package of pkgLen bytes
// (Format.PackageLen): ceil(pkgLen/k) rounded up to a multiple of 64.
func ShardSize(pkgLen int64, k int) int64 {
	s := (pkgLen + int64(k) - 1) / int64(k)
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
	max    int      // largest chunk it holds (room for a key after it)
	parity [][]byte // m slices of maxShard bytes
	n      int      // chunk length currently held
	format Format   // of the shards after Encode
	shards [][]byte // views valid after Encode
}

// NewStripe allocates a stripe for chunks of up to maxChunk bytes.
func (c *Codec) NewStripe(maxChunk int) *Stripe {
	ss := int(ShardSize(Dispersed.PackageLen(int64(maxChunk)), c.k))
	s := &Stripe{c: c, data: alignedBytes(c.k * ss), max: maxChunk, shards: make([][]byte, c.N())}
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
	max = min(max, s.max)
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

// Codec returns the codec the stripe encodes with.
func (s *Stripe) Codec() *Codec { return s.c }

// SetLen declares the first n bytes of Data() to be the chunk, for callers
// that filled the buffer themselves.
func (s *Stripe) SetLen(n int) { s.n = n }

// Buffer returns the area a chunk may fill, for filling by hand.
func (s *Stripe) Buffer() []byte { return s.data[:s.max] }

// Data returns the chunk's bytes; after a Dispersed Encode, its ciphertext.
func (s *Stripe) Data() []byte { return s.data[:s.n] }

// Encode turns the chunk into a package of format f (encrypting it in
// place for Dispersed), pads it and computes parity. Afterwards Shard(i)
// returns the payload of shard i.
func (s *Stripe) Encode(f Format) error {
	if !f.valid() {
		return fmt.Errorf("erasure: unknown format %d", f)
	}
	s.format = f
	pkg := int(f.PackageLen(int64(s.n)))
	if f == Dispersed {
		seal(s.data[:pkg], s.n)
	}
	ss := int(ShardSize(int64(pkg), s.c.k))
	clear(s.data[pkg : s.c.k*ss])
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
	return Header{Format: s.format, K: s.c.k, M: s.c.m, Index: i, ChunkLen: int64(s.n), ShardLen: len(p), Chunk: id, Checksum: Checksum(p)}, p
}

var zeroIV [aes.BlockSize]byte

// seal turns pkg[:n] (the chunk) into the Dispersed package pkg[:n+KeySize].
func seal(pkg []byte, n int) {
	var key [KeySize]byte
	blake3.DeriveKey(keyContext, pkg[:n], key[:])
	ctr(key[:]).XORKeyStream(pkg[:n], pkg[:n])
	mask := blake3.Sum256(pkg[:n])
	subtle.XORBytes(pkg[n:n+KeySize], key[:], mask[:])
}

func ctr(key []byte) cipher.Stream {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // unreachable: the key is always 32 bytes
	}
	return cipher.NewCTR(b, zeroIV[:])
}

// ErrTooFewShards means fewer than k shards were supplied to Decode.
var ErrTooFewShards = errors.New("erasure: too few shards")

// Decode rebuilds a chunk of chunkLen bytes coded in format f from shards
// (nil = missing; all present shards verified by the caller) and appends
// it to dst. Data shards are rebuilt only if missing; parity is never
// rebuilt. Missing entries of shards may be filled in; present ones are
// not changed. The caller checks the result against the chunk's ID: a
// wrong shard that passed its own checks yields wrong bytes, not an error.
func (c *Codec) Decode(shards [][]byte, chunkLen int64, f Format, dst []byte) ([]byte, error) {
	if len(shards) != c.N() {
		return dst, fmt.Errorf("erasure: got %d shards, want %d", len(shards), c.N())
	}
	if !f.valid() {
		return dst, fmt.Errorf("erasure: unknown format %d", f)
	}
	pkg := f.PackageLen(chunkLen)
	ss := int(ShardSize(pkg, c.k))
	have, dataMissing := 0, false
	for i, s := range shards {
		switch {
		case s == nil:
			dataMissing = dataMissing || i < c.k
		case len(s) != ss:
			return dst, fmt.Errorf("%w: shard %d is %d bytes, want %d", blob.ErrCorrupt, i, len(s), ss)
		default:
			have++
		}
	}
	if have < c.k {
		return dst, fmt.Errorf("%w: have %d of %d needed", ErrTooFewShards, have, c.k)
	}
	if dataMissing && pkg > 0 {
		if err := c.rs.ReconstructData(shards); err != nil {
			return dst, fmt.Errorf("erasure: reconstruct: %w", err)
		}
	}
	// The package, in order, is the first pkg bytes of the data shards.
	parts := func(from, to int64, yield func([]byte)) {
		for i := range int64(c.k) {
			lo, hi := i*int64(ss), (i+1)*int64(ss)
			if hi > from && lo < to {
				yield(shards[i][max(from, lo)-lo : min(to, hi)-lo])
			}
		}
	}
	out := slices.Grow(dst, int(chunkLen))
	if f == Plain {
		parts(0, chunkLen, func(p []byte) { out = append(out, p...) })
		return out, nil
	}
	mask := blake3.New()
	parts(0, chunkLen, func(p []byte) { mask.Write(p) })
	key := make([]byte, 0, KeySize)
	parts(chunkLen, pkg, func(p []byte) { key = append(key, p...) })
	subtle.XORBytes(key, key, mask.Sum(nil))
	stream := ctr(key)
	parts(0, chunkLen, func(p []byte) {
		n := len(out)
		out = out[:n+len(p)]
		stream.XORKeyStream(out[n:], p)
	})
	return out, nil
}

// Reconstruct rebuilds every missing shard (data and parity) in place, for
// repair. Missing entries must be nil or have capacity for the shard size.
func (c *Codec) Reconstruct(shards [][]byte) error { return c.rs.Reconstruct(shards) }

func (f Format) String() string {
	switch f {
	case Plain:
		return "plain"
	case Dispersed:
		return "dispersed"
	}
	return fmt.Sprintf("format%d", uint8(f))
}
