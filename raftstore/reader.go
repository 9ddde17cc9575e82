package raftstore

import "github.com/atollstore/atoll/blob"

// Reader is the read-only view of this replica's metadata that front-ends
// (the S3 endpoint, tools) get from node.Meta: records and listings, no
// commands, no raft control. Reads are local; a caller that must see every
// committed write syncs first (node.Sync). Methods may be called
// concurrently; a not-found is an error wrapping blob.ErrNotFound.
type Reader interface {
	Blob(id blob.ID) (*Blob, error)
	Chunk(id blob.ID) (Chunk, error)
	// Segment returns the chunks of a segment of a long chunk list.
	Segment(id blob.ID) ([]Chunk, error)
	Layout() (Layout, error)
	Stats() (blobs int, bytes int64, err error)

	Bucket(name string) (Bucket, error)
	Buckets() ([]Bucket, error)
	Object(bucket, key string) (*Object, error)
	// Objects calls fn for the bucket's objects whose keys start with
	// prefix and sort after after, in key order, until fn returns false.
	Objects(bucket, prefix, after string, fn func(Object) bool) error
	AccessKey(id string) (AccessKey, error)
	AccessKeys() ([]AccessKey, error)
	Upload(r UploadRef) (Upload, error)
	Uploads(bucket, prefix string) ([]Upload, error)
	Parts(r UploadRef) ([]Part, error)
	// EachPart calls fn with an upload's parts in number order, without
	// chunk locations, until fn returns false.
	EachPart(r UploadRef, fn func(Part) bool) error
	Link(id string) (Link, error)
	Owners(id blob.ID) ([]string, error)
	Holds(tenant string, chunk blob.ID) (bool, error)
}

var _ Reader = (*Store)(nil)
