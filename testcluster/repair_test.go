package testcluster

import (
	"context"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
)

// waitDegraded waits until the cluster has noticed damage.
func waitDegraded(t *testing.T, c *Cluster, cl *client.Client) {
	t.Helper()
	err := c.waitFor(context.Background(), "the cluster to notice degraded chunks", func() bool {
		ci, err := cl.Cluster(context.Background())
		return err == nil && ci.DegradedChunks > 0
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitRepaired waits until the cluster reports no degraded chunk and no
// repair in progress.
func waitRepaired(t *testing.T, c *Cluster, cl *client.Client) *api.ClusterInfo {
	t.Helper()
	var ci *api.ClusterInfo
	err := c.waitFor(context.Background(), "repair to finish", func() bool {
		var err error
		ci, err = cl.Cluster(context.Background())
		return err == nil && ci.DegradedChunks == 0 && !ci.Repair.Running && ci.Repair.Total == 0
	})
	if err != nil {
		t.Fatalf("%v (last view: degraded %d, repair %+v)", err, ci.DegradedChunks, ci.Repair)
	}
	return ci
}

// assertFullRedundancy checks every shard of every blob is healthy and on
// a live node, and at most maxPerRegion shards of a chunk share a region.
func assertFullRedundancy(t *testing.T, cl *client.Client, ids []blob.ID, dead blob.Region, maxPerRegion int) {
	t.Helper()
	for _, id := range ids {
		st, err := cl.Stat(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for ci, ch := range st.Chunks {
			per := map[blob.Region]int{}
			for _, s := range ch.Shards {
				if !s.Healthy || s.Region == dead {
					t.Fatalf("blob %s chunk %d shard %d: %+v", id, ci, s.Index, s)
				}
				per[s.Region]++
			}
			for r, n := range per {
				if n > maxPerRegion {
					t.Fatalf("blob %s chunk %d: %d shards in region %s", id, ci, n, r)
				}
			}
		}
	}
}

// TestRepairAfterRegionLoss: a region dies; after the grace period every
// chunk is rebuilt to k+m healthy shards on the survivors, so the cluster
// survives one more node's loss.
func TestRepairAfterRegionLoss(t *testing.T) {
	c := start(t, Options{DeadAfter: time.Second})
	cl := client.New(c.URLs()...)
	blobs := corpus(21, 100)
	ids := putAll(t, cl, blobs)
	leader, _ := c.WaitLeader(context.Background())
	victim := otherRegion(c, leader.Region)
	c.KillRegion(victim)
	start := time.Now()
	waitDegraded(t, c, cl)
	waitRepaired(t, c, cl)
	t.Logf("from region kill to full redundancy: %v (grace 1 s)", time.Since(start).Round(time.Millisecond))
	assertFullRedundancy(t, cl, ids, victim, 9)
	// One more loss in a surviving region: still everything reads.
	for _, m := range c.Members() {
		if m.Region != victim && m.Node != nil && m.ID != leader.ID {
			c.KillNode(m.ID)
			break
		}
	}
	verifyAll(t, cl, ids, blobs)
}
