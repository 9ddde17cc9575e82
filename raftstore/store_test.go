package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/placement"
	"github.com/dgraph-io/badger/v4"
)

type testNode struct {
	id        blob.NodeID
	dir       string
	addr      string
	snapEvery uint64
	s         *Store
}

func startNode(t testing.TB, n *testNode) {
	t.Helper()
	s, err := Open(Options{Dir: n.dir, NodeID: n.id, Bind: n.addr, Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond, LeaderLease: 250 * time.Millisecond, SnapshotThreshold: n.snapEvery, TrailingLogs: n.snapEvery / 4})
	if err != nil {
		t.Fatal(err)
	}
	n.s = s
	n.addr = s.Addr()
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// followerOf returns the first running node that is not the leader.
func followerOf(nodes []*testNode) *testNode {
	for _, n := range nodes {
		if n.s != nil && !n.s.IsLeader() {
			return n
		}
	}
	return nil
}

func leaderOf(nodes []*testNode) *testNode {
	for _, n := range nodes {
		if n.s != nil && n.s.IsLeader() {
			return n
		}
	}
	return nil
}

// soloNode starts a bootstrapped one-node cluster, closed at the end of
// the test.
func soloNode(t *testing.T) *testNode {
	t.Helper()
	n := &testNode{id: "solo", dir: t.TempDir(), addr: "127.0.0.1:0"}
	startNode(t, n)
	t.Cleanup(func() { n.s.Close() })
	n.s.Bootstrap(n.id)
	return n
}

func mustApply(t testing.TB, nodes []*testNode, cmd Command) *Blob {
	t.Helper()
	var res *Blob
	waitFor(t, "apply", func() bool {
		l := leaderOf(nodes)
		if l == nil {
			return false
		}
		r, err := l.s.Apply(context.Background(), cmd)
		res = r.Blob
		if errors.Is(err, ErrNotLeader) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	})
	return res
}

func testBlob(i int, chunks ...blob.ID) Blob {
	b := Blob{ID: blob.Sum([]byte(fmt.Sprint("blob", i))), Size: int64(len(chunks)) * 10, K: 2, M: 1}
	for _, c := range chunks {
		b.Chunks = append(b.Chunks, Chunk{ID: c, Len: 10, Shards: []blob.NodeID{"a", "b", "c"}})
	}
	return b
}

// startCluster starts three nodes in three regions, bootstraps the first,
// and waits until all three are voters. snapEvery > 0 makes snapshots
// frequent. Nodes are closed at the end of the test.
func startCluster(t testing.TB, snapEvery uint64) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := range 3 {
		n := &testNode{id: blob.NodeID(fmt.Sprint("n", i)), dir: t.TempDir(), addr: fmt.Sprintf("127.0.0.%d:0", i+1), snapEvery: snapEvery}
		startNode(t, n)
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n.s != nil {
				n.s.Close()
			}
		}
	})
	if err := nodes[0].s.Bootstrap(nodes[0].id); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		cmd := SetMemberCommand(Member{Node: placement.Node{ID: n.id, Region: blob.Region(fmt.Sprint("r", i))}, Raft: n.addr})
		mustApply(t, nodes, cmd)
	}
	waitFor(t, "three voters", func() bool {
		l := leaderOf(nodes)
		if l == nil {
			return false
		}
		lay, _ := l.s.Layout()
		l.s.Reconcile(lay, allAlive(lay))
		sv, _ := l.s.Servers()
		voters := 0
		for _, s := range sv {
			if s.Voter {
				voters++
			}
		}
		return voters == 3
	})
	return nodes
}

func TestClusterReplicatesAndSurvivesLeaderLoss(t *testing.T) {
	nodes := startCluster(t, 0)
	// Many entries so that a snapshot + compaction happens later.
	shared := blob.Sum([]byte("shared chunk"))
	for i := range 50 {
		cmd := PutBlobCommand(testBlob(i, shared, blob.Sum([]byte(fmt.Sprint("own", i)))))
		mustApply(t, nodes, cmd)
	}
	b0 := testBlob(0).ID
	for _, n := range nodes {
		waitFor(t, "replication to "+string(n.id), func() bool {
			b, err := n.s.Blob(b0)
			return err == nil && len(b.Chunks) == 2 && len(b.Chunks[0].Shards) == 3
		})
	}
	// Kill the leader: a new one is elected among the other two, and writes go on.
	old := leaderOf(nodes)
	old.s.Close()
	old.s = nil
	start := time.Now()
	cmd := PutBlobCommand(testBlob(100, blob.Sum([]byte("after"))))
	mustApply(t, nodes, cmd)
	t.Logf("write after leader loss committed in %v", time.Since(start))
	// The old leader comes back and catches up.
	startNode(t, old)
	waitFor(t, "catch-up", func() bool {
		_, err := old.s.Blob(testBlob(100).ID)
		return err == nil
	})
	blobs, _, _ := old.s.Stats()
	if blobs != 51 {
		t.Fatalf("restarted node has %d blobs, want 51", blobs)
	}
}

func TestRefcountsAndDedup(t *testing.T) {
	n := soloNode(t)
	nodes := []*testNode{n}
	shared, onlyA := blob.Sum([]byte("s")), blob.Sum([]byte("a"))
	a := testBlob(1, shared, onlyA, shared)
	b := testBlob(2, shared)
	for _, x := range []Blob{a, a, b} { // a twice: stored once
		cmd := PutBlobCommand(x)
		mustApply(t, nodes, cmd)
	}
	del := DeleteBlobCommand(a.ID)
	mustApply(t, nodes, del)
	if _, err := n.s.Blob(a.ID); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("deleted blob: %v", err)
	}
	if !hasChunk(n.s, shared) || hasChunk(n.s, onlyA) {
		t.Fatalf("after deleting a: shared=%v onlyA=%v, want true false", hasChunk(n.s, shared), hasChunk(n.s, onlyA))
	}
	if got, err := n.s.Blob(b.ID); err != nil || len(got.Chunks[0].Shards) != 3 {
		t.Fatalf("b after deleting a: %+v %v", got, err)
	}
	if _, err := n.s.Apply(context.Background(), del); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("second delete = %v, want not found", err)
	}
	// Restart: the FSM is persistent and replays nothing twice.
	n.s.Close()
	startNode(t, n)
	waitFor(t, "leader after restart", func() bool { return n.s.IsLeader() })
	if blobs, size, _ := n.s.Stats(); blobs != 1 || size != 10 {
		t.Fatalf("after restart: %d blobs, %d bytes", blobs, size)
	}
	if !hasChunk(n.s, shared) || hasChunk(n.s, onlyA) {
		t.Fatal("refcounts changed across restart")
	}
}

func TestDesiredVotersSpreadRegions(t *testing.T) {
	var l Layout
	for r := range 3 {
		for i := range 3 {
			l.Nodes = append(l.Nodes, Member{Node: placement.Node{ID: blob.NodeID(fmt.Sprintf("r%d-n%d", r, i)), Region: blob.Region(fmt.Sprint("r", r))}})
		}
	}
	v := DesiredVoters(l, nil, allAlive(l))
	per := map[blob.Region]int{}
	for id := range v {
		m, _ := l.Member(id)
		per[m.Region]++
	}
	if len(v) != 5 || per["r0"] != 2 || per["r1"] != 2 || per["r2"] != 1 {
		t.Fatalf("voters %v per region %v", v, per)
	}
	// Losing any region keeps a majority of 5.
	for r, c := range per {
		if len(v)-c <= len(v)/2 {
			t.Fatalf("losing %s leaves %d of %d voters", r, len(v)-c, len(v))
		}
	}
	// Current voters are kept in preference to lower IDs.
	cur := map[blob.NodeID]bool{"r2-n2": true}
	if !DesiredVoters(l, cur, allAlive(l))["r2-n2"] {
		t.Fatal("current voter r2-n2 was dropped")
	}
	// A node that is down is never promoted; a dead-declared one loses its vote.
	alive := allAlive(l)
	alive["r0-n0"] = false
	if DesiredVoters(l, nil, alive)["r0-n0"] {
		t.Fatal("a down node was chosen as a new voter")
	}
	l.Nodes[0].State = StateDead
	if DesiredVoters(l, map[blob.NodeID]bool{"r0-n0": true}, allAlive(l))["r0-n0"] {
		t.Fatal("a node declared dead kept its vote")
	}
}

func hasChunk(s *Store, id blob.ID) bool {
	_, err := s.Chunk(id)
	return err == nil
}

// TestSnapshotCatchUp: a follower that misses more than the retained log
// catches up through InstallSnapshot (Persist on the leader, Restore on
// the follower), and then replays later entries on top.
func TestSnapshotCatchUp(t *testing.T) {
	nodes := startCluster(t, 40)
	lagger := followerOf(nodes)
	lagger.s.Close()
	lagger.s = nil
	shared := blob.Sum([]byte("shared"))
	for i := range 300 {
		cmd := PutBlobCommand(testBlob(i, shared, blob.Sum([]byte(fmt.Sprint("c", i)))))
		mustApply(t, nodes, cmd)
	}
	del := DeleteBlobCommand(testBlob(7).ID)
	mustApply(t, nodes, del)
	leader := leaderOf(nodes)
	waitFor(t, "log compaction on the leader", func() bool {
		si := leader.s.raft.Stats()["last_snapshot_index"]
		return si != "0" && si != ""
	})
	startNode(t, lagger)
	// NB: raft records the install only after the FSM's Restore returns,
	// so the state can show up here a moment before the snapshot index.
	waitFor(t, "catch-up by snapshot (an installed snapshot and every blob)", func() bool {
		n, _, _ := lagger.s.Stats()
		si := lagger.s.raft.Stats()["last_snapshot_index"]
		return n == 299 && si != "0" && si != ""
	})
	if _, err := lagger.s.Blob(testBlob(7).ID); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("deleted blob present after snapshot install: %v", err)
	}
	if c, err := lagger.s.Chunk(shared); err != nil || len(c.Shards) != 3 {
		t.Fatalf("shared chunk after snapshot install: %+v %v", c, err)
	}
	// A restart after the install keeps the state (no snapshot reload, no double apply).
	lagger.s.Close()
	startNode(t, lagger)
	waitFor(t, "state after restart", func() bool {
		n, _, _ := lagger.s.Stats()
		return n == 299
	})
	lay, _ := lagger.s.Layout()
	if len(lay.Nodes) != 3 {
		t.Fatalf("layout after snapshot install has %d nodes", len(lay.Nodes))
	}
}

func allAlive(l Layout) map[blob.NodeID]bool {
	m := map[blob.NodeID]bool{}
	for _, n := range l.Nodes {
		m[n.ID] = true
	}
	return m
}

// TestStagedChunks: a staged chunk exists without a blob, a manifest that
// reuses it takes a reference, and only unreferenced chunks staged before
// the cutoff are dropped.
func TestStagedChunks(t *testing.T) {
	n := soloNode(t)
	nodes := []*testNode{n}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	used, abandoned, fresh := blob.Sum([]byte("u")), blob.Sum([]byte("x")), blob.Sum([]byte("f"))
	stage := func(id blob.ID, at time.Time) {
		cmd := StageChunkCommand(StagedChunk{Chunk: Chunk{ID: id, Len: 10, Shards: []blob.NodeID{"a", "b", "c"}, K: 2, M: 1}, At: at})
		mustApply(t, nodes, cmd)
	}
	stage(used, t0)
	stage(abandoned, t0)
	stage(fresh, t0)
	stage(fresh, t0.Add(time.Hour)) // staged again: its clock restarts
	touched := blob.Sum([]byte("t"))
	stage(touched, t0)
	touch := TouchStagedCommand(TouchStaged{IDs: []blob.ID{touched}, At: t0.Add(time.Hour)})
	mustApply(t, nodes, touch) // found by a have-check: its clock restarts too
	bad := StageChunkCommand(StagedChunk{Chunk: Chunk{ID: blob.Sum([]byte("bad")), Len: 10, Shards: []blob.NodeID{"a"}, K: 2, M: 1}, At: t0})
	if _, err := leaderOf(nodes).s.Apply(context.Background(), bad); err == nil {
		t.Fatal("a staged chunk with 1 of 3 shard locations was accepted")
	}
	b := testBlob(1, used)
	b.Chunks[0].Reused = true
	cmd := PutBlobCommand(b)
	mustApply(t, nodes, cmd)

	cutoff := t0.Add(30 * time.Minute)
	got, err := n.s.AbandonedChunks(cutoff)
	if err != nil || len(got) != 1 || got[0] != abandoned {
		t.Fatalf("abandoned = %v, %v; want [%s]", got, err, abandoned)
	}
	if un, _ := n.s.Unclaimed([]blob.ID{used, abandoned, touched}); len(un) != 2 || un[0] != abandoned || un[1] != touched {
		t.Fatalf("unclaimed = %v, want [abandoned touched]", un)
	}
	drop := DropStagedCommand(DropStaged{IDs: []blob.ID{used, abandoned, fresh, touched}, Before: cutoff})
	mustApply(t, nodes, drop)
	if !hasChunk(n.s, used) || hasChunk(n.s, abandoned) || !hasChunk(n.s, fresh) || !hasChunk(n.s, touched) {
		t.Fatalf("after drop: used=%v abandoned=%v fresh=%v, want true false true", hasChunk(n.s, used), hasChunk(n.s, abandoned), hasChunk(n.s, fresh))
	}
	// The reference the blob took is real: deleting the blob frees the chunk.
	del := DeleteBlobCommand(b.ID)
	mustApply(t, nodes, del)
	if hasChunk(n.s, used) {
		t.Fatal("chunk kept after its only blob was deleted")
	}
	// A manifest may not name a chunk that is gone, and a rejected one
	// changes nothing: the reference it took on fresh before meeting the
	// dropped chunk is not kept.
	b2 := testBlob(2, fresh, abandoned)
	b2.Chunks[0].Reused, b2.Chunks[1].Reused = true, true
	cmd = PutBlobCommand(b2)
	if _, err := leaderOf(nodes).s.Apply(context.Background(), cmd); !errors.Is(err, ErrChunkGone) {
		t.Fatalf("manifest over a dropped chunk: %v, want ErrChunkGone", err)
	}
	if un, _ := n.s.Unclaimed([]blob.ID{fresh}); len(un) != 1 {
		t.Fatal("a rejected put kept a reference to a chunk")
	}
}

// TestReadIndexIsLinearizable: after a write is acknowledged, a follower
// that waits for a read index obtained afterwards sees it, also when many
// readers share one barrier.
func TestReadIndexIsLinearizable(t *testing.T) {
	nodes := startCluster(t, 0)
	ctx := context.Background()
	for i := range 20 {
		b := testBlob(100+i, blob.Sum([]byte{byte(i)}))
		cmd := PutBlobCommand(b)
		mustApply(t, nodes, cmd)
		l := leaderOf(nodes)
		var wg sync.WaitGroup
		for _, n := range nodes {
			for range 4 {
				wg.Go(func() {
					idx, err := l.s.ReadIndex(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					if err := n.s.WaitApplied(ctx, idx); err != nil {
						t.Error(err)
						return
					}
					if _, err := n.s.Blob(b.ID); err != nil {
						t.Errorf("%s after its read index: blob %d: %v", n.id, i, err)
					}
				})
			}
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	for _, n := range nodes {
		if n != leaderOf(nodes) {
			if _, err := n.s.ReadIndex(ctx); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("read index on a follower: %v", err)
			}
			break
		}
	}
}

// TestLayoutCache: the cached layout follows every layout command and a
// restore, and callers cannot change it through what they were given.
func TestLayoutCache(t *testing.T) {
	n := soloNode(t)
	set := func(id string) {
		t.Helper()
		waitFor(t, "apply", func() bool {
			_, err := n.s.Apply(context.Background(), SetMemberCommand(Member{Node: placement.Node{ID: blob.NodeID(id), Region: "r"}}))
			return err == nil
		})
	}
	set("a")
	l, err := n.s.Layout()
	if err != nil || len(l.Nodes) != 1 {
		t.Fatalf("layout %+v, %v", l, err)
	}
	l.Nodes[0].Region = "changed by a caller"
	if again, _ := n.s.Layout(); again.Nodes[0].Region != "r" {
		t.Fatal("a caller changed the cached layout")
	}
	set("b")
	if l, _ := n.s.Layout(); len(l.Nodes) != 2 {
		t.Fatalf("the cache missed a SetMember: %+v", l)
	}
	var snap bytes.Buffer
	if err := n.s.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	set("c")
	if l, _ := n.s.Layout(); len(l.Nodes) != 3 { // cached with three
		t.Fatalf("layout %+v", l)
	}
	if err := n.s.RestoreSnapshot(bytes.NewReader(snap.Bytes()), int64(snap.Len()), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restored layout", func() bool { l, _ := n.s.Layout(); return len(l.Nodes) == 2 })
}

// TestReadIndexAfterLeaderChange: writes the old leader acknowledged are
// covered by the new leader's very first read index (it applies a barrier
// of its own term before trusting its applied index).
func TestReadIndexAfterLeaderChange(t *testing.T) {
	nodes := startCluster(t, 0)
	ctx := context.Background()
	var ids []blob.ID
	for i := range 30 {
		b := testBlob(300+i, blob.Sum([]byte{byte(i), 3}))
		mustApply(t, nodes, PutBlobCommand(b))
		ids = append(ids, b.ID)
	}
	old := leaderOf(nodes)
	old.s.Close()
	var rest []*testNode
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	var l *testNode
	waitFor(t, "a new leader", func() bool { l = leaderOf(rest); return l != nil })
	var idx uint64
	waitFor(t, "a read index", func() bool {
		var err error
		idx, err = l.s.ReadIndex(ctx)
		return err == nil
	})
	for _, n := range rest {
		if err := n.s.WaitApplied(ctx, idx); err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			if _, err := n.s.Blob(id); err != nil {
				t.Fatalf("%s after the new leader's first read index: blob %d: %v", n.id, i, err)
			}
		}
	}
	old.s = nil // closed above
}

// TestRestartReplaysLostApplies: applies are not synced (the log is), so a
// power loss can take the state machine's last applies with it. Simulated
// here by giving a stopped follower the state machine it had ten applies
// earlier while its log keeps them: the restarted node must replay them
// and end exactly where the others are.
func TestRestartReplaysLostApplies(t *testing.T) {
	nodes := startCluster(t, 0)
	put := func(from, to int) {
		for i := from; i < to; i++ {
			mustApply(t, nodes, PutBlobCommand(testBlob(i, blob.Sum([]byte("shared")), blob.Sum([]byte(fmt.Sprint("c", i))))))
		}
	}
	f := followerOf(nodes)
	blobs := func() int { n, _, _ := f.s.Stats(); return n }
	fsmOf := func() []byte {
		var b bytes.Buffer
		if err := writeFSM(f.s.db.NewTransaction(false), &b, false); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	put(0, 20)
	waitFor(t, "the follower applies 20", func() bool { return blobs() == 20 })
	earlier := fsmOf()
	put(20, 30)
	waitFor(t, "the follower applies 30", func() bool { return blobs() == 30 })
	want := fsmOf()
	f.s.fsm.mu.Lock()
	appliedAt30 := f.s.fsm.applied
	f.s.fsm.mu.Unlock()
	f.s.Close()
	f.s = nil

	db, err := badger.Open(badgerOptions(filepath.Join(f.dir, "raft", "db")))
	if err != nil {
		t.Fatal(err)
	}
	f2 := &fsm{db: db, changed: make(chan struct{})}
	if err := f2.Restore(io.NopCloser(bytes.NewReader(earlier))); err != nil {
		t.Fatal(err)
	}
	if f2.applied >= appliedAt30 {
		t.Fatalf("rolled back to applied index %d, not before %d", f2.applied, appliedAt30)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	startNode(t, f)
	waitFor(t, "the lost applies replayed", func() bool { return blobs() == 30 })
	if got := fsmOf(); !bytes.Equal(got, want) {
		t.Fatalf("state after replay differs from the state before the loss (%d vs %d bytes)", len(got), len(want))
	}
	if c, err := f.s.Chunk(blob.Sum([]byte("shared"))); err != nil || c.Shards == nil {
		t.Fatalf("shared chunk: %+v %v", c, err)
	}
}
