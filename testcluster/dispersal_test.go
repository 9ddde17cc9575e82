package testcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/storage"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// secretText is structured, guessable text: any slice of it stored as it
// is would be found by a 32-byte window search.
func secretText(tag string, n int) []byte {
	var b []byte
	for i := 0; len(b) < n; i++ {
		b = append(b, fmt.Sprintf("%s line %06d: the meeting moves to the safe house at dawn\n", tag, i)...)
	}
	return b[:n]
}

// TestSeizedRegionLearnsNothing seizes every disk of one region (the
// nodes stopped, their directories read offline) after blobs were stored
// by every write path: no 32-byte window of any stored plaintext is on
// them, the region holds at most m shards of each chunk (too few to
// decode), and the other regions still return every blob byte-exact.
func TestSeizedRegionLearnsNothing(t *testing.T) {
	c := start(t, Options{})
	ctx := context.Background()
	key, err := c.CreateAccessKey(ctx, api.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[blob.ID][]byte{}
	streamed := secretText("streamed", 5*chunk+77)
	id, err := c.Client().Put(ctx, bytes.NewReader(streamed))
	if err != nil {
		t.Fatal(err)
	}
	stored[id] = streamed
	small := secretText("small", 3000) // one chunk of the small code
	if id, err = c.Client().Put(ctx, bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	stored[id] = small
	uploaded := secretText("uploaded", 3<<20) // client-side chunking: chunks staged, then a manifest
	stored[upload(t, c.Client(), uploaded, nil).ID] = uploaded
	object := secretText("s3 object", 2*chunk+5)
	s3c := awsClient(c, c.S3URLs()[0], key)
	bucket, name := "seized", "plans.txt"
	if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &name, Body: bytes.NewReader(object)}); err != nil {
		t.Fatal(err)
	}

	windows := map[string]bool{}
	for _, p := range [][]byte{streamed, small, uploaded, object} {
		for i := 0; i+32 <= len(p); i++ {
			windows[string(p[i:i+32])] = true
		}
	}
	seized := c.Regions()[0]
	if err := c.KillRegion(seized); err != nil {
		t.Fatal(err)
	}
	held := map[blob.ID]map[int]erasure.Header{} // chunk → the seized region's shards of it, by index
	files := 0
	for _, m := range c.Members() {
		if m.Region != seized {
			continue
		}
		err := filepath.WalkDir(m.Dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files++
			for i := 0; i+32 <= len(b); i++ {
				if windows[string(b[i:i+32])] {
					return fmt.Errorf("%s holds plaintext at offset %d: %q", path, i, b[i:i+32])
				}
			}
			if strings.Contains(path, "shards") { // files, or records in a volume: anywhere in a file
				erasure.ScanHeaders(b, func(_ int, h erasure.Header) {
					if held[h.Chunk] == nil {
						held[h.Chunk] = map[int]erasure.Header{}
					}
					held[h.Chunk][h.Index] = h
				})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(held) == 0 {
		t.Fatalf("read %d files and found no shard: the test looks in the wrong place", files)
	}
	smallCode := 0
	for chunk, byIndex := range held {
		hs := slices.Collect(maps.Values(byIndex))
		k, m := hs[0].K, hs[0].M
		if k == 4 && m == 2 {
			smallCode++
		}
		if len(hs) > m || len(hs) >= k {
			t.Errorf("the seized region holds %d shards of chunk %s (%d+%d): more than m, or enough to decode", len(hs), chunk, k, m)
		}
		for _, h := range hs {
			if h.Format != erasure.Dispersed {
				t.Errorf("chunk %s shard %d is %s", chunk, h.Index, h.Format)
			}
		}
		shards := make([][]byte, k+m)
		for _, h := range hs {
			shards[h.Index] = make([]byte, h.ShardLen)
		}
		codec, _ := erasure.New(k, m)
		if _, err := codec.Decode(shards, hs[0].ChunkLen, erasure.Dispersed, nil); !errors.Is(err, erasure.ErrTooFewShards) {
			t.Errorf("chunk %s: decoding the seized shards: %v, want too few shards", chunk, err)
		}
	}
	if smallCode == 0 {
		t.Error("no chunk of the small code (4+2) among the seized shards: the small write path went untested")
	}
	t.Logf("seized region %s: %d files, shards of %d chunks (%d of the small code), no plaintext window", seized, files, len(held), smallCode)

	for id, want := range stored {
		mustRead(t, c.Client(), id, want) // the running nodes: the other regions
	}
	s3c = awsClient(c, c.S3URLs()[0], key)
	if got, _ := getObject(t, s3c, bucket, name); !bytes.Equal(got, object) {
		t.Fatal("the S3 object differs after the seizure")
	}
}

// TestScrubRewritesAShardOfTheWrongFormat: a shard that passes its own
// checks but is in another format than its chunk's record (a Plain copy
// left by a put racing the format switch) is refused by reads and
// rewritten by the scrubber.
func TestScrubRewritesAShardOfTheWrongFormat(t *testing.T) {
	c := start(t, Options{ScrubInterval: 300 * time.Millisecond})
	ctx := context.Background()
	data := secretText("format", chunk)
	id, err := c.Client().Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Client().Stat(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	ch := st.Chunks[0]
	holder := c.Member(ch.Shards[0].Node)
	codec, _ := erasure.New(6, 3)
	stripe := codec.NewStripe(len(data))
	copy(stripe.Buffer(), data)
	stripe.SetLen(len(data))
	if err := stripe.Encode(erasure.Plain); err != nil {
		t.Fatal(err)
	}
	h, p := stripe.Shard(ch.ID, 0)
	if err := storage.Write(ctx, holder.Disk, h, p); err != nil {
		t.Fatal(err)
	}
	mustRead(t, c.Client(holder.Node.URL()), id, data)
	if err := c.waitFor(ctx, "the scrubber rewriting the shard as Dispersed", func() bool {
		h, _, err := storage.Read(ctx, holder.Disk, storage.Ref{Chunk: ch.ID, Index: 0})
		return err == nil && h.Format == erasure.Dispersed
	}); err != nil {
		t.Fatal(err)
	}
}
