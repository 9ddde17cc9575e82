package testcluster

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/placement"
)

// load runs two writers and two readers until stopped and counts failures.
type load struct {
	cl     *client.Client
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	blobs  map[blob.ID][]byte
	ids    []blob.ID
	errs   []error
	writes int
	reads  int
}

func startLoad(cl *client.Client, ids []blob.ID, blobs [][]byte) *load {
	l := &load{cl: cl, stop: make(chan struct{}), blobs: map[blob.ID][]byte{}}
	for i, id := range ids {
		l.blobs[id] = blobs[i]
		l.ids = append(l.ids, id)
	}
	for w := range 2 {
		r := rand.New(rand.NewPCG(uint64(w), 77))
		l.wg.Go(func() {
			for !l.stopped() {
				data := randBytes(r, r.IntN(4*chunk))
				id, err := l.cl.Put(context.Background(), bytes.NewReader(data))
				l.mu.Lock()
				l.writes++
				if err != nil {
					l.errs = append(l.errs, err)
				} else {
					l.blobs[id] = data
					l.ids = append(l.ids, id)
				}
				l.mu.Unlock()
			}
		})
	}
	for rd := range 2 {
		r := rand.New(rand.NewPCG(uint64(rd), 88))
		l.wg.Go(func() {
			for !l.stopped() {
				l.mu.Lock()
				id := l.ids[r.IntN(len(l.ids))]
				want := l.blobs[id]
				l.mu.Unlock()
				got, err := getBytes(l.cl, id)
				if err == nil && !bytes.Equal(got, want) {
					err = errors.New("wrong bytes for " + id.String())
				}
				l.mu.Lock()
				l.reads++
				if err != nil {
					l.errs = append(l.errs, err)
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *load) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// finish stops the load and fails the test on any failed request.
func (l *load) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	t.Logf("load: %d writes, %d reads, %d failed", l.writes, l.reads, len(l.errs))
	if len(l.errs) > 0 {
		t.Fatalf("%d requests failed under load; first: %v", len(l.errs), l.errs[0])
	}
}

// locations returns every chunk's shard nodes, keyed by chunk.
func locations(t *testing.T, cl *client.Client, ids []blob.ID) map[blob.ID][]blob.NodeID {
	t.Helper()
	out := map[blob.ID][]blob.NodeID{}
	for id, ch := range chunkStats(t, cl, ids) {
		for _, s := range ch.Shards {
			out[id] = append(out[id], s.Node)
		}
	}
	return out
}

// chunkStats returns the stat of every chunk of ids.
func chunkStats(t *testing.T, cl *client.Client, ids []blob.ID) map[blob.ID]api.ChunkStat {
	t.Helper()
	out := map[blob.ID]api.ChunkStat{}
	for _, id := range ids {
		st, err := cl.Stat(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range st.Chunks {
			out[ch.ID] = ch
		}
	}
	return out
}

// placementHolds reports whether every chunk sits exactly where placement
// over the active nodes puts it, by its own code.
func placementHolds(cl *client.Client, chunks map[blob.ID]api.ChunkStat) bool {
	ci, err := cl.Cluster(context.Background())
	if err != nil {
		return false
	}
	var active []placement.Node
	for _, n := range ci.Nodes {
		if n.InLayout && n.Placement == "active" {
			active = append(active, placement.Node{ID: n.ID, Region: n.Region, Zone: n.Zone})
		}
	}
	for chunk, ch := range chunks {
		want, err := placement.Policy{K: ch.K, M: ch.M}.Place(active, chunk)
		if err != nil {
			return false
		}
		var a []blob.NodeID
		for _, s := range ch.Shards {
			a = append(a, s.Node)
		}
		b := slices.Clone(want)
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			return false
		}
	}
	return true
}

func TestAddNodesUnderLoad(t *testing.T) {
	// NB: scrubbers every 500 ms on twelve nodes, under -race on two cores,
	// starved raft into endless elections and rebalancing into a crawl; a
	// put slower than OrphanGrace then had its shards reclaimed before its
	// commit (ARCHITECTURE: the grace must exceed the longest put).
	c := start(t, Options{OrphanGrace: 2 * time.Second, ScrubInterval: 2 * time.Second})
	cl := c.Client()
	blobs := corpus(41, 40)
	ids := putAll(t, cl, blobs)
	before := locations(t, cl, ids)
	l := startLoad(cl, ids, blobs)
	region := c.Regions()[0]
	for range 3 {
		if _, err := c.AddNode(region); err != nil {
			t.Fatal(err)
		}
	}
	err := c.waitFor(context.Background(), "rebalance onto the new nodes", func() bool {
		return placementHolds(cl, chunkStats(t, cl, ids))
	})
	time.Sleep(5 * time.Second) // readers keep going past the old copies' reclamation
	l.finish(t)
	if err != nil {
		t.Fatal(err)
	}
	after := locations(t, cl, ids)
	moved, total := 0, 0
	for chunk, nodes := range after {
		old := before[chunk]
		for _, n := range nodes {
			if !slices.Contains(old, n) {
				moved++
			}
		}
		total += len(nodes)
	}
	frac, ideal := float64(moved)/float64(total), 3.0/12
	t.Logf("moved %d of %d shards (%.3f); ideal %.3f", moved, total, frac, ideal)
	if frac > 1.5*ideal || moved == 0 {
		t.Fatalf("moved fraction %.3f, ideal %.3f", frac, ideal)
	}
}

func TestDrainUnderLoad(t *testing.T) {
	c := start(t, Options{OrphanGrace: 2 * time.Second, ScrubInterval: time.Second}) // NB: see TestAddNodesUnderLoad
	ctx := context.Background()
	cl := c.Client()
	blobs := corpus(51, 30)
	ids := putAll(t, cl, blobs)
	leader, _ := c.WaitLeader(ctx)
	var victim *Member
	for _, m := range c.Members() {
		if m.ID != leader.ID {
			victim = m
			break
		}
	}
	if err := cl.RemoveNode(ctx, victim.ID); err == nil {
		t.Fatal("removing a node that holds shards was allowed")
	}
	l := startLoad(c.Client(regionURLs(c, otherRegion(c, victim.Region))...), ids, blobs)
	if err := cl.DrainNode(ctx, victim.ID); err != nil {
		t.Fatal(err)
	}
	err := c.waitFor(ctx, "the drained node to end empty", func() bool {
		ci, err := cl.Cluster(ctx)
		if err != nil {
			return false
		}
		for _, n := range ci.Nodes {
			if n.ID == victim.ID {
				return n.Placement == "draining" && n.UsedBytes == 0 && ci.DegradedChunks == 0
			}
		}
		return false
	})
	l.finish(t)
	if err != nil {
		t.Fatal(err)
	}
	for chunk, nodes := range locations(t, cl, l.ids) {
		if slices.Contains(nodes, victim.ID) {
			t.Fatalf("chunk %s still has a shard on the drained node", chunk)
		}
	}
	if err := cl.RemoveNode(ctx, victim.ID); err != nil {
		t.Fatalf("removing the drained node: %v", err)
	}
	inLayout := func() bool {
		ci, err := cl.Cluster(ctx)
		if err != nil {
			return true
		}
		for _, n := range ci.Nodes {
			if n.ID == victim.ID && n.InLayout {
				return true
			}
		}
		return false
	}
	if err := c.waitFor(ctx, "the removed node to leave the layout", func() bool { return !inLayout() }); err != nil {
		t.Fatal(err)
	}
	// It is still running and gossiping, but is not added back.
	time.Sleep(2 * time.Second)
	if inLayout() {
		t.Fatal("the removed node was added back to the layout")
	}
}
