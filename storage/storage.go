// Package storage is the contract of a shard store: small interfaces (in
// the spirit of Perkeep's blobserver) that every implementation satisfies,
// and the helpers that verify shards once, for all of them.
//
// A shard is stored and moved as erasure's shard file: a 64-byte header and
// the payload. Stores keep and return those bytes as they are; verification
// happens in the helpers, so it is written once:
//
//   - Receive checks a shard on its way in (header names the slot, payload
//     length and CRC-32C) and turns any mismatch into a read error, which
//     every Receiver must treat as "store nothing";
//   - Read fetches a shard and checks it the same way before returning it;
//   - Check verifies a shard where it lies (remotely if the store can).
//
// Implementations: storage/disk (a volume for small shards, files for
// larger ones; durable before acknowledged), storage/mem (a map; its
// zero value works), storage/faulty (injects disk faults into another
// store), storage/remote (another node's store over HTTP, and the handler
// that serves it). storage/storagetest is the conformance suite every one
// of them passes.
package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
)

// Ref names a shard: the chunk it belongs to and its index in the chunk.
type Ref struct {
	Chunk blob.ID
	Index int
}

func (r Ref) String() string { return r.Chunk.String() + "/" + strconv.Itoa(r.Index) }

// FileName is the shard's file name, "<chunk id>.<index>".
func (r Ref) FileName() string { return r.Chunk.String() + "." + strconv.Itoa(r.Index) }

// ParseFileName is the inverse of Ref.FileName.
func ParseFileName(name string) (Ref, bool) {
	id, idx, ok := strings.Cut(name, ".")
	if !ok {
		return Ref{}, false
	}
	chunk, err := blob.ParseID(id)
	if err != nil {
		return Ref{}, false
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 || i > MaxIndex || strconv.Itoa(i) != idx {
		return Ref{}, false
	}
	return Ref{chunk, i}, true
}

// MaxIndex is the largest shard index (k+m ≤ 256).
const MaxIndex = 255

// MaxShardSize bounds a shard's payload. Chunks are at most a few MiB, so
// this only keeps a lying header from making a reader allocate gigabytes.
const MaxShardSize = 256 << 20

// Info describes a stored shard.
type Info struct {
	Size    int64     // bytes of the shard file, header included
	ModTime time.Time // when it was last written
}

// A Fetcher returns stored shards.
type Fetcher interface {
	// Fetch returns the shard file (header + payload) exactly as stored;
	// the caller closes it. A shard that is not held is an error wrapping
	// blob.ErrNotFound. The bytes are not verified: use Read.
	Fetch(ctx context.Context, ref Ref) (io.ReadCloser, error)
}

// A Receiver stores shards.
type Receiver interface {
	// Receive stores the shard file read from r under ref, replacing any
	// shard held there. The shard becomes visible atomically, only once it
	// is durable, and only if r ends with io.EOF: after any read error
	// nothing of it is visible (a torn shard is never kept). Receive does not
	// verify the bytes: callers use the package's Receive or Write, which do.
	// A full disk is an error wrapping blob.ErrNoSpace.
	Receive(ctx context.Context, ref Ref, r io.Reader) error
}

// A Statter describes stored shards without reading them.
type Statter interface {
	// Stat returns ref's Info, or an error wrapping blob.ErrNotFound.
	Stat(ctx context.Context, ref Ref) (Info, error)
}

// A Walker lists stored shards.
type Walker interface {
	// Walk calls fn for every shard held, in no particular order, until fn
	// returns an error (which Walk returns). Shards received or removed
	// during the walk may or may not be seen.
	Walk(ctx context.Context, fn func(Ref, Info) error) error
}

// A Remover deletes stored shards.
type Remover interface {
	// RemoveIfOlder deletes ref if it was last written before cutoff and
	// reports whether it did. It is atomic with respect to Receive of the
	// same ref, so a shard rewritten meanwhile is never the one deleted.
	// A shard that is not held is not an error: (false, nil).
	RemoveIfOlder(ctx context.Context, ref Ref, cutoff time.Time) (bool, error)
}

// A Verifier checks a shard where it lies, so that only the verdict
// crosses the network (the remote store). Check uses it when present.
type Verifier interface {
	// Verify returns nil if ref is held and intact, an error wrapping
	// blob.ErrNotFound if it is missing, blob.ErrCorrupt if it is damaged.
	Verify(ctx context.Context, ref Ref) error
}

// Shards is what one node needs of another's store: fetching and storing
// shards. All methods may be called concurrently.
type Shards interface {
	Fetcher
	Receiver
}

// Storage is a node's own shard store. All methods may be called
// concurrently.
type Storage interface {
	Shards
	Statter
	Walker
	Remover
	// Used returns the bytes held in shard files.
	Used() int64
}

// Receive stores the shard file read from body under ref in s, checking it
// as it streams: the header must be intact and name ref, and the payload
// must have the header's length and checksum. A shard that fails a check
// is not stored; the error wraps blob.ErrCorrupt (or io.ErrUnexpectedEOF
// when body ends early).
func Receive(ctx context.Context, s Receiver, ref Ref, body io.Reader) error {
	var hb [erasure.HeaderSize]byte
	if _, err := io.ReadFull(body, hb[:]); err != nil {
		return fmt.Errorf("shard %s: reading header: %w", ref, err)
	}
	h, err := checkHeader(hb[:], ref)
	if err != nil {
		return err
	}
	vr := &verifyingReader{h: h, r: io.LimitReader(body, int64(h.ShardLen)), crc: crc32.New(castagnoli)}
	return s.Receive(ctx, ref, io.MultiReader(bytes.NewReader(hb[:]), vr))
}

// Write stores a shard made of h and payload in s.
func Write(ctx context.Context, s Receiver, h erasure.Header, payload []byte) error {
	hb := h.Marshal()
	return Receive(ctx, s, Ref{h.Chunk, h.Index}, io.MultiReader(bytes.NewReader(hb[:]), bytes.NewReader(payload)))
}

// Read fetches ref from s and returns its header and payload once both are
// verified. A missing shard is blob.ErrNotFound; a damaged one (or one that
// names another slot) blob.ErrCorrupt.
func Read(ctx context.Context, s Fetcher, ref Ref) (erasure.Header, []byte, error) {
	rc, err := s.Fetch(ctx, ref)
	if err != nil {
		return erasure.Header{}, nil, err
	}
	defer rc.Close()
	var hb [erasure.HeaderSize]byte
	if _, err := io.ReadFull(rc, hb[:]); err != nil {
		return erasure.Header{}, nil, readErr(ref, "header", err)
	}
	h, err := checkHeader(hb[:], ref)
	if err != nil {
		return h, nil, err
	}
	payload := make([]byte, h.ShardLen)
	if _, err := io.ReadFull(rc, payload); err != nil {
		return h, nil, readErr(ref, "payload", err)
	}
	if err := h.Verify(payload); err != nil {
		return h, nil, err
	}
	return h, payload, nil
}

// readErr classifies a failed read: a shard that ends early is corrupt; any
// other failure (the disk's, the network's) is passed on as it is.
func readErr(ref Ref, part string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: shard %s: short %s", blob.ErrCorrupt, ref, part)
	}
	return fmt.Errorf("shard %s: reading %s: %w", ref, part, err)
}

// Verify checks a whole shard file held in memory: its header must be
// intact and name ref, its payload have the header's length and checksum.
func Verify(ref Ref, file []byte) error {
	h, err := checkHeader(file, ref)
	if err != nil {
		return err
	}
	return h.Verify(file[erasure.HeaderSize:])
}

// Check verifies ref where it lies if s can (Verifier), else reads it.
func Check(ctx context.Context, s Fetcher, ref Ref) error {
	if v, ok := s.(Verifier); ok {
		return v.Verify(ctx, ref)
	}
	_, _, err := Read(ctx, s, ref)
	return err
}

func checkHeader(b []byte, ref Ref) (erasure.Header, error) {
	h, err := erasure.ParseHeader(b)
	if err != nil {
		return h, fmt.Errorf("shard %s: %w", ref, err)
	}
	if h.Chunk != ref.Chunk || h.Index != ref.Index {
		return h, fmt.Errorf("%w: shard header names %s/%d, expected %s", blob.ErrCorrupt, h.Chunk, h.Index, ref)
	}
	if h.ShardLen > MaxShardSize {
		return h, fmt.Errorf("%w: shard %s claims %d payload bytes (limit %d)", blob.ErrTooLarge, ref, h.ShardLen, MaxShardSize)
	}
	return h, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// verifyingReader passes a shard's payload on and, at its end, turns io.EOF
// into an error unless the payload had the header's length and checksum —
// so a Receiver, which stores nothing after a read error, never keeps it.
type verifyingReader struct {
	h   erasure.Header
	r   io.Reader
	crc hash.Hash32
	n   int
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.crc.Write(p[:n])
	v.n += n
	if err != io.EOF {
		return n, err
	}
	if v.n != v.h.ShardLen {
		return n, fmt.Errorf("shard %s/%d: %w: got %d of %d payload bytes", v.h.Chunk, v.h.Index, io.ErrUnexpectedEOF, v.n, v.h.ShardLen)
	}
	if v.crc.Sum32() != v.h.Checksum {
		return n, fmt.Errorf("%w: shard %s/%d payload checksum mismatch in transfer", blob.ErrCorrupt, v.h.Chunk, v.h.Index)
	}
	return n, io.EOF
}
