package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/pki"
	"github.com/atollstore/atoll/raftstore"
	"github.com/atollstore/atoll/storage/remote"
)

// HTTP API (all JSON unless noted; errors are {"error": ..., "code": ...}):
//
//	POST|PUT /v1/blobs          body = blob bytes  -> 201 {"id", "size"}
//	GET|HEAD /v1/blobs/{id}     blob bytes; single Range, ETag, If-None-Match
//	GET      /v1/blobs/{id}/stat[?from=N]   chunks N.. (api.StatPage a page) and their shards' health
//	DELETE   /v1/blobs/{id}     -> 204
//	POST     /v1/chunks/have    {"chunks": [id...]} -> {"missing": [id...]}
//	PUT      /v1/chunks/{id}    body = one chunk (≤ 8 MiB) -> 201 stored, 200 already held
//	POST     /v1/manifests      {"id", "size", "chunks": [{"id", "len"}]} -> 201 new, 200 known
//	POST     /v1/keys           -> 201 {"access_key", "secret_key", "created"} (S3 credentials)
//	GET      /v1/keys           -> [{"access_key", "created"}]
//	DELETE   /v1/keys/{id}      -> 204
//	GET      /v1/cluster
//	GET|POST /v1/snapshot       metadata backup and restore (snapshot.go)
//	GET      /metrics           Prometheus text format (metrics.go)
//	GET      /health/live       200 while the process runs (no credentials needed)
//	GET      /health/ready      200 when this node can serve: a leader is known and
//	                            this replica has caught up with it; else 503
//	POST     /v1/nodes/{id}/drain, POST /v1/nodes/{id}/revoke, DELETE /v1/nodes/{id}  (see admin.go)
//
// Data calls need an operator certificate or an access key with the
// call's scope (read: get, stat, cluster; write: put, have, chunks,
// manifests; delete); keys and nodes are admin actions: operator client
// certificates only (auth.go). Internal, node to node (node certificates only):
//
//	PUT|GET|HEAD /internal/shards/{chunk}/{index}  raw shard file (storage/remote)
//	POST /internal/apply        raft command, leader only (421 otherwise)
//	POST /internal/readindex    the leader's read index (confirmed by a heartbeat round)
//	GET  /internal/info         this node's disk usage
//	GET  /internal/repair       the leader's repair progress
//	POST /internal/unreferenced which of these shards no chunk references (leader only)
func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	read, write, del := api.ScopeRead, api.ScopeWrite, api.ScopeDelete
	mux.Handle("POST /v1/blobs", n.data(write, n.handlePut))
	mux.Handle("PUT /v1/blobs", n.data(write, n.handlePut))
	mux.Handle("GET /v1/blobs/{id}", n.data(read, n.handleGet))
	mux.Handle("HEAD /v1/blobs/{id}", n.data(read, n.handleGet))
	mux.Handle("GET /v1/blobs/{id}/stat", n.data(read, n.handleStat))
	mux.Handle("DELETE /v1/blobs/{id}", n.data(del, n.handleDelete))
	mux.Handle("POST /v1/chunks/have", n.data(write, n.handleHave))
	mux.Handle("PUT /v1/chunks/{id}", n.data(write, n.handleChunkPut))
	mux.Handle("POST /v1/manifests", n.data(write, n.handleManifest))
	mux.Handle("POST /v1/links", n.data(write, n.handleCreateLink))
	mux.HandleFunc("GET /v1/links/{id}", n.handleGetLink)             // the link ID is the capability
	mux.HandleFunc("GET /v1/links/{id}/content", n.handleLinkContent) // ditto; sealed bytes
	mux.HandleFunc("HEAD /v1/links/{id}/content", n.handleLinkContent)
	mux.Handle("DELETE /v1/links/{id}", n.data(del, n.handleDeleteLink))
	page, static := webHandler()
	mux.HandleFunc("GET /{$}", page("index.html"))
	mux.HandleFunc("GET /f/{id}", page("index.html"))
	mux.HandleFunc("GET /cluster", page("cluster.html"))
	mux.Handle("GET /static/", static)
	mux.Handle("POST /v1/keys", n.adminOnly(n.handleCreateKey))
	mux.Handle("GET /v1/keys", n.adminOnly(n.handleListKeys))
	mux.Handle("DELETE /v1/keys/{id}", n.adminOnly(n.handleDeleteKey))
	mux.Handle("GET /v1/cluster", n.data(read, n.handleCluster))
	mux.Handle("POST /v1/nodes/{id}/drain", n.adminOnly(n.handleDrain))
	mux.Handle("POST /v1/nodes/{id}/revoke", n.adminOnly(n.handleRevoke))
	mux.Handle("DELETE /v1/nodes/{id}", n.adminOnly(n.handleRemove))
	mux.Handle(remote.Prefix, n.only(remote.Handler(n.shards, n.log), pki.RoleNode))
	mux.Handle("POST /internal/apply", n.nodesOnly(n.handleApply))
	mux.Handle("POST /internal/readindex", n.nodesOnly(n.handleReadIndex))
	mux.Handle("GET /internal/info", n.nodesOnly(n.handleInfo))
	mux.Handle("POST /internal/unreferenced", n.nodesOnly(n.handleUnreferenced))
	mux.Handle("GET /internal/repair", n.nodesOnly(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.repair.get())
	}))
	mux.Handle("GET /v1/snapshot", n.adminOnly(n.handleSnapshotSave))
	mux.Handle("POST /v1/snapshot", n.adminOnly(n.handleSnapshotRestore))
	mux.Handle("GET /metrics", n.metricsAuth(n.handleMetrics()))
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "live"})
	})
	mux.HandleFunc("GET /health/ready", n.handleReady)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, blob.Error{Code: "not_found", Message: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path)})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.closing.Load() {
			w.Header().Set("Connection", "close")
			writeError(w, fmt.Errorf("%w: node %s is shutting down", blob.ErrUnavailable, n.cfg.ID))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// handleReady answers 200 only when this node can serve consistent
// requests now: it belongs to a formed cluster, a leader answers, and this
// replica has applied the leader's read index (not still replaying).
func (n *Node) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status := map[string]string{"status": "ready", "node": string(n.cfg.ID)}
	var err error
	switch {
	case n.closing.Load():
		err = errors.New("shutting down")
	case !n.meta.HasState():
		err = errors.New("not part of a formed cluster yet")
	default:
		err = n.Sync(ctx)
	}
	if err != nil {
		status["status"], status["reason"] = "not ready", err.Error()
		writeJSON(w, http.StatusServiceUnavailable, status)
		return
	}
	status["leader"] = string(n.meta.Leader())
	writeJSON(w, http.StatusOK, status)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) { blob.WriteError(w, err) }

func (n *Node) handlePut(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > n.cfg.MaxBlobSize {
		writeError(w, fmt.Errorf("%w: body of %d bytes exceeds the limit of %d", blob.ErrTooLarge, r.ContentLength, n.cfg.MaxBlobSize))
		return
	}
	if chunks := (r.ContentLength + int64(n.cfg.ChunkSize) - 1) / int64(n.cfg.ChunkSize); chunks > int64(n.cfg.SegmentChunks) && !n.segmentsAllowed() {
		writeError(w, n.listTooLong()) // an upgrade in progress: refused before any byte is stored
		return
	}
	b, err := n.put(r.Context(), n.owner(r), r.Body)
	if err != nil {
		n.log.Info("put failed", "err", err)
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.PutResult{ID: b.ID, Size: b.Size})
}

func (n *Node) blobFromPath(w http.ResponseWriter, r *http.Request) *raftstore.Blob {
	id, err := blob.ParseID(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return nil
	}
	b, err := n.lookupFor(r, id)
	if err != nil {
		writeError(w, fmt.Errorf("blob %s: %w", id, err))
		return nil
	}
	return b
}

func (n *Node) handleGet(w http.ResponseWriter, r *http.Request) {
	id, err := blob.ParseID(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	// A record this replica holds is fetched from at once while the leader's
	// read index confirms it in parallel (a deleted blob is never served):
	// nothing, not even the status, is sent before the confirmation, and a
	// get waits for the longer of the two rounds instead of both in turn.
	if b, err := n.meta.Blob(id); err == nil && n.mayRead(r, id) == nil {
		confirmed := make(chan error, 1)
		go func() {
			_, err := n.lookupFor(r, id)
			confirmed <- err
		}()
		n.serveBlob(w, r, b, sync.OnceValue(func() error {
			if err := <-confirmed; err != nil {
				return fmt.Errorf("blob %s: %w", id, err)
			}
			return nil
		}))
		return
	}
	if b := n.blobFromPath(w, r); b != nil {
		n.serveBlob(w, r, b, nil)
	}
}

// serveBlob answers a GET or HEAD of blob b, with Range and ETag. If
// confirm is not nil, it must return nil before anything is sent; else its
// error is the answer.
func (n *Node) serveBlob(w http.ResponseWriter, r *http.Request, b *raftstore.Blob, confirm func() error) {
	etag := `"` + b.ID.String() + `"`
	h := w.Header()
	if confirm == nil {
		confirm = func() error { return nil }
	}
	failed := func(err error) {
		for _, k := range []string{"ETag", "Accept-Ranges", "Content-Type", "Content-Length", "Content-Range"} {
			h.Del(k)
		}
		writeError(w, err)
	}
	h.Set("ETag", etag)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	if inm := r.Header.Get("If-None-Match"); inm != "" && (inm == etag || inm == "*") {
		if err := confirm(); err != nil {
			failed(err)
			return
		}
		w.WriteHeader(http.StatusNotModified)
		return
	}
	off, length, status := int64(0), b.Size, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && (r.Header.Get("If-Range") == "" || r.Header.Get("If-Range") == etag) {
		var ok bool
		off, length, ok = ParseRange(rg, b.Size)
		if !ok {
			if err := confirm(); err != nil {
				failed(err)
				return
			}
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", b.Size))
			writeJSON(w, http.StatusRequestedRangeNotSatisfiable, blob.Error{Code: "invalid_range", Message: fmt.Sprintf("range %q not satisfiable for %d bytes", rg, b.Size)})
			return
		}
		if length != b.Size {
			status = http.StatusPartialContent
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+length-1, b.Size))
		}
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	if r.Method == http.MethodHead || length == 0 {
		if err := confirm(); err != nil {
			failed(err)
			return
		}
		w.WriteHeader(status)
		return
	}
	lw := NewLazyWriter(w, status)
	lw.Before = confirm
	if err := n.WriteRange(r.Context(), b, off, length, lw); err != nil {
		if !lw.Started() {
			// Nothing sent yet: a proper error, which clients fail over from
			// (a record that is gone explains a failed fetch best).
			if cerr := confirm(); cerr != nil {
				err = cerr
			}
			failed(err)
			return
		}
		// Mid-stream: abort the connection so the client sees a truncated
		// body, never a silently short or wrong one.
		n.log.Warn("get failed mid-stream", "blob", b.ID, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// LazyWriter sends the status line with the first byte of the body, so an
// error before then can still be answered properly.
type LazyWriter struct {
	w       http.ResponseWriter
	status  int
	started bool
	// Before, if set, runs before the status is sent; its error fails the
	// write and sends nothing.
	Before func() error
}

// NewLazyWriter returns a writer that answers status with its first byte.
func NewLazyWriter(w http.ResponseWriter, status int) *LazyWriter {
	return &LazyWriter{w: w, status: status}
}

// Started reports whether the status line has been sent.
func (l *LazyWriter) Started() bool { return l.started }

func (l *LazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		if l.Before != nil {
			if err := l.Before(); err != nil {
				return 0, err
			}
		}
		l.started = true
		l.w.WriteHeader(l.status)
	}
	return l.w.Write(p)
}

// ParseRange parses a single-range "bytes=" header (RFC 9110 §14.1.2).
// Multiple ranges are served as the whole blob (ok, full length).
func ParseRange(s string, size int64) (off, length int64, ok bool) {
	spec, found := strings.CutPrefix(s, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, size, true
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, size, true
	}
	if first == "" { // suffix: the last N bytes
		nb, err := strconv.ParseInt(last, 10, 64)
		if err != nil || nb < 0 {
			return 0, size, true
		}
		if nb == 0 {
			return 0, 0, false
		}
		nb = min(nb, size)
		return size - nb, nb, true
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, size, true
	}
	if start >= size {
		return 0, 0, false
	}
	end := size - 1
	if last != "" {
		e, err := strconv.ParseInt(last, 10, 64)
		if err != nil || e < start {
			return 0, size, true
		}
		end = min(e, size-1)
	}
	return start, end - start + 1, true
}

func (n *Node) handleDelete(w http.ResponseWriter, r *http.Request) {
	id, err := blob.ParseID(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	if err := n.deleteBlob(r, id); err != nil { // NB: and applied here
		writeError(w, fmt.Errorf("blob %s: %w", id, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) handleStat(w http.ResponseWriter, r *http.Request) {
	b := n.blobFromPath(w, r)
	if b == nil {
		return
	}
	from, err := strconv.Atoi(cmp.Or(r.URL.Query().Get("from"), "0"))
	if err != nil || from < 0 {
		writeError(w, fmt.Errorf("%w: from must be a chunk index", blob.ErrBadRequest))
		return
	}
	layout, _ := n.meta.Layout()
	st := api.Stat{ID: b.ID, Size: b.Size, K: b.K, M: b.M, ChunkCount: chunkCount(b), From: from}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	err = n.walkChunks(b, func(end int, _ int64) bool { return end <= from }, func(i int, _ int64, c raftstore.Chunk) bool {
		if i >= from+api.StatPage {
			st.Next = i
			return false
		}
		cs := api.ChunkStat{ID: c.ID, Len: c.Len, K: cmp.Or(c.K, b.K), M: cmp.Or(c.M, b.M), Shards: make([]api.ShardStat, len(c.Shards))}
		st.Chunks = append(st.Chunks, cs)
		for si, id := range c.Shards {
			ss := &cs.Shards[si] // NB: shares its array with the copy in st
			*ss = api.ShardStat{Index: si, Node: id}
			m, ok := n.member(id, layout)
			if !ok {
				ss.State, ss.Error = "unknown-node", "node not in layout"
				continue
			}
			ss.Region = m.Region
			if n.gossip.state(id) == api.StateDead {
				ss.State, ss.Error = "node-dead", "node is dead"
				continue
			}
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
				defer cancel()
				err := n.checkShard(ctx, m, c.ID, si)
				ss.Healthy, ss.State = err == nil, shardState(err)
				if err != nil {
					ss.Error = err.Error()
				}
			})
		}
		return true
	})
	wg.Wait()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// shardState names the outcome of checking a shard.
func shardState(err error) string {
	switch {
	case err == nil:
		return "healthy"
	case errors.Is(err, blob.ErrNotFound):
		return "missing"
	case errors.Is(err, blob.ErrCorrupt):
		return "corrupt"
	}
	return "unreachable"
}

func (n *Node) handleApply(w http.ResponseWriter, r *http.Request) {
	var cmd raftstore.Command
	if err := json.NewDecoder(io.LimitReader(r.Body, raftstore.MaxCommandSize+64<<10)).Decode(&cmd); err != nil {
		writeError(w, fmt.Errorf("%w: undecodable command: %v", blob.ErrInvalidID, err))
		return
	}
	res, err := n.meta.Apply(r.Context(), cmd)
	writeLeaderAnswer(w, res, err)
}

// writeLeaderAnswer answers a request only the leader may serve;
// raftstore.ErrNotLeader's status, 421, tells the caller to find the new
// leader.
func writeLeaderAnswer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (n *Node) handleUnreferenced(w http.ResponseWriter, r *http.Request) {
	var refs []api.ShardRef
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&refs); err != nil {
		writeError(w, fmt.Errorf("%w: %v", blob.ErrInvalidID, err))
		return
	}
	out, err := n.unreferenced(r.Context(), refs)
	writeLeaderAnswer(w, out, err)
}

func (n *Node) handleInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.info())
}
