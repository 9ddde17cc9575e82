package s3

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/atollstore/atoll/node"
	"github.com/atollstore/atoll/raftstore"
)

// storedHeaders are the request headers an object keeps and returns on
// GET and HEAD, besides x-amz-meta-*.
var storedHeaders = []string{"Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires"}

func checkKey(key string) *Error {
	if len(key) > 1024 {
		return errorf(http.StatusBadRequest, "KeyTooLongError", "Your key is too long")
	}
	if !utf8.ValidString(key) || strings.ContainsRune(key, 0) {
		return errorf(http.StatusBadRequest, "InvalidArgument", "keys are UTF-8 without NUL")
	}
	return nil
}

// objectMeta reads an object's metadata from request headers.
func objectMeta(h http.Header) (contentType string, meta map[string]string) {
	meta = map[string]string{}
	for k, vs := range h {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-amz-meta-") {
			meta[lk] = strings.Join(vs, ",")
		}
	}
	for _, k := range storedHeaders {
		if v := h.Get(k); v != "" {
			meta[strings.ToLower(k)] = v
		}
	}
	return h.Get("Content-Type"), meta
}

// store streams body into chunks and returns them with the content's MD5
// (checked against Content-MD5 when the client sent one).
func (s *Server) store(r *request, body io.Reader, limit int64) (*raftstore.Blob, []byte, *Error) {
	var want []byte
	if cm := r.Header.Get("Content-MD5"); cm != "" {
		b, err := base64.StdEncoding.DecodeString(cm)
		if err != nil || len(b) != md5.Size {
			return nil, nil, errorf(http.StatusBadRequest, "InvalidDigest", "the Content-MD5 is not valid")
		}
		want = b
	}
	md := &digestReader{r: body, h: md5.New(), want: want, mismatch: errBadDigest}
	lim := &io.LimitedReader{R: md, N: limit + 1}
	rec, err := s.node.StoreStream(r.Context(), lim)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, nil, e
		}
		return nil, nil, toS3(err, errInternal)
	}
	if lim.N == 0 {
		return nil, nil, errEntityTooLarge // its chunks are orphans, reclaimed later
	}
	return rec, md.h.Sum(nil), nil
}

func (s *Server) putObject(w http.ResponseWriter, r *request) *Error {
	if err := checkKey(r.key); err != nil {
		return err
	}
	if r.ContentLength > MaxObjectSize {
		return errEntityTooLarge
	}
	if err := s.bucketForWrite(r); err != nil {
		return err
	}
	rec, sum, err := s.store(r, r.body, MaxObjectSize)
	if err != nil {
		return err
	}
	ct, meta := objectMeta(r.Header)
	o := raftstore.Object{Bucket: r.bucket, Key: r.key, Size: rec.Size, K: rec.K, M: rec.M, Chunks: rec.Chunks, Segments: rec.Segments,
		ETag: `"` + hex.EncodeToString(sum) + `"`, ContentType: ct, Meta: meta, Modified: time.Now().UTC()}
	if err := s.commit(r, o); err != nil {
		return err
	}
	w.Header().Set("ETag", o.ETag)
	w.WriteHeader(http.StatusOK)
	return nil
}

// apply commits cmd and waits for this node's replica, mapping a failure
// to an S3 error, "not found" to notFound.
func (s *Server) apply(r *request, cmd raftstore.Command, notFound *Error) *Error {
	if err := s.node.Apply(r.Context(), cmd); err != nil {
		return toS3(err, notFound)
	}
	return nil
}

func (s *Server) commit(r *request, o raftstore.Object) *Error {
	return s.apply(r, raftstore.PutObjectCommand(o), errNoSuchBucket)
}

// object returns the request's object, read linearizably, with its
// chunks' locations.
func (s *Server) object(r *request, bucket, key string) (*raftstore.Object, *Error) {
	if err := s.node.Sync(r.Context()); err != nil {
		return nil, toS3(err, errNoSuchKey)
	}
	o, err := s.node.Meta().Object(bucket, key)
	if err != nil {
		return nil, toS3(err, errNoSuchKey)
	}
	return o, nil
}

func (s *Server) getObject(w http.ResponseWriter, r *request) *Error {
	local, err := s.node.Meta().Object(r.bucket, r.key)
	if err != nil { // not on this replica (yet): read it linearizably first
		o, e := s.object(r, r.bucket, r.key)
		if e != nil {
			return e
		}
		return s.serveObject(w, r, o, nil)
	}
	// As for the native API's blobs: the local record is fetched from at
	// once while the leader's read index confirms it; nothing, not even
	// the status, is sent before. If the key was overwritten meanwhile,
	// the confirmed record is served instead.
	var latest *raftstore.Object
	confirmed := make(chan *Error, 1)
	go func() {
		var e *Error
		latest, e = s.object(r, r.bucket, r.key)
		confirmed <- e
	}()
	confirm := sync.OnceValue(func() error {
		if e := <-confirmed; e != nil {
			return e
		}
		if !sameVersion(latest, local) {
			return errStale
		}
		return nil
	})
	before := w.Header().Clone()
	e := s.serveObject(w, r, local, confirm)
	if e != nil { // nothing sent: drop the local record's headers
		clear(w.Header())
		maps.Copy(w.Header(), before)
	}
	if e == errStale {
		return s.serveObject(w, r, latest, nil)
	}
	return e
}

// errStale is confirm's answer when the local record was not the latest.
var errStale = &Error{"InternalError", "stale record", http.StatusInternalServerError}

// sameVersion reports whether a and b are the same write of an object.
func sameVersion(a, b *raftstore.Object) bool {
	return a.ETag == b.ETag && a.Size == b.Size && a.Modified.Equal(b.Modified) &&
		slices.EqualFunc(a.Chunks, b.Chunks, func(x, y raftstore.Chunk) bool { return x.ID == y.ID }) &&
		slices.Equal(a.Segments, b.Segments)
}

// serveObject answers a GET or HEAD of o. If confirm is not nil, it must
// return nil before anything is sent; else its error is the answer.
func (s *Server) serveObject(w http.ResponseWriter, r *request, o *raftstore.Object, confirm func() error) *Error {
	if confirm == nil {
		confirm = func() error { return nil }
	}
	confirmed := func() *Error {
		if err := confirm(); err != nil {
			return toS3(err, errNoSuchKey)
		}
		return nil
	}
	h := w.Header()
	h.Set("ETag", o.ETag)
	h.Set("Last-Modified", o.Modified.UTC().Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "binary/octet-stream")
	if o.ContentType != "" {
		h.Set("Content-Type", o.ContentType)
	}
	for k, v := range o.Meta {
		h.Set(k, v)
	}
	if status := preconditions(r.Request, o); status != 0 {
		if e := confirmed(); e != nil {
			return e
		}
		if status == http.StatusPreconditionFailed {
			return errPreconditionFailed
		}
		w.WriteHeader(status)
		return nil
	}
	q := r.URL.Query()
	for _, k := range []string{"Content-Type", "Content-Language", "Expires", "Cache-Control", "Content-Disposition", "Content-Encoding"} {
		if v := q.Get("response-" + strings.ToLower(k)); v != "" {
			h.Set(k, v) // presigned downloads choose how the browser sees the file
		}
	}
	off, length, status := int64(0), o.Size, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" {
		var ok bool
		if off, length, ok = node.ParseRange(rg, o.Size); !ok {
			if e := confirmed(); e != nil {
				return e
			}
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", o.Size))
			return errInvalidRange
		}
		if length != o.Size || !strings.Contains(rg, ",") { // S3 answers 206 to any single range
			status = http.StatusPartialContent
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+length-1, o.Size))
		}
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	if r.Method == http.MethodHead || length == 0 {
		if e := confirmed(); e != nil {
			return e
		}
		w.WriteHeader(status)
		return nil
	}
	lw := node.NewLazyWriter(w, status)
	lw.Before = confirm
	view := &raftstore.Blob{Size: o.Size, K: o.K, M: o.M, Chunks: o.Chunks, Segments: o.Segments}
	if err := s.node.WriteRange(r.Context(), view, off, length, lw); err != nil {
		if !lw.Started() {
			h.Del("Content-Length")
			h.Del("Content-Range")
			if e := confirmed(); e != nil {
				return e // gone or overwritten: that, not the failed fetch, is the answer
			}
			return toS3(err, errInternal)
		}
		s.log.Warn("s3 get failed mid-stream", "bucket", r.bucket, "key", r.key, "err", err)
		panic(http.ErrAbortHandler) // a truncated body, never a wrong one
	}
	return nil
}

// preconditions evaluates If-Match, If-Unmodified-Since, If-None-Match and
// If-Modified-Since (RFC 9110 §13.2.2 order) and returns the status to
// answer instead of the object, or 0.
func preconditions(r *http.Request, o *raftstore.Object) int {
	modified := o.Modified.UTC().Truncate(time.Second)
	if im := r.Header.Get("If-Match"); im != "" {
		if !etagMatches(im, o.ETag) {
			return http.StatusPreconditionFailed
		}
	} else if t, err := http.ParseTime(r.Header.Get("If-Unmodified-Since")); err == nil && modified.After(t) {
		return http.StatusPreconditionFailed
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		if etagMatches(inm, o.ETag) {
			return http.StatusNotModified
		}
	} else if t, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !modified.After(t) {
		return http.StatusNotModified
	}
	return 0
}

func etagMatches(list, etag string) bool {
	for _, e := range strings.Split(list, ",") {
		e = strings.TrimPrefix(strings.TrimSpace(e), "W/")
		if e == "*" || e == etag || `"`+e+`"` == etag {
			return true
		}
	}
	return false
}

func (s *Server) deleteObject(w http.ResponseWriter, r *request) *Error {
	if err := s.apply(r, raftstore.DeleteObjectCommand(raftstore.ObjectRef{Bucket: r.bucket, Key: r.key}), errNoSuchBucket); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) deleteObjects(w http.ResponseWriter, r *request) *Error {
	var in struct {
		Quiet   bool `xml:"Quiet"`
		Objects []struct {
			Key string `xml:"Key"`
		} `xml:"Object"`
	}
	if err := decodeXML(r.body, &in, 4<<20); err != nil {
		return err
	}
	if len(in.Objects) > 1000 {
		return errorf(http.StatusBadRequest, "MalformedXML", "at most 1000 keys per request")
	}
	if err := s.bucketForWrite(r); err != nil {
		return err
	}
	type deleted struct {
		Key string `xml:"Key"`
	}
	type failed struct {
		Key     string `xml:"Key"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	out := struct {
		XMLName xml.Name  `xml:"DeleteResult"`
		Xmlns   string    `xml:"xmlns,attr"`
		Deleted []deleted `xml:"Deleted"`
		Errors  []failed  `xml:"Error"`
	}{Xmlns: xmlns}
	keys := make([]string, len(in.Objects))
	for i, o := range in.Objects {
		keys[i] = o.Key
	}
	e := s.apply(r, raftstore.DeleteObjectsCommand(r.bucket, keys), errNoSuchBucket) // one raft entry for the batch
	for _, k := range keys {
		if e != nil {
			out.Errors = append(out.Errors, failed{Key: k, Code: e.Code, Message: e.Message})
		} else if !in.Quiet {
			out.Deleted = append(out.Deleted, deleted{Key: k})
		}
	}
	writeXML(w, http.StatusOK, out)
	return nil
}

// copyObject makes a new object of the source's chunks: no byte is copied.
func (s *Server) copyObject(w http.ResponseWriter, r *request) *Error {
	if err := checkKey(r.key); err != nil {
		return err
	}
	src, err := url.PathUnescape(r.Header.Get("X-Amz-Copy-Source"))
	if err != nil {
		return errorf(http.StatusBadRequest, "InvalidArgument", "bad x-amz-copy-source")
	}
	src, _, _ = strings.Cut(src, "?versionId=")
	srcBucket, srcKey, ok := strings.Cut(strings.TrimPrefix(src, "/"), "/")
	if !ok || srcKey == "" {
		return errorf(http.StatusBadRequest, "InvalidArgument", "x-amz-copy-source must be bucket/key")
	}
	o, serr := s.object(r, srcBucket, srcKey)
	if serr != nil {
		return serr
	}
	if im := r.Header.Get("X-Amz-Copy-Source-If-Match"); im != "" && !etagMatches(im, o.ETag) {
		return errPreconditionFailed
	}
	if inm := r.Header.Get("X-Amz-Copy-Source-If-None-Match"); inm != "" && etagMatches(inm, o.ETag) {
		return errPreconditionFailed
	}
	replace := strings.EqualFold(r.Header.Get("X-Amz-Metadata-Directive"), "REPLACE")
	if srcBucket == r.bucket && srcKey == r.key && !replace {
		return errorf(http.StatusBadRequest, "InvalidRequest", "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.")
	}
	cp := *o
	cp.Bucket, cp.Key, cp.Modified = r.bucket, r.key, time.Now().UTC()
	cp.Chunks = make([]raftstore.Chunk, len(o.Chunks))
	for i, c := range o.Chunks {
		c.Reused = true // the commit fails if a concurrent delete reclaimed it
		cp.Chunks[i] = c
	}
	if replace {
		cp.ContentType, cp.Meta = objectMeta(r.Header)
	}
	if err := s.commit(r, cp); err != nil {
		return err
	}
	writeXML(w, http.StatusOK, struct {
		XMLName      xml.Name `xml:"CopyObjectResult"`
		Xmlns        string   `xml:"xmlns,attr"`
		LastModified string   `xml:"LastModified"`
		ETag         string   `xml:"ETag"`
	}{Xmlns: xmlns, LastModified: cp.Modified.Format(s3Time), ETag: cp.ETag})
	return nil
}

// decodeXML reads an XML request body of at most limit bytes.
func decodeXML(r io.Reader, v any, limit int64) *Error {
	body, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return e
		}
		return errIncompleteBody
	}
	if int64(len(body)) > limit {
		return errorf(http.StatusBadRequest, "MalformedXML", "request body too large")
	}
	if err := xml.Unmarshal(body, v); err != nil {
		return errMalformedXML
	}
	return nil
}
