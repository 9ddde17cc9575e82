package disk

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/atollstore/atoll/storage"
	"github.com/atollstore/atoll/storage/storagetest"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if s.j == nil {
		t.Skip("no journal on this system")
	}
	return s
}

func write(t *testing.T, s *Store, sh storagetest.Shard) {
	t.Helper()
	if err := storage.Write(context.Background(), s, sh.Header, sh.Payload); err != nil {
		t.Fatal(err)
	}
}

// file returns ref's file, "" if it is missing.
func file(t *testing.T, s *Store, ref storage.Ref) string {
	t.Helper()
	b, err := os.ReadFile(s.Path(ref))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// relabel returns sh's payload under a header naming ref: another valid
// shard for the same slot (as a rewrite in another format would be).
func relabel(sh storagetest.Shard, ref storage.Ref) storagetest.Shard {
	sh.Header.Chunk, sh.Header.Index = ref.Chunk, ref.Index
	return sh
}

// What a crash takes from files written without a sync — a torn file, a
// missing one, one never written — replay puts back from the journal,
// byte for byte and with its write time; a removed shard stays removed,
// and a large shard (fsync'd on its own) is left alone.
func TestReplayRestoresWhatTheCacheLost(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	small := storagetest.MakeShards(t, 1, 9000, 3, 2) // ~3 KiB shards: journaled
	large := storagetest.MakeShards(t, 2, 1<<20, 3, 2)[0]
	for _, sh := range small {
		write(t, s, sh)
	}
	write(t, s, large)
	if done, err := s.RemoveIfOlder(ctx, small[4].Ref(), time.Now().Add(time.Hour)); !done || err != nil {
		t.Fatalf("remove: %v %v", done, err)
	}
	mod, err := s.Stat(ctx, small[0].Ref())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if n, _ := segments(filepath.Join(dir, journalDir)); len(n) == 0 {
		t.Fatal("no journal segment left to replay")
	}

	os.Truncate(s.Path(small[0].Ref()), 100)                 // torn
	os.Remove(s.Path(small[1].Ref()))                        // never reached the disk
	os.WriteFile(s.Path(small[2].Ref()), nil, 0o644)         // an empty inode
	os.WriteFile(s.Path(small[4].Ref()), []byte("x"), 0o644) // a removal that was lost
	s2 := open(t, dir)
	for i, sh := range small[:4] {
		if got := file(t, s2, sh.Ref()); got != string(sh.File()) {
			t.Fatalf("small shard %d: %d bytes after replay, want its %d", i, len(got), len(sh.File()))
		}
	}
	if got := file(t, s2, small[4].Ref()); got != "" {
		t.Fatalf("the removed shard is back: %q", got)
	}
	if got := file(t, s2, large.Ref()); got != string(large.File()) {
		t.Fatal("large shard changed")
	}
	info, err := s2.Stat(ctx, small[0].Ref())
	if err != nil || info.ModTime.Sub(mod.ModTime).Abs() > time.Second {
		t.Fatalf("restored shard's time %v, written at %v (%v)", info.ModTime, mod.ModTime, err)
	}
	var want int64
	for _, sh := range small[:4] {
		want += int64(len(sh.File()))
	}
	if want += int64(len(large.File())); s2.Used() != want {
		t.Fatalf("used %d, want %d", s2.Used(), want)
	}
	if n, _ := segments(filepath.Join(dir, journalDir)); len(n) != 1 {
		t.Fatalf("%d segments after replay, want the new one", len(n))
	}
}

// A shard rewritten through the large path after a journaled write is
// not replaced by the journal's older bytes; if that rewrite failed, the
// journaled bytes are what replay keeps.
func TestForgetKeepsTheLaterWrite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	a := storagetest.MakeShards(t, 3, 9000, 3, 2)[0]
	b := relabel(storagetest.MakeShards(t, 4, 1<<20, 3, 2)[0], a.Ref())
	c := storagetest.MakeShards(t, 5, 9000, 3, 2)[1]
	write(t, s, a)
	write(t, s, b)
	write(t, s, c)
	// A large rewrite of c cut short: the file keeps c.
	bad := relabel(storagetest.MakeShards(t, 6, 1<<20, 3, 2)[0], c.Ref())
	cut := io.MultiReader(bytes.NewReader(bad.File()[:200<<10]), errReader{})
	if err := s.Receive(ctx, c.Ref(), cut); err == nil {
		t.Fatal("a failed read was stored")
	}
	s.Close()
	os.Truncate(s.Path(c.Ref()), 10) // c's unsynced file was lost
	s2 := open(t, dir)
	if got := file(t, s2, a.Ref()); got != string(b.File()) {
		t.Fatalf("after replay the slot holds %d bytes, want the later large write", len(got))
	}
	if got := file(t, s2, c.Ref()); got != string(c.File()) {
		t.Fatalf("c: %d bytes after replay, want the journaled %d", len(got), len(c.File()))
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("sender went away") }

// A torn tail (an append that never completed) ends the segment; what
// came before it is replayed.
func TestReplayStopsAtATornTail(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	shards := storagetest.MakeShards(t, 7, 9000, 3, 2)
	for _, sh := range shards {
		write(t, s, sh)
	}
	s.Close()
	segs, _ := segments(filepath.Join(dir, journalDir))
	seg := filepath.Join(dir, journalDir, segmentName(segs[len(segs)-1]))
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	extra := sealRecord(append(make([]byte, recordHead+bodyHead), shards[0].File()...), kindPut, shards[0].Ref(), time.Now())
	extra[len(extra)-1] ^= 1 // a damaged record...
	os.WriteFile(seg, append(append(b, extra...), extra[:30]...), 0o644)
	for _, sh := range shards {
		os.Remove(s.Path(sh.Ref()))
	}
	s2 := open(t, dir)
	for i, sh := range shards {
		if got := file(t, s2, sh.Ref()); got != string(sh.File()) {
			t.Fatalf("shard %d: %d bytes, want %d", i, len(got), len(sh.File()))
		}
	}
}

// Concurrent small writes share fdatasyncs; a checkpoint syncs their
// files and deletes the segments, after which nothing is left to replay.
func TestGroupCommitAndCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var shards []storagetest.Shard
	for i := range 16 {
		shards = append(shards, storagetest.MakeShards(t, byte(10+i), 20000, 4, 2)...)
	}
	var wg sync.WaitGroup
	for _, sh := range shards {
		wg.Go(func() { write(t, s, sh) })
	}
	wg.Wait()
	if err := s.j.checkpoint(s); err != nil {
		t.Fatal(err)
	}
	if n, _ := segments(filepath.Join(dir, journalDir)); len(n) != 1 {
		t.Fatalf("%d segments after a checkpoint, want the current one", len(n))
	}
	if s.j.has(shards[0].Ref()) {
		t.Fatal("a checkpointed shard is still journaled")
	}
	s.Close()
	if s.j.syncs >= len(shards) {
		t.Fatalf("%d fdatasyncs for %d concurrent writes: nothing shared", s.j.syncs, len(shards))
	}
	t.Logf("%d writes, %d fdatasyncs", len(shards), s.j.syncs)
	for _, sh := range shards {
		if got := file(t, s, sh.Ref()); got != string(sh.File()) {
			t.Fatalf("%s: %d bytes, want %d", sh.Ref(), len(got), len(sh.File()))
		}
	}
}

func FuzzParseRecords(f *testing.F) {
	sh := storagetest.MakeShards(f, 1, 300, 2, 1)[0]
	seg := []byte(segmentMagic)
	seg = append(seg, sealRecord(append(make([]byte, recordHead+bodyHead), sh.File()...), kindPut, sh.Ref(), time.Unix(1, 2))...)
	seg = append(seg, sealRecord(make([]byte, recordHead+bodyHead), kindRemove, sh.Ref(), time.Unix(3, 4))...)
	f.Add(seg)
	f.Add(seg[:len(seg)-3])
	f.Add([]byte(segmentMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, _ := parseRecords(b)
		// Whatever parses re-encodes to the bytes it came from.
		again := []byte(segmentMagic)
		for _, r := range recs {
			again = append(again, sealRecord(append(make([]byte, recordHead+bodyHead), r.file...), r.kind, r.ref, r.mod)...)
		}
		if len(recs) > 0 && !bytes.HasPrefix(b, again) {
			t.Fatalf("%d records do not re-encode to their input", len(recs))
		}
	})
}
