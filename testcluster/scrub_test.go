package testcluster

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
)

// eachShard calls fn for every shard of every blob, as stat reports it.
func eachShard(cl *client.Client, ids []blob.ID, fn func(blob.ID, api.ChunkStat, api.ShardStat)) error {
	for _, id := range ids {
		st, err := cl.Stat(context.Background(), id)
		if err != nil {
			return err
		}
		for _, ch := range st.Chunks {
			for _, s := range ch.Shards {
				fn(id, ch, s)
			}
		}
	}
	return nil
}

// allShardsHealthy reports whether every shard of every blob verifies.
func allShardsHealthy(cl *client.Client, ids []blob.ID) bool {
	healthy := true
	err := eachShard(cl, ids, func(_ blob.ID, _ api.ChunkStat, s api.ShardStat) { healthy = healthy && s.Healthy })
	return err == nil && healthy
}

// TestScrubberRepairsBitRot flips bytes in two shards of every chunk; the
// scrubbers find and rebuild them, and a reader running all along never
// gets a wrong byte.
func TestScrubberRepairsBitRot(t *testing.T) {
	c := start(t, Options{ScrubInterval: 300 * time.Millisecond})
	cl := c.Client()
	blobs := corpus(31, 12)
	ids := putAll(t, cl, blobs)

	var wrong, reads atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		r := rand.New(rand.NewPCG(1, 1))
		for {
			select {
			case <-stop:
				return
			default:
			}
			i := r.IntN(len(ids))
			if got, err := getBytes(cl, ids[i]); err == nil {
				reads.Add(1)
				if !bytes.Equal(got, blobs[i]) {
					wrong.Add(1)
				}
			}
		}
	})

	rotted := 0
	onDisk := allShardsOnDisk(t, c)
	for _, id := range ids {
		st, err := cl.Stat(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range st.Chunks {
			for _, idx := range []int{1, len(ch.Shards) - 2} { // a data and a parity shard
				for _, d := range onDisk[ch.ID] {
					if d.node == ch.Shards[idx].Node && d.index == idx {
						d.damage(t, d.size-1-int64(idx), []byte{0x5a})
						rotted++
					}
				}
			}
		}
	}
	t.Logf("flipped a byte in %d shards", rotted)
	err := c.waitFor(context.Background(), "scrubbers to repair every shard", func() bool { return allShardsHealthy(cl, ids) })
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if wrong.Load() != 0 {
		t.Fatalf("%d of %d reads returned wrong bytes", wrong.Load(), reads.Load())
	}
	t.Logf("%d concurrent reads, all byte-exact", reads.Load())
	verifyAll(t, cl, ids, blobs)
}

// TestDeletedBlobsAreReclaimed: after a delete, the blob's shards leave
// every disk once the grace period has passed; a blob sharing chunks with
// it keeps them.
func TestDeletedBlobsAreReclaimed(t *testing.T) {
	c := start(t, Options{ScrubInterval: 300 * time.Millisecond, OrphanGrace: time.Second})
	ctx := context.Background()
	leader, _ := c.WaitLeader(ctx)
	cl := c.Client(leader.Node.URL())
	r := rand.New(rand.NewPCG(2, 2))
	shared := randBytes(r, 4*chunk)
	a := append(append([]byte{}, shared...), randBytes(r, 3*chunk)...)
	idA, err := cl.Put(ctx, bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	idB, err := cl.Put(ctx, bytes.NewReader(shared)) // B's 4 chunks are A's first 4
	if err != nil {
		t.Fatal(err)
	}
	full, _ := cl.Cluster(ctx)
	if err := cl.Delete(ctx, idA); err != nil {
		t.Fatal(err)
	}
	var after int64
	err = c.waitFor(ctx, "A's own shards to be reclaimed", func() bool {
		ci, err := cl.Cluster(ctx)
		after = ci.UsedBytes
		return err == nil && ci.UsedBytes*7 <= full.UsedBytes*4+7*4096
	})
	if err != nil {
		t.Fatalf("%v: %d bytes on disk, had %d with A (7 chunks) and B (4 shared)", err, after, full.UsedBytes)
	}
	got, err := getBytes(cl, idB)
	if err != nil || !bytes.Equal(got, shared) {
		t.Fatalf("B after reclaiming A: %d bytes, %v", len(got), err)
	}
	if err := cl.Delete(ctx, idB); err != nil {
		t.Fatal(err)
	}
	err = c.waitFor(ctx, "every shard to be reclaimed", func() bool {
		ci, err := cl.Cluster(ctx)
		after = ci.UsedBytes
		return err == nil && ci.UsedBytes == 0
	})
	if err != nil {
		t.Fatalf("%v: %d bytes still on disk", err, after)
	}
}
