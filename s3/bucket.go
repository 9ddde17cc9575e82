package s3

import (
	"encoding/xml"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/atollstore/atoll/raftstore"
)

const xmlns = "http://s3.amazonaws.com/doc/2006-03-01/"

// s3Time is the time format of S3's XML bodies.
const s3Time = "2006-01-02T15:04:05.000Z"

type owner struct {
	ID          string `xml:"ID"`
	DisplayName string `xml:"DisplayName"`
}

var atollOwner = owner{ID: "atoll", DisplayName: "atoll"}

func (s *Server) listBuckets(w http.ResponseWriter, r *request) *Error {
	if err := s.node.Sync(r.Context()); err != nil {
		return toS3(err, errInternal)
	}
	bs, err := s.node.Meta().Buckets()
	if err != nil {
		return toS3(err, errInternal)
	}
	type entry struct {
		Name         string `xml:"Name"`
		CreationDate string `xml:"CreationDate"`
	}
	out := struct {
		XMLName xml.Name `xml:"ListAllMyBucketsResult"`
		Xmlns   string   `xml:"xmlns,attr"`
		Owner   owner    `xml:"Owner"`
		Buckets []entry  `xml:"Buckets>Bucket"`
	}{Xmlns: xmlns, Owner: atollOwner}
	for _, b := range bs {
		if r.cred != nil && len(r.cred.Buckets) > 0 && !slices.Contains(r.cred.Buckets, b.Name) {
			continue // another tenant's
		}
		out.Buckets = append(out.Buckets, entry{Name: b.Name, CreationDate: b.Created.UTC().Format(s3Time)})
	}
	writeXML(w, http.StatusOK, out)
	return nil
}

func (s *Server) createBucket(w http.ResponseWriter, r *request) *Error {
	if !validBucketName(r.bucket) {
		return errInvalidBucketName
	}
	b := raftstore.Bucket{Name: r.bucket, Created: time.Now().UTC()}
	switch acl := r.Header.Get("X-Amz-Acl"); acl {
	case "", "private":
	case "public-read":
		b.Public = true
	default:
		return errorf(http.StatusNotImplemented, "NotImplemented", "canned ACL %q is not supported (private or public-read)", acl)
	}
	if err := s.apply(r, raftstore.CreateBucketCommand(b), errInternal); err != nil {
		return err
	}
	w.Header().Set("Location", "/"+r.bucket)
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) headBucket(w http.ResponseWriter, r *request) *Error {
	if _, err := s.bucket(r); err != nil {
		return err
	}
	w.Header().Set("x-amz-bucket-region", "us-east-1")
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) deleteBucket(w http.ResponseWriter, r *request) *Error {
	if err := s.apply(r, raftstore.DeleteBucketCommand(r.bucket), errNoSuchBucket); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) bucketLocation(w http.ResponseWriter, r *request) *Error {
	if _, err := s.bucket(r); err != nil {
		return err
	}
	writeXML(w, http.StatusOK, struct {
		XMLName xml.Name `xml:"LocationConstraint"`
		Xmlns   string   `xml:"xmlns,attr"`
	}{Xmlns: xmlns}) // empty: us-east-1, what every client assumes
	return nil
}

func (s *Server) bucketVersioning(w http.ResponseWriter, r *request) *Error {
	if _, err := s.bucket(r); err != nil {
		return err
	}
	writeXML(w, http.StatusOK, struct {
		XMLName xml.Name `xml:"VersioningConfiguration"`
		Xmlns   string   `xml:"xmlns,attr"`
	}{Xmlns: xmlns}) // never enabled
	return nil
}

// bucket returns the request's bucket, read linearizably.
func (s *Server) bucket(r *request) (raftstore.Bucket, *Error) {
	if err := s.node.Sync(r.Context()); err != nil {
		return raftstore.Bucket{}, toS3(err, errNoSuchBucket)
	}
	b, err := s.node.Meta().Bucket(r.bucket)
	if err != nil {
		return b, toS3(err, errNoSuchBucket)
	}
	return b, nil
}

// bucketForWrite checks, before a write stores any bytes, that the
// request's bucket exists. The local replica answers when it knows the
// bucket — the commit checks again, so a bucket deleted meanwhile still
// refuses the write — and only a miss waits for the leader's read index
// (the bucket may be new): a write pays no read round trip of its own.
func (s *Server) bucketForWrite(r *request) *Error {
	if _, err := s.node.Meta().Bucket(r.bucket); err == nil {
		return nil
	}
	_, err := s.bucket(r)
	return err
}

// validBucketName applies S3's rules for new buckets: 3–63 characters of
// lower-case letters, digits, dots and hyphens, starting and ending with a
// letter or digit, no "..", not an IP address.
func validBucketName(name string) bool {
	if len(name) < 3 || len(name) > 63 || strings.Contains(name, "..") || net.ParseIP(name) != nil {
		return false
	}
	for i, c := range name {
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && ((c != '.' && c != '-') || i == 0 || i == len(name)-1) {
			return false
		}
	}
	return true
}
