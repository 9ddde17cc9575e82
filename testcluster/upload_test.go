package testcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
)

// smallCDC keeps chunk counts realistic (a 4 MiB file is ~100 chunks)
// while the data stays small enough for -race.
var smallCDC = &client.UploadOptions{Chunking: client.Chunking{Min: 16 << 10, Avg: 32 << 10, Max: 128 << 10}}

func upload(t *testing.T, cl *client.Client, data []byte, opts *client.UploadOptions) *client.UploadResult {
	t.Helper()
	res, err := cl.Upload(context.Background(), bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.ID != blob.Sum(data) || res.Size != int64(len(data)) {
		t.Fatalf("upload answered %s/%d, want %s/%d", res.ID, res.Size, blob.Sum(data), len(data))
	}
	return res
}

func mustRead(t *testing.T, cl *client.Client, id blob.ID, want []byte) {
	t.Helper()
	got, err := getBytes(cl, id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("get %s: %d bytes differ from the %d uploaded", id, len(got), len(want))
	}
}

// TestUploadSendsOnlyWhatIsMissing: client-side chunking with a
// have-check. A re-upload sends nothing, a change or an insertion in the
// middle sends a few chunks, the plain streamed put of the same bytes
// gives the same ID, deleting one blob keeps the chunks another uses, and
// uploads work while a region is down.
func TestUploadSendsOnlyWhatIsMissing(t *testing.T) {
	c := start(t, Options{})
	cl := c.Client()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(9, 9))
	a := randBytes(r, 4<<20)

	first := upload(t, cl, a, smallCDC)
	if !first.Created || first.BytesSent != int64(len(a)) || first.Chunks < 60 {
		t.Fatalf("first upload: %+v; want created, all %d bytes sent, ≥ 60 chunks", first, len(a))
	}
	mustRead(t, cl, first.ID, a)

	again := upload(t, cl, a, smallCDC)
	if again.Created || again.BytesSent != 0 || again.ChunksSent != 0 {
		t.Fatalf("identical re-upload: %+v; want nothing sent", again)
	}
	if id, err := cl.Put(ctx, bytes.NewReader(a)); err != nil || id != first.ID {
		t.Fatalf("streamed put of the same bytes: %s, %v; want %s", id, err, first.ID)
	}

	changed := slices.Clone(a)
	copy(changed[len(a)/2:], randBytes(r, 64<<10)) // 64 KiB overwritten
	ch := upload(t, cl, changed, smallCDC)
	if ch.ChunksSent > 5 || ch.BytesSent > int64(len(a))/16 {
		t.Fatalf("64 KiB changed in 4 MiB: sent %d chunks, %d bytes", ch.ChunksSent, ch.BytesSent)
	}
	inserted := slices.Concat(a[:len(a)/3], []byte("a few bytes inserted"), a[len(a)/3:])
	in := upload(t, cl, inserted, smallCDC)
	if in.ChunksSent > 2 {
		t.Fatalf("20 bytes inserted: sent %d chunks, %d bytes; CDC should resynchronise", in.ChunksSent, in.BytesSent)
	}
	t.Logf("4 MiB, %d chunks: 64 KiB changed sent %d chunks (%d bytes); insertion sent %d (%d bytes)",
		first.Chunks, ch.ChunksSent, ch.BytesSent, in.ChunksSent, in.BytesSent)

	if err := cl.Delete(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	mustRead(t, cl, ch.ID, changed)
	mustRead(t, cl, in.ID, inserted)

	// With a whole region down, uploads still work and read back.
	c.KillRegion(c.Regions()[0])
	c2 := c.Client(regionURLs(c, c.Regions()[1])...)
	d := randBytes(r, 1<<20)
	res := upload(t, c2, d, smallCDC)
	mustRead(t, c2, res.ID, d)
	mustRead(t, c2, in.ID, inserted)
}

// TestUploadResumesAndReclaims: an upload cut off halfway, run again,
// sends only the chunks not yet stored; chunks of an upload never
// finished are dropped after the grace and their shards reclaimed; lying
// manifests and chunks are refused.
func TestUploadResumesAndReclaims(t *testing.T) {
	// NB: a short grace keeps the reclaiming below quick; the uploads
	// renew theirs every second (under -race on two cores a resumed upload
	// took up to 14 s from its have-check to its manifest, and with 5 s a
	// loaded CI run saw renewals lag past the grace).
	const grace = 10 * time.Second
	c := start(t, Options{OrphanGrace: grace, ScrubInterval: 300 * time.Millisecond})
	cl := c.Client()
	r := rand.New(rand.NewPCG(10, 10))
	data := randBytes(r, 4<<20)

	ctx, cancel := context.WithCancel(context.Background())
	var sentBeforeCut int64
	renewing := *smallCDC
	renewing.Renew = time.Second
	opts := renewing
	opts.Progress = func(p client.UploadProgress) {
		if p.Sent >= p.Size/2 {
			sentBeforeCut = p.Sent
			cancel()
		}
	}
	if _, err := cl.Upload(ctx, bytes.NewReader(data), int64(len(data)), &opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("cut upload: %v, want canceled", err)
	}
	if sentBeforeCut == 0 {
		t.Fatal("the upload was not cut halfway")
	}
	rest := upload(t, cl, data, &renewing)
	if rest.BytesSent > int64(len(data))-sentBeforeCut {
		t.Fatalf("resumed upload sent %d bytes; %d of %d were already acknowledged", rest.BytesSent, sentBeforeCut, len(data))
	}
	mustRead(t, cl, rest.ID, data)
	t.Logf("cut after %d bytes acknowledged; the resumed upload sent %d of %d", sentBeforeCut, rest.BytesSent, len(data))

	// An abandoned upload: its staged chunks are dropped after the grace,
	// and every shard they had is reclaimed.
	info, err := cl.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	baseline := info.UsedBytes
	orphan := randBytes(r, 1<<20)
	url := c.URLs()[0]
	var ids []blob.ID
	for off := 0; off < len(orphan); off += 64 << 10 {
		// NB: checked one by one as staged: under load, staging them all
		// has taken longer than the grace, which drops the first ones.
		staged := stageChunks(t, c, url, orphan[off:off+64<<10], 64<<10)
		if missing, err := cl.Missing(context.Background(), staged); err != nil || len(missing) != 0 {
			t.Fatalf("a staged chunk is missing: %v, %v", missing, err)
		}
		ids = append(ids, staged...)
	}
	// (Asking about them would renew their grace: watch the disk instead.
	// The chunks are dropped a grace after staging, their shards reclaimed
	// a grace after a scrubber first finds them unreferenced.)
	deadline := time.Now().Add(3 * grace)
	for {
		info, err := cl.Cluster(context.Background())
		if err == nil && info.UsedBytes == baseline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("abandoned chunks not reclaimed: %+v, %v; want %d bytes used", info, err, baseline)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if missing, err := cl.Missing(context.Background(), ids); err != nil || len(missing) != len(ids) {
		t.Fatalf("after reclaiming: %d of %d abandoned chunks dropped, %v", len(missing), len(ids), err)
	}
	mustRead(t, cl, rest.ID, data)

	// Lies are refused and commit nothing.
	piece := data[:1000]
	code, body := send(t, c, http.MethodPut, url+"/v1/chunks/"+blob.Sum(data[1:1001]).String(), piece)
	if code != http.StatusBadRequest || !strings.Contains(body, "bad_digest") {
		t.Fatalf("chunk sent under another's ID: %d %s", code, body)
	}
	code, body = send(t, c, http.MethodPut, url+"/v1/chunks/"+blob.Sum(nil).String(), nil)
	if code != http.StatusBadRequest {
		t.Fatalf("empty chunk: %d %s", code, body)
	}
	code, body = send(t, c, http.MethodPut, url+"/v1/chunks/"+blob.Sum(piece).String(), make([]byte, api.MaxChunkSize+1))
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized chunk: %d %s", code, body)
	}
	other := randBytes(r, 1000)
	stageChunks(t, c, url, other, 1000)
	lie := manifestJSON(blob.Sum(piece), other) // real chunk, wrong blob ID
	code, body = send(t, c, http.MethodPost, url+"/v1/manifests", lie)
	if code != http.StatusBadRequest || !strings.Contains(body, "bad_digest") {
		t.Fatalf("manifest under a false ID: %d %s", code, body)
	}
	if _, err := cl.Stat(context.Background(), blob.Sum(piece)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a refused manifest left a blob: %v", err)
	}
	unknown := randBytes(r, 1000)
	code, body = send(t, c, http.MethodPost, url+"/v1/manifests", manifestJSON(blob.Sum(unknown), unknown))
	if code != http.StatusConflict || !strings.Contains(body, "missing_chunks") {
		t.Fatalf("manifest of unsent chunks: %d %s", code, body)
	}
	for _, bad := range []string{`{`, `{"id":"nope","size":1,"chunks":[]}`, `{"id":"` + blob.Sum(nil).String() + `","size":5,"chunks":[]}`, `{"extra":1}`} {
		if code, body := send(t, c, http.MethodPost, url+"/v1/manifests", []byte(bad)); code != http.StatusBadRequest {
			t.Fatalf("manifest %s: %d %s", bad, code, body)
		}
	}
}

// stageChunks uploads data as fixed-size chunks that no manifest names.
func stageChunks(t *testing.T, c *Cluster, url string, data []byte, size int) []blob.ID {
	t.Helper()
	var ids []blob.ID
	for off := 0; off < len(data); off += size {
		part := data[off:min(off+size, len(data))]
		ids = append(ids, blob.Sum(part))
		if code, body := send(t, c, http.MethodPut, url+"/v1/chunks/"+blob.Sum(part).String(), part); code != http.StatusCreated {
			t.Fatalf("staging a chunk: %d %s", code, body)
		}
	}
	return ids
}

func manifestJSON(id blob.ID, chunk []byte) []byte {
	b, _ := json.Marshal(api.Manifest{ID: id, Size: int64(len(chunk)), Chunks: []api.ChunkRef{{ID: blob.Sum(chunk), Len: int64(len(chunk))}}})
	return b
}

// send makes one raw request and returns the status and body.
// send sends one request with the operator's certificate.
func send(t *testing.T, c *Cluster, method, url string, body []byte) (int, string) {
	t.Helper()
	return sendCtx(context.Background(), t, c, method, url, body)
}

func sendCtx(ctx context.Context, t *testing.T, c *Cluster, method, url string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestUploadSurvivesGatewayLoss: the node an upload talks to is killed
// halfway (it is the raft leader, the worst case); the client fails over
// to the others and the upload completes with the right bytes.
func TestUploadSurvivesGatewayLoss(t *testing.T) {
	c := start(t, Options{})
	leader, err := c.WaitLeader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	urls := []string{leader.Node.URL()}
	for _, u := range c.URLs() {
		if u != leader.Node.URL() {
			urls = append(urls, u)
		}
	}
	cl := c.Client(urls...)
	data := randBytes(rand.New(rand.NewPCG(11, 11)), 4<<20)
	var once sync.Once
	opts := *smallCDC
	opts.Progress = func(p client.UploadProgress) {
		if p.Sent >= p.Size/3 {
			once.Do(func() { go c.KillNode(leader.ID) })
		}
	}
	res := upload(t, cl, data, &opts)
	mustRead(t, cl, res.ID, data)
	if st, err := cl.Stat(context.Background(), res.ID); err != nil || st.Size != int64(len(data)) {
		t.Fatalf("stat after failover: %+v %v", st, err)
	}
}
