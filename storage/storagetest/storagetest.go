// Package storagetest is the conformance suite of package storage: every
// shard store runs Test, so they all keep the same contract.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/storage"
)

// Shard is one valid shard for tests: its header and payload.
type Shard struct {
	Header  erasure.Header
	Payload []byte
}

// Ref returns the shard's slot.
func (s Shard) Ref() storage.Ref { return storage.Ref{Chunk: s.Header.Chunk, Index: s.Header.Index} }

// File returns the shard file: header + payload.
func (s Shard) File() []byte {
	hb := s.Header.Marshal()
	return append(hb[:], s.Payload...)
}

// MakeShards encodes a chunk of size bytes (content from seed) with k+m
// and returns its shards.
func MakeShards(t testing.TB, seed byte, size, k, m int) []Shard {
	t.Helper()
	codec, err := erasure.New(k, m)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = seed + byte(i*7) + byte(i>>8)
	}
	st := codec.NewStripe(size)
	if _, err := st.Fill(bytes.NewReader(data), size); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if err := st.Encode(erasure.Dispersed); err != nil {
		t.Fatal(err)
	}
	id := blob.Sum(data)
	out := make([]Shard, k+m)
	for i := range out {
		h, p := st.Shard(id, i)
		out[i] = Shard{h, bytes.Clone(p)}
	}
	return out
}

// Test runs the suite against a new, empty store from newStore. Stores
// that are a whole storage.Storage (not just Shards) also get the Stat,
// Walk, Used and RemoveIfOlder checks.
func Test(t *testing.T, newStore func(t *testing.T) storage.Shards) {
	ctx := context.Background()
	t.Run("missing", func(t *testing.T) {
		s := newStore(t)
		ref := MakeShards(t, 1, 100, 2, 1)[0].Ref()
		if _, _, err := storage.Read(ctx, s, ref); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("Read of a missing shard: %v, want ErrNotFound", err)
		}
		if err := storage.Check(ctx, s, ref); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("Check of a missing shard: %v, want ErrNotFound", err)
		}
		if full, ok := s.(storage.Storage); ok {
			if _, err := full.Stat(ctx, ref); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("Stat of a missing shard: %v, want ErrNotFound", err)
			}
			if done, err := full.RemoveIfOlder(ctx, ref, time.Now().Add(time.Hour)); done || err != nil {
				t.Fatalf("RemoveIfOlder of a missing shard: %v, %v", done, err)
			}
			if full.Used() != 0 {
				t.Fatalf("empty store uses %d bytes", full.Used())
			}
		}
	})
	t.Run("roundtrip", func(t *testing.T) {
		s := newStore(t)
		var all []Shard
		for i, size := range []int{1, 100, 4096, 1 << 20} {
			all = append(all, MakeShards(t, byte(i), size, 3, 2)...)
		}
		for _, sh := range all {
			if err := storage.Write(ctx, s, sh.Header, sh.Payload); err != nil {
				t.Fatalf("Write %s: %v", sh.Ref(), err)
			}
		}
		// Writing a shard again replaces it.
		if err := storage.Write(ctx, s, all[0].Header, all[0].Payload); err != nil {
			t.Fatalf("rewrite: %v", err)
		}
		var total int64
		for _, sh := range all {
			h, p, err := storage.Read(ctx, s, sh.Ref())
			if err != nil || h != sh.Header || !bytes.Equal(p, sh.Payload) {
				t.Fatalf("Read %s: header %+v, %d bytes, %v", sh.Ref(), h, len(p), err)
			}
			if err := storage.Check(ctx, s, sh.Ref()); err != nil {
				t.Fatalf("Check %s: %v", sh.Ref(), err)
			}
			rc, err := s.Fetch(ctx, sh.Ref())
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(raw, sh.File()) {
				t.Fatalf("Fetch %s: not the shard file as written (%d bytes, %v)", sh.Ref(), len(raw), err)
			}
			total += int64(len(raw))
		}
		full, ok := s.(storage.Storage)
		if !ok {
			return
		}
		if full.Used() != total {
			t.Fatalf("Used = %d, want %d", full.Used(), total)
		}
		seen := map[storage.Ref]storage.Info{}
		err := full.Walk(ctx, func(r storage.Ref, info storage.Info) error {
			if _, dup := seen[r]; dup {
				return fmt.Errorf("%s walked twice", r)
			}
			seen[r] = info
			return nil
		})
		if err != nil || len(seen) != len(all) {
			t.Fatalf("Walk saw %d shards (%v), want %d", len(seen), err, len(all))
		}
		for _, sh := range all {
			info, err := full.Stat(ctx, sh.Ref())
			if err != nil || info.Size != int64(len(sh.File())) || info != seen[sh.Ref()] {
				t.Fatalf("Stat %s = %+v, %v; walked %+v; want size %d", sh.Ref(), info, err, seen[sh.Ref()], len(sh.File()))
			}
		}
		stop := errors.New("stop")
		calls := 0
		if err := full.Walk(ctx, func(storage.Ref, storage.Info) error { calls++; return stop }); err != stop || calls != 1 {
			t.Fatalf("Walk did not stop at fn's error: %v after %d calls", err, calls)
		}
		// Removal: not while newer than the cutoff, then once.
		victim := all[3]
		if done, err := full.RemoveIfOlder(ctx, victim.Ref(), time.Now().Add(-time.Hour)); done || err != nil {
			t.Fatalf("RemoveIfOlder removed a shard newer than the cutoff (%v, %v)", done, err)
		}
		if done, err := full.RemoveIfOlder(ctx, victim.Ref(), time.Now().Add(time.Hour)); !done || err != nil {
			t.Fatalf("RemoveIfOlder: %v, %v", done, err)
		}
		if done, err := full.RemoveIfOlder(ctx, victim.Ref(), time.Now().Add(time.Hour)); done || err != nil {
			t.Fatalf("second RemoveIfOlder: %v, %v", done, err)
		}
		if _, _, err := storage.Read(ctx, s, victim.Ref()); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("removed shard reads: %v", err)
		}
		if want := total - int64(len(victim.File())); full.Used() != want {
			t.Fatalf("Used after removal = %d, want %d", full.Used(), want)
		}
	})
	t.Run("refuses bad shards", func(t *testing.T) {
		s := newStore(t)
		shards := MakeShards(t, 9, 5000, 2, 1)
		good := shards[1]
		rotten := bytes.Clone(good.File())
		rotten[len(rotten)-1] ^= 1
		badHeader := bytes.Clone(good.File())
		badHeader[10] ^= 1
		cases := []struct {
			name string
			body []byte
			ref  storage.Ref
			want error
		}{
			{"payload checksum", rotten, good.Ref(), blob.ErrCorrupt},
			{"header checksum", badHeader, good.Ref(), blob.ErrCorrupt},
			{"another slot", good.File(), shards[0].Ref(), blob.ErrCorrupt},
			{"truncated payload", good.File()[:len(good.File())-10], good.Ref(), io.ErrUnexpectedEOF},
			{"truncated header", good.File()[:20], good.Ref(), io.ErrUnexpectedEOF},
		}
		for _, c := range cases {
			err := storage.Receive(ctx, s, c.ref, bytes.NewReader(c.body))
			if !errors.Is(err, c.want) {
				t.Errorf("%s: Receive = %v, want %v", c.name, err, c.want)
			}
			if _, _, err := storage.Read(ctx, s, c.ref); !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("%s: the refused shard is visible (%v)", c.name, err)
			}
		}
		if full, ok := s.(storage.Storage); ok && full.Used() != 0 {
			t.Errorf("refused shards use %d bytes", full.Used())
		}
	})
	t.Run("torn write leaves nothing", func(t *testing.T) {
		s := newStore(t)
		sh := MakeShards(t, 3, 3000, 2, 1)[0]
		file := sh.File()
		errCut := errors.New("connection cut")
		err := s.Receive(ctx, sh.Ref(), io.MultiReader(bytes.NewReader(file[:len(file)/2]), errReader{errCut}))
		if err == nil {
			t.Fatal("Receive from a failing reader succeeded")
		}
		if _, _, err := storage.Read(ctx, s, sh.Ref()); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("a torn shard is visible (%v)", err)
		}
		// A good copy written before stays whole when a later write tears.
		if err := storage.Write(ctx, s, sh.Header, sh.Payload); err != nil {
			t.Fatal(err)
		}
		s.Receive(ctx, sh.Ref(), io.MultiReader(bytes.NewReader(file[:len(file)/2]), errReader{errCut}))
		if _, p, err := storage.Read(ctx, s, sh.Ref()); err != nil || !bytes.Equal(p, sh.Payload) {
			t.Fatalf("a torn rewrite damaged the shard: %v", err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		s := newStore(t)
		shards := MakeShards(t, 5, 64<<10, 4, 2)
		var wg sync.WaitGroup
		errs := make(chan error, 4*len(shards))
		for range 4 {
			for _, sh := range shards {
				wg.Go(func() {
					if err := storage.Write(ctx, s, sh.Header, sh.Payload); err != nil {
						errs <- err
						return
					}
					if _, p, err := storage.Read(ctx, s, sh.Ref()); err != nil || !bytes.Equal(p, sh.Payload) {
						errs <- fmt.Errorf("read %s: %v", sh.Ref(), err)
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if full, ok := s.(storage.Storage); ok {
			var want int64
			for _, sh := range shards {
				want += int64(len(sh.File()))
			}
			if full.Used() != want {
				t.Errorf("Used = %d after concurrent rewrites, want %d", full.Used(), want)
			}
		}
	})
	t.Run("damaged in place", func(t *testing.T) {
		s := newStore(t)
		if _, ok := s.(storage.Storage); !ok {
			t.Skip("only a local store can be damaged from here")
		}
		sh := MakeShards(t, 4, 2000, 2, 1)[2]
		rotten := sh.File()
		rotten[len(rotten)/2] ^= 0x40
		// Receive (unlike storage.Receive) does not check: this is rot.
		if err := s.Receive(ctx, sh.Ref(), bytes.NewReader(rotten)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := storage.Read(ctx, s, sh.Ref()); !errors.Is(err, blob.ErrCorrupt) {
			t.Fatalf("Read of a rotten shard: %v, want ErrCorrupt", err)
		}
		if err := storage.Check(ctx, s, sh.Ref()); !errors.Is(err, blob.ErrCorrupt) {
			t.Fatalf("Check of a rotten shard: %v, want ErrCorrupt", err)
		}
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
