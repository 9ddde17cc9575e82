package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/atollstore/atoll/blob"
)

// Buckets and objects of the S3 API. An object is a key naming content
// stored as chunks, exactly like a blob: its chunks are shared and
// reference-counted with blobs and other objects, so identical content is
// stored once whichever API wrote it.
//
// FSM keys (under prefixFSM):
//
//	f B <bucket>                bucket record
//	f o <bucket> 0x00 <key>     object record (chunk shards omitted), in key order
//	f K <access key>            access key record

// Bucket is an S3 bucket.
type Bucket struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Public buckets serve anonymous reads (GET, HEAD, listing).
	Public bool `json:"public,omitempty"`
}

// Object is an S3 object.
type Object struct {
	Bucket      string            `json:"bucket"`
	Key         string            `json:"key"`
	Size        int64             `json:"size"`
	K           int               `json:"k"`
	M           int               `json:"m"`
	Chunks      []Chunk           `json:"chunks"`
	Segments    []Segment         `json:"segments,omitempty"` // instead of Chunks, for a long chunk list (segments.go)
	ETag        string            `json:"etag"`               // quoted, as S3 sends it
	ContentType string            `json:"content_type,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"` // x-amz-meta-*, lower-case names
	Modified    time.Time         `json:"modified"`
}

// ObjectRef names an object.
type ObjectRef struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
}

// AccessKey is an S3 credential. The secret is kept sealed (encrypted by
// the node layer) in the replicated state: raftstore never sees it in
// the clear.
type AccessKey struct {
	ID      string    `json:"id"`
	Sealed  []byte    `json:"sealed"`
	Created time.Time `json:"created"`
	Scopes  []string  `json:"scopes,omitempty"`  // api.Scope*; none: all
	Buckets []string  `json:"buckets,omitempty"` // none: every bucket and the native API
	Tenant  string    `json:"tenant,omitempty"`  // none: the key is its own tenant
}

// Errors of bucket and object commands. Each has its own wire code and
// wraps a blob sentinel, so it keeps its identity after crossing the wire
// from the leader.
var (
	ErrNoSuchBucket   = blob.NewError("no_such_bucket", 0, "no such bucket", blob.ErrNotFound)
	ErrNoSuchKey      = blob.NewError("no_such_key", 0, "no such key", blob.ErrNotFound)
	ErrBucketExists   = blob.NewError("bucket_exists", 0, "bucket already exists", blob.ErrExists)
	ErrBucketNotEmpty = blob.NewError("bucket_not_empty", 0, "bucket not empty", blob.ErrNotEmpty)
)

func bucketKey(name string) []byte { return append([]byte{prefixFSM, 'B'}, name...) }
func objectPrefix(bucket string) []byte {
	return append(append([]byte{prefixFSM, 'o'}, bucket...), 0)
}
func objectKey(bucket, key string) []byte { return append(objectPrefix(bucket), key...) }
func accessKeyKey(id string) []byte       { return append([]byte{prefixFSM, 'K'}, id...) }

// Command encoders.

// CreateBucketCommand is the creation of b.
func CreateBucketCommand(b Bucket) Command { return Command{CreateBucket: &b} }

// DeleteBucketCommand is the deletion of an empty bucket.
func DeleteBucketCommand(name string) Command { return Command{DeleteBucket: &name} }

// PutObjectCommand is the commit of o, replacing any object of that
// key. Its chunks follow the rules of PutBlob (Reused ones must exist).
func PutObjectCommand(o Object) Command { return Command{PutObject: &o} }

// DeleteObjectCommand is the deletion of an object; deleting a key
// that does not exist succeeds, as in S3.
func DeleteObjectCommand(r ObjectRef) Command { return Command{DeleteObject: &r} }

// DeleteObjectsCommand is the deletion of several objects of a
// bucket in one entry.
func DeleteObjectsCommand(bucket string, keys []string) Command {
	return Command{DeleteObjects: &deleteObjects{Bucket: bucket, Keys: keys}}
}

type deleteObjects struct {
	Bucket string   `json:"bucket"`
	Keys   []string `json:"keys"`
}

// PutAccessKeyCommand is the creation of an access key.
func PutAccessKeyCommand(k AccessKey) Command { return Command{PutAccessKey: &k} }

// DeleteAccessKeyCommand is the deletion of an access key.
func DeleteAccessKeyCommand(id string) Command { return Command{DeleteAccessKey: &id} }

// Apply functions.

func applyCreateBucket(txn *tx, b Bucket) error {
	switch err := getJSON(txn, bucketKey(b.Name), &Bucket{}); {
	case err == nil:
		return fmt.Errorf("%s: %w", b.Name, ErrBucketExists)
	case !errors.Is(err, blob.ErrNotFound):
		return err
	}
	return setJSON(txn, bucketKey(b.Name), b)
}

func applyDeleteBucket(txn *tx, name string) error {
	if err := getJSON(txn, bucketKey(name), &Bucket{}); err != nil {
		return bucketErr(name, err)
	}
	if hasRows(txn, objectPrefix(name)) || hasRows(txn, uploadsPrefix(name)) { // uploads in progress count, as in S3
		return fmt.Errorf("%s: %w", name, ErrBucketNotEmpty)
	}
	return txn.Delete(bucketKey(name))
}

func applyPutObject(txn *tx, o Object) error {
	if err := getJSON(txn, bucketKey(o.Bucket), &Bucket{}); err != nil {
		return bucketErr(o.Bucket, err)
	}
	if err := replaceRefs(txn, objectKey(o.Bucket, o.Key), o.Chunks, o.Segments, o.K, o.M); err != nil {
		return err
	}
	rec := o
	rec.Chunks = withoutShards(o.Chunks)
	return setJSON(txn, objectKey(o.Bucket, o.Key), rec)
}

// replaceRefs takes references on chunks for the record about to be
// written at key, then releases those of the record it replaces (an
// object, a part): chunks both share never drop to zero on the way.
func replaceRefs(txn *tx, key []byte, chunks []Chunk, segs []Segment, k, m int) error {
	if err := addContentRefs(txn, chunks, segs, k, m); err != nil {
		return err
	}
	var old struct {
		Chunks   []Chunk   `json:"chunks"`
		Segments []Segment `json:"segments"`
	}
	switch err := getJSON(txn, key, &old); {
	case err == nil:
		return dropContentRefs(txn, old.Chunks, old.Segments)
	case errors.Is(err, blob.ErrNotFound):
		return nil
	default:
		return err
	}
}

func applyDeleteObjects(txn *tx, d deleteObjects) error {
	if err := getJSON(txn, bucketKey(d.Bucket), &Bucket{}); err != nil {
		return bucketErr(d.Bucket, err)
	}
	for _, k := range d.Keys {
		if err := deleteObject(txn, ObjectRef{Bucket: d.Bucket, Key: k}); err != nil {
			return err
		}
	}
	return nil
}

func applyDeleteObject(txn *tx, r ObjectRef) error {
	if err := getJSON(txn, bucketKey(r.Bucket), &Bucket{}); err != nil {
		return bucketErr(r.Bucket, err)
	}
	return deleteObject(txn, r)
}

func deleteObject(txn *tx, r ObjectRef) error {
	var old Object
	switch err := getJSON(txn, objectKey(r.Bucket, r.Key), &old); {
	case errors.Is(err, blob.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	if err := dropContentRefs(txn, old.Chunks, old.Segments); err != nil {
		return err
	}
	return txn.Delete(objectKey(r.Bucket, r.Key))
}

func applyPutAccessKey(txn *tx, k AccessKey) error {
	switch err := getJSON(txn, accessKeyKey(k.ID), &AccessKey{}); {
	case err == nil:
		return fmt.Errorf("access key %s: %w", k.ID, blob.ErrExists)
	case !errors.Is(err, blob.ErrNotFound):
		return err
	}
	return setJSON(txn, accessKeyKey(k.ID), k)
}

func applyDeleteAccessKey(txn *tx, id string) error {
	if err := getJSON(txn, accessKeyKey(id), &AccessKey{}); err != nil {
		return fmt.Errorf("access key %s: %w", id, err)
	}
	return txn.Delete(accessKeyKey(id))
}

func bucketErr(name string, err error) error {
	if errors.Is(err, blob.ErrNotFound) {
		return fmt.Errorf("%s: %w", name, ErrNoSuchBucket)
	}
	return err
}

// Reads, from the local replica.

// Bucket returns bucket name, or ErrNoSuchBucket.
func (s *Store) Bucket(name string) (Bucket, error) {
	var b Bucket
	err := view(s.db, func(txn *tx) error { return getJSON(txn, bucketKey(name), &b) })
	return b, bucketErr(name, err)
}

// Buckets returns every bucket, in name order.
func (s *Store) Buckets() ([]Bucket, error) {
	var out []Bucket
	err := s.scan([]byte{prefixFSM, 'B'}, nil, func(_, v []byte) (bool, error) {
		var b Bucket
		err := json.Unmarshal(v, &b)
		out = append(out, b)
		return true, err
	})
	return out, err
}

// Object returns an object with its chunks' shard locations, or
// ErrNoSuchBucket / ErrNoSuchKey.
func (s *Store) Object(bucket, key string) (*Object, error) {
	var o Object
	err := view(s.db, func(txn *tx) error {
		if err := getJSON(txn, bucketKey(bucket), &Bucket{}); err != nil {
			return bucketErr(bucket, err)
		}
		if err := getJSON(txn, objectKey(bucket, key), &o); err != nil {
			if errors.Is(err, blob.ErrNotFound) {
				return fmt.Errorf("%s/%s: %w", bucket, key, ErrNoSuchKey)
			}
			return err
		}
		return fillShards(txn, o.Chunks)
	})
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// Objects calls fn for the objects of bucket whose keys start with prefix
// and sort after after, in key order (without chunk locations), until fn
// returns false.
func (s *Store) Objects(bucket, prefix, after string, fn func(Object) bool) error {
	if _, err := s.Bucket(bucket); err != nil {
		return err
	}
	start := objectKey(bucket, prefix)
	if after >= prefix {
		start = append(objectKey(bucket, after), 0) // the first key after it
	}
	return s.scan(objectKey(bucket, prefix), start, func(_, v []byte) (bool, error) {
		var o Object
		if err := json.Unmarshal(v, &o); err != nil {
			return false, err
		}
		return fn(o), nil
	})
}

// AccessKey returns the access key id, or blob.ErrNotFound.
func (s *Store) AccessKey(id string) (AccessKey, error) {
	var k AccessKey
	err := view(s.db, func(txn *tx) error { return getJSON(txn, accessKeyKey(id), &k) })
	return k, err
}

// AccessKeys returns every access key, in ID order.
func (s *Store) AccessKeys() ([]AccessKey, error) {
	var out []AccessKey
	err := s.scan([]byte{prefixFSM, 'K'}, nil, func(_, v []byte) (bool, error) {
		var k AccessKey
		err := json.Unmarshal(v, &k)
		out = append(out, k)
		return true, err
	})
	return out, err
}

// scan calls fn for every FSM row under prefix from start (or the start
// of the prefix), in key order, until fn returns false or an error.
func (s *Store) scan(prefix, start []byte, fn func(k, v []byte) (bool, error)) error {
	return view(s.db, func(txn *tx) error { return txn.scan(prefix, start, fn) })
}

// fillShards sets the shard locations of cs from their chunk records.
func fillShards(txn *tx, cs []Chunk) error {
	for i, c := range cs {
		var cr chunkRecord
		if err := getJSON(txn, chunkKey(c.ID), &cr); err != nil {
			return fmt.Errorf("raftstore: chunk %s: %w", c.ID, err)
		}
		cs[i].Shards, cs[i].Format, cs[i].K, cs[i].M = cr.Shards, cr.Format, cr.K, cr.M
	}
	return nil
}
