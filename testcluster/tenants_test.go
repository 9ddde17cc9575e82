package testcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/e2e"
	"github.com/atollstore/atoll/storage"
)

// TestHashIsNoKey: a tenant that knows only the hashes of another
// tenant's file — its blob ID and chunk IDs — can neither read, stat,
// delete or link it, nor learn from the have-check that the cluster holds
// it, nor claim it with a manifest. Uploading the file itself (sending
// its bytes) makes it an owner, storing nothing twice; each owner's delete
// drops only its own claim.
func TestHashIsNoKey(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1})
	ctx := context.Background()
	keys := map[*client.Client]api.AccessKey{}
	tenant := func(name string) *client.Client {
		k, err := c.CreateAccessKey(ctx, api.KeyRequest{Tenant: name})
		if err != nil {
			t.Fatal(err)
		}
		cl := c.KeyClient(k)
		keys[cl] = k
		return cl
	}
	sendAs := func(cl *client.Client, method, path string, body any) (int, string) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, c.URLs()[0]+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+keys[cl].AccessKey+":"+keys[cl].SecretKey)
		resp, err := httpAs(c.pki.anonymous).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	alice, mallory := tenant("alice"), tenant("mallory")
	data := make([]byte, 5<<20)
	rand.NewChaCha8([32]byte{11}).Read(data)
	up := upload(t, alice, data, nil)
	st, err := alice.Stat(ctx, up.ID)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []blob.ID
	for _, ch := range st.Chunks {
		chunks = append(chunks, ch.ID)
	}

	notFound := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("mallory, knowing the hashes, %s: %v; want not found", what, err)
		}
	}
	_, err = getBytes(mallory, up.ID)
	notFound("reads the blob", err)
	_, err = mallory.Stat(ctx, up.ID)
	notFound("stats it", err)
	notFound("deletes it", mallory.Delete(ctx, up.ID))
	missing, err := mallory.Missing(ctx, chunks)
	if err != nil || len(missing) != len(chunks) {
		t.Errorf("mallory's have-check: %d of %d chunks missing, %v; want all (no side channel)", len(missing), len(chunks), err)
	}
	var refs []api.ChunkRef
	for _, ch := range st.Chunks {
		refs = append(refs, api.ChunkRef{ID: ch.ID, Len: ch.Len})
	}
	code, body := sendAs(mallory, "POST", "/v1/manifests", api.Manifest{ID: up.ID, Size: int64(len(data)), Chunks: refs})
	if code != 409 {
		t.Errorf("mallory's manifest of alice's chunks: %d %s; want 409 missing_chunks", code, body)
	}
	if _, err := getBytes(mallory, up.ID); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("after the manifest, mallory reads the blob: %v", err)
	}
	linkAttempt := e2e.NewLinkID()
	code, body = sendAs(mallory, "POST", "/v1/links", api.LinkRequest{ID: linkAttempt, Blob: up.ID, Sealed: []byte("x")})
	if code != 404 {
		t.Errorf("mallory linking alice's blob: %d %s; want 404", code, body)
	}

	// Bob has the same file: he sends its bytes once, the cluster stores
	// nothing new, and he owns it too.
	bob := tenant("bob")
	before := storedShards(t, c)
	bobUp := upload(t, bob, data, nil)
	if bobUp.ID != up.ID || bobUp.BytesSent != int64(len(data)) {
		t.Fatalf("bob's upload: id %s, sent %d of %d (every chunk's bytes once)", bobUp.ID, bobUp.BytesSent, len(data))
	}
	if after := storedShards(t, c); after != before {
		t.Errorf("bob's upload stored shards: %d before, %d after", before, after)
	}
	if again := upload(t, bob, data, nil); again.BytesSent != 0 {
		t.Errorf("bob's second upload sent %d bytes", again.BytesSent)
	}
	mustRead(t, bob, up.ID, data)
	if err := alice.Delete(ctx, up.ID); err != nil {
		t.Fatal(err)
	}
	notFound("(alice, after deleting) reads it", func() error { _, err := getBytes(alice, up.ID); return err }())
	mustRead(t, bob, up.ID, data)
	mustRead(t, c.Client(), up.ID, data) // operators reach everything
	if err := bob.Delete(ctx, up.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := getBytes(c.Client(), up.ID); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("the blob outlived its last owner: %v", err)
	}
}

// storedShards counts the shard files of every running node.
func storedShards(t *testing.T, c *Cluster) int {
	t.Helper()
	n := 0
	for _, m := range c.Members() {
		if m.Node == nil {
			continue
		}
		m.Disk.Walk(context.Background(), func(storage.Ref, storage.Info) error { n++; return nil })
	}
	return n
}
