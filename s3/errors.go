package s3

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/raftstore"
)

// Error is an S3 error response.
type Error struct {
	Code    string
	Message string
	Status  int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Status: status}
}

// The S3 errors Atoll answers with.
var (
	errAccessDenied        = &Error{"AccessDenied", "Access Denied", http.StatusForbidden}
	errSignatureMismatch   = &Error{"SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method.", http.StatusForbidden}
	errInvalidAccessKey    = &Error{"InvalidAccessKeyId", "The AWS access key Id you provided does not exist in our records.", http.StatusForbidden}
	errNoSuchBucket        = &Error{"NoSuchBucket", "The specified bucket does not exist", http.StatusNotFound}
	errNoSuchKey           = &Error{"NoSuchKey", "The specified key does not exist.", http.StatusNotFound}
	errNoSuchUpload        = &Error{"NoSuchUpload", "The specified multipart upload does not exist.", http.StatusNotFound}
	errBucketNotEmpty      = &Error{"BucketNotEmpty", "The bucket you tried to delete is not empty", http.StatusConflict}
	errBucketOwned         = &Error{"BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.", http.StatusConflict}
	errInvalidBucketName   = &Error{"InvalidBucketName", "The specified bucket is not valid.", http.StatusBadRequest}
	errInvalidRange        = &Error{"InvalidRange", "The requested range is not satisfiable", http.StatusRequestedRangeNotSatisfiable}
	errPreconditionFailed  = &Error{"PreconditionFailed", "At least one of the pre-conditions you specified did not hold", http.StatusPreconditionFailed}
	errEntityTooLarge      = &Error{"EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size.", http.StatusBadRequest}
	errBadDigest           = &Error{"BadDigest", "The Content-MD5 you specified did not match what we received.", http.StatusBadRequest}
	errSHA256Mismatch      = &Error{"XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.", http.StatusBadRequest}
	errIncompleteBody      = &Error{"IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.", http.StatusBadRequest}
	errMalformedXML        = &Error{"MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.", http.StatusBadRequest}
	errNotImplemented      = &Error{"NotImplemented", "A header or query you provided implies functionality that is not implemented.", http.StatusNotImplemented}
	errMethodNotAllowed    = &Error{"MethodNotAllowed", "The specified method is not allowed against this resource.", http.StatusMethodNotAllowed}
	errServiceUnavailable  = &Error{"ServiceUnavailable", "Please reduce your request rate or retry: the cluster cannot serve this now.", http.StatusServiceUnavailable}
	errInternal            = &Error{"InternalError", "We encountered an internal error. Please try again.", http.StatusInternalServerError}
	errRequestTimeTooSkewd = &Error{"RequestTimeTooSkewed", "The difference between the request time and the server's time is too large.", http.StatusForbidden}
	errInvalidPart         = &Error{"InvalidPart", "One or more of the specified parts could not be found.", http.StatusBadRequest}
	errInvalidPartOrder    = &Error{"InvalidPartOrder", "The list of parts was not in ascending order.", http.StatusBadRequest}
	errEntityTooSmall      = &Error{"EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.", http.StatusBadRequest}
)

// toS3 maps an error of the lower layers to an S3 error. notFound is the
// error a plain "not found" means in the request's context. raftstore's
// sentinels keep their identity when a command is applied by the leader
// (they have wire codes).
func toS3(err error, notFound *Error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, raftstore.ErrNoSuchBucket):
		return errNoSuchBucket
	case errors.Is(err, raftstore.ErrNoSuchUpload):
		return errNoSuchUpload
	case errors.Is(err, blob.ErrNotFound):
		return notFound
	case errors.Is(err, blob.ErrNotEmpty):
		return errBucketNotEmpty
	case errors.Is(err, blob.ErrExists):
		return errBucketOwned
	case errors.Is(err, blob.ErrTooLarge):
		return errEntityTooLarge
	case errors.Is(err, blob.ErrUnavailable), errors.Is(err, blob.ErrMissingChunks):
		return errServiceUnavailable
	case errors.Is(err, blob.ErrNoSpace):
		return &Error{"InsufficientStorage", err.Error(), http.StatusInsufficientStorage}
	}
	return errInternal
}

type errorBody struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	Resource  string   `xml:"Resource,omitempty"`
	RequestID string   `xml:"RequestId"`
}

func writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(e.Status)
	if r.Method == http.MethodHead {
		return // no body, as S3
	}
	w.Write([]byte(xml.Header))
	xml.NewEncoder(w).Encode(errorBody{Code: e.Code, Message: e.Message, Resource: r.URL.Path, RequestID: w.Header().Get("x-amz-request-id")})
}

func writeXML(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	xml.NewEncoder(w).Encode(v)
}
