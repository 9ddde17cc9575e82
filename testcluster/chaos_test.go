package testcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/node"
	"golang.org/x/sync/errgroup"
)

const chunk = 32 << 10 // small chunks: many-chunk blobs stay cheap under -race

func start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	if opts.ChunkSize == 0 {
		opts.ChunkSize = chunk
	}
	if opts.SmallMax == 0 {
		opts.SmallMax = chunk / 2 // corpora then hold chunks of both codes
	}
	if opts.SegmentChunks == 0 {
		opts.SegmentChunks = 4 // a blob of more than 4 chunks lists them in segments
	}
	c, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// corpus returns blobs with the sizes that matter: empty, tiny, around a
// chunk boundary, several chunks, and random ones.
func corpus(seed uint64, count int) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed))
	sizes := []int{0, 1, 2, chunk - 1, chunk, chunk + 1, 2 * chunk, 3*chunk + 17, 10 * chunk}
	for len(sizes) < count {
		sizes = append(sizes, r.IntN(6*chunk))
	}
	out := make([][]byte, len(sizes))
	for i, n := range sizes {
		out[i] = randBytes(r, n)
	}
	return out
}

// putAll stores blobs with some concurrency and returns their IDs.
func putAll(t *testing.T, cl *client.Client, blobs [][]byte) []blob.ID {
	t.Helper()
	ids := make([]blob.ID, len(blobs))
	var g errgroup.Group
	g.SetLimit(4)
	for i, b := range blobs {
		g.Go(func() error {
			id, err := cl.Put(context.Background(), bytes.NewReader(b))
			if err != nil {
				return fmt.Errorf("put #%d (%d bytes): %w", i, len(b), err)
			}
			if want := blob.Sum(b); id != want {
				return fmt.Errorf("put #%d: id %s, want BLAKE3 of content %s", i, id, want)
			}
			ids[i] = id
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func getBytes(cl *client.Client, id blob.ID) ([]byte, error) {
	rc, err := cl.Get(context.Background(), id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// verifyAll reads every blob back and compares bytes.
func verifyAll(t *testing.T, cl *client.Client, ids []blob.ID, blobs [][]byte) {
	t.Helper()
	var g errgroup.Group
	g.SetLimit(4)
	for i, id := range ids {
		g.Go(func() error {
			got, err := getBytes(cl, id)
			if err != nil {
				return fmt.Errorf("get #%d %s: %w", i, id, err)
			}
			if !bytes.Equal(got, blobs[i]) {
				return fmt.Errorf("get #%d %s: %d bytes differ from the %d stored", i, id, len(got), len(blobs[i]))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func regionURLs(c *Cluster, r blob.Region) []string {
	var out []string
	for _, m := range c.Members() {
		if m.Region == r && m.Node != nil {
			out = append(out, m.Node.URL())
		}
	}
	return out
}

func otherRegion(c *Cluster, not blob.Region) blob.Region {
	for _, r := range c.Regions() {
		if r != not {
			return r
		}
	}
	return ""
}

func TestRegionLoss(t *testing.T) {
	for _, variant := range []string{"leader-region", "follower-region"} {
		t.Run(variant, func(t *testing.T) {
			c := start(t, Options{})
			cl := c.Client()
			blobs := corpus(7, 100)
			ids := putAll(t, cl, blobs)

			leader, err := c.WaitLeader(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			victim := leader.Region
			if variant == "follower-region" {
				victim = otherRegion(c, leader.Region)
			}
			if err := c.KillRegion(victim); err != nil {
				t.Fatal(err)
			}
			t.Logf("killed region %s (leader was %s)", victim, leader.ID)
			t0 := time.Now()
			verifyAll(t, cl, ids, blobs)
			t.Logf("read %d blobs back during the outage in %v", len(ids), time.Since(t0))

			// Writes keep working, and every new blob still has all n shards.
			more := corpus(8, 12)
			moreIDs := putAll(t, cl, more)
			verifyAll(t, cl, moreIDs, more)
			st, err := cl.Stat(context.Background(), moreIDs[len(moreIDs)-1])
			if err != nil {
				t.Fatal(err)
			}
			for _, ch := range st.Chunks {
				if len(ch.Shards) != ch.K+ch.M {
					t.Fatalf("chunk written during outage has %d shards, want %d+%d", len(ch.Shards), ch.K, ch.M)
				}
				for _, s := range ch.Shards {
					if s.Region == victim || !s.Healthy {
						t.Fatalf("chunk written during outage has shard %+v", s)
					}
				}
			}
			ci, err := cl.Cluster(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if ci.ToleratesRegionLoss {
				t.Fatal("cluster claims to tolerate a region loss while a region is down")
			}

			// The region returns and serves everything, old and new.
			t0 = time.Now()
			if err := c.RestartRegion(victim); err != nil {
				t.Fatal(err)
			}
			waitAlive(t, c)
			t.Logf("region %s back and seen alive by all in %v", victim, time.Since(t0))
			back := c.Client(regionURLs(c, victim)...)
			verifyAll(t, back, append(ids, moreIDs...), append(blobs, more...))
		})
	}
}

// waitAlive waits until every node sees every other alive.
func waitAlive(t *testing.T, c *Cluster) {
	t.Helper()
	err := c.waitFor(context.Background(), "all nodes alive", func() bool {
		for _, m := range c.Members() {
			ci := m.Node.Cluster(context.Background())
			if ci.Leader == "" {
				return false
			}
			for _, n := range ci.Nodes {
				if n.State != api.StateAlive {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
}

// slowReader yields data in small pieces and calls hook once, halfway.
type slowReader struct {
	data []byte
	off  int
	once sync.Once
	hook func()
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	if r.off >= len(r.data)/2 {
		r.once.Do(r.hook)
	}
	n := copy(p[:min(len(p), 16<<10)], r.data[r.off:])
	r.off += n
	return n, nil
}

func TestKillNodeMidPut(t *testing.T) {
	for _, variant := range []string{"storage-node", "gateway-node"} {
		t.Run(variant, func(t *testing.T) {
			c := start(t, Options{})
			members := c.Members()
			gateway := members[0]
			victim := members[4]
			if variant == "gateway-node" {
				victim = gateway
			}
			data := randBytes(rand.New(rand.NewPCG(3, 3)), 200*chunk+5)
			id := blob.Sum(data)
			cl := c.Client(gateway.Node.URL()) // no failover: the put must go through the gateway
			_, err := cl.Put(context.Background(), &slowReader{data: data, hook: func() {
				if err := c.KillNode(victim.ID); err != nil {
					t.Error(err)
				}
			}})
			t.Logf("put with %s killed halfway: err=%v", victim.ID, err)
			reader := c.Client()
			got, gerr := getBytes(reader, id)
			switch {
			case err == nil:
				if gerr != nil || !bytes.Equal(got, data) {
					t.Fatalf("put succeeded but get returned %d bytes, err %v", len(got), gerr)
				}
			case variant == "gateway-node":
				if !errors.Is(gerr, blob.ErrNotFound) {
					t.Fatalf("put failed (%v) but get says %v, want not found", err, gerr)
				}
			default:
				t.Fatalf("put failed although only a storage node died: %v", err)
			}
			// The cluster goes on: a fresh put and get work.
			small := []byte("after the kill")
			sid, err := reader.Put(context.Background(), bytes.NewReader(small))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := getBytes(reader, sid); err != nil || !bytes.Equal(got, small) {
				t.Fatalf("get after kill: %q %v", got, err)
			}
		})
	}
}

// shardOnDisk is one stored copy of a shard in a node's files.
type shardOnDisk struct {
	node  blob.NodeID
	index int
	path  string
	off   int64 // of its header in the file
	size  int64 // header and payload
}

// shardsOnDisk finds the copies of chunk's shards in the nodes' files.
func shardsOnDisk(t *testing.T, c *Cluster, chunk blob.ID) []shardOnDisk {
	t.Helper()
	return allShardsOnDisk(t, c)[chunk]
}

// allShardsOnDisk finds every stored shard, by chunk, in the nodes' files
// as whoever reads the disks would, whatever the store's layout (a file
// per shard, or records in a volume).
func allShardsOnDisk(t *testing.T, c *Cluster) map[blob.ID][]shardOnDisk {
	t.Helper()
	out := map[blob.ID][]shardOnDisk{}
	for _, m := range c.Members() {
		err := filepath.WalkDir(filepath.Join(m.Dir, "shards"), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			erasure.ScanHeaders(b, func(off int, h erasure.Header) {
				out[h.Chunk] = append(out[h.Chunk], shardOnDisk{m.ID, h.Index, p, int64(off), int64(erasure.HeaderSize + h.ShardLen)})
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// damage XORs the shard's bytes from at (relative to its header) with x.
func (d shardOnDisk) damage(t *testing.T, at int64, x []byte) {
	t.Helper()
	f, err := os.OpenFile(d.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, len(x))
	if _, err := f.ReadAt(b, d.off+at); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= x[i]
	}
	if _, err := f.WriteAt(b, d.off+at); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptShardsDetectedAndSurvived(t *testing.T) {
	c := start(t, Options{})
	cl := c.Client()
	data := randBytes(rand.New(rand.NewPCG(5, 5)), 5*chunk+123)
	id, err := cl.Put(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.Stat(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	// Damage m=3 shards of the first chunk in three different ways.
	files := shardsOnDisk(t, c, st.Chunks[0].ID)
	if len(files) != 9 {
		t.Fatalf("found %d shards on disk, want 9", len(files))
	}
	files[0].damage(t, 100, []byte{0x40})                                     // payload bit rot
	files[1].damage(t, 10, []byte{0x40})                                      // header damage
	files[2].damage(t, 70, bytes.Repeat([]byte{0xa5}, int(files[2].size-70))) // all but the start of the payload lost
	got, err := getBytes(cl, id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get with 3 corrupt shards: %d bytes, err %v", len(got), err)
	}
	st, err = cl.Stat(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	unhealthy := 0
	for _, s := range st.Chunks[0].Shards {
		if !s.Healthy {
			unhealthy++
			if s.State != "corrupt" {
				t.Errorf("damaged shard %d reported %q, want corrupt", s.Index, s.State)
			}
		}
	}
	if unhealthy != 3 {
		t.Fatalf("stat reports %d unhealthy shards in chunk 0, want 3: %+v", unhealthy, st.Chunks[0].Shards)
	}
	// A fourth bad shard is one too many: the get must fail, not lie.
	files[3].damage(t, 200, []byte{0x40})
	if got, err := getBytes(cl, id); err == nil && bytes.Equal(got, data) {
		t.Fatal("get with 4 corrupt shards of 6+3 returned the right bytes: corruption not detected?")
	} else if err == nil {
		t.Fatalf("get with 4 corrupt shards returned %d wrong bytes without error", len(got))
	}
}

func TestPartitionedRegion(t *testing.T) {
	c := start(t, Options{})
	cl := c.Client()
	blobs := corpus(11, 20)
	ids := putAll(t, cl, blobs)
	leader, err := c.WaitLeader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cut := otherRegion(c, leader.Region)
	c.Partition(cut)
	majority := c.Client(regionURLs(c, otherRegion(c, cut))...)
	verifyAll(t, majority, ids, blobs)
	more := corpus(12, 5)
	moreIDs := putAll(t, majority, more)

	// The cut-off region has no quorum and too few shards: it must refuse,
	// never acknowledge a write it cannot make durable.
	isolated := c.Client(regionURLs(c, cut)...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := isolated.Put(ctx, bytes.NewReader([]byte("from the isolated region"))); err == nil {
		t.Fatal("a put inside a partitioned region was acknowledged")
	}
	c.Heal()
	waitAlive(t, c)
	verifyAll(t, isolated, append(ids, moreIDs...), append(blobs, more...))
}

func TestIdenticalContentStoredOnce(t *testing.T) {
	c := start(t, Options{})
	ctx := context.Background()
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Client(leader.Node.URL()) // the leader's replica is never behind
	data := randBytes(rand.New(rand.NewPCG(4, 4)), 7*chunk+3)
	id1, err := cl.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	before, err := cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := cl.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	after, err := cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id1 != id2 || id1 != blob.Sum(data) {
		t.Fatalf("ids %s, %s; want both %s", id1, id2, blob.Sum(data))
	}
	if before.Blobs != 1 || after.Blobs != 1 || after.UsedBytes != before.UsedBytes {
		t.Fatalf("second put of the same bytes: blobs %d -> %d, disk %d -> %d bytes", before.Blobs, after.Blobs, before.UsedBytes, after.UsedBytes)
	}
	// Deleting it once removes it; the shared record is gone for readers.
	if err := cl.Delete(ctx, id1); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Get(ctx, id1); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

// TestBlackholedRegionCostsLittle: a region whose traffic is silently
// dropped (not refused) must not stall reads for the per-shard timeout. The
// timeout here is 60 s, so the reads finish inside the test's 30 s deadline
// only because gets hedge to other shards.
func TestBlackholedRegionCostsLittle(t *testing.T) {
	c := start(t, Options{ShardTimeout: 60 * time.Second})
	cl := c.Client()
	blobs := corpus(13, 15)
	ids := putAll(t, cl, blobs)
	leader, err := c.WaitLeader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cut := otherRegion(c, leader.Region)
	c.Blackhole(cut)
	reader := c.Client(regionURLs(c, leader.Region)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, id := range ids {
		rc, err := reader.Get(ctx, id)
		if err != nil {
			t.Fatalf("get #%d with region %s blackholed: %v", i, cut, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, blobs[i]) {
			t.Fatalf("get #%d with region %s blackholed: %d bytes, %v", i, cut, len(got), err)
		}
	}
	c.Heal()
}

// leaderAndTwo returns the raft leader and two other members: a gateway
// and one to be cut from the leader (a lagging replica).
func leaderAndTwo(t *testing.T, c *Cluster) (leader, gateway, lagging *Member) {
	t.Helper()
	leader, err := c.WaitLeader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Members() {
		switch {
		case m == leader:
		case gateway == nil:
			gateway = m
		case lagging == nil:
			lagging = m
		}
	}
	return leader, gateway, lagging
}

// TestDeletedBlobIsNeverServed: once a delete is acknowledged, no gateway
// serves the blob — not the one that deleted it, and not one whose
// replica lags because it cannot hear the leader (it answers
// "unavailable", and the blob is gone once it catches up).
func TestDeletedBlobIsNeverServed(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 2, K: 3, M: 2})
	ctx := context.Background()
	leader, gateway, lagging := leaderAndTwo(t, c)
	data := randBytes(rand.New(rand.NewPCG(91, 91)), 2*chunk)
	id, err := c.Client(gateway.Node.URL()).Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	mustRead(t, c.Client(lagging.Node.URL()), id, data) // its replica has the blob
	// The lagging node stops hearing from the leader (only from it).
	lagging.Net.Block(leader.IP)
	leader.Net.Block(lagging.IP)
	if err := c.Client(gateway.Node.URL()).Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := getBytes(c.Client(gateway.Node.URL()), id); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("the deleting gateway: %v, want not found", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if got, err := c.Client(lagging.Node.URL()).Get(sctx, id); err == nil {
		got.Close()
		t.Fatal("a lagging gateway served a deleted blob")
	} else if errors.Is(err, blob.ErrNotFound) {
		t.Log("the lagging gateway already knew")
	}
	lagging.Net.Heal()
	leader.Net.Heal()
	if err := c.waitFor(ctx, "the lagging gateway to answer not found", func() bool {
		_, err := getBytes(c.Client(lagging.Node.URL()), id)
		return errors.Is(err, blob.ErrNotFound)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestClusterOverAWAN: with 30 ms between regions (node.Link, emulated in
// user space) the cluster forms, survives a region's loss and returns
// every byte — and the emulation is real: a put, which needs voters in two
// regions, takes at least one round trip between them.
func TestClusterOverAWAN(t *testing.T) {
	const oneWay = 15 * time.Millisecond
	c := start(t, Options{WAN: &WAN{Between: node.Link{Delay: oneWay, Jitter: 2 * time.Millisecond}, Within: node.Link{Delay: 250 * time.Microsecond}}})
	cl := c.Client()
	blobs := corpus(77, 6)
	began := time.Now()
	ids := putAll(t, cl, blobs[:1])
	if took := time.Since(began); took < 2*oneWay {
		t.Fatalf("a put across regions took %v, less than a round trip (%v): the WAN is not emulated", took, 2*oneWay)
	}
	ids = append(ids, putAll(t, cl, blobs[1:])...)
	if err := c.KillRegion(c.Regions()[0]); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		mustRead(t, c.Client(c.URLs()...), id, blobs[i])
	}
}
