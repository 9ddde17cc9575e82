// Package e2e is Atoll's client-side encryption: the sealed form of a file
// (what the cluster stores: it never sees plaintext, names or keys), the
// envelope a share link's record holds, and the link itself. The Go client
// and CLI use it; the web page (node/web/app.js) implements the same
// format with WebCrypto, and the tests hold the two to each other.
//
// # Sealed files
//
//	header   "ATOLLE2E" | version 1 | log2(segment size) = 16 | 6 zero bytes   (16 bytes)
//	segment  AES-256-GCM(file key, nonce, plaintext segment, aad = header)     (≤ 64 KiB + 16)
//	nonce    segment index (8 bytes, big-endian) | 0 0 0 final (1 on the last segment only)
//
// This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár,
// CRYPTO 2015): every segment is authenticated on its own, in its place,
// and the last one says it is last, so a reader detects any change,
// reordering or truncation before it hands on a segment's bytes. There is
// always at least one segment (an empty file is one empty final segment).
//
// # Keys
//
// A file key encrypts one file's content only. It is either random, or
// convergent within a key domain: HMAC-SHA256(domain key, context ‖
// SHA-256(plaintext)). The same file sealed twice under one domain key
// gives the same bytes, so the cluster stores it once, while without the
// domain key nobody can tell which file it is — deduplication stays within
// one domain, and the cluster cannot confirm that a user holds a known
// file (the weakness of plain convergent encryption).
//
// Keys are only ever wrapped by AEAD bound to their context (MEGA's 2022
// breaks came from key wrapping without authentication: ePrint 2022/914,
// 2022/959). A share link carries a random link key in its URL fragment,
// which browsers never send; the link's record on the cluster holds the
// envelope — file key, name, size — sealed with AES-256-GCM under
// HKDF-SHA256(link key, salt = link ID, info = context), with the link ID
// and the blob's ID as associated data. So the record alone is ciphertext,
// the link alone opens nothing once its record is deleted, and neither can
// be moved to another link or blob.
package e2e

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Key is a 256-bit key: a file key, a link key or a domain key.
type Key [32]byte

// NewKey returns a random key.
func NewKey() Key {
	var k Key
	rand.Read(k[:]) // NB: never fails (Go ≥ 1.24 crashes the program instead)
	return k
}

// ConvergentKey returns the file key of content whose SHA-256 is sum,
// within the key domain of domain.
func ConvergentKey(domain Key, sum [32]byte) Key {
	m := hmac.New(sha256.New, domain[:])
	m.Write([]byte("atoll e2e v1 convergent file key\x00"))
	m.Write(sum[:])
	var k Key
	copy(k[:], m.Sum(nil))
	return k
}

const (
	// SegmentSize is the plaintext bytes per segment.
	SegmentSize  = 1 << segmentShift
	segmentShift = 16
	// HeaderSize is the sealed stream's header.
	HeaderSize    = 16
	tagSize       = 16
	sealedSegment = SegmentSize + tagSize
)

var header = func() [HeaderSize]byte {
	var h [HeaderSize]byte
	copy(h[:], "ATOLLE2E")
	h[8], h[9] = 1, segmentShift
	return h
}()

// ErrTampered means sealed data failed authentication: altered, cut short,
// reordered, or opened with the wrong key. Nothing of it is returned.
var ErrTampered = errors.New("e2e: sealed data is damaged, altered or not for this key")

// segments is how many segments n plaintext bytes take.
func segments(n int64) int64 { return max(1, (n+SegmentSize-1)/SegmentSize) }

// SealedSize is the size of the sealed form of n plaintext bytes.
func SealedSize(n int64) int64 { return HeaderSize + n + segments(n)*tagSize }

// PlainSize is the plaintext size of a sealed stream of n bytes, or an
// error if no plaintext seals to that size.
func PlainSize(n int64) (int64, error) {
	body := n - HeaderSize
	if body < tagSize {
		return 0, fmt.Errorf("%w: %d bytes is too short", ErrTampered, n)
	}
	full := body / sealedSegment
	rest := body % sealedSegment
	p := full * SegmentSize
	switch {
	case rest >= tagSize:
		p += rest - tagSize
	case rest != 0 || full == 0:
		return 0, fmt.Errorf("%w: %d bytes is no sealed size", ErrTampered, n)
	}
	if SealedSize(p) != n {
		return 0, fmt.Errorf("%w: %d bytes is no sealed size", ErrTampered, n)
	}
	return p, nil
}

func newGCM(k Key) cipher.AEAD {
	b, _ := aes.NewCipher(k[:]) // NB: a 32-byte key never fails
	g, _ := cipher.NewGCM(b)
	return g
}

func nonce(i int64, final bool) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n, uint64(i))
	if final {
		n[11] = 1
	}
	return n
}

// Sealer gives random access to the sealed form of size plaintext bytes
// read from src: the same bytes at every read, so an upload can re-read a
// chunk (to resend it, or to resume) and get what it hashed. Like any
// io.ReaderAt it may be read from several goroutines at once.
type Sealer struct {
	src  io.ReaderAt
	size int64
	aead cipher.AEAD
	bufs sync.Pool // *segmentBuf
}

type segmentBuf struct{ plain, sealed []byte }

// NewSealer seals size bytes of src under key.
func NewSealer(src io.ReaderAt, size int64, key Key) *Sealer {
	s := &Sealer{src: src, size: size, aead: newGCM(key)}
	s.bufs.New = func() any {
		return &segmentBuf{plain: make([]byte, SegmentSize), sealed: make([]byte, 0, sealedSegment)}
	}
	return s
}

// Size is the size of the sealed form.
func (s *Sealer) Size() int64 { return SealedSize(s.size) }

// ReadAt implements io.ReaderAt over the sealed form.
func (s *Sealer) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("e2e: negative offset")
	}
	n := 0
	buf := s.bufs.Get().(*segmentBuf)
	defer s.bufs.Put(buf)
	for len(p) > 0 && off < s.Size() {
		var src []byte
		var at int64
		if off < HeaderSize {
			src, at = header[:], off
		} else {
			i := (off - HeaderSize) / sealedSegment
			seg, err := s.segment(i, buf)
			if err != nil {
				return n, err
			}
			src, at = seg, off-HeaderSize-i*sealedSegment
		}
		c := copy(p, src[at:])
		p, off, n = p[c:], off+int64(c), n+c
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}

func (s *Sealer) segment(i int64, buf *segmentBuf) ([]byte, error) {
	from := i * SegmentSize
	plain := buf.plain[:min(SegmentSize, s.size-from)]
	if n, err := s.src.ReadAt(plain, from); n < len(plain) { // NB: n == len(plain) may come with io.EOF
		if err == io.EOF || err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("e2e: reading plaintext at %d: %w", from, err)
	}
	h := header
	buf.sealed = s.aead.Seal(buf.sealed[:0], nonce(i, i == segments(s.size)-1), plain, h[:])
	return buf.sealed, nil
}

// Opener reads the plaintext of a sealed stream. Each segment is
// authenticated before any of its bytes are returned; the end of the
// stream is accepted only after a segment marked final.
type Opener struct {
	r     io.Reader
	aead  cipher.AEAD
	i     int64
	buf   []byte // sealed segment + one byte of look-ahead
	have  int    // bytes of buf filled
	out   []byte // decryption buffer
	plain []byte // decrypted, not yet returned (in out)
	done  bool
	err   error
}

// NewOpener reads the sealed stream r with file key key. A stream that is
// not sealed in this format fails at once.
func NewOpener(r io.Reader, key Key) (*Opener, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("%w: reading the header: %v", ErrTampered, err)
	}
	if h != header {
		return nil, fmt.Errorf("%w: not an Atoll sealed file (version 1)", ErrTampered)
	}
	return &Opener{r: r, aead: newGCM(key), buf: make([]byte, sealedSegment+1), out: make([]byte, 0, SegmentSize)}, nil
}

func (o *Opener) Read(p []byte) (int, error) {
	for len(o.plain) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		if o.done {
			return 0, io.EOF
		}
		o.err = o.next()
	}
	n := copy(p, o.plain)
	o.plain = o.plain[n:]
	return n, nil
}

// next authenticates the next segment into o.plain. The segment is final
// if the stream ends right after it: a full segment needs one byte of
// look-ahead to know.
func (o *Opener) next() error {
	n, err := io.ReadFull(o.r, o.buf[o.have:])
	o.have += n
	final := false
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		final = true
	case err != nil:
		return err
	}
	segLen := o.have
	if !final {
		segLen = sealedSegment
	}
	if segLen < tagSize {
		return fmt.Errorf("%w: segment %d is cut short", ErrTampered, o.i)
	}
	h := header
	plain, aerr := o.aead.Open(o.out[:0], nonce(o.i, final), o.buf[:segLen], h[:])
	if aerr != nil {
		return fmt.Errorf("%w: segment %d", ErrTampered, o.i)
	}
	if !final && len(plain) != SegmentSize {
		return fmt.Errorf("%w: segment %d", ErrTampered, o.i)
	}
	o.plain = plain
	o.i++
	o.done = final
	o.have = copy(o.buf, o.buf[segLen:o.have]) // the look-ahead byte
	return nil
}

// MarshalText encodes k in unpadded base64url, as links and the web page do.
func (k Key) MarshalText() ([]byte, error) {
	return []byte(base64.RawURLEncoding.EncodeToString(k[:])), nil
}

// UnmarshalText decodes MarshalText's form.
func (k *Key) UnmarshalText(b []byte) error {
	d, err := base64.RawURLEncoding.DecodeString(string(b))
	if err != nil || len(d) != len(k) {
		return errors.New("e2e: a key is 32 bytes in unpadded base64url")
	}
	copy(k[:], d)
	return nil
}
