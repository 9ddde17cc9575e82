package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/raftstore"
	"github.com/zeebo/blake3"
)

// Client-side chunking: a client cuts a file into content-defined chunks,
// asks which ones the cluster lacks (have), uploads those one by one
// (PutChunk: each is stored durably and committed as staged, unreferenced),
// and commits the blob as a manifest of chunk IDs (PutManifest). A chunk
// that no manifest claims within OrphanGrace is dropped by the leader, and
// its shards are then reclaimed by the scrubbers.

// have returns the IDs among ids that the cluster does not hold — for a
// tenant (owner not ""), that it does not hold the tenant's proof of
// (tenants.go). Staged chunks it reports present get a new grace: the
// upload that asked is about to claim them (a resumed upload must not
// lose them meanwhile).
func (n *Node) have(ctx context.Context, owner string, ids []blob.ID) ([]blob.ID, error) {
	found, err := n.findChunks(ctx, ids)
	if err != nil {
		return nil, err
	}
	missing := []blob.ID{}
	var present []blob.ID
	for _, id := range ids {
		ok := false
		if _, ok = found[id]; ok && owner != "" {
			if ok, err = n.meta.Holds(owner, id); err != nil {
				return nil, err
			}
		}
		if ok {
			present = append(present, id)
		} else {
			missing = append(missing, id)
		}
	}
	unclaimed, err := n.meta.Unclaimed(present)
	if err != nil || len(unclaimed) == 0 {
		return missing, err
	}
	cmd := raftstore.TouchStagedCommand(raftstore.TouchStaged{IDs: unclaimed, At: time.Now().UTC()})
	if _, err := n.apply(ctx, cmd); err != nil {
		return nil, fmt.Errorf("renewing staged chunks: %w", err)
	}
	return missing, nil
}

// findChunks returns the committed records of those of ids that exist.
// Local misses are looked up again after catching up with the leader
// (this replica may lag a chunk staged through another node a moment ago).
func (n *Node) findChunks(ctx context.Context, ids []blob.ID) (map[blob.ID]raftstore.Chunk, error) {
	found := map[blob.ID]raftstore.Chunk{}
	var misses []blob.ID
	for _, id := range ids {
		c, err := n.meta.Chunk(id)
		switch {
		case err == nil:
			found[id] = c
		case errors.Is(err, blob.ErrNotFound):
			misses = append(misses, id)
		default:
			return nil, err
		}
	}
	if len(misses) == 0 {
		return found, nil
	}
	if err := n.Sync(ctx); err != nil {
		return nil, err
	}
	for _, id := range misses {
		c, err := n.meta.Chunk(id)
		switch {
		case err == nil:
			found[id] = c
		case !errors.Is(err, blob.ErrNotFound):
			return nil, err
		}
	}
	return found, nil
}

// PutChunk stores one chunk sent on its own, which must hash to id. It
// returns once all k+m shards are durable and the chunk is committed as
// staged; a chunk the cluster already holds is not written again, but a
// tenant (owner not "") that sent it is recorded as holding it.
func (n *Node) PutChunk(ctx context.Context, owner string, id blob.ID, r io.Reader) (stored bool, err error) {
	select {
	case n.chunkSlots <- struct{}{}:
		defer func() { <-n.chunkSlots }()
	case <-ctx.Done():
		return false, ctx.Err()
	}
	st := n.chunkStripes.Get().(*erasure.Stripe)
	put := func() { n.chunkStripes.Put(st) }
	defer func() { put() }()
	got, err := st.Fill(r, api.MaxChunkSize)
	switch {
	case err == io.EOF || got == 0:
		return false, fmt.Errorf("%w: empty chunk", blob.ErrBadDigest)
	case err != nil:
		return false, fmt.Errorf("reading chunk: %w", err)
	}
	if got == api.MaxChunkSize {
		if k, _ := io.ReadFull(r, make([]byte, 1)); k > 0 {
			return false, fmt.Errorf("%w: a chunk may have at most %d bytes", blob.ErrTooLarge, api.MaxChunkSize)
		}
	}
	if blob.Sum(st.Data()) != id {
		return false, fmt.Errorf("%w: chunk sent as %s", blob.ErrBadDigest, id)
	}
	layout, err := n.meta.Layout()
	if err != nil {
		return false, err
	}
	if len(layout.Nodes) == 0 {
		return false, fmt.Errorf("%w: the cluster has not formed yet", blob.ErrUnavailable)
	}
	c := raftstore.Chunk{ID: id, Len: int64(got)}
	var coded *erasure.Stripe
	coded, put = n.stripeFor(st, &n.chunkStripes, layout)
	if err := n.writeChunk(ctx, layout, coded, &c); err != nil || (c.Reused && owner == "") {
		return false, err
	}
	stored = !c.Reused
	c.Reused = false
	cmd := raftstore.StageChunkCommand(raftstore.StagedChunk{Chunk: c, Owner: owner, At: time.Now().UTC()})
	if _, err := n.apply(ctx, cmd); err != nil {
		return false, fmt.Errorf("committing chunk %s: %w", id, err)
	}
	return stored, nil
}

// PutManifest commits a blob made of stored chunks. The claimed ID is
// checked by reading the blob back through the normal read path (which
// also verifies every shard and chunk), so an ID always names the BLAKE3
// of its content, however the blob was uploaded. It reports whether the
// blob is new. A tenant (owner not "") must have sent every chunk's bytes
// (have), and becomes an owner of the blob — of one already stored too,
// once its chunks are shown to make that blob.
func (n *Node) PutManifest(ctx context.Context, owner string, m api.Manifest) (*raftstore.Blob, bool, error) {
	if err := n.checkManifest(m); err != nil {
		return nil, false, err
	}
	switch b, err := n.lookup(ctx, m.ID); {
	case err == nil && b.Size == m.Size && n.owns(owner, m.ID):
		return b, false, nil // already stored: nothing to send, read or commit
	case err == nil && b.Size == m.Size: // stored by another tenant: claimed below, with proof
	case err == nil:
		return nil, false, fmt.Errorf("%w: blob %s has %d bytes, the manifest says %d", blob.ErrBadDigest, m.ID, b.Size, m.Size)
	case !errors.Is(err, blob.ErrNotFound):
		return nil, false, err
	}
	ids := make([]blob.ID, len(m.Chunks))
	for i, c := range m.Chunks {
		ids[i] = c.ID
	}
	found, err := n.findChunks(ctx, ids)
	if err != nil {
		return nil, false, err
	}
	layout, err := n.meta.Layout()
	if err != nil {
		return nil, false, err
	}
	rec := raftstore.Blob{ID: m.ID, Size: m.Size, K: n.cfg.K, M: n.cfg.M, Created: time.Now().UTC(), LayoutVersion: layout.Version}
	var chunks []raftstore.Chunk
	missing := 0
	for _, ref := range m.Chunks {
		c, ok := found[ref.ID]
		switch {
		case !ok || len(c.Shards) != c.K+c.M:
			missing++
			continue
		case c.Len != ref.Len:
			return nil, false, fmt.Errorf("%w: chunk %s has %d bytes, the manifest says %d", blob.ErrBadDigest, ref.ID, c.Len, ref.Len)
		case owner != "":
			if holds, err := n.meta.Holds(owner, ref.ID); err != nil {
				return nil, false, err
			} else if !holds {
				missing++ // stored, but not sent by this tenant: it must send it
				continue
			}
		}
		c.Reused = true
		chunks = append(chunks, c)
	}
	if missing > 0 {
		return nil, false, fmt.Errorf("%w: %d of the manifest's %d chunks are not stored", blob.ErrMissingChunks, missing, len(m.Chunks))
	}
	list := n.NewChunkList(owner) // a long one is committed in segments before the blob is read back
	if err := list.Add(ctx, chunks...); err != nil {
		return nil, false, err
	}
	if rec.Chunks, rec.Segments, err = list.Done(ctx); err != nil {
		return nil, false, err
	}
	if len(rec.Segments) > 0 {
		if err := n.Sync(ctx); err != nil { // the read below is of this replica: it must hold the segments
			return nil, false, err
		}
	}
	h := blake3.New()
	if err := n.WriteRange(ctx, &rec, 0, rec.Size, h); err != nil {
		return nil, false, fmt.Errorf("verifying manifest of %s: %w", m.ID, err)
	}
	if got := blob.ID(h.Sum(nil)); got != m.ID {
		return nil, false, fmt.Errorf("%w: the chunks hash to %s, not %s", blob.ErrBadDigest, got, m.ID)
	}
	rec.Owner = owner
	cmd := raftstore.PutBlobCommand(rec)
	if _, err := n.apply(ctx, cmd); err != nil {
		return nil, false, fmt.Errorf("committing blob %s: %w", m.ID, err) // ErrChunkGone is a missing_chunks
	}
	return &rec, true, nil
}

// owns reports whether tenant owner ("": none recorded) owns blob id.
func (n *Node) owns(owner string, id blob.ID) bool {
	if owner == "" {
		return true
	}
	owners, err := n.meta.Owners(id)
	return err == nil && slices.Contains(owners, owner)
}

func (n *Node) checkManifest(m api.Manifest) error {
	if len(m.Chunks) > api.MaxManifestChunks {
		return fmt.Errorf("%w: a manifest may list at most %d chunks", blob.ErrTooLarge, api.MaxManifestChunks)
	}
	if m.Size > n.cfg.MaxBlobSize {
		return fmt.Errorf("%w: blob of %d bytes exceeds the limit of %d", blob.ErrTooLarge, m.Size, n.cfg.MaxBlobSize)
	}
	var sum int64
	for _, c := range m.Chunks {
		if c.Len <= 0 || c.Len > int64(max(api.MaxChunkSize, n.cfg.ChunkSize)) {
			return fmt.Errorf("%w: chunk %s has an impossible length %d", blob.ErrBadDigest, c.ID, c.Len)
		}
		sum += c.Len
	}
	if sum != m.Size {
		return fmt.Errorf("%w: the chunks add up to %d bytes, the manifest says %d", blob.ErrBadDigest, sum, m.Size)
	}
	return nil
}

// dropAbandoned, on the leader, deletes staged chunks no manifest claimed
// and segments no record claimed within OrphanGrace (an upload given up),
// and segments their last holder released. Shards no chunk record
// references any more become orphans, which the scrubbers reclaim.
func (n *Node) dropAbandoned(ctx context.Context) error {
	if err := n.releaseParts(ctx); err != nil {
		return err
	}
	before := time.Now().Add(-n.cfg.OrphanGrace).UTC()
	// Segments first: the chunks they release may then be dropped.
	segs, err := n.meta.AbandonedSegments(before)
	for _, id := range segs { // one a command: a segment's chunk records fill a transaction
		if err != nil {
			return err
		}
		_, err = n.meta.Apply(ctx, raftstore.DropSegmentsCommand(raftstore.DropStaged{IDs: []blob.ID{id}, Before: before}))
	}
	if len(segs) > 0 {
		n.log.Info("dropped unreferenced segments", "segments", len(segs), "err", err)
	}
	if err != nil {
		return err
	}
	ids, err := n.meta.AbandonedChunks(before)
	for len(ids) > 0 && err == nil {
		batch := ids[:min(len(ids), 1000)]
		ids = ids[len(batch):]
		_, err = n.meta.Apply(ctx, raftstore.DropStagedCommand(raftstore.DropStaged{IDs: batch, Before: before}))
		n.log.Info("dropped abandoned staged chunks", "chunks", len(batch), "err", err)
	}
	return err
}

// releaseParts, on the leader, releases the parts of completed long
// uploads, a transaction's worth a command, which may release segments
// for dropAbandoned.
func (n *Node) releaseParts(ctx context.Context) error {
	ups, err := n.meta.ReleasedUploads()
	for len(ups) > 0 && err == nil { // each command releases at least a part; the last one the upload
		if _, err = n.meta.Apply(ctx, raftstore.DropPartsCommand(ups[0])); err == nil {
			ups, err = n.meta.ReleasedUploads()
		}
	}
	return err
}

// HTTP handlers.

func (n *Node) handleHave(w http.ResponseWriter, r *http.Request) {
	var req api.HaveRequest
	if !decodeBody(w, r, &req, api.MaxHaveChunks*64) {
		return
	}
	if len(req.Chunks) > api.MaxHaveChunks {
		writeError(w, fmt.Errorf("%w: at most %d chunks per request", blob.ErrTooLarge, api.MaxHaveChunks))
		return
	}
	missing, err := n.have(r.Context(), n.owner(r), req.Chunks)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.HaveResponse{Missing: missing})
}

func (n *Node) handleChunkPut(w http.ResponseWriter, r *http.Request) {
	id, err := blob.ParseID(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	if r.ContentLength > api.MaxChunkSize {
		writeError(w, fmt.Errorf("%w: a chunk may have at most %d bytes", blob.ErrTooLarge, api.MaxChunkSize))
		return
	}
	stored, err := n.PutChunk(r.Context(), n.owner(r), id, r.Body)
	if err != nil {
		n.log.Info("chunk put failed", "chunk", id, "err", err)
		writeError(w, err)
		return
	}
	status := http.StatusOK
	if stored {
		status = http.StatusCreated
	}
	writeJSON(w, status, api.ChunkRef{ID: id})
}

func (n *Node) handleManifest(w http.ResponseWriter, r *http.Request) {
	var m api.Manifest
	if !decodeBody(w, r, &m, api.MaxManifestChunks*128) {
		return
	}
	b, created, err := n.PutManifest(r.Context(), n.owner(r), m)
	if err != nil {
		n.log.Info("manifest failed", "blob", m.ID, "err", err)
		writeError(w, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, api.PutResult{ID: b.ID, Size: b.Size})
}

// decodeBody reads a JSON body of at most limit bytes into v, answering
// 400 or 413 itself when it cannot.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, fmt.Errorf("%w: request body over %d bytes", blob.ErrTooLarge, limit))
	case err != nil:
		writeError(w, fmt.Errorf("%w: malformed request: %v", blob.ErrBadRequest, err))
	}
	return err == nil
}
