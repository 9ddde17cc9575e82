package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/atollstore/atoll/blob"
)

// Link is a share link's record: the blob it opens and the envelope its
// key opens (sealed on the client, ciphertext to the cluster: package
// e2e), who made it and until when. A link works while its record exists
// and has not expired; deleting the record revokes it even for someone
// holding the link, since only the record holds the wrapped file key.
type Link struct {
	ID      string    `json:"id"`
	Blob    blob.ID   `json:"blob"`
	Sealed  []byte    `json:"sealed"`
	Owner   string    `json:"owner"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"` // zero: never
}

// MaxLinkSealed bounds a link's sealed envelope.
const MaxLinkSealed = 8 << 10

// Expired reports whether l has expired at now.
func (l Link) Expired(now time.Time) bool { return !l.Expires.IsZero() && !now.Before(l.Expires) }

// DropLinks removes the links of IDs that, when applied, have expired at
// At or whose blob is gone (the leader's periodic purge; re-checked in the
// FSM, so a link renewed or a blob re-put meanwhile stays).
type DropLinks struct {
	IDs []string  `json:"ids"`
	At  time.Time `json:"at"`
}

// PutLinkCommand creates a link; ErrExists if its ID is taken.
func PutLinkCommand(l Link) Command { return Command{PutLink: &l} }

// DeleteLinkCommand deletes a link.
func DeleteLinkCommand(id string) Command { return Command{DeleteLink: &id} }

// DropLinksCommand purges expired and orphaned links.
func DropLinksCommand(d DropLinks) Command { return Command{DropLinks: &d} }

func linkKey(id string) []byte { return append([]byte{prefixFSM, 'L'}, id...) }

func applyPutLink(txn *tx, l Link) error {
	switch {
	case l.ID == "" || len(l.ID) > 64:
		return fmt.Errorf("%w: link ID of %d bytes", blob.ErrBadRequest, len(l.ID))
	case len(l.Sealed) == 0 || len(l.Sealed) > MaxLinkSealed:
		return fmt.Errorf("%w: a link's envelope is 1 to %d bytes, not %d", blob.ErrBadRequest, MaxLinkSealed, len(l.Sealed))
	}
	switch err := getJSON(txn, linkKey(l.ID), &Link{}); {
	case err == nil:
		return fmt.Errorf("link %s: %w", l.ID, blob.ErrExists)
	case !errors.Is(err, blob.ErrNotFound):
		return err
	}
	if err := getJSON(txn, blobKey(l.Blob), &Blob{}); err != nil {
		return fmt.Errorf("the link's blob %s: %w", l.Blob, err)
	}
	return setJSON(txn, linkKey(l.ID), l)
}

func applyDeleteLink(txn *tx, id string) error {
	if err := getJSON(txn, linkKey(id), &Link{}); err != nil {
		return fmt.Errorf("link %s: %w", id, err)
	}
	return txn.Delete(linkKey(id))
}

func applyDropLinks(txn *tx, d DropLinks) error {
	for _, id := range d.IDs {
		var l Link
		switch err := getJSON(txn, linkKey(id), &l); {
		case errors.Is(err, blob.ErrNotFound):
			continue
		case err != nil:
			return err
		}
		gone := errors.Is(getJSON(txn, blobKey(l.Blob), &Blob{}), blob.ErrNotFound)
		if l.Expired(d.At) || gone {
			if err := txn.Delete(linkKey(id)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Link returns link id from the local replica, or blob.ErrNotFound.
func (s *Store) Link(id string) (Link, error) {
	var l Link
	err := view(s.db, func(txn *tx) error { return getJSON(txn, linkKey(id), &l) })
	return l, err
}

// Links calls fn for every link, in ID order, until it returns false.
func (s *Store) Links(fn func(Link) bool) error {
	return s.scan([]byte{prefixFSM, 'L'}, nil, func(_, v []byte) (bool, error) {
		var l Link
		if err := json.Unmarshal(v, &l); err != nil {
			return false, err
		}
		return fn(l), nil
	})
}
