package disk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/storage"
	"github.com/atollstore/atoll/storage/storagetest"
	"golang.org/x/sync/errgroup"
)

func openSeg(t *testing.T, dir string, segMax int64) *Store {
	t.Helper()
	s, err := open(dir, segMax)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func write(t *testing.T, s *Store, sh storagetest.Shard) {
	t.Helper()
	if err := storage.Write(context.Background(), s, sh.Header, sh.Payload); err != nil {
		t.Fatal(err)
	}
}

// holds fails unless s returns exactly sh's file for its slot.
func holds(t *testing.T, s *Store, sh storagetest.Shard) {
	t.Helper()
	h, p, err := storage.Read(context.Background(), s, sh.Ref())
	if err != nil || h != sh.Header || !bytes.Equal(p, sh.Payload) {
		t.Fatalf("%s: %d bytes, %v; want the shard as written", sh.Ref(), len(p), err)
	}
}

func lacks(t *testing.T, s *Store, ref storage.Ref) {
	t.Helper()
	if _, _, err := storage.Read(context.Background(), s, ref); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("%s: %v, want not found", ref, err)
	}
}

// relabel returns sh's payload under a header naming ref: another valid
// shard for the same slot (as a rewrite in another format would be).
func relabel(sh storagetest.Shard, ref storage.Ref) storagetest.Shard {
	sh.Header.Chunk, sh.Header.Index = ref.Chunk, ref.Index
	return sh
}

// Small shards live in the volume, not in files; a reopened store finds
// every one as written (with its write time), not the removed one, and
// counts the same bytes.
func TestVolumeSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openSeg(t, dir, 64<<10) // several segments
	var small []storagetest.Shard
	for i := range 8 {
		small = append(small, storagetest.MakeShards(t, byte(i), 9000, 3, 2)...)
	}
	large := storagetest.MakeShards(t, 99, 1<<20, 3, 2)[0]
	for _, sh := range small {
		write(t, s, sh)
	}
	write(t, s, large)
	write(t, s, small[3]) // a rewrite
	if done, err := s.RemoveIfOlder(ctx, small[5].Ref(), time.Now().Add(time.Hour)); !done || err != nil {
		t.Fatalf("remove: %v %v", done, err)
	}
	if _, err := os.Stat(s.Path(small[0].Ref())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a small shard has a file of its own: %v", err)
	}
	before, _ := s.Stat(ctx, small[0].Ref())
	used := s.Used()
	segs, _ := segmentSeqs(s.v.dir)
	s.Close()

	s2 := openSeg(t, dir, 64<<10)
	for i, sh := range small {
		if i == 5 {
			lacks(t, s2, sh.Ref())
			continue
		}
		holds(t, s2, sh)
	}
	holds(t, s2, large)
	if after, _ := s2.Stat(ctx, small[0].Ref()); !after.ModTime.Equal(before.ModTime) || after.Size != int64(len(small[0].File())) {
		t.Fatalf("stat after reopen %+v, before %+v", after, before)
	}
	if s2.Used() != used {
		t.Fatalf("used %d after reopen, %d before", s2.Used(), used)
	}
	if again, _ := segmentSeqs(s2.v.dir); len(again) != len(segs) {
		t.Fatalf("%d segments after a clean reopen, %d before: the last one was not continued", len(again), len(segs))
	}
	n := 0
	s2.Walk(ctx, func(storage.Ref, storage.Info) error { n++; return nil })
	if n != len(small) {
		t.Fatalf("walk saw %d shards, want %d", n, len(small))
	}
}

// lastSegment returns the path of the newest segment in dir's volume.
func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	seqs, err := segmentSeqs(filepath.Join(dir, volumeDir))
	if err != nil || len(seqs) == 0 {
		t.Fatal("no segment", err)
	}
	return filepath.Join(dir, volumeDir, segmentName(seqs[len(seqs)-1]))
}

// A crash mid-append leaves a torn record at the end of the last
// segment: a short one, or one whose bytes never reached the disk. Open
// ignores it, keeps what came before, and writes on in a new segment.
func TestTornTailIsIgnored(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 64<<20)
	shards := storagetest.MakeShards(t, 7, 9000, 3, 2)
	for _, sh := range shards[:4] {
		write(t, s, sh)
	}
	s.Close()
	seg := lastSegment(t, dir)
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	torn := sealRecord(append(make([]byte, recordHead+bodyHead), shards[4].File()...), kindPut, shards[4].Ref(), time.Now())
	zeroed := bytes.Clone(torn)
	clear(zeroed[recordHead+bodyHead+100:]) // the head made it, most of the shard did not
	os.WriteFile(seg, append(append(b, zeroed...), torn[:40]...), 0o644)

	s2 := openSeg(t, dir, 64<<20)
	for _, sh := range shards[:4] {
		holds(t, s2, sh)
	}
	lacks(t, s2, shards[4].Ref())
	write(t, s2, shards[4])
	s2.Close()
	s3 := openSeg(t, dir, 64<<20)
	for _, sh := range shards {
		holds(t, s3, sh)
	}
}

// tear appends half a record to the last segment, as a crash mid-append
// would leave it.
func tear(t *testing.T, dir string) {
	t.Helper()
	f, err := os.OpenFile(lastSegment(t, dir), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte{200, 0, 0, 0, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
}

// Bit rot inside a sealed segment damages the shard it hits, which reads
// as corrupt (for scrub to repair); the records after it stay readable.
func TestRotInASegmentHitsOneShard(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 64<<20)
	shards := storagetest.MakeShards(t, 8, 9000, 3, 2)
	for _, sh := range shards {
		write(t, s, sh)
	}
	l, _ := s.v.get(shards[1].Ref())
	s.Close()
	tear(t, dir)
	s = openSeg(t, dir, 64<<20) // goes on in a new segment: the first is sealed now
	s.Close()
	seg := filepath.Join(dir, volumeDir, segmentName(l.seg.seq))
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff, 0xff}, l.off+int64(l.n)-10)
	f.Close()

	s2 := openSeg(t, dir, 64<<20)
	if _, _, err := storage.Read(context.Background(), s2, shards[1].Ref()); !errors.Is(err, blob.ErrCorrupt) {
		t.Fatalf("rotted shard: %v, want ErrCorrupt", err)
	}
	for i, sh := range shards {
		if i != 1 {
			holds(t, s2, sh)
		}
	}
	write(t, s2, shards[1]) // what scrub does
	holds(t, s2, shards[1])

	// In the last segment, where a torn append may lie, a put whose shard
	// does not verify is left out; the records after it are not.
	more := storagetest.MakeShards(t, 9, 9000, 3, 2)
	for _, sh := range more {
		write(t, s2, sh)
	}
	l, _ = s2.v.get(more[1].Ref())
	s2.Close()
	f, err = os.OpenFile(lastSegment(t, dir), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff, 0xff}, l.off+int64(l.n)-10)
	f.Close()
	s3 := openSeg(t, dir, 64<<20)
	lacks(t, s3, more[1].Ref())
	for i, sh := range more {
		if i != 1 {
			holds(t, s3, sh)
		}
	}
	holds(t, s3, shards[1])
}

// A slot rewritten as a larger shard leaves the volume (a forget record
// keeps the old small version from coming back), and the other way round
// the stale file goes.
func TestRewritesBetweenVolumeAndFile(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 64<<20)
	a := storagetest.MakeShards(t, 3, 9000, 3, 2)[0]
	aLarge := relabel(storagetest.MakeShards(t, 4, 1<<20, 3, 2)[0], a.Ref())
	b := storagetest.MakeShards(t, 5, 9000, 3, 2)[1]
	bLarge := relabel(storagetest.MakeShards(t, 6, 1<<20, 3, 2)[0], b.Ref())
	write(t, s, a)
	write(t, s, aLarge)
	write(t, s, bLarge)
	write(t, s, b)
	holds(t, s, aLarge)
	holds(t, s, b)
	if _, err := os.Stat(s.Path(b.Ref())); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the stale large file of b is still there")
	}
	want := int64(len(aLarge.File()) + len(b.File()))
	if s.Used() != want {
		t.Fatalf("used %d, want %d", s.Used(), want)
	}
	s.Close()
	s2 := openSeg(t, dir, 64<<20)
	holds(t, s2, aLarge)
	holds(t, s2, b)
	if s2.Used() != want {
		t.Fatalf("used %d after reopen, want %d", s2.Used(), want)
	}
}

// Concurrent small writes share fdatasyncs.
func TestGroupCommit(t *testing.T) {
	s := openSeg(t, t.TempDir(), 64<<20)
	var shards []storagetest.Shard
	for i := range 16 {
		shards = append(shards, storagetest.MakeShards(t, byte(10+i), 20000, 4, 2)...)
	}
	var wg sync.WaitGroup
	for _, sh := range shards {
		wg.Go(func() { write(t, s, sh) })
	}
	wg.Wait()
	s.Close()
	if s.v.syncs >= len(shards) {
		t.Fatalf("%d fdatasyncs for %d concurrent writes: nothing shared", s.v.syncs, len(shards))
	}
	t.Logf("%d writes, %d fdatasyncs", len(shards), s.v.syncs)
}

// The cleaner moves live shards out of the oldest segments once most of
// their bytes are garbage, while they are being read; nothing removed
// comes back when the store is reopened, though the remove records went
// with the segments.
func TestCleanerReclaimsGarbage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openSeg(t, dir, 32<<10)
	s.minGarbage = 0
	var shards []storagetest.Shard
	for i := range 20 {
		shards = append(shards, storagetest.MakeShards(t, byte(i), 9000, 3, 2)...)
	}
	for _, sh := range shards {
		write(t, s, sh)
	}
	keep := map[storage.Ref]bool{}
	for i, sh := range shards {
		if i%4 == 0 {
			keep[sh.Ref()] = true
		} else if done, err := s.RemoveIfOlder(ctx, sh.Ref(), time.Now().Add(time.Hour)); !done || err != nil {
			t.Fatal(done, err)
		}
	}
	segsBefore, _ := segmentSeqs(s.v.dir)

	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i, sh := range shards {
				if i%4 == 0 {
					holds(t, s, sh)
				}
			}
		}
	})
	for seg := s.v.oldestIfDirty(0); seg != nil; seg = s.v.oldestIfDirty(0) {
		if err := s.compact(seg); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	readers.Wait()
	segsAfter, _ := segmentSeqs(s.v.dir)
	if len(segsAfter) >= len(segsBefore) {
		t.Fatalf("%d segments before cleaning, %d after", len(segsBefore), len(segsAfter))
	}
	t.Logf("segments: %d -> %d", len(segsBefore), len(segsAfter))
	s.Close()

	s2 := openSeg(t, dir, 32<<10)
	for _, sh := range shards {
		if keep[sh.Ref()] {
			holds(t, s2, sh)
		} else {
			lacks(t, s2, sh.Ref())
		}
	}
}

func FuzzParseRecords(f *testing.F) {
	sh := storagetest.MakeShards(f, 1, 300, 2, 1)[0]
	seg := []byte(segmentMagic)
	seg = append(seg, sealRecord(append(make([]byte, recordHead+bodyHead), sh.File()...), kindPut, sh.Ref(), time.Unix(1, 2))...)
	seg = append(seg, sealRecord(make([]byte, recordHead+bodyHead), kindRemove, sh.Ref(), time.Unix(3, 4))...)
	f.Add(seg, false)
	f.Add(seg[:len(seg)-3], true)
	f.Add([]byte(segmentMagic), false)
	f.Fuzz(func(t *testing.T, b []byte, verify bool) {
		recs, _ := parseRecords(b, verify)
		// Whatever parses re-encodes to the bytes it came from, in order
		// (with verify, puts that do not verify are left out between them).
		next := int64(len(segmentMagic))
		for _, r := range recs {
			rec := sealRecord(append(make([]byte, recordHead+bodyHead), r.file...), r.kind, r.ref, r.mod)
			if r.off < next || (!verify && r.off != next) || !bytes.Equal(b[r.off:r.off+int64(len(rec))], rec) {
				t.Fatalf("record at %d (after %d) does not re-encode to its input", r.off, next)
			}
			next = r.off + int64(len(rec))
		}
	})
}

// BenchmarkOpen measures a restart: reading the volume's segments back
// into the index (ATOLL_BENCH_SHARDS small shards of ~1 KiB, default
// 100,000; what the page cache holds of them is not dropped).
func BenchmarkOpen(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("ATOLL_BENCH_SHARDS")); err == nil {
		n = v
	}
	dir := b.TempDir()
	s, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	shards := storagetest.MakeShards(b, 1, 4096, 4, 2)
	var g errgroup.Group
	g.SetLimit(64)
	for i := range n {
		g.Go(func() error {
			sh := shards[i%len(shards)]
			binary.LittleEndian.PutUint64(sh.Header.Chunk[:], uint64(i)) // n different slots
			return storage.Write(context.Background(), s, sh.Header, sh.Payload)
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	s.Close()
	var heap int64
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		before := heapInUse()
		b.StartTimer()
		s, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		heap = heapInUse() - before
		b.StartTimer()
		if got := s.Used(); got != int64(n*len(shards[0].File())) {
			b.Fatalf("used %d after open", got)
		}
		s.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/shard")
	b.ReportMetric(float64(heap)/float64(n), "index-B/shard")
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// Closing while writes are under way: every write acknowledged (by the
// volume, or by a file once it is closed) is there after a reopen, byte
// for byte.
func TestCloseWhileWriting(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 256<<10)
	shards := storagetest.MakeShards(t, 3, 4096, 4, 2)
	var mu sync.Mutex
	acked := map[storage.Ref]storagetest.Shard{}
	var wg sync.WaitGroup
	var closed atomic.Bool
	for w := range 16 {
		wg.Go(func() {
			for i := 0; !closed.Load(); i++ { // NB: once the volume is closed, writes go to files
				sh := shards[i%len(shards)]
				binary.LittleEndian.PutUint64(sh.Header.Chunk[:], uint64(w<<32|i))
				if err := storage.Write(context.Background(), s, sh.Header, sh.Payload); err != nil {
					continue
				}
				mu.Lock()
				acked[sh.Ref()] = sh
				mu.Unlock()
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	s.Close()
	closed.Store(true)
	wg.Wait()
	s2 := openSeg(t, dir, 256<<10)
	for _, sh := range acked {
		holds(t, s2, sh)
	}
	t.Logf("%d writes acknowledged around the close, all there after", len(acked))
}
