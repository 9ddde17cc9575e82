package raftstore

import (
	"errors"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
)

// TestLinks: a link needs its blob and a free ID; it can be deleted; the
// purge drops it once expired or once its blob is gone, and only then.
func TestLinks(t *testing.T) {
	n := soloNode(t)
	try := tryApply([]*testNode{n})
	b := testBlob(1)
	if err := try(PutBlobCommand(b)); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	link := func(id string, expires time.Time) Link {
		return Link{ID: id, Blob: b.ID, Sealed: []byte("sealed"), Owner: "key:A", Created: now, Expires: expires}
	}
	if err := try(PutLinkCommand(Link{ID: "nob", Blob: testBlob(2).ID, Sealed: []byte("s")})); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a link to a missing blob: %v", err)
	}
	if err := try(PutLinkCommand(Link{ID: "big", Blob: b.ID, Sealed: make([]byte, MaxLinkSealed+1)})); !errors.Is(err, blob.ErrBadRequest) {
		t.Fatalf("an oversized envelope: %v", err)
	}
	for _, l := range []Link{link("forever", time.Time{}), link("soon", now.Add(time.Hour)), link("gone", now.Add(-time.Second))} {
		if err := try(PutLinkCommand(l)); err != nil {
			t.Fatal(err)
		}
	}
	if err := try(PutLinkCommand(link("soon", time.Time{}))); !errors.Is(err, blob.ErrExists) {
		t.Fatalf("a taken ID: %v", err)
	}
	if got, err := n.s.Link("soon"); err != nil || got.Owner != "key:A" || !got.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("read back: %+v, %v", got, err)
	}
	all := []string{"forever", "soon", "gone"}
	if err := try(DropLinksCommand(DropLinks{IDs: all, At: now})); err != nil {
		t.Fatal(err)
	}
	exists := func(id string) bool { _, err := n.s.Link(id); return err == nil }
	if !exists("forever") || !exists("soon") || exists("gone") {
		t.Fatalf("after the purge at now: forever %v soon %v gone %v", exists("forever"), exists("soon"), exists("gone"))
	}
	if err := try(DeleteBlobCommand(b.ID)); err != nil {
		t.Fatal(err)
	}
	if err := try(DropLinksCommand(DropLinks{IDs: all, At: now})); err != nil || exists("forever") || exists("soon") {
		t.Fatalf("links of a deleted blob survive the purge: %v", err)
	}
	if err := try(DeleteLinkCommand("soon")); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("deleting a missing link: %v", err)
	}
}
