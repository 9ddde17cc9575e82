package raftstore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/atollstore/atoll/blob"
)

// Multipart uploads of the S3 API. Each uploaded part holds references on
// its chunks, so they survive until the upload is completed (the object
// takes references on the chunks of the parts it uses, then every part
// releases its own) or aborted (every part releases its own, leaving
// nothing behind).
//
// FSM keys (under prefixFSM):
//
//	f U <bucket> 0x00 <key> 0x00 <upload id>   upload record, listed in key order
//	f P <upload id> <part number, 2 bytes BE>  part record
//	f X <upload id>                             a released upload whose parts are still to be dropped

// Upload is a multipart upload in progress.
type Upload struct {
	ID          string            `json:"id"`
	Bucket      string            `json:"bucket"`
	Key         string            `json:"key"`
	Created     time.Time         `json:"created"`
	ContentType string            `json:"content_type,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
}

// Part is one uploaded part.
type Part struct {
	Upload   string    `json:"upload"`
	Number   int       `json:"number"` // 1 to 10,000
	Size     int64     `json:"size"`
	ETag     string    `json:"etag"` // quoted MD5 of the part
	K        int       `json:"k"`
	M        int       `json:"m"`
	Chunks   []Chunk   `json:"chunks"`
	Segments []Segment `json:"segments,omitempty"` // instead of Chunks, for a long chunk list (segments.go)
	Modified time.Time `json:"modified"`
}

// UploadRef names an upload.
type UploadRef struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	ID     string `json:"id"`
}

// CompleteUpload turns an upload into Object, whose chunks are those of
// the parts it uses (marked Reused: they must still be held).
type CompleteUpload struct {
	UploadRef
	Object Object `json:"object"`
}

// ErrNoSuchUpload is returned for an unknown (or finished) upload.
var ErrNoSuchUpload = blob.NewError("no_such_upload", 0, "no such upload", blob.ErrNotFound)

func uploadKey(r UploadRef) []byte {
	k := append(objectKey(r.Bucket, r.Key), 0)
	k[1] = 'U'
	return append(k, r.ID...)
}

func uploadsPrefix(bucket string) []byte {
	k := objectPrefix(bucket)
	k[1] = 'U'
	return k
}

func partsPrefix(upload string) []byte { return append([]byte{prefixFSM, 'P'}, upload...) }

func partKey(upload string, n int) []byte {
	return binary.BigEndian.AppendUint16(partsPrefix(upload), uint16(n))
}

// CreateUploadCommand is the start of an upload.
func CreateUploadCommand(u Upload) Command { return Command{CreateUpload: &u} }

// PutPartCommand is the commit of a part (replacing one of the same
// number) of upload r.
func PutPartCommand(r UploadRef, p Part) Command {
	return Command{PutPart: &putPart{UploadRef: r, Part: p}}
}

// CompleteUploadCommand is the completion of an upload.
func CompleteUploadCommand(c CompleteUpload) Command { return Command{CompleteUpload: &c} }

// AbortUploadCommand is the abandonment of an upload.
func AbortUploadCommand(r UploadRef) Command { return Command{AbortUpload: &r} }

type putPart struct {
	UploadRef
	Part Part `json:"part"`
}

func applyCreateUpload(txn *tx, u Upload) error {
	if err := getJSON(txn, bucketKey(u.Bucket), &Bucket{}); err != nil {
		return bucketErr(u.Bucket, err)
	}
	return setJSON(txn, uploadKey(UploadRef{Bucket: u.Bucket, Key: u.Key, ID: u.ID}), u)
}

func getUpload(txn *tx, r UploadRef) error {
	if err := getJSON(txn, uploadKey(r), &Upload{}); err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("%s: %w", r.ID, ErrNoSuchUpload)
		}
		return err
	}
	return nil
}

func applyPutPart(txn *tx, pp putPart) error {
	if err := getUpload(txn, pp.UploadRef); err != nil {
		return err
	}
	p := pp.Part
	p.Upload = pp.ID
	if err := replaceRefs(txn, partKey(pp.ID, p.Number), p.Chunks, p.Segments, p.K, p.M); err != nil {
		return err
	}
	p.Chunks = withoutShards(p.Chunks)
	return setJSON(txn, partKey(pp.ID, p.Number), p)
}

func applyCompleteUpload(txn *tx, c CompleteUpload) error {
	if err := getUpload(txn, c.UploadRef); err != nil {
		return err
	}
	if err := applyPutObject(txn, c.Object); err != nil { // references first
		return err
	}
	if len(c.Object.Segments) > 0 {
		// A long upload: releasing every part's chunks may not fit this
		// transaction, so the parts go later, a bounded batch a command
		// (DropParts), the upload itself now.
		return releaseUpload(txn, c.UploadRef)
	}
	return dropUpload(txn, c.UploadRef)
}

func releasedKey(upload string) []byte { return append([]byte{prefixFSM, 'X'}, upload...) }

// DropPartsCommand releases the next parts of a released upload (a long
// one completed, or one aborted by ReleaseUpload): as many as hold
// SegmentChunks references (at least one), a transaction's worth.
func DropPartsCommand(upload string) Command { return Command{DropParts: &upload} }

func applyDropParts(txn *tx, upload string) error {
	if _, err := txn.Get(releasedKey(upload)); err != nil {
		return nil // done already
	}
	var parts []Part
	refs, more := 0, false
	err := scanParts(txn, upload, func(p Part) (bool, error) {
		if len(parts) > 0 && refs >= SegmentChunks {
			more = true
			return false, nil
		}
		parts, refs = append(parts, p), refs+len(p.Chunks)+len(p.Segments)
		return true, nil
	})
	if err != nil {
		return err
	}
	if err := dropParts(txn, upload, parts); err != nil {
		return err
	}
	if !more {
		return txn.Delete(releasedKey(upload)) // that was the last batch
	}
	return nil
}

// ReleasedUploads returns the released uploads whose parts are still to
// be dropped (DropParts), from the local replica.
func (s *Store) ReleasedUploads() ([]string, error) {
	var out []string
	err := s.scan([]byte{prefixFSM, 'X'}, nil, func(k, _ []byte) (bool, error) {
		out = append(out, string(k[2:]))
		return true, nil
	})
	return out, err
}

func applyAbortUpload(txn *tx, r UploadRef) error {
	if err := getUpload(txn, r); err != nil {
		return err
	}
	return dropUpload(txn, r)
}

// ReleaseUploadCommand aborts an upload whose parts are released
// afterwards (DropParts): an abort of any size fits one transaction.
func ReleaseUploadCommand(r UploadRef) Command { return Command{ReleaseUpload: &r} }

func applyReleaseUpload(txn *tx, r UploadRef) error {
	if err := getUpload(txn, r); err != nil {
		return err
	}
	return releaseUpload(txn, r)
}

// releaseUpload deletes an upload, leaving its parts for DropParts.
func releaseUpload(txn *tx, r UploadRef) error {
	if err := txn.Set(releasedKey(r.ID), nil); err != nil {
		return err
	}
	return txn.Delete(uploadKey(r))
}

// dropUpload releases every part's references and deletes the upload.
func dropUpload(txn *tx, r UploadRef) error {
	var parts []Part
	if err := scanParts(txn, r.ID, func(p Part) (bool, error) { parts = append(parts, p); return true, nil }); err != nil {
		return err
	}
	if err := dropParts(txn, r.ID, parts); err != nil {
		return err
	}
	return txn.Delete(uploadKey(r))
}

// dropParts releases the references of parts of upload and deletes them.
func dropParts(txn *tx, upload string, parts []Part) error {
	for _, p := range parts {
		if err := dropContentRefs(txn, p.Chunks, p.Segments); err != nil {
			return err
		}
		if err := txn.Delete(partKey(upload, p.Number)); err != nil {
			return err
		}
	}
	return nil
}

// scanParts calls fn with the parts of upload in number order, until fn
// returns false or an error.
func scanParts(txn *tx, upload string, fn func(Part) (bool, error)) error {
	return txn.scan(partsPrefix(upload), nil, func(_, v []byte) (bool, error) {
		var p Part
		if err := json.Unmarshal(v, &p); err != nil {
			return false, err
		}
		return fn(p)
	})
}

// Upload returns an upload in progress, or ErrNoSuchUpload.
func (s *Store) Upload(r UploadRef) (Upload, error) {
	var u Upload
	err := view(s.db, func(txn *tx) error {
		if err := getUpload(txn, r); err != nil {
			return err
		}
		return getJSON(txn, uploadKey(r), &u)
	})
	return u, err
}

// Uploads returns the uploads in progress in bucket whose keys start with
// prefix, in key order.
func (s *Store) Uploads(bucket, prefix string) ([]Upload, error) {
	if _, err := s.Bucket(bucket); err != nil {
		return nil, err
	}
	var out []Upload
	err := s.scan(append(uploadsPrefix(bucket), prefix...), nil, func(_, v []byte) (bool, error) {
		var u Upload
		err := json.Unmarshal(v, &u)
		out = append(out, u)
		return true, err
	})
	return out, err
}

// EachPart calls fn with the parts of an upload in number order, without
// their chunks' locations, until fn returns false: one part in memory at a
// time, however many an upload has.
func (s *Store) EachPart(r UploadRef, fn func(Part) bool) error {
	return view(s.db, func(txn *tx) error {
		if err := getUpload(txn, r); err != nil {
			return err
		}
		return scanParts(txn, r.ID, func(p Part) (bool, error) { return fn(p), nil })
	})
}

// Parts returns the parts of an upload in number order, with their
// chunks' locations.
func (s *Store) Parts(r UploadRef) ([]Part, error) {
	var out []Part
	err := view(s.db, func(txn *tx) error {
		if err := getUpload(txn, r); err != nil {
			return err
		}
		return scanParts(txn, r.ID, func(p Part) (bool, error) {
			out = append(out, p)
			return true, fillShards(txn, p.Chunks)
		})
	})
	return out, err
}
