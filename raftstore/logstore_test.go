package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atollstore/atoll/blob"
	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	raftbench "github.com/hashicorp/raft/bench"
)

func openLogStore(t testing.TB, dir string) (*logStore, *badger.DB) {
	t.Helper()
	db, err := badger.Open(badgerOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	s, err := newLogStore(db)
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

func logs(from, to uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, &raft.Log{Index: i, Term: 1 + i/100, Type: raft.LogCommand, Data: []byte{byte(i), byte(i >> 8)}})
	}
	return out
}

func bounds(t *testing.T, s *logStore, first, last uint64) {
	t.Helper()
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	if f != first || l != last {
		t.Fatalf("bounds = %d..%d, want %d..%d", f, l, first, last)
	}
}

func TestLogStoreContract(t *testing.T) {
	dir := t.TempDir()
	s, db := openLogStore(t, dir)
	bounds(t, s, 0, 0)
	var got raft.Log
	if err := s.GetLog(1, &got); err != raft.ErrLogNotFound {
		t.Fatalf("GetLog on empty store = %v, want raft.ErrLogNotFound itself", err)
	}
	// Indexes around 255/256 check that key order is numeric order.
	if err := s.StoreLogs(logs(1, 300)); err != nil {
		t.Fatal(err)
	}
	bounds(t, s, 1, 300)
	for _, i := range []uint64{1, 255, 256, 300} {
		if err := s.GetLog(i, &got); err != nil || got.Index != i || !bytes.Equal(got.Data, []byte{byte(i), byte(i >> 8)}) {
			t.Fatalf("GetLog(%d) = %+v, %v", i, got, err)
		}
	}
	// Head compaction, as after a snapshot.
	if err := s.DeleteRange(1, 200); err != nil {
		t.Fatal(err)
	}
	bounds(t, s, 201, 300)
	if err := s.GetLog(200, &got); err != raft.ErrLogNotFound {
		t.Fatalf("compacted GetLog = %v", err)
	}
	// Tail truncation, as on a conflicting leader.
	if err := s.DeleteRange(251, 300); err != nil {
		t.Fatal(err)
	}
	bounds(t, s, 201, 250)
	// A gap after snapshot install.
	if err := s.StoreLogs(logs(1000, 1010)); err != nil {
		t.Fatal(err)
	}
	bounds(t, s, 201, 1010)
	if err := s.GetLog(500, &got); err != raft.ErrLogNotFound {
		t.Fatalf("GetLog in gap = %v", err)
	}
	// Stable store: misses say exactly "not found".
	if _, err := s.Get([]byte("nope")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get miss = %v", err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 42); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n1")); err != nil {
		t.Fatal(err)
	}
	// Restart: everything is still there.
	db.Close()
	s, db = openLogStore(t, dir)
	defer db.Close()
	bounds(t, s, 201, 1010)
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 42 {
		t.Fatalf("GetUint64 after reopen = %d, %v", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "n1" {
		t.Fatalf("Get after reopen = %q, %v", v, err)
	}
	if err := s.GetLog(1005, &got); err != nil || got.Index != 1005 {
		t.Fatalf("GetLog after reopen = %+v %v", got, err)
	}
}

func TestLogStoreHugeBatch(t *testing.T) {
	s, db := openLogStore(t, t.TempDir())
	defer db.Close()
	// More than one badger transaction can hold.
	big := logs(1, 40001)
	for _, l := range big {
		l.Data = bytes.Repeat([]byte{7}, 100)
	}
	if err := s.StoreLogs(big); err != nil {
		t.Fatal(err)
	}
	bounds(t, s, 1, 40001)
	if err := s.DeleteRange(1, 40000); err != nil {
		t.Fatal(err)
	}
	bounds(t, s, 40001, 40001)
	var got raft.Log
	if err := s.GetLog(40001, &got); err != nil {
		t.Fatal(err)
	}
	if err := s.GetLog(3, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatal(err)
	}
}

func BenchmarkLogStore(b *testing.B) {
	s, db := openLogStore(b, b.TempDir())
	defer db.Close()
	b.Run("StoreLogs", func(b *testing.B) { raftbench.StoreLogs(b, s) })
	b.Run("GetLog", func(b *testing.B) { raftbench.GetLog(b, s) })
}

// TestLargeValuesSurviveAPowerCut: badger keeps a value of ValueThreshold
// or more in its value log, a file flushed apart from the memtable's WAL
// (DB.Sync flushes the WAL first). A power cut that lands the WAL's pages
// and not the value log's leaves keys pointing at nothing: a raft entry
// raft cannot read back (the node would not start), or an applied record
// this replica has lost for good (applies are not synced; the FSM skips
// what it applied). So no value we write reaches the threshold. Here a
// 1,024-chunk PutBlob entry and the blob record it applies survive a cut
// that loses every value log page past the file's header.
func TestLargeValuesSurviveAPowerCut(t *testing.T) {
	dir := t.TempDir()
	ls, db := openLogStore(t, dir)
	defer db.Close()
	f, err := newFSM(db)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []blob.ID
	for i := range SegmentChunks {
		chunks = append(chunks, blob.Sum(fmt.Append(nil, "chunk", i)))
	}
	b := testBlob(1, chunks...)
	cmd := PutBlobCommand(b)
	cmd.V = cmd.Version()
	data, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 64<<10 {
		t.Fatalf("the entry is %d bytes: too small to tell", len(data))
	}
	entry := &raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: data}
	if err := ls.StoreLogs([]*raft.Log{entry}); err != nil {
		t.Fatal(err)
	}
	if res := f.Apply(entry).(applyResult); res.Err != nil {
		t.Fatal(res.Err)
	}

	// The cut: every file as the page cache holds it (the DB is still
	// open), but each value log's pages past the header never reached
	// the disk.
	cut := t.TempDir()
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, fi := range files {
		if fi.Name() == "LOCK" {
			continue
		}
		content, err := os.ReadFile(filepath.Join(dir, fi.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(fi.Name(), ".vlog") && len(content) > 20 {
			clear(content[20:])
		}
		if err := os.WriteFile(filepath.Join(cut, fi.Name()), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ls2, db2 := openLogStore(t, cut)
	defer db2.Close()
	var got raft.Log
	if err := ls2.GetLog(1, &got); err != nil || !bytes.Equal(got.Data, data) {
		t.Fatalf("the log entry after the cut: %v (%d bytes, want %d)", err, len(got.Data), len(data))
	}
	rec, err := (&Store{db: db2}).Blob(b.ID)
	if err != nil || len(rec.Chunks) != len(chunks) || rec.Chunks[len(chunks)-1].ID != chunks[len(chunks)-1] {
		t.Fatalf("the applied record after the cut: %v", err)
	}
}
