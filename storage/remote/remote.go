// Package remote reaches another node's shard store over HTTP: Client is
// the storage.Shards of a peer, Handler serves a node's own store to its
// peers. A shard crosses the wire as its file (header + payload):
//
//	PUT  /internal/shards/{chunk}/{index}  body = shard file   -> 204
//	GET  /internal/shards/{chunk}/{index}  -> 200 shard file (verified before it is sent)
//	HEAD /internal/shards/{chunk}/{index}  -> 200 if held and intact (verified in place)
//
// Errors are blob's wire errors, so errors.Is(err, blob.ErrNotFound) and
// blob.ErrCorrupt work on the calling side.
package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/storage"
)

// Prefix is the path under which Handler serves shards.
const Prefix = "/internal/shards/"

// Client is the shard store of the node whose API is at URL.
type Client struct {
	Node blob.NodeID  // named in errors
	URL  string       // the node's API base URL, e.g. http://10.0.1.5:8700
	HTTP *http.Client // bounds connections and timeouts
}

var (
	_ storage.Shards   = (*Client)(nil)
	_ storage.Verifier = (*Client)(nil)
)

func (c *Client) url(ref storage.Ref) string {
	return c.URL + Prefix + ref.Chunk.String() + "/" + strconv.Itoa(ref.Index)
}

func (c *Client) do(ctx context.Context, method string, ref storage.Ref, body io.Reader, want int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(ref), body)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: node %s: %v", blob.ErrUnavailable, c.Node, err)
	}
	if resp.StatusCode != want {
		defer drain(resp)
		return nil, fmt.Errorf("node %s: %w", c.Node, blob.ReadError(resp))
	}
	return resp, nil
}

// Fetch streams the shard file from the peer.
func (c *Client) Fetch(ctx context.Context, ref storage.Ref) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, ref, nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	return &peerBody{resp.Body, c.Node}, nil
}

// peerBody marks a transfer cut short as the peer's unavailability, not
// as a damaged shard: the peer said it was sending a whole one.
type peerBody struct {
	io.ReadCloser
	node blob.NodeID
}

func (b *peerBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: node %s: transfer cut: %v", blob.ErrUnavailable, b.node, err)
	}
	return n, err
}

// Receive streams the shard file to the peer, which verifies it again
// before storing it. A read error from r aborts the request, so the peer
// stores nothing.
func (c *Client) Receive(ctx context.Context, ref storage.Ref, r io.Reader) error {
	body := &bodyReader{r: r}
	resp, err := c.do(ctx, http.MethodPut, ref, body, http.StatusNoContent)
	if berr := body.failed(); berr != nil {
		return berr // the shard's fault, not the peer's
	}
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// Verify asks the peer to verify the shard where it lies.
func (c *Client) Verify(ctx context.Context, ref storage.Ref) error {
	resp, err := c.do(ctx, http.MethodHead, ref, nil, http.StatusOK)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// bodyReader remembers the error reading a request body failed with (the
// transport reads it on its own goroutine).
type bodyReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.mu.Lock()
		b.err = err
		b.mu.Unlock()
	}
	return n, err
}

func (b *bodyReader) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// Handler serves s under Prefix. Every shard is verified on its way in and
// before it is sent; a corrupt one is logged on log.
func Handler(s storage.Shards, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT "+Prefix+"{chunk}/{index}", func(w http.ResponseWriter, r *http.Request) {
		ref, err := parseRef(r)
		if err == nil {
			err = storage.Receive(r.Context(), s, ref, r.Body)
		}
		if err != nil {
			blob.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	get := func(w http.ResponseWriter, r *http.Request) {
		ref, err := parseRef(r)
		if err != nil {
			blob.WriteError(w, err)
			return
		}
		h, payload, err := storage.Read(r.Context(), s, ref)
		if err != nil {
			if errors.Is(err, blob.ErrCorrupt) {
				log.Warn("corrupt shard on disk", "shard", ref, "err", err)
			}
			blob.WriteError(w, err)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(erasure.HeaderSize+len(payload)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		hb := h.Marshal()
		w.Write(hb[:])
		w.Write(payload)
	}
	mux.HandleFunc("GET "+Prefix+"{chunk}/{index}", get)
	mux.HandleFunc("HEAD "+Prefix+"{chunk}/{index}", get)
	return mux
}

func parseRef(r *http.Request) (storage.Ref, error) {
	chunk, err := blob.ParseID(r.PathValue("chunk"))
	if err != nil {
		return storage.Ref{}, err
	}
	s := r.PathValue("index")
	idx, err := strconv.Atoi(s)
	if err != nil || idx < 0 || idx > storage.MaxIndex || strconv.Itoa(idx) != s {
		return storage.Ref{}, fmt.Errorf("%w: bad shard index %q", blob.ErrInvalidID, s)
	}
	return storage.Ref{Chunk: chunk, Index: idx}, nil
}
