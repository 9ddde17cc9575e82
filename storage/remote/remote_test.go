package remote_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/storage"
	"github.com/atollstore/atoll/storage/mem"
	"github.com/atollstore/atoll/storage/remote"
	"github.com/atollstore/atoll/storage/storagetest"
)

func serve(t *testing.T, s storage.Shards) *remote.Client {
	srv := httptest.NewServer(remote.Handler(s, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	return &remote.Client{Node: "peer", URL: srv.URL, HTTP: srv.Client()}
}

func TestConformance(t *testing.T) {
	storagetest.Test(t, func(t *testing.T) storage.Shards { return serve(t, new(mem.Store)) })
}

// A shard that rots on the peer's disk is reported corrupt by the peer
// (HEAD verifies in place, GET refuses to send it), and the verdict keeps
// its identity across the wire.
func TestRotOnPeer(t *testing.T) {
	ctx := context.Background()
	backing := new(mem.Store)
	c := serve(t, backing)
	sh := storagetest.MakeShards(t, 2, 3000, 2, 1)[0]
	if err := storage.Write(ctx, c, sh.Header, sh.Payload); err != nil {
		t.Fatal(err)
	}
	if _, p, err := storage.Read(ctx, c, sh.Ref()); err != nil || !bytes.Equal(p, sh.Payload) {
		t.Fatalf("read through the peer: %v", err)
	}
	rotten := sh.File()
	rotten[100] ^= 1
	if err := backing.Receive(ctx, sh.Ref(), bytes.NewReader(rotten)); err != nil {
		t.Fatal(err)
	}
	if err := storage.Check(ctx, c, sh.Ref()); !errors.Is(err, blob.ErrCorrupt) {
		t.Fatalf("Check: %v, want ErrCorrupt", err)
	}
	if _, _, err := storage.Read(ctx, c, sh.Ref()); !errors.Is(err, blob.ErrCorrupt) {
		t.Fatalf("Read: %v, want ErrCorrupt", err)
	}
}

// A peer that cannot be reached is ErrUnavailable (the caller places the
// shard elsewhere and marks the peer suspect), not a data error.
func TestUnreachablePeer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := &remote.Client{Node: "gone", URL: url, HTTP: http.DefaultClient}
	sh := storagetest.MakeShards(t, 2, 300, 2, 1)[0]
	err := storage.Write(context.Background(), c, sh.Header, sh.Payload)
	if !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("write to a closed peer: %v", err)
	}
}

func TestBadPaths(t *testing.T) {
	srv := httptest.NewServer(remote.Handler(new(mem.Store), slog.New(slog.DiscardHandler)))
	defer srv.Close()
	id := storagetest.MakeShards(t, 1, 10, 1, 1)[0].Header.Chunk.String()
	for _, p := range []string{"nothex/0", id + "/-1", id + "/256", id + "/01", id + "/x"} {
		resp, err := http.Get(srv.URL + remote.Prefix + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", p, resp.StatusCode)
		}
	}
}
