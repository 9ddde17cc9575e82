package raftstore

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/placement"
)

// BenchmarkMillionObjects fills one bucket with ATOLL_BENCH_OBJECTS
// (default 1,000,000) S3 object records through a three-voter raft group
// (real TCP, badger, fsync), each a small object with a chunk of its own
// placed on nine nodes — exactly the metadata a 4 KiB S3 PUT commits;
// the shards themselves are not written (they cost the same per object at
// any count). Then it reports what a million objects cost the metadata
// layer: bytes per object on disk and in a snapshot, memory, how long a
// new node takes to catch up from a snapshot, a restart, and a listing of
// the whole bucket in pages of 1000 (what ListObjectsV2 reads per page).
//
//	go test -run '^$' -bench MillionObjects -benchtime 1x -timeout 60m ./raftstore/
func BenchmarkMillionObjects(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("ATOLL_BENCH_OBJECTS")); err == nil && v > 0 {
		n = v
	}
	for b.Loop() {
		millionObjects(b, n)
	}
}

func millionObjects(b *testing.B, n int) {
	nodes := startCluster(b, 0)
	mustApply(b, nodes, CreateBucketCommand(Bucket{Name: "million"}))
	holders := make([]blob.NodeID, 9)
	for i := range holders {
		holders[i] = blob.NodeID(fmt.Sprintf("r%d-n%d", i%3, i/3))
	}
	object := func(i int) Object {
		return Object{Bucket: "million", Key: fmt.Sprintf("photos/%04d/%07d.jpg", i/1000, i), Size: 4096, K: 6, M: 3,
			Chunks: []Chunk{{ID: blob.Sum([]byte("object " + strconv.Itoa(i))), Len: 4096, Shards: holders, Format: 2}},
			ETag:   `"` + strings.Repeat("0123456789abcdef", 2) + `"`, ContentType: "image/jpeg", Modified: time.Now().UTC()}
	}

	// Fill, 256 puts in flight (raft batches them into log writes). A
	// leader change under the load is waited out, as a gateway would.
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for range 256 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				var err error
				for try := 0; try < 50; try++ {
					if l := leaderOf(nodes); l != nil {
						if _, err = l.s.Apply(context.Background(), PutObjectCommand(object(i))); err == nil {
							break
						}
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
	leader := leaderOf(nodes)
	fill := time.Since(start)
	b.ReportMetric(float64(n)/fill.Seconds(), "puts/s")
	target := appliedOf(leader.s)
	for _, nd := range nodes {
		waitApplied(b, nd.s, target, time.Minute)
	}

	// Snapshot every replica (raft then compacts its log) and measure.
	for _, nd := range nodes {
		if err := nd.s.raft.Snapshot().Error(); err != nil {
			b.Fatal(err)
		}
	}
	var snap countingWriter
	t0 := time.Now()
	if err := leader.s.WriteSnapshot(&snap); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(snap)/float64(n), "snapshot-B/object")
	b.ReportMetric(time.Since(t0).Seconds(), "snapshot-write-s")
	b.ReportMetric(float64(dirSize(filepath.Join(leader.dir, "raft")))/float64(n), "disk-B/object")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	anon, file := rss()
	b.ReportMetric(float64(anon)/3/(1<<20), "RSS-anon-MiB/node")
	b.ReportMetric(float64(file)/3/(1<<20), "RSS-file-MiB/node") // badger's mmapped tables and logs
	b.ReportMetric(float64(ms.HeapInuse)/3/(1<<20), "heap-MiB/node")

	// List the whole bucket, 1000 keys a page, each page a fresh seek.
	t0 = time.Now()
	listed, after := 0, ""
	for {
		page := 0
		err := leader.s.Objects("million", "", after, func(o Object) bool {
			page++
			after = o.Key
			return page < 1000
		})
		if err != nil {
			b.Fatal(err)
		}
		listed += page
		if page < 1000 {
			break
		}
	}
	if listed != n {
		b.Fatalf("listed %d objects, want %d", listed, n)
	}
	b.ReportMetric(float64(n)/time.Since(t0).Seconds(), "listed-objects/s")

	// A new node catches up: raft sends it the leader's snapshot.
	fresh := &testNode{id: "n3", dir: b.TempDir(), addr: "127.0.0.4:0"}
	startNode(b, fresh)
	b.Cleanup(func() { fresh.s.Close() })
	t0 = time.Now()
	mustApply(b, nodes, SetMemberCommand(Member{Node: placement.Node{ID: fresh.id, Region: "r0"}, Raft: fresh.addr}))
	lay, _ := leader.s.Layout()
	if err := leader.s.Reconcile(lay, allAlive(lay)); err != nil {
		b.Fatal(err)
	}
	waitApplied(b, fresh.s, appliedOf(leader.s), 10*time.Minute)
	b.ReportMetric(time.Since(t0).Seconds(), "catch-up-s")

	// A follower restarts: badger reopens; raft replays nothing it applied.
	f := followerOf(nodes)
	f.s.Close()
	t0 = time.Now()
	startNode(b, f)
	waitApplied(b, f.s, appliedOf(leader.s), 10*time.Minute)
	b.ReportMetric(time.Since(t0).Seconds(), "restart-s")
}

func appliedOf(s *Store) uint64 {
	s.fsm.mu.Lock()
	defer s.fsm.mu.Unlock()
	return s.fsm.applied
}

func waitApplied(b *testing.B, s *Store, idx uint64, timeout time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.WaitApplied(ctx, idx); err != nil {
		b.Fatalf("waiting for index %d: %v", idx, err)
	}
}

type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}

var _ io.Writer = (*countingWriter)(nil)

func dirSize(dir string) int64 {
	var total int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			total += info.Size()
		}
		return nil
	})
	return total
}

// rss is the process's resident set in bytes (Linux; 0 if unknown):
// anonymous memory, and file pages (mmapped files, which the kernel may
// drop and read again).
func rss() (anon, file int64) {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		name, v, _ := strings.Cut(line, ":")
		kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		switch name {
		case "RssAnon":
			anon = kb << 10
		case "RssFile":
			file = kb << 10
		}
	}
	return anon, file
}
