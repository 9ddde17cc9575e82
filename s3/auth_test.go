package s3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/minio/minio-go/v7/pkg/signer"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
)

// Signatures are produced by an independent implementation (minio-go's
// signer) and checked by ours.

const testKey, testSecret = "AKTESTKEY", "testsecret/with+odd=chars"

func testServer() *Server {
	return &Server{log: slog.New(slog.DiscardHandler), keys: func(_ context.Context, id string) (api.AccessKey, error) {
		if id == testKey {
			return api.AccessKey{AccessKey: id, SecretKey: testSecret}, nil
		}
		return api.AccessKey{}, blob.ErrNotFound
	}}
}

type sha256Hasher struct{ hash.Hash }

func (sha256Hasher) Close() {}

// received turns a client request into what a server reads off the wire.
func received(t *testing.T, req *http.Request) *http.Request {
	t.Helper()
	var wire bytes.Buffer
	if err := req.Write(&wire); err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadRequest(bufio.NewReader(&wire))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newRequest(t *testing.T, method, target string, body []byte) *http.Request {
	req, err := http.NewRequest(method, target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// readAll authenticates r and reads its verified body.
func readAll(s *Server, r *http.Request) ([]byte, error) {
	_, body, e := s.authenticate(r)
	if e != nil {
		return nil, e
	}
	return io.ReadAll(body)
}

func TestStreamingSignatures(t *testing.T) {
	s := testServer()
	data := make([]byte, 200<<10+17) // four 64 KiB chunks and a short one
	rand.NewChaCha8([32]byte{3}).Read(data)
	stream := func(trailer bool) *http.Request {
		req := newRequest(t, http.MethodPut, "http://127.0.0.1:8900/bucket/some%20key", data)
		if trailer {
			req.Trailer = http.Header{"x-amz-checksum-crc32": []string{"AAAAAA=="}}
		}
		return signer.StreamingSignV4(req, testKey, testSecret, "", "us-east-1", int64(len(data)), time.Now().UTC(), sha256Hasher{sha256.New()})
	}
	for _, trailer := range []bool{false, true} {
		t.Run(fmt.Sprint("trailer=", trailer), func(t *testing.T) {
			got, err := readAll(s, received(t, stream(trailer)))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("decoded %d bytes of %d, %v", len(got), len(data), err)
			}
			// One flipped byte in the third chunk: the reader stops with a
			// signature error before handing out that chunk.
			r := received(t, stream(trailer))
			raw, _ := io.ReadAll(r.Body)
			i := bytes.Index(raw, data[130<<10:130<<10+64])
			raw[i] ^= 1
			r.Body = io.NopCloser(bytes.NewReader(raw))
			got, err = readAll(s, r)
			if err != errSignatureMismatch || len(got) > 128<<10 {
				t.Fatalf("tampered chunk: %d bytes read, err %v", len(got), err)
			}
			// A truncated stream is an error, never a shorter body.
			r = received(t, stream(trailer))
			raw, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(raw[:len(raw)/2]))
			if _, err := readAll(s, r); err == nil {
				t.Fatal("a truncated stream was accepted")
			}
		})
	}
}

func TestUnsignedTrailer(t *testing.T) {
	data := []byte(strings.Repeat("atoll ", 30000))
	req := newRequest(t, http.MethodPut, "http://127.0.0.1:8900/b/k", data)
	req.Trailer = http.Header{"x-amz-checksum-crc32": []string{"AAAAAA=="}}
	req.Header.Set("X-Amz-Content-Sha256", streamingUnsignedTrai)
	req.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32")
	req = signer.StreamingUnsignedV4(req, "", int64(len(data)), time.Now().UTC())
	signed := signer.SignV4(*req, testKey, testSecret, "", "us-east-1")
	got, err := readAll(testServer(), received(t, signed))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("decoded %d bytes of %d, %v", len(got), len(data), err)
	}
}

func TestHeaderAndPresignedSignatures(t *testing.T) {
	s := testServer()
	body := []byte("hello")
	sum := sha256.Sum256(body)
	plain := func(secret string, payload []byte) *http.Request {
		req := newRequest(t, http.MethodPut, "http://127.0.0.1:8900/b/dir/a%2Bb?tagging=x", payload)
		req.Header.Set("X-Amz-Content-Sha256", fmt.Sprintf("%x", sum))
		req.Header.Set("X-Amz-Meta-Color", "blue")
		return signer.SignV4(*req, testKey, secret, "", "eu-west-1")
	}
	if got, err := readAll(s, received(t, plain(testSecret, body))); err != nil || string(got) != "hello" {
		t.Fatalf("signed put: %q %v", got, err)
	}
	if _, err := readAll(s, received(t, plain("other", body))); err != errSignatureMismatch {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := readAll(s, received(t, plain(testSecret, []byte("jello")))); err != errSHA256Mismatch {
		t.Fatalf("body not matching its declared SHA-256: %v", err)
	}
	r := received(t, plain(testSecret, body))
	r.Header.Set("X-Amz-Meta-Color", "red") // a signed header changed in flight
	if _, err := readAll(s, r); err != errSignatureMismatch {
		t.Fatalf("changed signed header: %v", err)
	}

	get := newRequest(t, http.MethodGet, "http://127.0.0.1:8900/b/photo.jpg?response-content-type=image%2Fjpeg", nil)
	pre := signer.PreSignV4(*get, testKey, testSecret, "", "us-east-1", 60)
	if _, err := readAll(s, received(t, pre)); err != nil {
		t.Fatalf("presigned get: %v", err)
	}
	other := received(t, pre)
	other.URL.Path = "/b/other.jpg"
	if _, err := readAll(s, other); err != errSignatureMismatch {
		t.Fatalf("presigned URL used for another key: %v", err)
	}
	old := newRequest(t, http.MethodGet, "http://127.0.0.1:8900/b/photo.jpg?X-Amz-Expires=60", nil)
	expired, _, err := v4.NewSigner().PresignHTTP(context.Background(), aws.Credentials{AccessKeyID: testKey, SecretAccessKey: testSecret},
		old, unsignedPayload, "s3", "us-east-1", time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(s, received(t, newRequest(t, http.MethodGet, expired, nil))); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired presigned URL: %v", err)
	}
	unknown := signer.SignV4(*newRequest(t, http.MethodGet, "http://127.0.0.1:8900/", nil), "AKNOPE", testSecret, "", "us-east-1")
	if _, err := readAll(s, received(t, unknown)); err != errInvalidAccessKey {
		t.Fatalf("unknown key: %v", err)
	}
}
