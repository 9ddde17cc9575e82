package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc" // registers "fastcdc-v1.0.0"
	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/internal/ctxio"
)

// Chunking sets the content-defined chunk sizes (FastCDC): cut points
// depend on the bytes around them, so an insertion or a change in the
// middle of a file changes only the chunks it touches.
type Chunking struct {
	Min, Avg, Max int // Avg is a power of two; Max ≤ api.MaxChunkSize
}

// DefaultChunking averages about 2.5 MiB per chunk: small enough that a
// 1 MiB change resends a few MiB, large enough that a 10 GiB file is a
// manifest of about 4,000 chunks.
var DefaultChunking = Chunking{Min: 2 << 20, Avg: 4 << 20, Max: api.MaxChunkSize}

// UploadOptions tunes Upload. The zero value is good.
type UploadOptions struct {
	Chunking Chunking // zero: DefaultChunking
	Parallel int      // chunks sent at once (default 4)
	// Progress, if set, is called about ten times a second from one
	// goroutine, and once more at the end.
	Progress func(UploadProgress)
	// Renew is how often the grace of the chunks already sent is renewed
	// (default RenewEvery); the cluster's orphan grace must exceed it.
	Renew time.Duration
}

// UploadProgress counts an upload's bytes so far.
type UploadProgress struct {
	Size    int64 // the whole file
	Scanned int64 // chunked and hashed
	Sent    int64 // chunk bytes sent to the cluster
	Skipped int64 // bytes the cluster already held (or that repeat within the file)
}

// UploadResult describes a finished upload.
type UploadResult struct {
	ID         blob.ID
	Size       int64
	Chunks     int   // chunks in the blob
	ChunksSent int   // chunks actually sent
	BytesSent  int64 // chunk bytes actually sent
	Created    bool  // false if the cluster already held the blob
}

// Upload stores the size bytes of r as a blob, sending only what the
// cluster lacks: it cuts r into content-defined chunks, hashes each, asks
// the cluster in batches which chunks it is missing, uploads those (a few
// at a time), and commits the blob's manifest; the cluster checks the
// manifest against the blob's ID before committing it. Uploading content
// the cluster holds sends no chunk bytes, and an interrupted upload, run
// again, sends only the chunks not yet stored.
//
// r is read twice at most (once to chunk and hash, again for the chunks
// sent), so memory stays bounded — about Parallel+2 times Max chunk
// size — whatever the size. The ID is the BLAKE3 of the content, the same
// as Put gives for the same bytes.
func (c *Client) Upload(ctx context.Context, r io.ReaderAt, size int64, opts *UploadOptions) (*UploadResult, error) {
	var o UploadOptions
	if opts != nil {
		o = *opts
	}
	if o.Chunking == (Chunking{}) {
		o.Chunking = DefaultChunking
	}
	if o.Chunking.Max > api.MaxChunkSize {
		return nil, fmt.Errorf("client: chunks of up to %d bytes exceed the limit of %d", o.Chunking.Max, api.MaxChunkSize)
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Renew <= 0 {
		o.Renew = RenewEvery
	}
	u := &upload{c: c, r: r, size: size, opts: o, queued: map[blob.ID]bool{}}
	stopProgress := u.reportProgress()
	res, err := u.run(ctx, size)
	stopProgress()
	return res, err
}

// upload is the state of one Upload.
type upload struct {
	c    *Client
	r    io.ReaderAt
	size int64
	opts UploadOptions

	refs   []chunkAt        // the blob's chunks, in order
	queued map[blob.ID]bool // chunk IDs already asked about

	scanned, sent, skipped atomic.Int64
	chunksSent             atomic.Int64

	heldMu sync.Mutex
	held   []blob.ID // chunks the cluster holds for this upload so far
}

// RenewEvery is how often a running upload renews the grace of the chunks
// the cluster already holds for it (a have-check of them): an upload that
// takes longer than the cluster's orphan grace must not see its first
// chunks dropped as abandoned before its manifest claims them. The
// cluster's grace (--orphan-grace, 1 hour by default) must exceed it.
const RenewEvery = 10 * time.Second

func (u *upload) hold(id blob.ID) {
	u.heldMu.Lock()
	u.held = append(u.held, id)
	u.heldMu.Unlock()
}

// renew keeps the held chunks' grace fresh, every period, until stop is
// closed.
func (u *upload) renew(ctx context.Context, period time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		u.heldMu.Lock()
		ids := slices.Clone(u.held)
		u.heldMu.Unlock()
		u.c.Missing(ctx, ids) // NB: best effort; the commit re-sends whatever was lost
	}
}

type chunkAt struct {
	api.ChunkRef
	off int64
}

func (u *upload) run(ctx context.Context, size int64) (*UploadResult, error) {
	g, gctx := errgroup.WithContext(ctx)
	var whole blob.ID
	g.Go(func() error { // the blob ID, hashed alongside the chunking
		h := blake3.New()
		if _, err := io.Copy(h, ctxio.Reader(gctx, io.NewSectionReader(u.r, 0, size))); err != nil {
			return fmt.Errorf("reading: %w", err)
		}
		whole = blob.ID(h.Sum(nil))
		return nil
	})
	batches := make(chan []chunkAt, 2)
	g.Go(func() error {
		defer close(batches)
		return u.scan(gctx, size, batches)
	})
	sends := make(chan chunkAt, u.opts.Parallel)
	g.Go(func() error {
		defer close(sends)
		for batch := range batches {
			if err := u.sendMissing(gctx, batch, sends); err != nil {
				return err
			}
		}
		return nil
	})
	for range u.opts.Parallel {
		g.Go(func() error { return u.sender(gctx, sends) })
	}
	stopRenew := make(chan struct{})
	renewed := make(chan struct{})
	go func() { defer close(renewed); u.renew(ctx, u.opts.Renew, stopRenew) }()
	err := g.Wait()
	close(stopRenew)
	<-renewed
	if err != nil {
		return nil, err
	}
	m := api.Manifest{ID: whole, Size: size, Chunks: make([]api.ChunkRef, len(u.refs))}
	for i, ref := range u.refs {
		m.Chunks[i] = ref.ChunkRef
	}
	res, created, err := u.commit(ctx, m)
	if err != nil {
		return nil, err
	}
	if res.ID != whole || res.Size != size {
		return nil, fmt.Errorf("client: the cluster answered blob %s of %d bytes for %s of %d", res.ID, res.Size, whole, size)
	}
	return &UploadResult{ID: whole, Size: size, Chunks: len(u.refs), ChunksSent: int(u.chunksSent.Load()), BytesSent: u.sent.Load(), Created: created}, nil
}

// scan cuts the content into chunks, hashes them, and hands them on in
// batches that grow from 8 to 1024 chunks: the first answer comes soon,
// and a large file still takes few requests.
func (u *upload) scan(ctx context.Context, size int64, batches chan<- []chunkAt) error {
	ch, err := chunkers.NewChunker("fastcdc-v1.0.0", ctxio.Reader(ctx, io.NewSectionReader(u.r, 0, size)), &chunkers.ChunkerOpts{
		MinSize: u.opts.Chunking.Min, NormalSize: u.opts.Chunking.Avg, MaxSize: u.opts.Chunking.Max,
	})
	if err != nil {
		return fmt.Errorf("client: chunking: %w", err)
	}
	var batch []chunkAt
	limit := 8
	var off int64
	for {
		data, err := ch.Next()
		if err != nil && err != io.EOF {
			return fmt.Errorf("reading: %w", err)
		}
		if len(data) > 0 {
			ref := chunkAt{ChunkRef: api.ChunkRef{ID: blob.Sum(data), Len: int64(len(data))}, off: off}
			off += ref.Len
			u.scanned.Add(ref.Len)
			u.refs = append(u.refs, ref)
			batch = append(batch, ref)
		}
		if len(batch) > 0 && (len(batch) >= limit || err == io.EOF) {
			select {
			case batches <- batch:
			case <-ctx.Done():
				return ctx.Err()
			}
			batch, limit = nil, min(2*limit, 1024)
		}
		if err == io.EOF {
			break
		}
	}
	if off != size {
		return fmt.Errorf("client: the file changed while it was read (%d bytes, expected %d)", off, size)
	}
	return nil
}

// sendMissing asks which chunks of batch the cluster lacks and queues
// those for sending; a chunk repeated within the file is asked about once.
func (u *upload) sendMissing(ctx context.Context, batch []chunkAt, sends chan<- chunkAt) error {
	var ask []chunkAt
	for _, ref := range batch {
		if u.queued[ref.ID] {
			u.skipped.Add(ref.Len)
			continue
		}
		u.queued[ref.ID] = true
		ask = append(ask, ref)
	}
	missing, err := u.have(ctx, ask)
	if err != nil {
		return err
	}
	for _, ref := range ask {
		if !missing[ref.ID] {
			u.skipped.Add(ref.Len)
			u.hold(ref.ID)
			continue
		}
		select {
		case sends <- ref:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (u *upload) have(ctx context.Context, refs []chunkAt) (map[blob.ID]bool, error) {
	ids := make([]blob.ID, len(refs))
	for i, ref := range refs {
		ids[i] = ref.ID
	}
	missing, err := u.c.Missing(ctx, ids)
	if err != nil {
		return nil, err
	}
	set := make(map[blob.ID]bool, len(missing))
	for _, id := range missing {
		set[id] = true
	}
	return set, nil
}

// Missing returns those of the chunk IDs the cluster does not hold. A
// chunk counts as held only once all its shards are durable and its
// record is committed.
func (c *Client) Missing(ctx context.Context, ids []blob.ID) ([]blob.ID, error) {
	var missing []blob.ID
	for len(ids) > 0 {
		part := ids[:min(len(ids), api.MaxHaveChunks)]
		ids = ids[len(part):]
		var resp api.HaveResponse
		if err := c.postJSON(ctx, "/v1/chunks/have", api.HaveRequest{Chunks: part}, &resp); err != nil {
			return nil, fmt.Errorf("have-check: %w", err)
		}
		missing = append(missing, resp.Missing...)
	}
	return missing, nil
}

var chunkBufs = sync.Pool{New: func() any { return new([]byte) }}

// sender uploads the chunks it is handed, reading each again from r.
func (u *upload) sender(ctx context.Context, sends <-chan chunkAt) error {
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	for ref := range sends {
		if cap(*bp) < int(ref.Len) {
			*bp = make([]byte, u.opts.Chunking.Max)
		}
		buf := (*bp)[:ref.Len]
		if _, err := u.r.ReadAt(buf, ref.off); err != nil {
			return fmt.Errorf("reading: %w", err)
		}
		// NB: the cluster checks the chunk against its ID, which also
		// catches a file that changed since it was scanned.
		if err := u.c.putChunk(ctx, ref.ID, buf); err != nil {
			if errors.Is(err, blob.ErrBadDigest) {
				err = fmt.Errorf("the file changed while it was read (at offset %d): %w", ref.off, err)
			}
			return err
		}
		u.sent.Add(ref.Len)
		u.chunksSent.Add(1)
		u.hold(ref.ID)
	}
	return nil
}

// commit sends the manifest. If the cluster lost a chunk meanwhile (an
// abandoned chunk reclaimed between the have-check and now), it sends the
// chunks missing now and tries again.
func (u *upload) commit(ctx context.Context, m api.Manifest) (api.PutResult, bool, error) {
	for attempt := 0; ; attempt++ {
		var res api.PutResult
		status, err := u.c.postJSONStatus(ctx, "/v1/manifests", m, &res)
		if err == nil {
			return res, status == http.StatusCreated, nil
		}
		if !errors.Is(err, blob.ErrMissingChunks) || attempt == 3 {
			return res, false, fmt.Errorf("committing manifest: %w", err)
		}
		unique := map[blob.ID]bool{}
		var refs []chunkAt
		for _, ref := range u.refs {
			if !unique[ref.ID] {
				unique[ref.ID] = true
				refs = append(refs, ref)
			}
		}
		missing, err := u.have(ctx, refs)
		if err != nil {
			return res, false, err
		}
		sends := make(chan chunkAt, len(missing))
		for _, ref := range refs {
			if missing[ref.ID] {
				sends <- ref
			}
		}
		close(sends)
		g, gctx := errgroup.WithContext(ctx)
		for range u.opts.Parallel {
			g.Go(func() error { return u.sender(gctx, sends) })
		}
		if err := g.Wait(); err != nil {
			return res, false, err
		}
	}
}

// reportProgress calls the Progress option periodically until stopped.
func (u *upload) reportProgress() (stop func()) {
	if u.opts.Progress == nil {
		return func() {}
	}
	report := func() {
		u.opts.Progress(UploadProgress{Size: u.size, Scanned: u.scanned.Load(), Sent: u.sent.Load(), Skipped: u.skipped.Load()})
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				report()
				return
			case <-t.C:
				report()
			}
		}
	}()
	return func() { close(done); <-finished }
}

// putChunk sends one chunk, retrying while the cluster is briefly
// unavailable (a leader election).
func (c *Client) putChunk(ctx context.Context, id blob.ID, data []byte) error {
	return retryUnavailable(ctx, func() error {
		body := bytes.NewReader(data)
		resp, err := c.do(ctx, func(base string) (*http.Request, error) {
			req, err := http.NewRequest(http.MethodPut, base+"/v1/chunks/"+id.String(), body)
			if req != nil {
				req.ContentLength = int64(len(data))
			}
			return req, err
		}, func() error { _, err := body.Seek(0, io.SeekStart); return err })
		if err != nil {
			return err
		}
		defer drain(resp)
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			return blob.ReadError(resp)
		}
		return nil
	})
}

func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	_, err := c.postJSONStatus(ctx, path, in, out)
	return err
}

// postJSONStatus posts in as JSON and decodes a 2xx answer into out,
// retrying while the cluster is briefly unavailable.
func (c *Client) postJSONStatus(ctx context.Context, path string, in, out any) (int, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return 0, err
	}
	var status int
	err = retryUnavailable(ctx, func() error {
		resp, err := c.do(ctx, func(base string) (*http.Request, error) {
			req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(body))
			if req != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			return req, err
		}, func() error { return nil })
		if err != nil {
			return err
		}
		defer drain(resp)
		if status = resp.StatusCode; status/100 != 2 {
			return blob.ReadError(resp)
		}
		return json.NewDecoder(resp.Body).Decode(out)
	})
	return status, err
}

// retryUnavailable runs fn again, with backoff, while it fails because no
// node could serve it (all unreachable, or an election in progress), for
// up to about 15 seconds.
func retryUnavailable(ctx context.Context, fn func() error) error {
	wait := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || attempt == 7 || !(errors.Is(err, blob.ErrUnavailable) || errors.Is(err, ErrNoNodes)) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 4*time.Second)
	}
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
