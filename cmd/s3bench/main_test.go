package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/testcluster"
)

// TestBenchAgainstCluster runs a short benchmark against an in-process
// 3×3 cluster: every size and concurrency gets PUTs and verified GETs, and
// the bucket is gone afterwards.
func TestBenchAgainstCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx := context.Background()
	c, err := testcluster.Start(ctx, testcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, err := c.CreateAccessKey(ctx, api.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	if err := c.WriteClientCerts(certs); err != nil {
		t.Fatal(err)
	}
	cfg := config{Endpoint: c.S3URLs()[0], CAFile: filepath.Join(certs, "ca.crt"), AccessKey: key.AccessKey, SecretKey: key.SecretKey, Region: "us-east-1", Bucket: "bench",
		Sizes: []int64{4 << 10, 1 << 20}, Concurrency: []int{1, 4}, Duration: 200 * time.Millisecond}
	var progress bytes.Buffer
	rs, err := run(ctx, cfg, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 8 {
		t.Fatalf("%d results, want 8", len(rs))
	}
	for _, r := range rs {
		if r.Ops < r.Concurrency || r.opsPerSec() <= 0 {
			t.Fatalf("%+v", r)
		}
	}
	var table bytes.Buffer
	printTable(&table, cfg, rs)
	if strings.Count(table.String(), "\n") != 10 || !strings.Contains(table.String(), "| GET | 1MiB | 4 |") {
		t.Fatalf("table:\n%s", table.String())
	}
	cl, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if bs, err := cl.ListBuckets(ctx, nil); err != nil || len(bs.Buckets) != 0 {
		t.Fatalf("buckets after the run: %+v %v", bs, err)
	}
}
