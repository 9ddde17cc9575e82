package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/atollstore/atoll/blob"
)

// TestBucketsAndObjects: bucket life cycle, objects sharing chunks with
// each other and with blobs (reference counts across both), listing order
// with prefix and start-after, and a rejected command changing nothing.
func TestBucketsAndObjects(t *testing.T) {
	n := &testNode{id: "solo", dir: t.TempDir(), addr: "127.0.0.1:0"}
	startNode(t, n)
	defer func() { n.s.Close() }()
	n.s.Bootstrap(n.id)
	nodes := []*testNode{n}
	try := func(cmd []byte, _ error) error {
		t.Helper()
		var err error
		waitFor(t, "apply", func() bool {
			l := leaderOf(nodes)
			if l == nil {
				return false
			}
			_, err = l.s.ApplyJSON(context.Background(), cmd)
			return !errors.Is(err, ErrNotLeader)
		})
		return err
	}
	must := func(cmd []byte, err error) {
		t.Helper()
		if err := try(cmd, err); err != nil {
			t.Fatal(err)
		}
	}
	shards := []blob.NodeID{"a", "b", "c"}
	obj := func(key string, chunks ...blob.ID) Object {
		o := Object{Bucket: "photos", Key: key, K: 2, M: 1, ETag: `"x"`}
		for _, c := range chunks {
			o.Chunks = append(o.Chunks, Chunk{ID: c, Len: 10, Shards: shards})
			o.Size += 10
		}
		return o
	}
	shared, onlyOld, onlyNew := blob.Sum([]byte("s")), blob.Sum([]byte("o")), blob.Sum([]byte("n"))

	if err := try(PutObjectCommand(obj("a", shared))); !errors.Is(err, ErrNoSuchBucket) {
		t.Fatalf("put into a missing bucket: %v", err)
	}
	must(CreateBucketCommand(Bucket{Name: "photos"}))
	if err := try(CreateBucketCommand(Bucket{Name: "photos"})); !errors.Is(err, ErrBucketExists) || !errors.Is(err, blob.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	must(PutObjectCommand(obj("cat.jpg", shared, onlyOld)))
	must(PutObjectCommand(obj("cat.jpg", shared, onlyNew))) // overwrite
	if !hasChunk(n.s, shared) || hasChunk(n.s, onlyOld) || !hasChunk(n.s, onlyNew) {
		t.Fatalf("after overwrite: shared=%v old=%v new=%v", hasChunk(n.s, shared), hasChunk(n.s, onlyOld), hasChunk(n.s, onlyNew))
	}
	o, err := n.s.Object("photos", "cat.jpg")
	if err != nil || len(o.Chunks) != 2 || o.Chunks[1].ID != onlyNew || len(o.Chunks[1].Shards) != 3 {
		t.Fatalf("object: %+v %v", o, err)
	}
	if _, err := n.s.Object("photos", "dog.jpg"); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := n.s.Object("nope", "cat.jpg"); !errors.Is(err, ErrNoSuchBucket) {
		t.Fatalf("missing bucket: %v", err)
	}
	// A blob shares a chunk with the object: deleting the object keeps it.
	b := testBlob(1, onlyNew)
	b.Chunks[0].Reused = true
	must(PutBlobCommand(b))
	must(DeleteObjectCommand(ObjectRef{Bucket: "photos", Key: "cat.jpg"}))
	if hasChunk(n.s, shared) || !hasChunk(n.s, onlyNew) {
		t.Fatalf("after deleting the object: shared=%v blob's=%v, want false true", hasChunk(n.s, shared), hasChunk(n.s, onlyNew))
	}
	must(DeleteObjectCommand(ObjectRef{Bucket: "photos", Key: "cat.jpg"})) // idempotent

	// A rejected put (a reused chunk is gone) takes no reference.
	bad := obj("x", onlyNew, onlyOld)
	bad.Chunks[0].Reused, bad.Chunks[1].Reused = true, true
	if err := try(PutObjectCommand(bad)); !errors.Is(err, ErrChunkGone) {
		t.Fatalf("put over a gone chunk: %v", err)
	}
	must(DeleteBlobCommand(b.ID))
	if hasChunk(n.s, onlyNew) {
		t.Fatal("a rejected object put kept a reference")
	}

	// Listing: key order, prefix, start-after.
	for i := range 12 {
		must(PutObjectCommand(obj(fmt.Sprintf("dir%d/f%02d", i%2, i), blob.Sum([]byte{byte(i)}))))
	}
	list := func(prefix, after string) []string {
		var keys []string
		if err := n.s.Objects("photos", prefix, after, func(o Object) bool { keys = append(keys, o.Key); return len(keys) < 4 }); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	if got := fmt.Sprint(list("dir1/", "")); got != "[dir1/f01 dir1/f03 dir1/f05 dir1/f07]" {
		t.Fatalf("prefix dir1/: %s", got)
	}
	if got := fmt.Sprint(list("dir1/", "dir1/f07")); got != "[dir1/f09 dir1/f11]" {
		t.Fatalf("prefix dir1/ after f07: %s", got)
	}
	if got := fmt.Sprint(list("", "dir0/f10")); got != "[dir1/f01 dir1/f03 dir1/f05 dir1/f07]" {
		t.Fatalf("after dir0/f10: %s", got)
	}
	if err := try(DeleteBucketCommand("photos")); !errors.Is(err, ErrBucketNotEmpty) {
		t.Fatalf("deleting a non-empty bucket: %v", err)
	}
	for i := range 12 {
		must(DeleteObjectCommand(ObjectRef{Bucket: "photos", Key: fmt.Sprintf("dir%d/f%02d", i%2, i)}))
	}
	must(DeleteBucketCommand("photos"))
	if bs, _ := n.s.Buckets(); len(bs) != 0 {
		t.Fatalf("buckets after delete: %v", bs)
	}
	if err := try(DeleteBucketCommand("photos")); !errors.Is(err, ErrNoSuchBucket) {
		t.Fatalf("deleting a missing bucket: %v", err)
	}

	// Access keys.
	must(PutAccessKeyCommand(AccessKey{ID: "AK1", Sealed: []byte{1, 2}}))
	if err := try(PutAccessKeyCommand(AccessKey{ID: "AK1"})); !errors.Is(err, blob.ErrExists) {
		t.Fatalf("duplicate access key: %v", err)
	}
	if k, err := n.s.AccessKey("AK1"); err != nil || string(k.Sealed) != "\x01\x02" {
		t.Fatalf("access key: %+v %v", k, err)
	}
	must(DeleteAccessKeyCommand("AK1"))
	if ks, _ := n.s.AccessKeys(); len(ks) != 0 {
		t.Fatalf("keys after delete: %v", ks)
	}
}
