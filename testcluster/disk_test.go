package testcluster

import (
	"context"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/storage/faulty"
)

// TestFailingDisk: one node's disk starts failing — every read is EIO,
// every write finds the disk full. Blobs written before keep reading
// byte-exact from the other shards; new puts place that node's shards
// elsewhere and never list it; once the disk recovers, everything it held
// reads again.
func TestFailingDisk(t *testing.T) {
	c := start(t, Options{})
	bad := c.Members()[4]
	cl := c.Client(regionURLs(c, otherRegion(c, bad.Region))...) // gateways with healthy disks
	before := corpus(41, 8)
	beforeIDs := putAll(t, cl, before)

	bad.Disk.Inject(faulty.Fault{Ops: faulty.Fetch | faulty.Stat | faulty.Walk, Err: faulty.ErrIO})
	bad.Disk.Inject(faulty.Fault{Ops: faulty.Receive, Err: faulty.ErrNoSpace})
	verifyAll(t, cl, beforeIDs, before)

	after := corpus(42, 8)
	afterIDs := putAll(t, cl, after)
	verifyAll(t, cl, afterIDs, after)
	err := eachShard(cl, afterIDs, func(id blob.ID, ch api.ChunkStat, s api.ShardStat) {
		if s.Node == bad.ID {
			t.Errorf("blob %s placed shard %d of chunk %s on the failing disk of %s", id, s.Index, ch.ID, bad.ID)
		}
		if !s.Healthy {
			t.Errorf("blob %s written while %s failed has an unhealthy shard: %+v", id, bad.ID, s)
		}
	})
	if err != nil || t.Failed() {
		t.Fatal(err)
	}
	if bad.Disk.Hits() == 0 {
		t.Fatal("no fault fired: the test did not exercise the failing disk")
	}
	bad.Disk.Clear()
	if !allShardsHealthy(cl, beforeIDs) {
		t.Fatal("after the disk recovered, some shard of the earlier blobs is not healthy")
	}
}

// TestShardRotsBetweenWriteAndRead: a node's disk flips a bit in every
// shard it stores, after the shard passed its checks. Reads never return a
// wrong byte (the rotten shards are skipped), stat reports them corrupt,
// and the node's scrubber rebuilds every one of them.
func TestShardRotsBetweenWriteAndRead(t *testing.T) {
	c := start(t, Options{ScrubInterval: 300 * time.Millisecond})
	cl := c.Client()
	rotting := c.Members()[7]
	rotting.Disk.Inject(faulty.Fault{Ops: faulty.Receive, FlipBit: true})
	blobs := corpus(43, 10)
	ids := putAll(t, cl, blobs)
	rotting.Disk.Clear() // what it writes from now on (the repairs) stays good
	rotten := 0
	err := eachShard(cl, ids, func(_ blob.ID, _ api.ChunkStat, s api.ShardStat) {
		if s.Node == rotting.ID && s.State == "corrupt" {
			rotten++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	verifyAll(t, cl, ids, blobs)
	if rotten == 0 {
		t.Fatalf("no shard on %s reported corrupt (faults fired %d times)", rotting.ID, rotting.Disk.Hits())
	}
	t.Logf("%d shards rotted on %s; reads were byte-exact", rotten, rotting.ID)
	if err := c.waitFor(context.Background(), "the scrubber to rebuild the rotten shards", func() bool { return allShardsHealthy(cl, ids) }); err != nil {
		t.Fatal(err)
	}
	verifyAll(t, cl, ids, blobs)
}
