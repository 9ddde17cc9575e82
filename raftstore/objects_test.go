package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
)

// TestBucketsAndObjects: bucket life cycle, objects sharing chunks with
// each other and with blobs (reference counts across both), listing order
// with prefix and start-after, and a rejected command changing nothing.
func TestBucketsAndObjects(t *testing.T) {
	n := soloNode(t)
	nodes := []*testNode{n}
	try := func(cmd Command) error {
		t.Helper()
		var err error
		waitFor(t, "apply", func() bool {
			l := leaderOf(nodes)
			if l == nil {
				return false
			}
			_, err = l.s.Apply(context.Background(), cmd)
			return !errors.Is(err, ErrNotLeader)
		})
		return err
	}
	must := func(cmd Command) {
		t.Helper()
		if err := try(cmd); err != nil {
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
	var all []string
	for i := range 12 {
		all = append(all, fmt.Sprintf("dir%d/f%02d", i%2, i))
	}
	must(DeleteObjectsCommand("photos", append(all, "never-there")))
	for i := range 12 {
		if hasChunk(n.s, blob.Sum([]byte{byte(i)})) {
			t.Fatalf("chunk of object %d kept after the batch delete", i)
		}
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

// TestMultipartUploads: parts hold their chunks until the upload is
// completed (the object takes them over) or aborted (nothing is left).
func TestMultipartUploads(t *testing.T) {
	n := soloNode(t)
	nodes := []*testNode{n}
	must := func(cmd Command) {
		t.Helper()
		mustApply(t, nodes, cmd)
	}
	part := func(num int, chunks ...blob.ID) Part {
		p := Part{Number: num, K: 2, M: 1, ETag: fmt.Sprintf(`"p%d"`, num)}
		for _, c := range chunks {
			p.Chunks = append(p.Chunks, Chunk{ID: c, Len: 10, Shards: []blob.NodeID{"a", "b", "c"}})
			p.Size += 10
		}
		return p
	}
	c1, c2, c2old, c3 := blob.Sum([]byte("1")), blob.Sum([]byte("2")), blob.Sum([]byte("2old")), blob.Sum([]byte("3"))
	must(CreateBucketCommand(Bucket{Name: "b"}))
	up := UploadRef{Bucket: "b", Key: "big", ID: "u1"}
	must(CreateUploadCommand(Upload{ID: up.ID, Bucket: up.Bucket, Key: up.Key}))
	must(PutPartCommand(up, part(1, c1)))
	must(PutPartCommand(up, part(2, c2old)))
	must(PutPartCommand(up, part(2, c2))) // replaced
	must(PutPartCommand(up, part(3, c3))) // uploaded, then left out of the object
	if hasChunk(n.s, c2old) {
		t.Fatal("a replaced part kept its chunk")
	}
	if err := tryApply(nodes)(DeleteBucketCommand("b")); !errors.Is(err, ErrBucketNotEmpty) {
		t.Fatalf("deleting a bucket with an upload in progress: %v", err)
	}
	parts, err := n.s.Parts(up)
	if err != nil || len(parts) != 3 || parts[1].Chunks[0].ID != c2 || len(parts[1].Chunks[0].Shards) != 3 {
		t.Fatalf("parts: %+v %v", parts, err)
	}
	if us, _ := n.s.Uploads("b", "bi"); len(us) != 1 || us[0].ID != "u1" {
		t.Fatalf("uploads: %+v", us)
	}
	obj := Object{Bucket: "b", Key: "big", K: 2, M: 1, Size: 20, ETag: `"x-2"`}
	for _, p := range parts[:2] {
		for _, c := range p.Chunks {
			c.Reused = true
			obj.Chunks = append(obj.Chunks, c)
		}
	}
	must(CompleteUploadCommand(CompleteUpload{UploadRef: up, Object: obj}))
	if !hasChunk(n.s, c1) || !hasChunk(n.s, c2) || hasChunk(n.s, c3) {
		t.Fatalf("after completion: c1=%v c2=%v c3=%v, want true true false", hasChunk(n.s, c1), hasChunk(n.s, c2), hasChunk(n.s, c3))
	}
	if _, err := n.s.Upload(up); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("completed upload still there: %v", err)
	}
	if err := tryApply(nodes)(AbortUploadCommand(up)); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("aborting a completed upload: %v", err)
	}
	o, err := n.s.Object("b", "big")
	if err != nil || len(o.Chunks) != 2 {
		t.Fatalf("object: %+v %v", o, err)
	}
	// An aborted upload leaves nothing.
	up2 := UploadRef{Bucket: "b", Key: "other", ID: "u2"}
	must(CreateUploadCommand(Upload{ID: up2.ID, Bucket: up2.Bucket, Key: up2.Key}))
	must(PutPartCommand(up2, part(1, c3)))
	must(PutPartCommand(up2, part(2, c1))) // shared with the object
	must(AbortUploadCommand(up2))
	if hasChunk(n.s, c3) || !hasChunk(n.s, c1) {
		t.Fatalf("after abort: c3=%v (want false), c1=%v (want true)", hasChunk(n.s, c3), hasChunk(n.s, c1))
	}
	must(DeleteObjectCommand(ObjectRef{Bucket: "b", Key: "big"}))
	if hasChunk(n.s, c1) || hasChunk(n.s, c2) {
		t.Fatal("chunks left after deleting the only object")
	}
	must(DeleteBucketCommand("b"))
}

// tryApply returns a function that applies a command on the leader and
// returns the command's error.
func tryApply(nodes []*testNode) func(Command) error {
	return func(cmd Command) error {
		for {
			l := leaderOf(nodes)
			if l == nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if _, err := l.s.Apply(context.Background(), cmd); !errors.Is(err, ErrNotLeader) {
				return err
			}
		}
	}
}
