package s3

import (
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/atollstore/atoll/raftstore"
)

// listing is one page of a bucket listing.
type listing struct {
	objects   []raftstore.Object
	prefixes  []string // common prefixes (with a delimiter)
	truncated bool
	last      string // the last key or common prefix returned
	resume    string // where the next page starts (after this)
}

// keysAfter is a key greater than every key starting with p: keys are
// UTF-8, which never contains the byte 0xff.
func keysAfter(p string) string { return p + "\xff" }

// list returns up to max entries of bucket under prefix after after,
// rolling keys up to common prefixes at the delimiter.
func (s *Server) list(r *request, prefix, delimiter, after string, max int) (listing, *Error) {
	var l listing
	if err := s.node.Sync(r.Context()); err != nil {
		return l, toS3(err, errNoSuchBucket)
	}
	if delimiter != "" && strings.HasPrefix(after, prefix) && strings.HasSuffix(after, delimiter) && after != prefix {
		after = keysAfter(after) // a common prefix given back as a marker
	}
	meta := s.node.Meta()
	for len(l.objects)+len(l.prefixes) < max {
		rolled := false
		err := meta.Objects(r.bucket, prefix, after, func(o raftstore.Object) bool {
			if delimiter != "" {
				if i := strings.Index(o.Key[len(prefix):], delimiter); i >= 0 {
					cp := o.Key[:len(prefix)+i+len(delimiter)]
					l.prefixes = append(l.prefixes, cp)
					l.last, after, rolled = cp, keysAfter(cp), true
					return false // skip the rest of the prefix with a fresh seek
				}
			}
			l.objects = append(l.objects, o)
			l.last, after = o.Key, o.Key
			return len(l.objects)+len(l.prefixes) < max
		})
		if err != nil {
			return l, toS3(err, errNoSuchBucket)
		}
		if !rolled {
			break
		}
	}
	l.resume = after
	if max > 0 && len(l.objects)+len(l.prefixes) == max { // max-keys=0 is an empty, complete page
		err := meta.Objects(r.bucket, prefix, after, func(raftstore.Object) bool { l.truncated = true; return false })
		if err != nil {
			return l, toS3(err, errNoSuchBucket)
		}
	}
	return l, nil
}

type listEntry struct {
	Key          string `xml:"Key"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int64  `xml:"Size"`
	StorageClass string `xml:"StorageClass"`
	Owner        *owner `xml:"Owner,omitempty"`
}

type commonPrefix struct {
	Prefix string `xml:"Prefix"`
}

// listParams reads the parameters both list versions share.
func listParams(r *request) (prefix, delimiter string, max int, encode func(string) string, err *Error) {
	q := r.URL.Query()
	prefix, delimiter, max = q.Get("prefix"), q.Get("delimiter"), 1000
	if mk := q.Get("max-keys"); mk != "" {
		n, perr := strconv.Atoi(mk)
		if perr != nil || n < 0 {
			return "", "", 0, nil, errorf(http.StatusBadRequest, "InvalidArgument", "max-keys must be a non-negative integer")
		}
		max = min(n, 1000)
	}
	encode = func(s string) string { return s }
	switch et := q.Get("encoding-type"); et {
	case "":
	case "url":
		encode = func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "%2F", "/") }
	default:
		return "", "", 0, nil, errorf(http.StatusBadRequest, "InvalidArgument", "invalid encoding-type %q", et)
	}
	return prefix, delimiter, max, encode, nil
}

func entries(l listing, encode func(string) string, withOwner bool) ([]listEntry, []commonPrefix) {
	var es []listEntry
	for _, o := range l.objects {
		e := listEntry{Key: encode(o.Key), LastModified: o.Modified.UTC().Format(s3Time), ETag: o.ETag, Size: o.Size, StorageClass: "STANDARD"}
		if withOwner {
			e.Owner = &atollOwner
		}
		es = append(es, e)
	}
	var cps []commonPrefix
	for _, p := range l.prefixes {
		cps = append(cps, commonPrefix{Prefix: encode(p)})
	}
	return es, cps
}

func (s *Server) listObjectsV2(w http.ResponseWriter, r *request) *Error {
	prefix, delimiter, max, encode, err := listParams(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	after := q.Get("start-after")
	if tok := q.Get("continuation-token"); tok != "" {
		b, derr := base64.RawURLEncoding.DecodeString(tok)
		if derr != nil {
			return errorf(http.StatusBadRequest, "InvalidArgument", "The continuation token provided is incorrect")
		}
		after = string(b)
	}
	l, err := s.list(r, prefix, delimiter, after, max)
	if err != nil {
		return err
	}
	es, cps := entries(l, encode, q.Get("fetch-owner") == "true")
	out := struct {
		XMLName               xml.Name       `xml:"ListBucketResult"`
		Xmlns                 string         `xml:"xmlns,attr"`
		Name                  string         `xml:"Name"`
		Prefix                string         `xml:"Prefix"`
		Delimiter             string         `xml:"Delimiter,omitempty"`
		MaxKeys               int            `xml:"MaxKeys"`
		KeyCount              int            `xml:"KeyCount"`
		IsTruncated           bool           `xml:"IsTruncated"`
		EncodingType          string         `xml:"EncodingType,omitempty"`
		ContinuationToken     string         `xml:"ContinuationToken,omitempty"`
		NextContinuationToken string         `xml:"NextContinuationToken,omitempty"`
		StartAfter            string         `xml:"StartAfter,omitempty"`
		Contents              []listEntry    `xml:"Contents"`
		CommonPrefixes        []commonPrefix `xml:"CommonPrefixes"`
	}{
		Xmlns: xmlns, Name: r.bucket, Prefix: encode(prefix), Delimiter: encode(delimiter), MaxKeys: max,
		KeyCount: len(es) + len(cps), IsTruncated: l.truncated, EncodingType: q.Get("encoding-type"),
		ContinuationToken: q.Get("continuation-token"), StartAfter: encode(q.Get("start-after")),
		Contents: es, CommonPrefixes: cps,
	}
	if l.truncated {
		out.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(l.resume))
	}
	writeXML(w, http.StatusOK, out)
	return nil
}

func (s *Server) listObjectsV1(w http.ResponseWriter, r *request) *Error {
	prefix, delimiter, max, encode, err := listParams(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	l, err := s.list(r, prefix, delimiter, q.Get("marker"), max)
	if err != nil {
		return err
	}
	es, cps := entries(l, encode, true)
	out := struct {
		XMLName        xml.Name       `xml:"ListBucketResult"`
		Xmlns          string         `xml:"xmlns,attr"`
		Name           string         `xml:"Name"`
		Prefix         string         `xml:"Prefix"`
		Marker         string         `xml:"Marker"`
		NextMarker     string         `xml:"NextMarker,omitempty"`
		Delimiter      string         `xml:"Delimiter,omitempty"`
		MaxKeys        int            `xml:"MaxKeys"`
		IsTruncated    bool           `xml:"IsTruncated"`
		EncodingType   string         `xml:"EncodingType,omitempty"`
		Contents       []listEntry    `xml:"Contents"`
		CommonPrefixes []commonPrefix `xml:"CommonPrefixes"`
	}{
		Xmlns: xmlns, Name: r.bucket, Prefix: encode(prefix), Marker: encode(q.Get("marker")), Delimiter: encode(delimiter),
		MaxKeys: max, IsTruncated: l.truncated, EncodingType: q.Get("encoding-type"), Contents: es, CommonPrefixes: cps,
	}
	if l.truncated {
		out.NextMarker = encode(l.last)
	}
	writeXML(w, http.StatusOK, out)
	return nil
}
