package e2e

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

func seal(t testing.TB, plain []byte, key Key) []byte {
	s := NewSealer(bytes.NewReader(plain), int64(len(plain)), key)
	out := make([]byte, s.Size())
	if n, err := s.ReadAt(out, 0); n != len(out) || (err != nil && err != io.EOF) {
		t.Fatalf("sealing: %d of %d bytes, %v", n, len(out), err)
	}
	return out
}

func open(sealed []byte, key Key) ([]byte, error) {
	o, err := NewOpener(bytes.NewReader(sealed), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(o)
}

func TestRoundTrip(t *testing.T) {
	key := NewKey()
	for _, n := range []int{0, 1, SegmentSize - 1, SegmentSize, SegmentSize + 1, 3*SegmentSize + 5, 4 * SegmentSize} {
		plain := randBytes(n, uint64(n))
		sealed := seal(t, plain, key)
		if int64(len(sealed)) != SealedSize(int64(n)) {
			t.Fatalf("%d bytes: sealed %d, SealedSize %d", n, len(sealed), SealedSize(int64(n)))
		}
		if p, err := PlainSize(int64(len(sealed))); err != nil || p != int64(n) {
			t.Fatalf("PlainSize(%d) = %d, %v; want %d", len(sealed), p, err, n)
		}
		got, err := open(sealed, key)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: open: %v, equal %v", n, err, bytes.Equal(got, plain))
		}
		if n > 0 && bytes.Contains(sealed, plain[:min(n, 32)]) {
			t.Fatalf("%d bytes: the sealed form holds plaintext", n)
		}
		// Random access gives the same bytes as one read (uploads re-read).
		s := NewSealer(bytes.NewReader(plain), int64(n), key)
		r := rand.New(rand.NewPCG(uint64(n), 1))
		for range 50 {
			off := r.Int64N(int64(len(sealed)))
			buf := make([]byte, r.IntN(3*SegmentSize))
			k, err := s.ReadAt(buf, off)
			if want := min(len(buf), len(sealed)-int(off)); k != want || (k < len(buf) && err != io.EOF) {
				t.Fatalf("ReadAt(%d, %d) = %d, %v", len(buf), off, k, err)
			}
			if !bytes.Equal(buf[:k], sealed[off:int(off)+k]) {
				t.Fatalf("ReadAt(%d, %d) differs from the sealed stream", len(buf), off)
			}
		}
	}
}

// TestTamperingIsRefused: every change, cut, reordering or extension of
// a sealed stream, and the wrong key, fail — never shorter or wrong data.
func TestTamperingIsRefused(t *testing.T) {
	key := NewKey()
	plain := randBytes(3*SegmentSize+100, 9)
	sealed := seal(t, plain, key)
	seg := func(i int) []byte {
		return sealed[HeaderSize+i*(SegmentSize+16) : min(len(sealed), HeaderSize+(i+1)*(SegmentSize+16))]
	}
	cases := map[string][]byte{
		"bit flipped":        flip(sealed, HeaderSize+5),
		"tag flipped":        flip(sealed, len(sealed)-1),
		"header flipped":     flip(sealed, 9),
		"final segment cut":  sealed[:HeaderSize+3*(SegmentSize+16)],
		"cut mid-segment":    sealed[:HeaderSize+SegmentSize],
		"one byte short":     sealed[:len(sealed)-1],
		"one byte extra":     append(bytes.Clone(sealed), 0),
		"segments swapped":   concat(sealed[:HeaderSize], seg(1), seg(0), seg(2), seg(3)),
		"segment duplicated": concat(sealed[:HeaderSize], seg(0), seg(0), seg(1), seg(2), seg(3)),
		"header only":        sealed[:HeaderSize],
		"empty":              nil,
	}
	for name, bad := range cases {
		got, err := open(bad, key)
		if !errors.Is(err, ErrTampered) {
			t.Errorf("%s: got %d bytes, err %v; want ErrTampered", name, len(got), err)
		}
	}
	if _, err := open(sealed, NewKey()); !errors.Is(err, ErrTampered) {
		t.Errorf("wrong key: %v", err)
	}
}

func flip(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 1; return b }

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestConvergenceStaysInItsDomain(t *testing.T) {
	plain := randBytes(1000, 3)
	sum := sha256.Sum256(plain)
	alice, bob := NewKey(), NewKey()
	a1, a2 := seal(t, plain, ConvergentKey(alice, sum)), seal(t, plain, ConvergentKey(alice, sum))
	if !bytes.Equal(a1, a2) {
		t.Fatal("one file under one domain sealed twice differs: no deduplication")
	}
	if bytes.Equal(a1, seal(t, plain, ConvergentKey(bob, sum))) {
		t.Fatal("two domains seal one file alike: the cluster could confirm a known file")
	}
}

func TestEnvelope(t *testing.T) {
	lk, id, blob := NewKey(), NewLinkID(), "blob-one"
	env := Envelope{FileKey: NewKey(), Name: "report.pdf", Size: 12345, Type: "application/pdf"}
	sealed, err := SealEnvelope(lk, id, blob, env)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("report")) {
		t.Fatal("the sealed envelope shows the name")
	}
	got, err := OpenEnvelope(lk, id, blob, sealed)
	if err != nil || got != env {
		t.Fatalf("open: %+v, %v", got, err)
	}
	for name, try := range map[string]func() error{
		"other key":    func() error { _, err := OpenEnvelope(NewKey(), id, blob, sealed); return err },
		"other link":   func() error { _, err := OpenEnvelope(lk, NewLinkID(), blob, sealed); return err },
		"other blob":   func() error { _, err := OpenEnvelope(lk, id, "blob-two", sealed); return err },
		"flipped byte": func() error { _, err := OpenEnvelope(lk, id, blob, flip(sealed, 20)); return err },
		"cut short":    func() error { _, err := OpenEnvelope(lk, id, blob, sealed[:10]); return err },
	} {
		if err := try(); !errors.Is(err, ErrTampered) {
			t.Errorf("%s: %v, want ErrTampered", name, err)
		}
	}
}

func TestLinks(t *testing.T) {
	l := Link{Base: "https://127.0.0.1:8080", ID: NewLinkID(), Key: NewKey()}
	got, err := ParseLink(l.String())
	if err != nil || got != l {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, bad := range []string{
		"", "https://h/f/" + l.ID, "https://h/x/" + l.ID + "#" + strings.Repeat("A", 43),
		"ftp://h/f/" + l.ID + "#" + strings.Repeat("A", 43), "https://h/f/short#" + strings.Repeat("A", 43),
		"https://h/f/" + l.ID + "#tooshort", "https://u:p@h/f/" + l.ID + "#" + strings.Repeat("A", 43),
	} {
		if _, err := ParseLink(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzOpener(f *testing.F) {
	key := Key{1}
	f.Add(seal(f, []byte("hello"), key))
	f.Add(seal(f, randBytes(SegmentSize+3, 1), key))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := open(b, key)
		if err != nil {
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("error not ErrTampered: %v", err)
			}
			return
		}
		if !bytes.Equal(seal(t, got, key), b) { // only a genuine stream opens
			t.Fatal("a stream that is not the sealing of what it opened to was accepted")
		}
	})
}

func FuzzOpenEnvelope(f *testing.F) {
	key := Key{2}
	s, _ := SealEnvelope(key, "LLLLLLLLLLLLLLLLLLLLLL", "b", Envelope{Name: "x"})
	f.Add(s)
	f.Fuzz(func(t *testing.T, b []byte) {
		if env, err := OpenEnvelope(key, "LLLLLLLLLLLLLLLLLLLLLL", "b", b); err == nil && env.Name != "x" {
			t.Fatalf("forged envelope opened: %+v", env)
		}
	})
}

func FuzzParseLink(f *testing.F) {
	f.Add(Link{Base: "https://h:1", ID: NewLinkID(), Key: NewKey()}.String())
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLink(s)
		if err != nil {
			return
		}
		again, err := ParseLink(l.String())
		if err != nil || again != l {
			t.Fatalf("%q parsed to %+v, which does not round-trip: %+v %v", s, l, again, err)
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	plain := randBytes(64<<20, 1)
	s := NewSealer(bytes.NewReader(plain), int64(len(plain)), NewKey())
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		for off := int64(0); off < s.Size(); off += int64(len(buf)) {
			s.ReadAt(buf, off)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	key := NewKey()
	sealed := seal(b, randBytes(64<<20, 1), key)
	b.SetBytes(int64(len(sealed)))
	for b.Loop() {
		o, _ := NewOpener(bytes.NewReader(sealed), key)
		if _, err := io.Copy(io.Discard, o); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSealerConcurrentReads: uploads read a Sealer from several
// goroutines at once.
func TestSealerConcurrentReads(t *testing.T) {
	plain := randBytes(10*SegmentSize+3, 5)
	key := NewKey()
	want := seal(t, plain, key)
	s := NewSealer(bytes.NewReader(plain), int64(len(plain)), key)
	done := make(chan error)
	for g := range 8 {
		go func() {
			r := rand.New(rand.NewPCG(uint64(g), 2))
			for range 200 {
				off := r.Int64N(int64(len(want)))
				buf := make([]byte, r.IntN(SegmentSize))
				k, _ := s.ReadAt(buf, off)
				if !bytes.Equal(buf[:k], want[off:int(off)+k]) {
					done <- errors.New("a concurrent read differs")
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
