// Package client is the Go client library for Atoll's HTTP API.
//
//	c := client.New("http://127.0.0.1:8700", "http://10.0.0.2:8700")
//	id, err := c.Put(ctx, file)
//	rc, err := c.Get(ctx, id)
//
// Any node serves any request. A request that cannot reach a node, or that
// the node answers "unavailable", is retried on the next address in the
// list; a Put is retried only if its body can be rewound (an io.Seeker,
// such as an *os.File). Errors satisfy errors.Is against the blob package's
// sentinels, e.g. blob.ErrNotFound.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/pki"
)

// Client talks to an Atoll cluster. It is safe for concurrent use.
type Client struct {
	addrs  []string
	hc     *http.Client
	bearer string        // "ACCESS_KEY:SECRET_KEY", or none
	next   atomic.Uint32 // preferred address: the last one that answered
}

// New returns a client for the nodes at addrs (base URLs; a bare host:port
// gets "http://"), for a cluster running without credentials.
func New(addrs ...string) *Client {
	return newClient(&http.Transport{MaxIdleConnsPerHost: 16}, "http://", addrs)
}

// NewTLS returns a client for a cluster running with credentials (a bare
// host:port gets "https://"): it trusts nodes whose certificate the CA
// bundle of creds signed, for the address dialled, and presents the
// client certificate of creds, if any (an operator's: admin actions need
// one).
func NewTLS(creds *pki.Creds, addrs ...string) *Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}
	return newClient(&http.Transport{MaxIdleConnsPerHost: 16, DialTLSContext: creds.DialTLS(d.DialContext)}, "https://", addrs)
}

func newClient(tr *http.Transport, scheme string, addrs []string) *Client {
	c := &Client{hc: &http.Client{Transport: tr}}
	for _, a := range addrs {
		if !strings.Contains(a, "://") {
			a = scheme + a
		}
		c.addrs = append(c.addrs, strings.TrimRight(a, "/"))
	}
	return c
}

// WithAccessKey returns a client for the same nodes that authenticates
// with an access key (Authorization: Bearer), for callers without an
// operator certificate; what it may do is the key's scopes.
func (c *Client) WithAccessKey(id, secret string) *Client {
	return &Client{addrs: c.addrs, hc: c.hc, bearer: id + ":" + secret}
}

// ErrNoNodes means no node of the list could be reached.
var ErrNoNodes = errors.New("no Atoll node reachable")

// do sends a request built by mk to each address in turn, starting with
// the preferred one, until a node answers with something other than
// "unavailable". rewind, if not nil, is called before every retry.
func (c *Client) do(ctx context.Context, mk func(base string) (*http.Request, error), rewind func() error) (*http.Response, error) {
	if len(c.addrs) == 0 {
		return nil, ErrNoNodes
	}
	start := int(c.next.Load())
	var errs []error
	for i := range c.addrs {
		if i > 0 && rewind != nil {
			if err := rewind(); err != nil {
				break
			}
		}
		idx := (start + i) % len(c.addrs)
		req, err := mk(c.addrs[idx])
		if err != nil {
			return nil, err
		}
		if c.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+c.bearer)
		}
		resp, err := c.hc.Do(req.WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", c.addrs[idx], err))
			continue
		}
		if resp.StatusCode == http.StatusServiceUnavailable && i < len(c.addrs)-1 {
			errs = append(errs, fmt.Errorf("%s: %w", c.addrs[idx], readError(resp)))
			continue
		}
		c.next.Store(uint32(idx))
		return resp, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrNoNodes, errors.Join(errs...))
}

func readError(resp *http.Response) error {
	defer resp.Body.Close()
	return blob.ReadError(resp)
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, func(base string) (*http.Request, error) {
		return http.NewRequest(http.MethodGet, base+path, nil)
	}, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// Put uploads r and returns the blob's ID once the cluster has made it
// durable. If r has a size (an *os.File, a *bytes.Reader, ...) it is sent
// as Content-Length, so oversized uploads are refused before any byte.
func (c *Client) Put(ctx context.Context, r io.Reader) (blob.ID, error) {
	var rewind func() error
	size := int64(-1)
	// NB: an *os.File is a Seeker even when it is a pipe; a failing Seek
	// just means the body cannot be rewound or measured.
	if s, ok := r.(io.Seeker); ok {
		if start, err := s.Seek(0, io.SeekCurrent); err == nil {
			if end, err := s.Seek(0, io.SeekEnd); err == nil {
				size = end - start
			}
			if _, err := s.Seek(start, io.SeekStart); err != nil {
				return blob.ID{}, err
			}
			rewind = func() error { _, err := s.Seek(start, io.SeekStart); return err }
		}
	}
	resp, err := c.do(ctx, func(base string) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodPost, base+"/v1/blobs", io.NopCloser(r))
		if err == nil && size >= 0 {
			req.ContentLength = size
		}
		return req, err
	}, rewind)
	if err != nil {
		return blob.ID{}, err
	}
	if resp.StatusCode != http.StatusCreated {
		return blob.ID{}, readError(resp)
	}
	defer resp.Body.Close()
	var res api.PutResult
	return res.ID, json.NewDecoder(resp.Body).Decode(&res)
}

// Get returns the blob's bytes. The caller closes the reader. A read error
// means the stream was cut: the bytes before it are correct.
func (c *Client) Get(ctx context.Context, id blob.ID) (io.ReadCloser, error) {
	return c.get(ctx, id, "")
}

// GetRange returns length bytes of the blob starting at off; length < 0
// means to the end.
func (c *Client) GetRange(ctx context.Context, id blob.ID, off, length int64) (io.ReadCloser, error) {
	rg := fmt.Sprintf("bytes=%d-", off)
	if length == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	if length > 0 {
		rg += fmt.Sprint(off + length - 1)
	}
	return c.get(ctx, id, rg)
}

func (c *Client) get(ctx context.Context, id blob.ID, rg string) (io.ReadCloser, error) {
	resp, err := c.do(ctx, func(base string) (*http.Request, error) {
		req, err := http.NewRequest(http.MethodGet, base+"/v1/blobs/"+id.String(), nil)
		if err == nil && rg != "" {
			req.Header.Set("Range", rg)
		}
		return req, err
	}, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return nil, readError(resp)
	}
	return resp.Body, nil
}

// Size returns a blob's size (a HEAD request: cheap, checks no shard).
func (c *Client) Size(ctx context.Context, id blob.ID) (int64, error) {
	resp, err := c.do(ctx, func(base string) (*http.Request, error) {
		return http.NewRequest(http.MethodHead, base+"/v1/blobs/"+id.String(), nil)
	}, nil)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("blob %s: %w", id, readError(resp))
	}
	resp.Body.Close()
	return resp.ContentLength, nil
}

// Stat describes a blob and checks each of its shards, asking for page
// after page (api.StatPage chunks each) until the last.
func (c *Client) Stat(ctx context.Context, id blob.ID) (*api.Stat, error) {
	var st api.Stat
	for next := 0; ; {
		var page api.Stat
		if err := c.getJSON(ctx, "/v1/blobs/"+id.String()+"/stat?from="+strconv.Itoa(next), &page); err != nil {
			return nil, err
		}
		chunks := append(st.Chunks, page.Chunks...)
		st, st.Chunks = page, chunks
		if page.Next <= next {
			st.From, st.Next = 0, 0
			return &st, nil
		}
		next = page.Next
	}
}

// Delete removes a blob.
func (c *Client) Delete(ctx context.Context, id blob.ID) error {
	return c.noContent(ctx, http.MethodDelete, "/v1/blobs/"+id.String())
}

// Cluster describes the cluster.
func (c *Client) Cluster(ctx context.Context) (*api.ClusterInfo, error) {
	var ci api.ClusterInfo
	return &ci, c.getJSON(ctx, "/v1/cluster", &ci)
}

// DrainNode marks a node draining: it takes no new shards and the cluster
// moves its shards elsewhere. Watch Cluster's Repair and DegradedChunks.
func (c *Client) DrainNode(ctx context.Context, id blob.NodeID) error {
	return c.noContent(ctx, http.MethodPost, "/v1/nodes/"+string(id)+"/drain")
}

// RemoveNode removes a node from the cluster. It is refused while the node
// still holds shards: drain it first.
func (c *Client) RemoveNode(ctx context.Context, id blob.NodeID) error {
	return c.noContent(ctx, http.MethodDelete, "/v1/nodes/"+string(id))
}

// RevokeNode removes a seized or compromised node at once, shards and
// all (the cluster rebuilds them from the other regions); every node
// refuses its certificate from then on.
func (c *Client) RevokeNode(ctx context.Context, id blob.NodeID) error {
	return c.noContent(ctx, http.MethodPost, "/v1/nodes/"+string(id)+"/revoke")
}

// SaveSnapshot writes a consistent copy of the cluster's metadata to w
// (operator certificate needed).
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer) error {
	resp, err := c.do(ctx, func(base string) (*http.Request, error) {
		return http.NewRequest(http.MethodGet, base+"/v1/snapshot", nil)
	}, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// RestoreSnapshot replaces the cluster's metadata with a snapshot saved by
// SaveSnapshot (disaster recovery; operator certificate needed).
func (c *Client) RestoreSnapshot(ctx context.Context, r io.ReadSeeker) error {
	resp, err := c.do(ctx, func(base string) (*http.Request, error) {
		return http.NewRequest(http.MethodPost, base+"/v1/snapshot", io.NopCloser(r))
	}, func() error { _, err := r.Seek(0, io.SeekStart); return err })
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return readError(resp)
	}
	return nil
}

func (c *Client) noContent(ctx context.Context, method, path string) error {
	resp, err := c.do(ctx, func(base string) (*http.Request, error) {
		return http.NewRequest(method, base+path, nil)
	}, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusNoContent {
		return readError(resp)
	}
	resp.Body.Close()
	return nil
}

// CreateAccessKey makes a new access key (for S3, and for this API with
// WithAccessKey), limited as req says. Its secret is only ever returned
// here.
func (c *Client) CreateAccessKey(ctx context.Context, req api.KeyRequest) (api.AccessKey, error) {
	var k api.AccessKey
	err := c.postJSON(ctx, "/v1/keys", req, &k)
	return k, err
}

// AccessKeys lists the S3 credentials (without secrets).
func (c *Client) AccessKeys(ctx context.Context) ([]api.AccessKey, error) {
	var ks []api.AccessKey
	err := c.getJSON(ctx, "/v1/keys", &ks)
	return ks, err
}

// DeleteAccessKey revokes an S3 credential.
func (c *Client) DeleteAccessKey(ctx context.Context, id string) error {
	return c.noContent(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(id))
}
