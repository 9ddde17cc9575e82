package testcluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/e2e"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/node"
)

// Benchmarks of the whole data path through a 3x3 cluster with the
// default 4 MiB chunks, all nodes in this process on loopback. Every put
// stores new bytes (each chunk is stamped with the iteration), so no chunk
// is deduplicated. ATOLL_BENCH_PLAINTEXT=1 runs them without TLS (the
// "before" of the mTLS comparison in BENCHMARKS.md);
// ATOLL_BENCH_SHARDS=plain writes Plain shards instead of Dispersed ones
// (the "before" of the dispersal comparison); ATOLL_BENCH_WAN=80ms puts
// that round-trip time between regions (0.5 ms within one).

var benchSizes = []int{1 << 20, 64 << 20}

func benchCluster(b *testing.B) (*Cluster, *client.Client) {
	b.Helper()
	opts := Options{Plaintext: os.Getenv("ATOLL_BENCH_PLAINTEXT") == "1"}
	if os.Getenv("ATOLL_BENCH_SHARDS") == "plain" {
		opts.ShardFormat = erasure.Plain
	}
	if rtt, err := time.ParseDuration(os.Getenv("ATOLL_BENCH_WAN")); err == nil && rtt > 0 {
		opts.WAN = &WAN{Between: node.Link{Delay: rtt / 2}, Within: node.Link{Delay: 250 * time.Microsecond}}
	}
	c, err := Start(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, c.Client(c.URLs()[0])
}

// stamps makes every benchmark put unique, across -count runs too.
var stamps atomic.Uint64

func stamp(data []byte) {
	s := stamps.Add(1)
	for off := 0; off < len(data); off += 1 << 20 {
		binary.LittleEndian.PutUint64(data[off:], s)
	}
}

func BenchmarkPut(b *testing.B) {
	_, cl := benchCluster(b)
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			data := randBytes(rand.New(rand.NewPCG(1, 1)), size)
			b.SetBytes(int64(size))
			for b.Loop() {
				stamp(data)
				if _, err := cl.Put(context.Background(), bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchGet(b *testing.B, cl *client.Client, ids map[int]blob.ID) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				rc, err := cl.Get(context.Background(), ids[size])
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, rc)
				rc.Close()
				if err != nil || n != int64(size) {
					b.Fatalf("read %d bytes: %v", n, err)
				}
			}
		})
	}
}

func putBenchBlobs(b *testing.B, cl *client.Client) map[int]blob.ID {
	ids := map[int]blob.ID{}
	for _, size := range benchSizes {
		id, err := cl.Put(context.Background(), bytes.NewReader(randBytes(rand.New(rand.NewPCG(2, uint64(size))), size)))
		if err != nil {
			b.Fatal(err)
		}
		ids[size] = id
	}
	return ids
}

func BenchmarkGet(b *testing.B) {
	_, cl := benchCluster(b)
	benchGet(b, cl, putBenchBlobs(b, cl))
}

// BenchmarkGetRegionDown reads while a whole region (not the gateway's) is
// dead: a third of the shards are gone, so most chunks need reconstruction.
func BenchmarkGetRegionDown(b *testing.B) {
	c, cl := benchCluster(b)
	ids := putBenchBlobs(b, cl)
	gateway := c.Members()[0]
	if err := c.KillRegion(otherRegion(c, gateway.Region)); err != nil {
		b.Fatal(err)
	}
	benchGet(b, cl, ids)
}

// BenchmarkRepairRegionLoss stores ATOLL_BENCH_REPAIR_MIB (default 1024)
// MiB on a 3x3 cluster, kills a region with the grace period at ~0 and
// reports the time until every chunk has k+m shards again and the rate at
// which shards were rebuilt. Run with -benchtime 1x.
func BenchmarkRepairRegionLoss(b *testing.B) {
	mib := 1024
	if s := os.Getenv("ATOLL_BENCH_REPAIR_MIB"); s != "" {
		mib, _ = strconv.Atoi(s)
	}
	for b.Loop() {
		c, err := Start(context.Background(), Options{DeadAfter: time.Nanosecond, RepairBandwidth: 4 << 30})
		if err != nil {
			b.Fatal(err)
		}
		cl := c.Client()
		data := randBytes(rand.New(rand.NewPCG(1, 1)), 64<<20)
		for range mib / 64 {
			stamp(data)
			if _, err := cl.Put(context.Background(), bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
		leader, _ := c.WaitLeader(context.Background())
		victim := otherRegion(c, leader.Region)
		before, _ := cl.Cluster(context.Background())
		var lost int64
		for _, n := range before.Nodes {
			if n.Region == victim {
				lost += n.UsedBytes
			}
		}
		killed := time.Now()
		c.KillRegion(victim)
		err = c.waitFor(context.Background(), "repair", func() bool {
			ci, err := cl.Cluster(context.Background())
			return err == nil && ci.DegradedChunks == 0 && !ci.Repair.Running && ci.Repair.Total == 0 && time.Since(killed) > time.Second
		})
		took := time.Since(killed)
		if err != nil {
			b.Fatal(err)
		}
		after, _ := cl.Cluster(context.Background())
		rebuilt := after.UsedBytes - (before.UsedBytes - lost)
		b.ReportMetric(took.Seconds(), "s-to-full-redundancy")
		b.ReportMetric(float64(rebuilt)/1e6/took.Seconds(), "MB/s-rebuilt")
		b.ReportMetric(float64(rebuilt)/1e6, "MB-rebuilt")
		c.Close()
	}
}

// BenchmarkUpload measures client-side chunking with the have-check on
// ATOLL_BENCH_UPLOAD_MIB (default 1024) MiB: a first upload (every chunk
// new), an identical re-upload (nothing to send: hashing-bound), and an
// upload with 1 MiB in the middle overwritten (reports the share of bytes
// sent). Run with -benchtime 1x; each sub-benchmark uploads once per
// iteration.
func BenchmarkUpload(b *testing.B) {
	mib := 1024
	if s := os.Getenv("ATOLL_BENCH_UPLOAD_MIB"); s != "" {
		mib, _ = strconv.Atoi(s)
	}
	_, cl := benchCluster(b)
	data := randBytes(rand.New(rand.NewPCG(2, 2)), mib<<20)
	up := func(b *testing.B) *client.UploadResult {
		res, err := cl.Upload(context.Background(), bytes.NewReader(data), int64(len(data)), nil)
		if err != nil {
			b.Fatal(err)
		}
		return res
	}
	b.Run("first", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			stamp(data)
			res := up(b)
			b.ReportMetric(100*float64(res.BytesSent)/float64(len(data)), "%sent")
		}
	})
	b.Run("identical", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			res := up(b)
			b.ReportMetric(100*float64(res.BytesSent)/float64(len(data)), "%sent")
		}
	})
	b.Run("1MiB-changed", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		r := rand.New(rand.NewPCG(stamps.Add(1), 3))
		for b.Loop() {
			copy(data[len(data)/2:], randBytes(r, 1<<20))
			res := up(b)
			b.ReportMetric(100*float64(res.BytesSent)/float64(len(data)), "%sent")
			b.ReportMetric(float64(res.ChunksSent), "chunks-sent")
		}
	})
}

// BenchmarkShare measures client-side encryption end to end: Share (seal
// on the client with a random key, upload by chunks, create the link) and
// OpenLink (read the link, download, authenticate and decrypt), 64 MiB,
// beside BenchmarkUpload's plain upload of the same size.
func BenchmarkShare(b *testing.B) {
	_, cl := benchCluster(b)
	const size = 64 << 20
	data := randBytes(rand.New(rand.NewPCG(5, 5)), size)
	var link e2e.Link
	b.Run("upload-plain", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			stamp(data)
			if _, err := cl.Upload(context.Background(), bytes.NewReader(data), size, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("share", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			var err error
			if link, err = cl.Share(context.Background(), bytes.NewReader(data), size, client.ShareOptions{Name: "bench"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open-link", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			_, rc, err := cl.OpenLink(context.Background(), link)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil || n != size {
				b.Fatalf("read %d: %v", n, err)
			}
		}
	})
}

// BenchmarkSmall measures 4 KiB puts and gets through one gateway, one at
// a time and eight at a time (as cmd/s3bench's c8): metadata round trips
// and disk flushes, not bytes, bound them.
func BenchmarkSmall(b *testing.B) {
	_, cl := benchCluster(b)
	data := randBytes(rand.New(rand.NewPCG(9, 9)), 4<<10)
	var id blob.ID
	b.Run("put-4KiB", func(b *testing.B) {
		for b.Loop() {
			stamp(data)
			var err error
			if id, err = cl.Put(context.Background(), bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Concurrent puts can share raft appends and volume syncs.
	b.Run("put-4KiB-c8", func(b *testing.B) {
		b.SetParallelism((8 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) {
			data := bytes.Clone(data)
			for pb.Next() {
				stamp(data)
				if _, err := cl.Put(context.Background(), bytes.NewReader(data)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("get-4KiB", func(b *testing.B) {
		for b.Loop() {
			rc, err := cl.Get(context.Background(), id)
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, rc); err != nil || n != int64(len(data)) {
				b.Fatalf("read %d: %v", n, err)
			}
			rc.Close()
		}
	})
	b.Run("get-4KiB-c8", func(b *testing.B) {
		b.SetParallelism((8 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				rc, err := cl.Get(context.Background(), id)
				if err != nil {
					b.Error(err)
					return
				}
				n, err := io.Copy(io.Discard, rc)
				rc.Close()
				if err != nil || n != int64(len(data)) {
					b.Errorf("read %d: %v", n, err)
					return
				}
			}
		})
	})
}
