package raftstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

func openFSM(t testing.TB) *fsm {
	t.Helper()
	db, err := badger.Open(badgerOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f, err := newFSM(db)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestApplyCoversEveryCommand: the apply switch has a case for every
// operation a Command can hold (adding a field without a case fails here).
func TestApplyCoversEveryCommand(t *testing.T) {
	f := openFSM(t)
	typ := reflect.TypeFor[Command]()
	ops := 0
	for i := range typ.NumField() {
		field := typ.Field(i)
		if field.Type.Kind() != reflect.Pointer {
			continue
		}
		ops++
		var c Command
		reflect.ValueOf(&c).Elem().Field(i).Set(reflect.New(field.Type.Elem()))
		err := update(f.db, func(txn *tx) error {
			if res := apply(txn, c); errors.Is(res.Err, errUnknownCommand) {
				t.Errorf("Command.%s has no apply case", field.Name)
			}
			return errRejected // leave nothing behind
		})
		if !errors.Is(err, errRejected) {
			t.Fatal(err)
		}
	}
	if ops < 19 {
		t.Fatalf("only %d operations found", ops)
	}
}

// Entries no replica can apply — undecodable, of a newer version, with no
// operation or two — are rejected the same way on every replica: an error
// result, the applied index moves on, nothing else changes, and no panic
// (which would recur on every replica and at every replay).
func TestUnapplicableEntriesAreRejected(t *testing.T) {
	f := openFSM(t)
	blobCmd := PutBlobCommand(testBlob(1))
	two := PutBlobCommand(testBlob(2))
	third := testBlob(3).ID
	two.DeleteBlob = &third
	newer := PutBlobCommand(testBlob(4))
	newer.V = CommandVersion + 1
	encode := func(c Command) []byte { b, _ := json.Marshal(c); return b }
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"undecodable", []byte(`{"put_blob": [`), "undecodable"},
		{"wrong types", []byte(`{"delete_blob": 42}`), "undecodable"},
		{"empty", []byte(`{}`), "0 operations"},
		{"two operations", encode(two), "2 operations"},
		{"newer version", encode(newer), fmt.Sprintf("version %d", CommandVersion+1)},
	}
	for i, c := range cases {
		res, _ := f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: c.data}).(applyResult)
		if res.Err == nil || !strings.Contains(res.Err.Error(), c.want) {
			t.Errorf("%s: result %v, want an error about %q", c.name, res.Err, c.want)
		}
		if f.applied != uint64(i+1) {
			t.Errorf("%s: applied index %d, want %d", c.name, f.applied, i+1)
		}
	}
	blobs := 0
	view(f.db, func(txn *tx) error {
		return txn.scan(blobKey(testBlob(1).ID)[:2], nil, func(_, _ []byte) (bool, error) { blobs++; return true, nil })
	})
	if blobs != 0 {
		t.Fatalf("rejected entries left %d blob records", blobs)
	}
	// A good command after them applies normally.
	res, _ := f.Apply(&raft.Log{Type: raft.LogCommand, Index: 10, Data: encode(blobCmd)}).(applyResult)
	if res.Err != nil || res.Blob == nil || res.Blob.ID != testBlob(1).ID {
		t.Fatalf("a good command after rejected ones: %+v", res)
	}
}

// bigBlob is a PutBlob of n chunks with nine realistic node IDs each.
func bigBlob(seed string, n int) Blob {
	b := Blob{ID: blob.Sum([]byte(seed)), K: 6, M: 3}
	shards := []blob.NodeID{"eu-west-1", "eu-west-2", "eu-west-3", "us-east-1", "us-east-2", "us-east-3", "ap-south-1", "ap-south-2", "ap-south-3"}
	for i := range n {
		b.Chunks = append(b.Chunks, Chunk{ID: blob.Sum([]byte(fmt.Sprint(seed, i))), Len: 4 << 20, Shards: shards})
	}
	return b
}

// TestOversizedCommandsAreRejected: a committed entry too large for one
// metadata transaction — at any size around badger's limit, including the
// sizes where only the applied index no longer fits — is rejected like any
// other failing command, never a panic; the FSM goes on.
func TestOversizedCommandsAreRejected(t *testing.T) {
	fits := func(n int) bool {
		f := openFSM(t)
		err := update(f.db, func(txn *tx) error { return apply(txn, PutBlobCommand(bigBlob("probe", n))).Err })
		return err == nil
	}
	lo, hi := MaxChunksPerCommand, 4*MaxChunksPerCommand // lo fits, hi does not
	if !fits(lo) || fits(hi) {
		t.Fatalf("the transaction limit is not between %d and %d chunks", lo, hi)
	}
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; fits(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	t.Logf("one transaction holds a PutBlob of %d chunks (MaxChunksPerCommand %d)", lo, MaxChunksPerCommand)
	for n := lo - 2; n <= lo+2; n++ {
		f := openFSM(t)
		data, _ := json.Marshal(PutBlobCommand(bigBlob("probe", n)))
		res := f.Apply(&raft.Log{Type: raft.LogCommand, Index: 1, Data: data}).(applyResult)
		if f.applied != 1 {
			t.Fatalf("%d chunks: applied index %d, want 1", n, f.applied)
		}
		if res.Err != nil && !errors.Is(res.Err, blob.ErrTooLarge) {
			t.Fatalf("%d chunks: %v", n, res.Err)
		}
		next, _ := json.Marshal(DeleteBlobCommand(bigBlob("probe", n).ID))
		if res := f.Apply(&raft.Log{Type: raft.LogCommand, Index: 2, Data: next}).(applyResult); f.applied != 2 {
			t.Fatalf("%d chunks: the next command was not applied: %v", n, res.Err)
		}
	}
}

// TestPoisonPillThroughRaft: an entry no replica can apply, committed
// through raft by going around Store.Apply's checks, is rejected on every
// replica; the cluster keeps committing, and a replica restarted on the
// same data replays the log cleanly.
func TestPoisonPillThroughRaft(t *testing.T) {
	nodes := startCluster(t, 0)
	l := leaderOf(nodes)
	if _, err := l.s.Apply(context.Background(), PutBlobCommand(bigBlob("pill", MaxChunksPerCommand+1))); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("Apply of %d chunks: %v, want ErrTooLarge before proposing", MaxChunksPerCommand+1, err)
	}
	pills := [][]byte{[]byte(`{"put_blob": {"chunks": 7`)}
	big, _ := json.Marshal(PutBlobCommand(bigBlob("pill", 3*MaxChunksPerCommand)))
	pills = append(pills, big)
	for _, p := range pills {
		var res applyResult
		waitFor(t, "a pill committed", func() bool { // NB: retried across elections (-race on two cores)
			l := leaderOf(nodes)
			if l == nil {
				return false
			}
			f := l.s.raft.Apply(p, 10*time.Second)
			if f.Error() != nil {
				return false
			}
			res, _ = f.Response().(applyResult)
			return true
		})
		if res.Err == nil {
			t.Fatalf("a poison pill of %d bytes was applied", len(p))
		}
	}
	after := testBlob(77, blob.Sum([]byte("after the pills")))
	mustApply(t, nodes, PutBlobCommand(after))
	for _, n := range nodes {
		waitFor(t, "every replica past the pills", func() bool { _, err := n.s.Blob(after.ID); return err == nil })
	}
	// A follower restarted on the same data replays cleanly.
	var f *testNode
	for _, n := range nodes {
		if n != leaderOf(nodes) {
			f = n
			break
		}
	}
	f.s.Close()
	f.s = nil
	startNode(t, f)
	if b, err := f.s.Blob(after.ID); err != nil || b.ID != after.ID {
		t.Fatalf("after a restart: %v", err)
	}
	if _, err := f.s.Blob(bigBlob("pill", 3*MaxChunksPerCommand).ID); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("the pill left a record: %v", err)
	}
	mustApply(t, nodes, PutBlobCommand(testBlob(78, blob.Sum([]byte("and after the restart")))))
}

// TestStagedChunkDecodesOldCode: entries before version 3 wrote a staged
// chunk's code as "K" and "M" beside the embedded chunk; they decode into
// the chunk's own code.
func TestStagedChunkDecodesOldCode(t *testing.T) {
	var sc StagedChunk
	if err := json.Unmarshal([]byte(`{"id":"`+blob.Sum([]byte("x")).String()+`","len":10,"shards":["a","b","c"],"K":2,"M":1,"at":"2026-01-02T03:04:05Z"}`), &sc); err != nil {
		t.Fatal(err)
	}
	if sc.K != 2 || sc.M != 1 || len(sc.Shards) != 3 {
		t.Fatalf("decoded %+v", sc)
	}
}

// TestOwnCodeNeedsVersion3: a chunk whose code differs from its blob's is
// version 3 (an older replica would apply it with the blob's code); one
// that states the blob's own code is not.
func TestOwnCodeNeedsVersion3(t *testing.T) {
	b := testBlob(1, blob.Sum([]byte("c")))
	b.K, b.M = 6, 3
	b.Chunks[0].K, b.Chunks[0].M = 6, 3
	if v := PutBlobCommand(b).Version(); v != 1 {
		t.Fatalf("a chunk of the blob's own code: version %d", v)
	}
	b.Chunks[0].K, b.Chunks[0].M = 3, 3
	if v := PutBlobCommand(b).Version(); v != 3 {
		t.Fatalf("a chunk of another code: version %d", v)
	}

	// Applied, the chunk's record has its own code, and reads carry it.
	n := soloNode(t)
	b.Chunks[0].Shards = []blob.NodeID{"a", "b", "c", "d", "e", "f"}
	mustApply(t, []*testNode{n}, PutBlobCommand(b))
	if c, err := n.s.Chunk(b.Chunks[0].ID); err != nil || c.K != 3 || c.M != 3 || len(c.Shards) != 6 {
		t.Fatalf("chunk record: %+v %v", c, err)
	}
	if got, err := n.s.Blob(b.ID); err != nil || got.K != 6 || got.Chunks[0].K != 3 || got.Chunks[0].M != 3 {
		t.Fatalf("blob record: %+v %v", got, err)
	}
	b.ID, b.Chunks[0].ID, b.Chunks[0].Shards = blob.Sum([]byte("other")), blob.Sum([]byte("d")), b.Chunks[0].Shards[:3]
	if _, err := n.s.Apply(context.Background(), PutBlobCommand(b)); err == nil {
		t.Fatal("a chunk with 3 locations for 3+3 was accepted")
	}
}

// TestApplyBatchMatchesApply: a batch applied in one transaction, or
// entry by entry after a rejection inside it, leaves the state and the
// results exactly as applying its entries one at a time does.
func TestApplyBatchMatchesApply(t *testing.T) {
	entry := func(i uint64, c Command) *raft.Log {
		c.V = c.Version()
		data, _ := json.Marshal(c)
		return &raft.Log{Index: i, Type: raft.LogCommand, Data: data}
	}
	shared := blob.Sum([]byte("shared"))
	gone := testBlob(9, blob.Sum([]byte("gone")))
	gone.Chunks[0].Reused = true // a reused chunk that is not there: rejected
	clean := []*raft.Log{
		entry(1, PutBlobCommand(testBlob(1, shared))),
		entry(2, PutBlobCommand(testBlob(2, shared, blob.Sum([]byte("two"))))),
		{Index: 3, Type: raft.LogConfiguration},
		entry(4, DeleteBlobCommand(testBlob(1).ID)),
	}
	rejecting := append(slices.Clone(clean), entry(5, PutBlobCommand(gone)), entry(6, PutBlobCommand(testBlob(3, shared))))
	for name, logs := range map[string][]*raft.Log{"clean": clean, "with a rejection": rejecting} {
		one, batch := openFSM(t), openFSM(t)
		var want []any
		for _, l := range logs {
			want = append(want, one.Apply(l))
		}
		got := batch.ApplyBatch(logs)
		describe := func(rs []any) string {
			out := ""
			for _, r := range rs {
				if res, ok := r.(applyResult); ok && res.Blob != nil {
					out += fmt.Sprintf("[%+v %v]", *res.Blob, res.Err)
				} else {
					out += fmt.Sprintf("[%v]", r)
				}
			}
			return out
		}
		if describe(got) != describe(want) {
			t.Errorf("%s: results\n got %s\nwant %s", name, describe(got), describe(want))
		}
		var a, b bytes.Buffer
		writeFSM(one.db.NewTransaction(false), &a, false)
		writeFSM(batch.db.NewTransaction(false), &b, false)
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("%s: state differs (%d vs %d bytes)", name, a.Len(), b.Len())
		}
		if batch.applied != logs[len(logs)-1].Index && logs[len(logs)-1].Type == raft.LogCommand {
			t.Errorf("%s: applied index %d", name, batch.applied)
		}
		// A replay of the same batch changes nothing.
		batch.ApplyBatch(logs)
		var c bytes.Buffer
		writeFSM(batch.db.NewTransaction(false), &c, false)
		if !bytes.Equal(c.Bytes(), b.Bytes()) {
			t.Errorf("%s: a replayed batch changed the state", name)
		}
	}
}
