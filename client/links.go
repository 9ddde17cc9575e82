package client

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/e2e"
	"github.com/zeebo/blake3"
)

// ShareOptions say how Share encrypts and links a file.
type ShareOptions struct {
	Name    string    // the file's name, sealed in the link (no directories)
	Type    string    // its media type, if known
	Expires time.Time // zero: the link never expires
	// DomainKey makes the file key convergent within the key domain: the
	// same file shared twice under one domain key is stored once. Nil: a
	// random file key (nothing is deduplicated).
	DomainKey *e2e.Key
	Upload    *UploadOptions
}

// Share encrypts size bytes of r on the client (package e2e), uploads the
// sealed form, and creates a share link to it. The cluster sees only
// ciphertext: no plaintext, name or key; the returned link carries the
// key in its fragment.
func (c *Client) Share(ctx context.Context, r io.ReaderAt, size int64, opts ShareOptions) (e2e.Link, error) {
	fileKey := e2e.NewKey()
	if opts.DomainKey != nil {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
			return e2e.Link{}, fmt.Errorf("hashing the file: %w", err)
		}
		fileKey = e2e.ConvergentKey(*opts.DomainKey, [32]byte(h.Sum(nil)))
	}
	sealer := e2e.NewSealer(r, size, fileKey)
	up, err := c.Upload(ctx, sealer, sealer.Size(), opts.Upload)
	if err != nil {
		return e2e.Link{}, err
	}
	link := e2e.Link{ID: e2e.NewLinkID(), Key: e2e.NewKey()}
	env := e2e.Envelope{FileKey: fileKey, Name: opts.Name, Size: size, Type: opts.Type}
	sealed, err := e2e.SealEnvelope(link.Key, link.ID, up.ID.String(), env)
	if err != nil {
		return e2e.Link{}, err
	}
	var created api.Link
	if err := c.postJSON(ctx, "/v1/links", api.LinkRequest{ID: link.ID, Blob: up.ID, Sealed: sealed, Expires: opts.Expires}, &created); err != nil {
		return e2e.Link{}, fmt.Errorf("creating the link: %w", err)
	}
	link.Base = c.addrs[c.next.Load()%uint32(len(c.addrs))]
	return link, nil
}

// DeleteLink revokes a share link (its owner or an operator may): its
// record, which alone holds the wrapped file key, is deleted.
func (c *Client) DeleteLink(ctx context.Context, id string) error {
	return c.noContent(ctx, http.MethodDelete, "/v1/links/"+url.PathEscape(id))
}

// Link reads a share link's record (no credentials needed).
func (c *Client) Link(ctx context.Context, id string) (api.Link, error) {
	var l api.Link
	err := c.getJSON(ctx, "/v1/links/"+url.PathEscape(id), &l)
	return l, err
}

// OpenLink opens a share link: it reads the link's record from this
// client's nodes, opens its envelope with the link's key and streams the
// file, decrypted. Every segment is authenticated before its bytes are
// returned, and the end is accepted only if the sealed bytes hash to the
// blob the envelope is bound to and the file has the envelope's size: a
// tampered record, ciphertext or key is an error (e2e.ErrTampered), never
// wrong bytes. The caller keeps what it read only after io.EOF.
func (c *Client) OpenLink(ctx context.Context, link e2e.Link) (e2e.Envelope, io.ReadCloser, error) {
	rec, err := c.Link(ctx, link.ID)
	if err != nil {
		return e2e.Envelope{}, nil, err
	}
	env, err := e2e.OpenEnvelope(link.Key, link.ID, rec.Blob.String(), rec.Sealed)
	if err != nil {
		return e2e.Envelope{}, nil, err
	}
	if e2e.SealedSize(env.Size) != rec.Size {
		return e2e.Envelope{}, nil, fmt.Errorf("%w: the blob has %d bytes, a sealed file of %d has %d", e2e.ErrTampered, rec.Size, env.Size, e2e.SealedSize(env.Size))
	}
	resp, err := c.do(ctx, func(base string) (*http.Request, error) {
		return http.NewRequest(http.MethodGet, base+"/v1/links/"+url.PathEscape(link.ID)+"/content", nil)
	}, nil)
	if err != nil {
		return e2e.Envelope{}, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return e2e.Envelope{}, nil, readError(resp)
	}
	v := &verified{r: resp.Body, h: blake3.New(), want: rec.Blob}
	o, err := e2e.NewOpener(v, env.FileKey)
	if err != nil {
		resp.Body.Close()
		return e2e.Envelope{}, nil, err
	}
	return env, &opened{Opener: o, c: resp.Body, left: env.Size}, nil
}

// verified passes a blob's bytes on and, at their end, fails unless they
// hash to its ID.
type verified struct {
	r    io.Reader
	h    *blake3.Hasher
	want blob.ID
}

func (v *verified) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF && blob.ID(v.h.Sum(nil)) != v.want {
		return n, fmt.Errorf("%w: the sealed bytes are not blob %s", e2e.ErrTampered, v.want)
	}
	return n, err
}

// opened is a link's plaintext, checked against the envelope's size.
type opened struct {
	*e2e.Opener
	c    io.Closer
	left int64
}

func (o *opened) Read(p []byte) (int, error) {
	n, err := o.Opener.Read(p)
	o.left -= int64(n)
	if o.left < 0 || (err == io.EOF && o.left != 0) {
		return n, fmt.Errorf("%w: the file's size differs from its link's", e2e.ErrTampered)
	}
	return n, err
}

func (o *opened) Close() error { return o.c.Close() }
