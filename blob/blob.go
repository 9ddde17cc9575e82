// Package blob is Atoll's shared vocabulary: content addresses, node and
// region names, and the sentinel errors every layer branches on.
//
// An ID is the BLAKE3-256 hash of content — a chunk's bytes, or a whole
// blob's bytes, whichever way it was uploaded — printed as 52 lowercase
// base32 characters. Because IDs are derived from content, storing the same
// bytes twice yields the same ID and the same shard files.
//
// Errors cross the HTTP API with a wire code (errcode.go): blob's own
// sentinels, and those other packages declare with NewError, keep their
// identity for errors.Is on the receiving side.
package blob

import (
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"

	"github.com/zeebo/blake3"
)

// ID is a 32-byte content address.
type ID [32]byte

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// IDLen is the length of an ID's printed form.
const IDLen = 52

func (id ID) String() string { return enc.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	p, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ParseID parses the printed form of an ID. A malformed string yields an
// error wrapping ErrInvalidID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != IDLen {
		return id, fmt.Errorf("%w: %q has %d characters, want %d", ErrInvalidID, truncate(s), len(s), IDLen)
	}
	n, err := enc.Decode(id[:], []byte(s))
	if err != nil || n != len(id) {
		return id, fmt.Errorf("%w: %q is not base32", ErrInvalidID, truncate(s))
	}
	if id.String() != s {
		// NB: the last character carries 4 unused bits; only the canonical
		// form is an ID, so that one ID has one name.
		return id, fmt.Errorf("%w: %q is not in canonical form", ErrInvalidID, truncate(s))
	}
	return id, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Sum returns the ID of b.
func Sum(b []byte) ID { return ID(blake3.Sum256(b)) }

// NodeID names a storage node; it is stable across restarts.
type NodeID string

// Region names a jurisdiction: the unit of failure Atoll survives losing.
type Region string

// Zone names a failure domain inside a region (a rack, a building).
type Zone string

// Sentinel errors. Wrap them with context; test with errors.Is.
var (
	// ErrNotFound: no such blob or shard. It matches fs.ErrNotExist.
	ErrNotFound = fmt.Errorf("not found: %w", fs.ErrNotExist)
	// ErrInvalidID: a string that is not an ID.
	ErrInvalidID = errors.New("invalid id")
	// ErrCorrupt: stored bytes failed verification. Corruption must lead to
	// repair, never to a retry of the same copy.
	ErrCorrupt = errors.New("corrupt data")
	// ErrTooLarge: a body exceeded the configured limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable: not enough healthy nodes to serve the request now.
	ErrUnavailable = errors.New("unavailable")
	// ErrNoSpace: a disk is full.
	ErrNoSpace = errors.New("no space left")
	// ErrBadDigest: uploaded bytes do not hash to the ID they were sent as.
	ErrBadDigest = errors.New("content does not match its id")
	// ErrExists: the name is taken (a bucket, an access key).
	ErrExists = errors.New("already exists")
	// ErrNotEmpty: a container still holds something (a bucket).
	ErrNotEmpty = errors.New("not empty")
	// ErrMissingChunks: a manifest names chunks the cluster does not hold
	// (never uploaded, or abandoned and reclaimed); upload them and retry.
	ErrMissingChunks = errors.New("chunks missing")
	// ErrBadRequest: a request the API cannot make sense of.
	ErrBadRequest = errors.New("bad request")
	// ErrForbidden: the caller's credentials (or lack of them) do not allow
	// the request.
	ErrForbidden = errors.New("forbidden")
)
