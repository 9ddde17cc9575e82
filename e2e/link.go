package e2e

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Envelope is what a share link's record holds, sealed under the link key.
type Envelope struct {
	FileKey Key    `json:"key"`
	Name    string `json:"name"`           // the file's name, no directories
	Size    int64  `json:"size"`           // plaintext bytes
	Type    string `json:"type,omitempty"` // media type, if known
}

// MaxSealedEnvelope bounds a sealed envelope (a record the cluster keeps).
const MaxSealedEnvelope = 4 << 10

const envelopeContext = "atoll e2e v1 link envelope"

func envelopeAEAD(linkKey Key, linkID string) ([]byte, error) {
	return hkdf.Key(sha256.New, linkKey[:], []byte(linkID), envelopeContext, 32)
}

func envelopeAAD(linkID, blobID string) []byte {
	return []byte(envelopeContext + "\x00" + linkID + "\x00" + blobID)
}

// SealEnvelope seals env for the link linkID to blob blobID: random nonce
// ‖ AES-256-GCM ciphertext.
func SealEnvelope(linkKey Key, linkID, blobID string, env Envelope) ([]byte, error) {
	plain, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	k, err := envelopeAEAD(linkKey, linkID)
	if err != nil {
		return nil, err
	}
	aead := newGCM(Key(k))
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	rand.Read(out)
	out = aead.Seal(out, out, plain, envelopeAAD(linkID, blobID))
	if len(out) > MaxSealedEnvelope {
		return nil, fmt.Errorf("e2e: envelope of %d bytes exceeds %d (a name that long?)", len(out), MaxSealedEnvelope)
	}
	return out, nil
}

// OpenEnvelope authenticates and opens a sealed envelope of link linkID to
// blob blobID; anything altered, moved or under another key is ErrTampered.
func OpenEnvelope(linkKey Key, linkID, blobID string, sealed []byte) (Envelope, error) {
	k, err := envelopeAEAD(linkKey, linkID)
	if err != nil {
		return Envelope{}, err
	}
	aead := newGCM(Key(k))
	if len(sealed) < aead.NonceSize()+aead.Overhead() || len(sealed) > MaxSealedEnvelope {
		return Envelope{}, fmt.Errorf("%w: envelope of %d bytes", ErrTampered, len(sealed))
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], envelopeAAD(linkID, blobID))
	if err != nil {
		return Envelope{}, fmt.Errorf("%w: the link's envelope", ErrTampered)
	}
	var env Envelope
	if err := json.Unmarshal(plain, &env); err != nil || env.Size < 0 {
		return Envelope{}, fmt.Errorf("%w: the link's envelope holds no valid record", ErrTampered)
	}
	return env, nil
}

// Link is a share link: https://HOST/f/ID#KEY. The key is in the fragment,
// which browsers never send to a server.
type Link struct {
	Base string // scheme://host[:port] of a node
	ID   string
	Key  Key
}

var linkID = regexp.MustCompile(`^[A-Za-z0-9_-]{22,64}$`)

// ValidLinkID reports whether id has the form of a link ID.
func ValidLinkID(id string) bool { return linkID.MatchString(id) }

// NewLinkID returns a random link ID (128 bits).
func NewLinkID() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (l Link) String() string {
	k, _ := l.Key.MarshalText()
	return l.Base + "/f/" + l.ID + "#" + string(k)
}

// ParseLink parses a share link.
func ParseLink(s string) (Link, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Link{}, fmt.Errorf("e2e: not a link: %w", err)
	}
	id, ok := strings.CutPrefix(u.Path, "/f/")
	switch {
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "", u.User != nil, u.RawQuery != "":
		return Link{}, fmt.Errorf("e2e: %q is not a share link (https://HOST/f/ID#KEY)", s)
	case !ok || !ValidLinkID(id):
		return Link{}, fmt.Errorf("e2e: %q has no valid link ID (https://HOST/f/ID#KEY)", s)
	case u.Fragment == "":
		return Link{}, errors.New("e2e: the link has no key (the part after #): it was cut short")
	}
	l := Link{Base: u.Scheme + "://" + u.Host, ID: id}
	if err := l.Key.UnmarshalText([]byte(u.Fragment)); err != nil {
		return Link{}, errors.New("e2e: the link's key (after #) is damaged")
	}
	return l, nil
}
