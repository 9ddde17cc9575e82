package testcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/e2e"
)

// TestShareLinksAreEndToEnd: a file shared by link reads back byte-exact;
// one key domain stores it once, another domain apart; the metadata holds
// neither name nor keys; and a node that lies — alters the sealed bytes,
// the envelope, or swaps in another blob — is caught by the client, which
// never returns a byte of the result.
func TestShareLinksAreEndToEnd(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1})
	ctx := context.Background()
	text := secretText("dossier", 200_000)
	const name = "dossier-on-the-minister.txt"
	alice, bob := e2e.NewKey(), e2e.NewKey()
	share := func(domain *e2e.Key, expires time.Time) e2e.Link {
		t.Helper()
		l, err := c.Client().Share(ctx, bytes.NewReader(text), int64(len(text)), client.ShareOptions{Name: name, DomainKey: domain, Expires: expires})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	link, again, other := share(&alice, time.Time{}), share(&alice, time.Time{}), share(&bob, time.Time{})
	rec := func(l e2e.Link) api.Link {
		t.Helper()
		r, err := c.Client().Link(ctx, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if rec(link).Blob != rec(again).Blob {
		t.Error("one file shared twice in one key domain is stored twice")
	}
	if rec(link).Blob == rec(other).Blob {
		t.Error("two key domains seal one file alike: the cluster could tell who holds what")
	}
	open := func(cl *client.Client, l e2e.Link) ([]byte, e2e.Envelope, error) {
		env, rc, err := cl.OpenLink(ctx, l)
		if err != nil {
			return nil, env, err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return b, env, err
	}
	got, env, err := open(c.Client(), link)
	if err != nil || !bytes.Equal(got, text) || env.Name != name {
		t.Fatalf("open: %v, name %q, equal %v", err, env.Name, bytes.Equal(got, text))
	}

	// The cluster's metadata (a snapshot of it) and disks: no name, no key.
	var snap bytes.Buffer
	if err := c.Client().SaveSnapshot(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	for _, secret := range [][]byte{[]byte(name), link.Key[:], []byte(link.String()[strings.Index(link.String(), "#")+1:]), alice[:]} {
		if bytes.Contains(snap.Bytes(), secret) {
			t.Fatalf("the metadata holds %q", secret)
		}
	}

	// Lying nodes: a proxy in front of a real node alters its answers.
	node := c.URLs()[0]
	hc := c.HTTPClient()
	liar := func(alter func(path string, body []byte) []byte) *client.Client {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			req, _ := http.NewRequestWithContext(r.Context(), r.Method, node+r.URL.Path, nil)
			resp, err := hc.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode == http.StatusOK {
				b = alter(r.URL.Path, b)
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			w.WriteHeader(resp.StatusCode)
			w.Write(b)
		}))
		t.Cleanup(srv.Close)
		return client.New(srv.URL)
	}
	onRecord := func(f func(*api.Link)) func(string, []byte) []byte {
		return func(path string, b []byte) []byte {
			if strings.HasSuffix(path, "/content") {
				return b
			}
			var l api.Link
			json.Unmarshal(b, &l)
			f(&l)
			b, _ = json.Marshal(l)
			return b
		}
	}
	onContent := func(f func([]byte) []byte) func(string, []byte) []byte {
		return func(path string, b []byte) []byte {
			if strings.HasSuffix(path, "/content") {
				return f(b)
			}
			return b
		}
	}
	otherRec := rec(other)
	for what, alter := range map[string]func(string, []byte) []byte{
		"a flipped ciphertext byte": onContent(func(b []byte) []byte { b[len(b)/2] ^= 1; return b }),
		"the last segment cut off":  onContent(func(b []byte) []byte { return b[:len(b)-1000] }),
		"a flipped envelope byte":   onRecord(func(l *api.Link) { l.Sealed[len(l.Sealed)-3] ^= 1 }),
		"another domain's blob":     onRecord(func(l *api.Link) { l.Blob, l.Size = otherRec.Blob, otherRec.Size }),
		"another blob's bytes": func(path string, b []byte) []byte {
			if !strings.HasSuffix(path, "/content") {
				return b
			}
			rc, _ := c.Client().Get(ctx, otherRec.Blob) // the same size, sealed under bob's key
			o, _ := io.ReadAll(rc)
			return o
		},
	} {
		got, _, err := open(liar(alter), link)
		if !errors.Is(err, e2e.ErrTampered) {
			t.Errorf("%s: got %d bytes, err %v; want ErrTampered", what, len(got), err)
		}
	}

	// Revoked and expired links open nothing; the purge drops expired records.
	if err := c.Client().DeleteLink(ctx, link.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := open(c.Client(), link); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a revoked link: %v", err)
	}
	if _, _, err := open(c.Client(), again); err != nil {
		t.Fatalf("the other link of the same blob after one was revoked: %v", err)
	}
	brief := share(&alice, time.Now().Add(1500*time.Millisecond))
	if _, _, err := open(c.Client(), brief); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1600 * time.Millisecond)
	if _, _, err := open(c.Client(), brief); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("an expired link: %v", err)
	}
}

// TestLinkOwnership: a link is created with write scope, read by anyone
// holding it, and revoked only by its owner or an operator.
func TestLinkOwnership(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1})
	ctx := context.Background()
	key := func(scopes ...string) *client.Client {
		k, err := c.CreateAccessKey(ctx, api.KeyRequest{Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return c.KeyClient(k)
	}
	owner, stranger, reader := key("read", "write", "delete"), key("read", "write", "delete"), key("read")
	data := []byte("shared by its owner")
	if _, err := reader.Share(ctx, bytes.NewReader(data), int64(len(data)), client.ShareOptions{Name: "x"}); !errors.Is(err, blob.ErrForbidden) {
		t.Fatalf("sharing without write scope: %v", err)
	}
	link, err := owner.Share(ctx, bytes.NewReader(data), int64(len(data)), client.ShareOptions{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, rc, err := client.New().OpenLink(ctx, link); err == nil {
		rc.Close()
		t.Fatal("a client with no nodes opened a link") // sanity: the next one must use the cluster
	}
	if _, rc, err := c.KeyClient(api.AccessKey{}).OpenLink(ctx, link); err != nil {
		t.Fatalf("opening a link without credentials: %v", err)
	} else {
		rc.Close()
	}
	if err := stranger.DeleteLink(ctx, link.ID); !errors.Is(err, blob.ErrForbidden) {
		t.Fatalf("a stranger revoking the link: %v", err)
	}
	if err := owner.DeleteLink(ctx, link.ID); err != nil {
		t.Fatalf("the owner revoking the link: %v", err)
	}
	if err := c.Client().DeleteLink(ctx, link.ID); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("revoking it again: %v", err)
	}
}
