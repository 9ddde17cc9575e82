package raftstore

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
)

// TestTenants: owners accumulate per blob, a release drops one, the last
// release deletes the blob; proofs of holding a chunk come with a put or a
// staged upload and go with the chunk.
func TestTenants(t *testing.T) {
	n := soloNode(t)
	try := tryApply([]*testNode{n})
	must := func(cmd Command) {
		t.Helper()
		if err := try(cmd); err != nil {
			t.Fatal(err)
		}
	}
	chunk, staged := blob.Sum([]byte("c1")), blob.Sum([]byte("c2"))
	b := testBlob(1, chunk)
	b.Owner = "alice"
	must(PutBlobCommand(b))
	b.Owner = "bob"
	must(PutBlobCommand(b))
	if owners, _ := n.s.Owners(b.ID); !slices.Equal(owners, []string{"alice", "bob"}) {
		t.Fatalf("owners %v", owners)
	}
	if rec, _ := n.s.Blob(b.ID); rec.Owner != "" {
		t.Fatalf("the blob record names an owner: %q", rec.Owner)
	}
	holds := func(tenant string, c blob.ID) bool { ok, _ := n.s.Holds(tenant, c); return ok }
	if !holds("alice", chunk) || !holds("bob", chunk) || holds("carol", chunk) {
		t.Fatal("proofs of holding the chunk")
	}
	must(StageChunkCommand(StagedChunk{Chunk: Chunk{ID: staged, Len: 10, Shards: []blob.NodeID{"a", "b", "c"}, K: 2, M: 1}, At: time.Now(), Owner: "carol"}))
	must(StageChunkCommand(StagedChunk{Chunk: Chunk{ID: chunk, Len: 10, Shards: []blob.NodeID{"a", "b", "c"}, K: 2, M: 1}, At: time.Now(), Owner: "carol"}))
	if !holds("carol", staged) || !holds("carol", chunk) {
		t.Fatal("a staged upload proves holding, also of a chunk others stored")
	}
	if err := try(ReleaseBlobCommand(ReleaseBlob{ID: b.ID, Owner: "carol"})); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a release by a non-owner: %v", err)
	}
	must(ReleaseBlobCommand(ReleaseBlob{ID: b.ID, Owner: "alice"}))
	if _, err := n.s.Blob(b.ID); err != nil {
		t.Fatalf("the blob went while bob owns it: %v", err)
	}
	must(ReleaseBlobCommand(ReleaseBlob{ID: b.ID, Owner: "bob"}))
	if _, err := n.s.Blob(b.ID); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("the blob outlived its last owner: %v", err)
	}
	if owners, _ := n.s.Owners(b.ID); len(owners) != 0 || holds("alice", chunk) || holds("carol", chunk) {
		t.Fatalf("rows left behind: owners %v", owners)
	}
	if got := (Command{PutBlob: &b}).Version(); got != 2 {
		t.Fatalf("a PutBlob with an owner is version %d", got)
	}
}
