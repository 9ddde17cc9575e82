package testcluster

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/atollstore/atoll/client"
)

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	c, err := Start(ctx, Options{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := client.New(c.URLs()...)
	data := bytes.Repeat([]byte("hello atoll "), 30000)
	id, err := cl.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cl.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, err %v", len(got), err)
	}
}
