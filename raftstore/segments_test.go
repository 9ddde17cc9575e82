package raftstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
)

// stagedSegment is a StageSegment of chunks seed0..seed(n-1), each with nine
// realistic locations (as bigBlob's).
func stagedSegment(seed string, n int, at time.Time) StagedSegment {
	cs := bigBlob(seed, n).Chunks
	return StagedSegment{ID: SegmentID(cs), K: 6, M: 3, Chunks: cs, At: at}
}

// worstSegment is the largest StageSegment there may be: SegmentChunks
// new chunks, each with nine locations of the longest node IDs, for a
// tenant of the longest name, renewing MaxRenew segments.
func worstSegment(at time.Time) StagedSegment {
	s := stagedSegment("full", SegmentChunks, at)
	var shards []blob.NodeID
	for i := range 9 {
		shards = append(shards, blob.NodeID(fmt.Sprintf("%02d%s", i, strings.Repeat("n", 61))))
	}
	for i := range s.Chunks {
		s.Chunks[i].Shards, s.Chunks[i].Format = shards, 2
	}
	s.ID = SegmentID(s.Chunks)
	s.Owner = strings.Repeat("t", 128)
	for i := range MaxRenew {
		s.Renew = append(s.Renew, blob.Sum([]byte(fmt.Sprint("renew", i))))
	}
	return s
}

func (s StagedSegment) ref() Segment {
	var n int64
	for _, c := range s.Chunks {
		n += c.Len
	}
	return Segment{ID: s.ID, Chunks: len(s.Chunks), Len: n}
}

func hasSegment(s *Store, id blob.ID) bool {
	_, err := s.Segment(id)
	return err == nil
}

// TestSegmentedBlobs: a blob of more chunks than a command carries commits
// its chunk list in segments, each within one transaction even at the
// largest size; the segments hold their chunks until the last blob holding
// them goes and the sweep drops them; unclaimed segments are dropped after
// the grace unless renewed; a blob cannot name a segment that is gone or
// misstate one.
func TestSegmentedBlobs(t *testing.T) {
	n := soloNode(t)
	nodes := []*testNode{n}
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	full := worstSegment(t0) // the largest a segment and its command may be
	shared := stagedSegment("shared", 10, t0)
	stray := stagedSegment("stray", 3, t0)
	renewed := stagedSegment("renewed", 3, t0)
	for _, s := range []StagedSegment{full, shared, stray, renewed} {
		mustApply(t, nodes, StageSegmentCommand(s))
	}
	late := stagedSegment("late", 2, t0.Add(time.Hour))
	late.Renew = []blob.ID{renewed.ID}
	mustApply(t, nodes, StageSegmentCommand(late))

	wrong := stagedSegment("wrong", 2, t0)
	wrong.ID = shared.ID
	tooLong := stagedSegment("long", SegmentChunks+1, t0)
	for name, s := range map[string]StagedSegment{"misaddressed": wrong, "too long": tooLong} {
		if _, err := n.s.Apply(ctx, StageSegmentCommand(s)); !errors.Is(err, blob.ErrBadRequest) {
			t.Errorf("%s segment: %v, want ErrBadRequest", name, err)
		}
	}

	b1 := Blob{ID: blob.Sum([]byte("b1")), K: 6, M: 3, Segments: []Segment{full.ref(), shared.ref()}}
	b1.Size = b1.Segments[0].Len + b1.Segments[1].Len
	b2 := Blob{ID: blob.Sum([]byte("b2")), K: 6, M: 3, Segments: []Segment{shared.ref(), shared.ref()}, Size: 2 * shared.ref().Len}
	if v := PutBlobCommand(b1).Version(); v != 4 {
		t.Fatalf("a segmented PutBlob is of version %d, want 4", v)
	}
	mustApply(t, nodes, PutBlobCommand(b1))
	mustApply(t, nodes, PutBlobCommand(b2))

	got, err := n.s.Blob(b1.ID)
	if err != nil || !slices.Equal(got.Segments, b1.Segments) || len(got.Chunks) != 0 {
		t.Fatalf("blob read back: %+v, %v", got, err)
	}
	cs, err := n.s.Segment(full.ID)
	if err != nil || len(cs) != SegmentChunks {
		t.Fatalf("segment read back: %d chunks, %v", len(cs), err)
	}
	for i, c := range cs {
		if c.ID != full.Chunks[i].ID || c.Len != full.Chunks[i].Len || !slices.Equal(c.Shards, full.Chunks[i].Shards) || c.K != 6 {
			t.Fatalf("chunk %d read back as %+v, want %+v", i, c, full.Chunks[i])
		}
	}

	cutoff := t0.Add(30 * time.Minute)
	abandoned, err := n.s.AbandonedSegments(cutoff)
	if err != nil || !slices.Equal(abandoned, []blob.ID{stray.ID}) {
		t.Fatalf("abandoned = %v, %v; want only the stray segment", abandoned, err)
	}

	// b1 goes: full is released (for the next sweep), shared stays with b2.
	mustApply(t, nodes, DeleteBlobCommand(b1.ID))
	if !hasChunk(n.s, full.Chunks[0].ID) {
		t.Fatal("a released segment's chunks went before the sweep")
	}
	abandoned, _ = n.s.AbandonedSegments(cutoff)
	slices.SortFunc(abandoned, func(a, b blob.ID) int { return compareStrings(a.String(), b.String()) })
	want := []blob.ID{full.ID, stray.ID}
	slices.SortFunc(want, func(a, b blob.ID) int { return compareStrings(a.String(), b.String()) })
	if !slices.Equal(abandoned, want) {
		t.Fatalf("abandoned after the delete = %v, want %v", abandoned, want)
	}
	// The sweep drops one segment a command (a full one is a transaction's
	// worth of chunk records); a segment claimed meanwhile is kept.
	for _, id := range append(abandoned, shared.ID, renewed.ID) {
		mustApply(t, nodes, DropSegmentsCommand(DropStaged{IDs: []blob.ID{id}, Before: cutoff}))
	}
	if hasSegment(n.s, full.ID) || hasSegment(n.s, stray.ID) || hasChunk(n.s, full.Chunks[SegmentChunks-1].ID) || hasChunk(n.s, stray.Chunks[0].ID) {
		t.Fatal("a dropped segment or its chunks are still there")
	}
	if !hasSegment(n.s, shared.ID) || !hasChunk(n.s, shared.Chunks[9].ID) || !hasSegment(n.s, renewed.ID) {
		t.Fatal("a held or renewed segment was dropped")
	}

	// A blob naming a dropped segment, or misstating one, is refused and
	// leaves no reference behind.
	b3 := Blob{ID: blob.Sum([]byte("b3")), K: 6, M: 3, Segments: []Segment{renewed.ref(), full.ref()}}
	if _, err := n.s.Apply(ctx, PutBlobCommand(b3)); !errors.Is(err, ErrChunkGone) {
		t.Fatalf("a blob over a dropped segment: %v, want ErrChunkGone", err)
	}
	misstated := renewed.ref()
	misstated.Len++
	b3.Segments = []Segment{misstated}
	if _, err := n.s.Apply(ctx, PutBlobCommand(b3)); !errors.Is(err, blob.ErrBadRequest) {
		t.Fatalf("a blob misstating a segment's size: %v, want ErrBadRequest", err)
	}
	if ab, _ := n.s.AbandonedSegments(t0.Add(2 * time.Hour)); !slices.Contains(ab, renewed.ID) {
		t.Fatal("a refused put kept a reference to a segment")
	}

	// The last holder of shared goes: the sweep takes it and its chunks.
	mustApply(t, nodes, DeleteBlobCommand(b2.ID))
	mustApply(t, nodes, DropSegmentsCommand(DropStaged{IDs: []blob.ID{shared.ID}, Before: cutoff}))
	if hasSegment(n.s, shared.ID) || hasChunk(n.s, shared.Chunks[0].ID) {
		t.Fatal("an unreferenced segment survived the sweep")
	}
}

// TestSegmentedObjectsAndParts: objects and parts hold segments like
// blobs: overwriting or deleting an object, and completing or aborting an
// upload, release them.
func TestSegmentedObjectsAndParts(t *testing.T) {
	n := soloNode(t)
	nodes := []*testNode{n}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mustApply(t, nodes, CreateBucketCommand(Bucket{Name: "b", Created: t0}))
	refs := func(s StagedSegment) int {
		ab, _ := n.s.AbandonedSegments(t0.Add(time.Hour))
		if !hasSegment(n.s, s.ID) {
			return -1
		}
		if slices.Contains(ab, s.ID) {
			return 0
		}
		return 1
	}
	var segs []StagedSegment
	for i := range 3 {
		s := stagedSegment(fmt.Sprint("seg", i), 4, t0)
		mustApply(t, nodes, StageSegmentCommand(s))
		segs = append(segs, s)
	}
	o := Object{Bucket: "b", Key: "k", K: 6, M: 3, Segments: []Segment{segs[0].ref()}, Modified: t0}
	mustApply(t, nodes, PutObjectCommand(o))
	if refs(segs[0]) != 1 {
		t.Fatal("the object holds no reference on its segment")
	}
	o.Segments = []Segment{segs[1].ref()}
	mustApply(t, nodes, PutObjectCommand(o))
	if refs(segs[0]) != 0 || refs(segs[1]) != 1 {
		t.Fatalf("after an overwrite: %d, %d references, want 0, 1", refs(segs[0]), refs(segs[1]))
	}
	got, err := n.s.Object("b", "k")
	if err != nil || !slices.Equal(got.Segments, o.Segments) {
		t.Fatalf("object read back: %+v, %v", got, err)
	}
	mustApply(t, nodes, DeleteObjectCommand(ObjectRef{Bucket: "b", Key: "k"}))
	if refs(segs[1]) != 0 {
		t.Fatal("a deleted object kept its segment")
	}

	up := UploadRef{Bucket: "b", Key: "m", ID: "u1"}
	mustApply(t, nodes, CreateUploadCommand(Upload{ID: up.ID, Bucket: up.Bucket, Key: up.Key, Created: t0}))
	mustApply(t, nodes, PutPartCommand(up, Part{Number: 1, K: 6, M: 3, Segments: []Segment{segs[2].ref()}}))
	if refs(segs[2]) != 1 {
		t.Fatal("the part holds no reference on its segment")
	}
	done := Object{Bucket: "b", Key: "m", K: 6, M: 3, Segments: []Segment{segs[2].ref()}, Modified: t0}
	mustApply(t, nodes, CompleteUploadCommand(CompleteUpload{UploadRef: up, Object: done}))
	mustApply(t, nodes, DropPartsCommand(up.ID)) // the parts go after the upload (TestLongUploadReleasesPartsLater)
	if refs(segs[2]) != 1 {
		t.Fatal("completing moved the segment's reference wrongly")
	}
	mustApply(t, nodes, DeleteObjectCommand(ObjectRef{Bucket: "b", Key: "m"}))
	if refs(segs[2]) != 0 {
		t.Fatal("the completed object's delete kept its segment")
	}
}

// TestLongUploadReleasesPartsLater: completing an upload whose object
// lists segments, or releasing (aborting) any upload, releases its parts
// afterwards, a transaction's worth a DropParts command, the upload gone
// at once.
func TestLongUploadReleasesPartsLater(t *testing.T) {
	n := soloNode(t)
	nodes := []*testNode{n}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mustApply(t, nodes, CreateBucketCommand(Bucket{Name: "b", Created: t0}))
	up := UploadRef{Bucket: "b", Key: "big", ID: "u2"}
	mustApply(t, nodes, CreateUploadCommand(Upload{ID: up.ID, Bucket: up.Bucket, Key: up.Key, Created: t0}))
	var parts [][]Chunk
	for i := range 3 {
		cs := bigBlob(fmt.Sprint("part", i), 600).Chunks
		mustApply(t, nodes, PutPartCommand(up, Part{Number: i + 1, K: 6, M: 3, Chunks: cs}))
		parts = append(parts, cs)
	}
	kept := []Chunk{parts[0][0], parts[2][5]} // what the object's segment holds
	for i := range kept {
		kept[i].Reused = true
	}
	seg := StagedSegment{ID: SegmentID(kept), K: 6, M: 3, Chunks: kept, At: t0}
	mustApply(t, nodes, StageSegmentCommand(seg))
	done := Object{Bucket: "b", Key: "big", K: 6, M: 3, Segments: []Segment{seg.ref()}, Modified: t0}
	mustApply(t, nodes, CompleteUploadCommand(CompleteUpload{UploadRef: up, Object: done}))

	if _, err := n.s.Upload(up); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("the completed upload: %v, want ErrNoSuchUpload", err)
	}
	for round := 1; ; round++ {
		ups, err := n.s.ReleasedUploads()
		if err != nil {
			t.Fatal(err)
		}
		if len(ups) == 0 {
			if round != 3 {
				t.Fatalf("parts released in %d commands, want 2", round-1)
			}
			break
		}
		if round > 3 || ups[0] != up.ID {
			t.Fatalf("round %d: released uploads %v", round, ups)
		}
		if !hasChunk(n.s, parts[2][100].ID) {
			t.Fatal("a part's chunk went before its part")
		}
		mustApply(t, nodes, DropPartsCommand(up.ID))
	}
	for i, cs := range parts {
		if hasChunk(n.s, cs[100].ID) {
			t.Fatalf("part %d's chunk survived its part", i+1)
		}
	}
	if !hasChunk(n.s, kept[0].ID) || !hasChunk(n.s, kept[1].ID) {
		t.Fatal("a chunk the object holds went with the parts")
	}

	// An abort of any size: the upload goes now, its parts after.
	up3 := UploadRef{Bucket: "b", Key: "dropped", ID: "u3"}
	mustApply(t, nodes, CreateUploadCommand(Upload{ID: up3.ID, Bucket: up3.Bucket, Key: up3.Key, Created: t0}))
	cs := bigBlob("part3", 3).Chunks
	mustApply(t, nodes, PutPartCommand(up3, Part{Number: 1, K: 6, M: 3, Chunks: cs}))
	if v := ReleaseUploadCommand(up3).Version(); v != 4 {
		t.Fatalf("ReleaseUpload is of version %d, want 4", v)
	}
	mustApply(t, nodes, ReleaseUploadCommand(up3))
	if _, err := n.s.Upload(up3); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("the released upload: %v, want ErrNoSuchUpload", err)
	}
	if ups, _ := n.s.ReleasedUploads(); !slices.Equal(ups, []string{up3.ID}) || !hasChunk(n.s, cs[0].ID) {
		t.Fatalf("released uploads %v, its chunk kept: %v", ups, hasChunk(n.s, cs[0].ID))
	}
	mustApply(t, nodes, DropPartsCommand(up3.ID))
	if ups, _ := n.s.ReleasedUploads(); len(ups) != 0 || hasChunk(n.s, cs[0].ID) {
		t.Fatalf("after DropParts: released uploads %v, chunk kept: %v", ups, hasChunk(n.s, cs[0].ID))
	}
}
