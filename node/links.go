package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/e2e"
	"github.com/atollstore/atoll/raftstore"
)

// Share links (package e2e has the cryptography; here the records):
//
//	POST   /v1/links               create (write scope): the client's random
//	                               ID, a blob, the sealed envelope, an expiry
//	GET    /v1/links/{id}          the record, to anyone holding the link
//	GET    /v1/links/{id}/content  the blob (sealed bytes), Range supported
//	DELETE /v1/links/{id}          revoke: its owner or an operator
//
// The link ID (128 random bits) is the capability the first two GETs ask
// for; what they return is ciphertext, which only the key in the link's
// fragment opens. An expired or revoked link answers 404 like one that
// never existed; the leader purges expired records and those whose blob
// was deleted (purgeLinks).

// linkCommands is the command version links need (raftstore.Command.Version).
const linkCommands = 2

func (n *Node) handleCreateLink(w http.ResponseWriter, r *http.Request) {
	var req api.LinkRequest
	if !decodeBody(w, r, &req, 2*raftstore.MaxLinkSealed) {
		return
	}
	switch {
	case !e2e.ValidLinkID(req.ID):
		writeError(w, fmt.Errorf("%w: a link ID is 22 to 64 characters of [A-Za-z0-9_-]", blob.ErrBadRequest))
		return
	case !req.Expires.IsZero() && !req.Expires.After(time.Now()):
		writeError(w, fmt.Errorf("%w: the link expires in the past (%s)", blob.ErrBadRequest, req.Expires))
		return
	}
	// The caller must reach the blob: a content hash is no key to it.
	b, err := n.lookupFor(r, req.Blob)
	var l raftstore.Layout
	if err == nil {
		l, err = n.meta.Layout()
	}
	if err == nil && !everyMemberApplies(l, linkCommands) {
		err = fmt.Errorf("%w: links need every node at a release that has them (an upgrade in progress?)", blob.ErrUnavailable)
	}
	if err == nil {
		_, err = n.apply(r.Context(), raftstore.PutLinkCommand(raftstore.Link{
			ID: req.ID, Blob: req.Blob, Sealed: req.Sealed, Owner: callerOf(r).Name,
			Created: time.Now().UTC(), Expires: req.Expires.UTC(),
		}))
	}
	if err != nil {
		writeError(w, fmt.Errorf("creating link: %w", err))
		return
	}
	writeJSON(w, http.StatusCreated, api.Link{ID: req.ID, Blob: req.Blob, Size: b.Size, Sealed: req.Sealed, Expires: req.Expires.UTC()})
}

// openLink returns the live link named by the request's path and its blob.
func (n *Node) openLink(w http.ResponseWriter, r *http.Request) (raftstore.Link, *raftstore.Blob, bool) {
	id := r.PathValue("id")
	fail := func(err error) (raftstore.Link, *raftstore.Blob, bool) {
		writeError(w, err)
		return raftstore.Link{}, nil, false
	}
	if !e2e.ValidLinkID(id) {
		return fail(fmt.Errorf("%w: not a link ID", blob.ErrNotFound))
	}
	if err := n.Sync(r.Context()); err != nil {
		return fail(err)
	}
	l, err := n.meta.Link(id)
	if err == nil && l.Expired(time.Now()) {
		err = blob.ErrNotFound
	}
	var b *raftstore.Blob
	if err == nil {
		b, err = n.meta.Blob(l.Blob)
	}
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			err = fmt.Errorf("%w: no such link (expired or revoked?)", blob.ErrNotFound)
		}
		return fail(err)
	}
	return l, b, true
}

func (n *Node) handleGetLink(w http.ResponseWriter, r *http.Request) {
	if l, b, ok := n.openLink(w, r); ok {
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, api.Link{ID: l.ID, Blob: l.Blob, Size: b.Size, Sealed: l.Sealed, Expires: l.Expires})
	}
}

func (n *Node) handleLinkContent(w http.ResponseWriter, r *http.Request) {
	if _, b, ok := n.openLink(w, r); ok {
		w.Header().Set("Cache-Control", "no-store")
		n.serveBlob(w, r, b, nil)
	}
}

func (n *Node) handleDeleteLink(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := n.Sync(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	l, err := n.meta.Link(id)
	if err == nil {
		if c := callerOf(r); !c.Operator && c.Name != l.Owner {
			err = fmt.Errorf("%w: only the link's owner or an operator may revoke it", blob.ErrForbidden)
		}
	}
	if err == nil {
		_, err = n.apply(r.Context(), raftstore.DeleteLinkCommand(id))
	}
	if err != nil {
		writeError(w, fmt.Errorf("link %s: %w", id, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// purgeLinks, on the leader, deletes the records of expired links and of
// links whose blob is gone.
func (n *Node) purgeLinks(ctx context.Context) error {
	now := time.Now().UTC()
	var ids []string
	err := n.meta.Links(func(l raftstore.Link) bool {
		if l.Expired(now) {
			ids = append(ids, l.ID)
		} else if _, err := n.meta.Blob(l.Blob); errors.Is(err, blob.ErrNotFound) {
			ids = append(ids, l.ID)
		}
		return true
	})
	for len(ids) > 0 && err == nil {
		batch := ids[:min(len(ids), 1000)]
		ids = ids[len(batch):]
		_, err = n.meta.Apply(ctx, raftstore.DropLinksCommand(raftstore.DropLinks{IDs: batch, At: now}))
		n.log.Info("purged expired or orphaned links", "links", len(batch), "err", err)
	}
	return err
}
