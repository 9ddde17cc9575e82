package s3

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"testing"
)

// FuzzChunkedReader feeds arbitrary bodies to the aws-chunked decoder,
// unsigned and signed: it never panics, never allocates past a chunk's
// limit, and never returns more bytes than it was given; a signed body it
// accepts must carry the signatures of what it returned (random bytes
// never do, so every byte returned from a signed body is an error).
func FuzzChunkedReader(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), false, false)
	f.Add([]byte("5;chunk-signature=abc\r\nhello\r\n0;chunk-signature=def\r\n\r\n"), true, false)
	f.Add([]byte("3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAA\r\n\r\n"), false, true)
	f.Add([]byte("ffffffffffffffff\r\n"), false, false)
	f.Add([]byte("-1\r\n"), false, false)
	f.Fuzz(func(t *testing.T, body []byte, signed, trailer bool) {
		cr := &chunkedReader{r: bufio.NewReaderSize(bytes.NewReader(body), 64<<10), trailer: trailer}
		if signed {
			cr.key, cr.scope, cr.at, cr.prev = []byte("key"), "20260101/us-east-1/s3/aws4_request", "20260101T000000Z", "seed"
		}
		out, err := io.ReadAll(cr)
		if len(out) > len(body) {
			t.Fatalf("returned %d bytes from a body of %d", len(out), len(body))
		}
		if signed && err == nil && len(out) > 0 {
			t.Fatalf("accepted %d bytes of a body with forged chunk signatures", len(out))
		}
	})
}

// FuzzParseCredential feeds arbitrary Authorization headers and presigned
// query strings to the SigV4 parser: it never panics, and a credential it
// returns is complete and dated consistently.
func FuzzParseCredential(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc", "20260101T000000Z", "")
	f.Add("", "", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=ab")
	f.Add("AWS4-HMAC-SHA256 Credential=////", "x", "")
	f.Add("Basic Zm9vOmJhcg==", "", "")
	f.Fuzz(func(t *testing.T, auth, date, query string) {
		r := &http.Request{Header: http.Header{}, URL: &url.URL{RawQuery: query}}
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		r.Header.Set("X-Amz-Date", date)
		c, e := parseCredential(r)
		if c == nil {
			return
		}
		if e != nil {
			t.Fatalf("both a credential and an error: %v", e)
		}
		if c.signature == "" || len(c.signedHeaders) == 0 || c.at.IsZero() || c.at.Format("20060102") != c.day {
			t.Fatalf("incomplete credential %+v", c)
		}
		if c.presigned && (c.expires <= 0 || c.expires > maxPresignExpiry) {
			t.Fatalf("presigned credential with expiry %v", c.expires)
		}
	})
}
