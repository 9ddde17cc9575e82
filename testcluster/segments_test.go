package testcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
)

// TestLongChunkLists: a blob whose chunk list is longer than one command
// carries (here: more than 8 chunks, in segments of 4) is stored with its
// list in segments, read back whole and by ranges across segment
// boundaries, stated, deduplicated, served through a region's loss, and
// once deleted its segments and chunks are dropped by the leader's sweep.
// S3 objects and multipart uploads list their chunks the same way.
func TestLongChunkLists(t *testing.T) {
	c := start(t, Options{})
	ctx := context.Background()
	cl := c.Client()
	data := randBytes(rand.New(rand.NewPCG(5, 5)), 37*chunk+5) // 38 chunks: segments of 4, the last of 2
	id, err := cl.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	meta := leader.Node.Meta()
	rec, err := meta.Blob(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Chunks) != 0 || len(rec.Segments) != 10 || rec.Segments[9].Chunks != 2 {
		t.Fatalf("blob record: %d chunks inline, segments %+v; want 10 segments, the last of 2 chunks", len(rec.Chunks), rec.Segments)
	}

	checkRanges := func(when string) {
		t.Helper()
		if got, err := getBytes(cl, id); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: read back %d bytes (%v), not the %d put", when, len(got), err, len(data))
		}
		for _, r := range [][2]int64{{0, 1}, {4*chunk - 3, 10}, {5*chunk + 7, 9 * chunk}, {36 * chunk, chunk + 5}, {int64(len(data)) - 1, 1}} {
			rc, err := cl.GetRange(ctx, id, r[0], r[1])
			if err != nil {
				t.Fatalf("%s: range %v: %v", when, r, err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(b, data[r[0]:r[0]+r[1]]) {
				t.Fatalf("%s: range %v read %d bytes (%v), not the data's", when, r, len(b), err)
			}
		}
	}
	checkRanges("stored")

	st, err := cl.Stat(ctx, id)
	if err != nil || len(st.Chunks) != 38 {
		t.Fatalf("stat: %v; %d chunks, want 38", err, len(st.Chunks))
	}
	var off int64
	for i, ch := range st.Chunks {
		if want := blob.Sum(data[off : off+ch.Len]); ch.ID != want {
			t.Fatalf("stat lists chunk %d as %s, the data's is %s", i, ch.ID, want)
		}
		off += ch.Len
		for _, s := range ch.Shards {
			if !s.Healthy {
				t.Fatalf("stat: chunk %d has an unhealthy shard: %+v", i, s)
			}
		}
	}

	again, err := cl.Put(ctx, bytes.NewReader(data))
	if err != nil || again != id {
		t.Fatalf("the same content again: %s, %v; want %s", again, err, id)
	}

	victim := otherRegion(c, leader.Region)
	if err := c.KillRegion(victim); err != nil {
		t.Fatal(err)
	}
	checkRanges("region " + string(victim) + " down")
	if err := c.RestartRegion(victim); err != nil {
		t.Fatal(err)
	}
	waitAlive(t, c)

	// S3: a single PUT and a multipart upload of three 5 MiB parts (160
	// chunks each, listed in segments; the object relists them).
	key, err := c.CreateAccessKey(ctx, api.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s3c := awsClient(c, c.S3URLs()[0], key)
	bucket := "long"
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("single"), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := getObject(t, s3c, bucket, "single"); !bytes.Equal(got, data) {
		t.Fatal("S3 object read back wrong")
	}
	whole := randBytes(rand.New(rand.NewPCG(6, 6)), 3*(5<<20)-1000)
	up, err := s3c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: aws.String("multi")})
	if err != nil {
		t.Fatal(err)
	}
	var parts []types.CompletedPart
	for i := range 3 {
		p := whole[i*(5<<20) : min(len(whole), (i+1)*(5<<20))]
		out, err := s3c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: aws.String("multi"), UploadId: up.UploadId, PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(p)})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))})
	}
	if _, err := s3c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: aws.String("multi"), UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}}); err != nil {
		t.Fatal(err)
	}
	o, err := meta.Object(bucket, "multi")
	if err != nil || len(o.Chunks) != 0 || len(o.Segments) < 3 {
		t.Fatalf("multipart object: %v; %d chunks inline, %d segments", err, len(o.Chunks), len(o.Segments))
	}
	if got, _ := getObject(t, s3c, bucket, "multi"); !bytes.Equal(got, whole) {
		t.Fatal("multipart object read back wrong")
	}
	rng := "bytes=5242000-5243000" // across the parts' boundary
	out, err := s3c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String("multi"), Range: &rng})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if !bytes.Equal(b, whole[5242000:5243001]) {
		t.Fatal("a range across the parts read back wrong")
	}

	// Deleting: the blob and the S3 objects go; the sweep drops their
	// segments, then nothing references the chunks any more.
	if err := cl.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"single", "multi"} {
		if _, err := s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
	}
	err = c.waitFor(ctx, "segments and chunks dropped", func() bool {
		for _, s := range append(rec.Segments, o.Segments...) {
			if _, err := meta.Segment(s.ID); !errors.Is(err, blob.ErrNotFound) {
				return false
			}
		}
		_, err := meta.Chunk(st.Chunks[20].ID)
		return errors.Is(err, blob.ErrNotFound)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Stat(ctx, id); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("stat after delete: %v", err)
	}
}

// TestAbandonedSegmentsAreDropped: a put whose gateway dies halfway has
// committed segments of its chunk list already; no blob names them, so
// once the grace is over the leader's sweep drops them, and their chunks
// with them. The blob never appears.
func TestAbandonedSegmentsAreDropped(t *testing.T) {
	c := start(t, Options{OrphanGrace: 10 * time.Second})
	ctx := context.Background()
	gateway := c.Members()[0]
	data := randBytes(rand.New(rand.NewPCG(8, 8)), 200*chunk)
	first := blob.Sum(data[:chunk])
	held := func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		_, err := l.Node.Meta().Chunk(first)
		return err == nil
	}
	// The gateway dies once the first segment is committed.
	body := &hookReader{r: bytes.NewReader(data), hook: func() bool {
		if !held() {
			time.Sleep(time.Millisecond) // NB: the body must not run far ahead of the put
			return false
		}
		if err := c.KillNode(gateway.ID); err != nil {
			t.Error(err)
		}
		return true
	}}
	_, err := c.Client(gateway.Node.URL()).Put(ctx, body)
	if err == nil {
		t.Fatal("a put through a gateway killed halfway succeeded")
	}
	t.Logf("put: %v", err)
	if _, err := c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err = c.waitFor(ctx, "the staged segments dropped", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		_, err := l.Node.Meta().Chunk(first)
		return errors.Is(err, blob.ErrNotFound)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("staged segments dropped %v after the failed put", time.Since(t0).Round(100*time.Millisecond))
	if _, err := getBytes(c.Client(), blob.Sum(data)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("the blob: %v, want not found", err)
	}
}

// hookReader reads r, calling hook before each read until it returns true.
type hookReader struct {
	r    io.Reader
	hook func() bool
	done bool
}

func (h *hookReader) Read(p []byte) (int, error) {
	if !h.done {
		h.done = h.hook()
	}
	return h.r.Read(p[:min(len(p), 16<<10)])
}

// TestStatPages: a stat answers at most api.StatPage chunks (and checks
// their shards only) a request; the client follows the pages, and a
// page from any chunk on, in a list in segments, is that chunk on.
func TestStatPages(t *testing.T) {
	const small = 4 << 10
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1, ChunkSize: small, SmallMax: -1})
	ctx := context.Background()
	cl := c.Client()
	n := api.StatPage + 6
	data := randBytes(rand.New(rand.NewPCG(9, 9)), n*small)
	id, err := cl.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.Stat(ctx, id)
	if err != nil || len(st.Chunks) != n || st.ChunkCount != n || st.Next != 0 {
		t.Fatalf("stat: %v; %d chunks of %d, next %d; want all %d", err, len(st.Chunks), st.ChunkCount, st.Next, n)
	}
	for i, ch := range st.Chunks {
		if ch.ID != blob.Sum(data[i*small:(i+1)*small]) || len(ch.Shards) != 3 {
			t.Fatalf("chunk %d stated as %s with %d shards", i, ch.ID, len(ch.Shards))
		}
	}
	url := c.URLs()[0] + "/v1/blobs/" + id.String() + "/stat"
	for _, tc := range []struct {
		from, chunks, next int
	}{{0, api.StatPage, api.StatPage}, {api.StatPage, 6, 0}, {3, api.StatPage, api.StatPage + 3}, {13, n - 13, 0}, {n + 5, 0, 0}} {
		code, body := send(t, c, http.MethodGet, fmt.Sprintf("%s?from=%d", url, tc.from), nil)
		var page api.Stat
		if code != http.StatusOK || json.Unmarshal([]byte(body), &page) != nil {
			t.Fatalf("from %d: %d %.200s", tc.from, code, body)
		}
		if len(page.Chunks) != tc.chunks || page.Next != tc.next || page.From != tc.from {
			t.Fatalf("from %d: %d chunks, next %d; want %d, %d", tc.from, len(page.Chunks), page.Next, tc.chunks, tc.next)
		}
		if tc.chunks > 0 && page.Chunks[0].ID != st.Chunks[tc.from].ID {
			t.Fatalf("from %d: the page starts at %s, not chunk %d", tc.from, page.Chunks[0].ID, tc.from)
		}
	}
	if code, _ := send(t, c, http.MethodGet, url+"?from=-1", nil); code != http.StatusBadRequest {
		t.Fatalf("from -1: %d, want 400", code)
	}
}
