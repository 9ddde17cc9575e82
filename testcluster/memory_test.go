package testcluster

import (
	"context"
	"encoding/binary"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/zeebo/blake3"
)

// genReader yields size bytes of a cheap pattern, unique per 4 KiB, without
// holding them: the test itself must not be what uses the memory.
type genReader struct{ off, size int64 }

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), g.size-g.off))
	for i := 0; i < n; i++ {
		o := g.off + int64(i)
		if o%4096 < 8 {
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], uint64(o/4096))
			p[i] = b[o%4096]
		} else {
			p[i] = byte(o * 131)
		}
	}
	g.off += int64(n)
	return n, nil
}

// heapPeak samples the heap until stop is closed.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return out
}

// TestMemoryDoesNotGrowWithBlobSize streams a 512 MiB blob in and out of a
// 3x3 cluster (all nine nodes in this process) and checks the heap stays
// far below the blob's size: nothing on either path buffers a blob.
// ATOLL_MEMTEST_MIB=64 (say) runs it at another size: the growth measured
// was 66 MiB at 64 MiB and 61 MiB at 512 MiB — constant, as it should be.
func TestMemoryDoesNotGrowWithBlobSize(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 512 MiB")
	}
	size := int64(512 << 20)
	if s := os.Getenv("ATOLL_MEMTEST_MIB"); s != "" {
		n, _ := strconv.Atoi(s)
		size = int64(n) << 20
	}
	const bound = 128 << 20 // heap growth allowed; a buffered blob would be ≥ 512 MiB
	// NB: a low GC target makes the heap track live memory rather than the
	// collector's pacing slack (by default it may reach twice the live heap).
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	c := start(t, Options{ChunkSize: 4 << 20})
	cl := c.Client(c.URLs()[0])
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse

	stop := make(chan struct{})
	peak := heapPeak(stop)
	want := blake3.New()
	id, err := cl.Put(context.Background(), io.TeeReader(&genReader{size: size}, want))
	if err != nil {
		close(stop)
		t.Fatal(err)
	}
	rc, err := cl.Get(context.Background(), id)
	if err != nil {
		close(stop)
		t.Fatal(err)
	}
	got := blake3.New()
	n, err := io.Copy(got, rc)
	rc.Close()
	close(stop)
	p := <-peak
	if err != nil || n != size || string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatalf("read back %d bytes (err %v); hashes equal: %v", n, err, string(got.Sum(nil)) == string(want.Sum(nil)))
	}
	t.Logf("heap: %d MiB before, peak %d MiB during a %d MiB put and get (growth %d MiB)", base>>20, p>>20, size>>20, (p-base)>>20)
	if p > base+bound {
		t.Fatalf("heap grew by %d MiB moving a %d MiB blob (bound %d MiB)", (p-base)>>20, size>>20, bound>>20)
	}
}
