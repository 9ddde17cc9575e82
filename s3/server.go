// Package s3 serves Atoll's storage through an S3-compatible API, so
// existing S3 tools work unchanged. Objects go through the same chunk,
// erasure-coding and placement path as native blobs (node.StoreStream) and
// share their chunks; buckets, objects and access keys are raftstore
// records, read linearizably (node.Sync) from any node.
//
// Requests are path-style (http://host:8900/bucket/key), or
// virtual-hosted–style (http://bucket.DOMAIN:8900/key) when Server.Domain
// is set, and signed with AWS Signature Version 4 (header or presigned
// URL, including aws-chunked streaming uploads); anonymous requests may
// only read
// public buckets.
package s3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/node"
)

// DefaultPort is the S3 endpoint's port.
const DefaultPort = 8900

// MaxObjectSize is the largest single PUT (S3's limit); larger objects
// use multipart uploads.
const MaxObjectSize = 5 << 30

// Server is the S3 endpoint of one node.
type Server struct {
	// Domain, if set, enables virtual-hosted–style requests: a request to
	// host BUCKET.Domain addresses BUCKET (path-style always works).
	Domain string

	node *node.Node
	log  *slog.Logger
	keys func(ctx context.Context, accessKey string) (api.AccessKey, error) // with the secret

}

// New returns the S3 endpoint of n.
func New(n *node.Node, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{node: n, log: log, keys: n.AccessKey}
}

// request is one S3 request after authentication.
type request struct {
	*http.Request
	bucket, key string
	cred        *api.AccessKey // the caller's key; nil when anonymous
	body        io.Reader      // the verified payload
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { s.log.Debug("s3", "method", r.Method, "path", r.URL.Path, "took", time.Since(start)) }()
	id := make([]byte, 8)
	rand.Read(id)
	w.Header().Set("x-amz-request-id", strings.ToUpper(hex.EncodeToString(id)))
	w.Header().Set("Server", "Atoll")
	cred, body, err := s.authenticate(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		// Answer "100 Continue" as S3 does, even for an empty body or a
		// request refused before its body is read: botocore (the AWS CLI)
		// otherwise misreads the final status as the interim one and
		// waits out its 60 s read timeout.
		w.WriteHeader(http.StatusContinue)
	}
	req := &request{Request: r, cred: cred, body: body}
	req.bucket, req.key = s.address(r)
	if err := s.authorize(req); err != nil {
		writeError(w, r, err)
		return
	}
	if err := s.route(w, req); err != nil {
		if err.Status >= 500 {
			s.log.Warn("s3 request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeError(w, r, err)
	}
}

// address returns the bucket and key a request names: from the host for
// virtual-hosted–style requests, else from the path.
func (s *Server) address(r *http.Request) (bucket, key string) {
	path := strings.TrimPrefix(r.URL.Path, "/")
	if s.Domain != "" {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if b, ok := strings.CutSuffix(strings.ToLower(host), "."+strings.ToLower(s.Domain)); ok && b != "" {
			return b, path
		}
	}
	bucket, key, _ = strings.Cut(path, "/")
	return bucket, key
}

// authorize lets a signed request do what its key's scopes allow, in the
// buckets it names (all if none), and anonymous ones only read a public
// bucket. Listing buckets is a read; a key limited to some buckets sees
// only those (listBuckets).
func (s *Server) authorize(r *request) *Error {
	if k := r.cred; k != nil {
		scope := scopeOf(r)
		if r.bucket == "" { // ListBuckets (filtered to the key's buckets)
			if len(k.Scopes) > 0 && !slices.Contains(k.Scopes, scope) {
				return errAccessDenied
			}
			return nil
		}
		if !k.Allows(scope, r.bucket) {
			return errAccessDenied
		}
		return nil
	}
	if r.bucket == "" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return errAccessDenied
	}
	if err := s.node.Sync(r.Context()); err != nil {
		return toS3(err, errAccessDenied)
	}
	b, err := s.node.Meta().Bucket(r.bucket)
	if err != nil || !b.Public {
		return errAccessDenied // never tell an anonymous caller which buckets exist
	}
	return nil
}

// scopeOf is the scope a request needs: reads, deletes (DELETE, and
// POST ?delete), and writes (everything else).
func scopeOf(r *request) string {
	switch {
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		return api.ScopeRead
	case r.Method == http.MethodDelete || (r.Method == http.MethodPost && r.URL.Query().Has("delete")):
		return api.ScopeDelete
	}
	return api.ScopeWrite
}

// route dispatches on method, path and the sub-resource query parameters.
func (s *Server) route(w http.ResponseWriter, r *request) *Error {
	q := r.URL.Query()
	switch {
	case r.bucket == "":
		if r.Method == http.MethodGet {
			return s.listBuckets(w, r)
		}
	case r.key == "":
		switch r.Method {
		case http.MethodPut:
			if hasAny(q, "acl", "policy", "versioning", "tagging", "cors", "lifecycle") {
				return errNotImplemented
			}
			return s.createBucket(w, r)
		case http.MethodHead:
			return s.headBucket(w, r)
		case http.MethodDelete:
			return s.deleteBucket(w, r)
		case http.MethodPost:
			if q.Has("delete") {
				return s.deleteObjects(w, r)
			}
		case http.MethodGet:
			switch {
			case q.Has("location"):
				return s.bucketLocation(w, r)
			case q.Has("uploads"):
				return s.listUploads(w, r)
			case q.Has("versioning"):
				return s.bucketVersioning(w, r)
			case hasAny(q, "acl", "policy", "tagging", "cors", "lifecycle", "encryption", "object-lock", "website", "logging", "replication", "notification"):
				return errNotImplemented
			case q.Get("list-type") == "2":
				return s.listObjectsV2(w, r)
			default:
				return s.listObjectsV1(w, r)
			}
		}
	default:
		switch r.Method {
		case http.MethodPut:
			switch {
			case q.Has("uploadId") && q.Has("partNumber"):
				return s.uploadPart(w, r)
			case hasAny(q, "acl", "tagging", "retention", "legal-hold"):
				return errNotImplemented
			case r.Header.Get("X-Amz-Copy-Source") != "":
				return s.copyObject(w, r)
			default:
				return s.putObject(w, r)
			}
		case http.MethodGet, http.MethodHead:
			if q.Has("uploadId") && r.Method == http.MethodGet {
				return s.listParts(w, r)
			}
			if hasAny(q, "acl", "tagging", "attributes", "retention", "legal-hold", "torrent") {
				return errNotImplemented
			}
			return s.getObject(w, r)
		case http.MethodDelete:
			if q.Has("uploadId") {
				return s.abortUpload(w, r)
			}
			return s.deleteObject(w, r)
		case http.MethodPost:
			switch {
			case q.Has("uploads"):
				return s.createUpload(w, r)
			case q.Has("uploadId"):
				return s.completeUpload(w, r)
			}
		}
	}
	return errMethodNotAllowed
}

func hasAny(q map[string][]string, names ...string) bool {
	for _, n := range names {
		if _, ok := q[n]; ok {
			return true
		}
	}
	return false
}
