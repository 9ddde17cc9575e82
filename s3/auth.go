package s3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
)

// AWS Signature Version 4. The canonical request and its signature are
// computed by the AWS SDK's signer over a copy of the request holding
// exactly what the client signed; only the per-chunk signatures of
// streaming uploads (which the SDK signs but does not expose a verifier
// for) are computed here, with the standard HMAC-SHA256 key derivation.

const (
	algorithm             = "AWS4-HMAC-SHA256"
	unsignedPayload       = "UNSIGNED-PAYLOAD"
	streamingSigned       = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	streamingSignedTrail  = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	streamingUnsignedTrai = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	amzDateFormat         = "20060102T150405Z"
	maxSkew               = 15 * time.Minute
	maxPresignExpiry      = 7 * 24 * time.Hour
	emptySHA256           = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// credential is a parsed SigV4 credential and signature.
type credential struct {
	accessKey, day, region, service string
	signedHeaders                   []string
	signature                       string
	at                              time.Time
	presigned                       bool
	expires                         time.Duration
}

func (c credential) scope() string {
	return c.day + "/" + c.region + "/" + c.service + "/aws4_request"
}

// authenticate checks the request's signature, if any. It returns the
// access key (nil for an anonymous request) and the body to read: for a
// streaming upload the decoded payload, each chunk checked against its
// signature before it is handed on; for a declared SHA-256 a reader that
// fails at the end if the bytes do not match. Either way a failure
// surfaces as a read error before anything is committed.
func (s *Server) authenticate(r *http.Request) (*api.AccessKey, io.Reader, *Error) {
	cred, err := parseCredential(r)
	if err != nil {
		return nil, nil, err
	}
	if cred == nil {
		return nil, r.Body, nil
	}
	now := time.Now()
	if cred.presigned {
		if now.After(cred.at.Add(cred.expires)) {
			return nil, nil, errorf(http.StatusForbidden, "AccessDenied", "Request has expired")
		}
	} else if d := now.Sub(cred.at); d > maxSkew || d < -maxSkew {
		return nil, nil, errRequestTimeTooSkewd
	}
	if cred.service != "s3" {
		return nil, nil, errorf(http.StatusBadRequest, "AuthorizationHeaderMalformed", "the credential scope names service %q, not s3", cred.service)
	}
	key, serr := s.keys(r.Context(), cred.accessKey)
	secret := key.SecretKey
	switch {
	case errors.Is(serr, blob.ErrNotFound):
		return nil, nil, errInvalidAccessKey
	case serr != nil:
		s.log.Warn("s3: looking up an access key", "key", cred.accessKey, "err", serr)
		return nil, nil, toS3(serr, errInvalidAccessKey)
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if cred.presigned && payload == "" {
		payload = unsignedPayload
	}
	if payload == "" {
		return nil, nil, errorf(http.StatusBadRequest, "InvalidRequest", "missing x-amz-content-sha256")
	}
	want, serr := expectedSignature(r.Context(), r, cred, secret, payload)
	if serr != nil {
		s.log.Warn("s3: computing a signature", "err", serr)
		return nil, nil, errSignatureMismatch
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(cred.signature)) != 1 {
		return nil, nil, errSignatureMismatch
	}
	body := io.Reader(r.Body)
	switch payload {
	case unsignedPayload:
	case streamingSigned, streamingSignedTrail, streamingUnsignedTrai:
		cr := &chunkedReader{r: bufio.NewReaderSize(r.Body, 64<<10), trailer: payload != streamingSigned}
		if payload != streamingUnsignedTrai {
			cr.key = signingKey(secret, cred)
			cr.scope, cr.at, cr.prev = cred.scope(), cred.at.Format(amzDateFormat), cred.signature
		}
		body = cr
		if dl := r.Header.Get("X-Amz-Decoded-Content-Length"); dl != "" {
			n, perr := strconv.ParseInt(dl, 10, 64)
			if perr != nil || n < 0 {
				return nil, nil, errorf(http.StatusBadRequest, "InvalidArgument", "bad x-amz-decoded-content-length")
			}
			body = &exactReader{r: cr, left: n}
		}
	default:
		want, herr := hex.DecodeString(payload)
		if herr != nil || len(want) != sha256.Size {
			return nil, nil, errorf(http.StatusBadRequest, "InvalidArgument", "x-amz-content-sha256 is not a SHA-256")
		}
		body = &digestReader{r: r.Body, h: sha256.New(), want: want, mismatch: errSHA256Mismatch}
	}
	return &key, body, nil
}

// parseCredential reads the SigV4 fields of the Authorization header or
// of a presigned URL; nil means the request is anonymous.
func parseCredential(r *http.Request) (*credential, *Error) {
	q := r.URL.Query()
	malformed := func(what string) *Error {
		return errorf(http.StatusBadRequest, "AuthorizationHeaderMalformed", "malformed authorization: %s", what)
	}
	var c credential
	var credStr, dateStr string
	switch auth := r.Header.Get("Authorization"); {
	case strings.HasPrefix(auth, algorithm+" "):
		for _, part := range strings.Split(strings.TrimPrefix(auth, algorithm+" "), ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			switch k {
			case "Credential":
				credStr = v
			case "SignedHeaders":
				c.signedHeaders = strings.Split(v, ";")
			case "Signature":
				c.signature = v
			}
		}
		dateStr = r.Header.Get("X-Amz-Date")
	case auth != "":
		return nil, errorf(http.StatusBadRequest, "InvalidRequest", "unsupported authorization (only AWS Signature Version 4)")
	case q.Get("X-Amz-Algorithm") == algorithm:
		c.presigned = true
		credStr, dateStr, c.signature = q.Get("X-Amz-Credential"), q.Get("X-Amz-Date"), q.Get("X-Amz-Signature")
		c.signedHeaders = strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
		secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
		if err != nil || secs <= 0 || time.Duration(secs)*time.Second > maxPresignExpiry {
			return nil, errorf(http.StatusBadRequest, "AuthorizationQueryParametersError", "X-Amz-Expires must be between 1 second and 7 days")
		}
		c.expires = time.Duration(secs) * time.Second
	case q.Has("X-Amz-Algorithm"):
		return nil, errorf(http.StatusBadRequest, "AuthorizationQueryParametersError", "unsupported X-Amz-Algorithm")
	default:
		return nil, nil
	}
	parts := strings.Split(credStr, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" {
		return nil, malformed("credential " + credStr)
	}
	c.accessKey, c.day, c.region, c.service = parts[0], parts[1], parts[2], parts[3]
	if c.signature == "" || len(c.signedHeaders) == 0 {
		return nil, malformed("no signature or signed headers")
	}
	at, err := time.Parse(amzDateFormat, dateStr)
	if err != nil || at.Format("20060102") != c.day {
		return nil, malformed("date " + dateStr)
	}
	c.at = at
	return &c, nil
}

// expectedSignature signs, with the SDK's signer, a copy of r made of
// exactly what the client says it signed.
func expectedSignature(ctx context.Context, r *http.Request, c *credential, secret, payloadHash string) (string, error) {
	q := r.URL.Query()
	q.Del("X-Amz-Signature")
	req := &http.Request{
		Method: r.Method,
		URL:    &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: q.Encode()},
		Host:   r.Host,
		Header: http.Header{},
	}
	for _, h := range c.signedHeaders {
		switch h {
		case "host":
		case "content-length":
			req.ContentLength = r.ContentLength
		default:
			if vs := r.Header.Values(h); len(vs) > 0 {
				req.Header[http.CanonicalHeaderKey(h)] = vs
			} else {
				return "", fmt.Errorf("signed header %q is missing", h)
			}
		}
	}
	creds := aws.Credentials{AccessKeyID: c.accessKey, SecretAccessKey: secret}
	opts := func(o *v4.SignerOptions) { o.DisableURIPathEscaping, o.DisableHeaderHoisting = true, true }
	signer := v4.NewSigner()
	if c.presigned {
		signed, _, err := signer.PresignHTTP(ctx, creds, req, payloadHash, c.service, c.region, c.at, opts)
		if err != nil {
			return "", err
		}
		u, err := url.Parse(signed)
		if err != nil {
			return "", err
		}
		return u.Query().Get("X-Amz-Signature"), nil
	}
	if err := signer.SignHTTP(ctx, creds, req, payloadHash, c.service, c.region, c.at, opts); err != nil {
		return "", err
	}
	_, sig, _ := strings.Cut(req.Header.Get("Authorization"), "Signature=")
	return sig, nil
}

// signingKey derives the SigV4 signing key for the credential's scope.
func signingKey(secret string, c *credential) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), c.day)
	for _, s := range []string{c.region, c.service, "aws4_request"} {
		k = hmacSHA256(k, s)
	}
	return k
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// maxWireChunk bounds one aws-chunked chunk (clients send 64 KiB to 1 MiB).
const maxWireChunk = 16 << 20

// chunkedReader decodes an aws-chunked body:
//
//	hex-size[;chunk-signature=sig]\r\n data \r\n ... 0[;chunk-signature=sig]\r\n [trailers\r\n] \r\n
//
// When key is set, each chunk's signature (chained from the request's) is
// checked before any of its bytes are returned.
type chunkedReader struct {
	r       *bufio.Reader
	trailer bool // trailing headers follow the last chunk

	key             []byte // nil: unsigned chunks
	scope, at, prev string
	buf             []byte
	off             int
	done            bool
	err             error
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	for c.off == len(c.buf) {
		if c.err != nil {
			return 0, c.err
		}
		if c.done {
			return 0, io.EOF
		}
		if c.err = c.next(); c.err != nil {
			c.buf, c.off = c.buf[:0], 0 // never hand out a chunk that failed
		}
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

func (c *chunkedReader) next() error {
	line, err := c.line()
	if err != nil {
		return err
	}
	sizeStr, ext, _ := strings.Cut(line, ";")
	size, err := strconv.ParseInt(strings.TrimSpace(sizeStr), 16, 64)
	if err != nil || size < 0 || size > maxWireChunk {
		return errorf(http.StatusBadRequest, "InvalidChunkSizeError", "bad aws-chunked chunk size %q", sizeStr)
	}
	if cap(c.buf) < int(size) {
		c.buf = make([]byte, size)
	}
	c.buf, c.off = c.buf[:size], 0
	if _, err := io.ReadFull(c.r, c.buf); err != nil {
		return errIncompleteBody
	}
	if c.key != nil {
		sig, ok := strings.CutPrefix(ext, "chunk-signature=")
		if !ok || !c.check(sig, "AWS4-HMAC-SHA256-PAYLOAD", emptySHA256+"\n"+sha256Hex(c.buf)) {
			return errSignatureMismatch
		}
	}
	if size > 0 || !c.trailer {
		if crlf, err := c.line(); err != nil || crlf != "" {
			return errIncompleteBody
		}
	}
	if size == 0 {
		c.done = true
		if c.trailer {
			return c.trailers()
		}
	}
	return nil
}

// trailers reads the trailing headers (checksums the client computed;
// every shard is checksummed on our side anyway) and, for signed
// trailers, checks their signature. Clients differ in the line endings
// around them (AWS: CRLF; minio-go: LF, then an empty line before the
// signature), so empty lines are skipped until the signature when one is
// due, and end the trailer otherwise.
func (c *chunkedReader) trailers() error {
	var canon strings.Builder
	for {
		line, err := c.line()
		if err != nil {
			return err
		}
		if line == "" {
			if c.key == nil {
				return nil
			}
			continue
		}
		k, v, _ := strings.Cut(line, ":")
		if strings.EqualFold(k, "x-amz-trailer-signature") {
			if c.key != nil && !c.check(strings.TrimSpace(v), "AWS4-HMAC-SHA256-TRAILER", sha256Hex([]byte(canon.String()))) {
				return errSignatureMismatch
			}
			return nil
		}
		canon.WriteString(strings.ToLower(k) + ":" + strings.TrimSpace(v) + "\n")
	}
}

// check verifies one signature of the chain and advances it.
func (c *chunkedReader) check(sig, algo, rest string) bool {
	toSign := algo + "\n" + c.at + "\n" + c.scope + "\n" + c.prev + "\n" + rest
	want := hex.EncodeToString(hmacSHA256(c.key, toSign))
	if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) != 1 {
		return false
	}
	c.prev = sig
	return true
}

func (c *chunkedReader) line() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil || len(line) > 4096 {
		return "", errIncompleteBody
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// digestReader hashes r and, if want is set, fails at the end of r when
// its bytes do not hash to want.
type digestReader struct {
	r        io.Reader
	h        hash.Hash
	want     []byte
	mismatch *Error
}

func (d *digestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	if err == io.EOF && d.want != nil && !bytes.Equal(d.h.Sum(nil), d.want) {
		return n, d.mismatch
	}
	return n, err
}

// exactReader fails unless r yields exactly left bytes.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case e.left < 0:
		return n, errorf(http.StatusBadRequest, "IncompleteBody", "more bytes than x-amz-decoded-content-length")
	case err == io.EOF && e.left > 0:
		return n, errIncompleteBody
	}
	return n, err
}
