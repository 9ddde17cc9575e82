package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/atollstore/atoll/e2e"
)

// testShareLinks (part of TestRealBinary): put --encrypt prints a link
// that a recipient holding only the cluster's CA certificate downloads
// byte-exact; the same file put again is stored once (one key domain);
// no node's disk holds the plaintext, the name or any key; a revoked
// link opens nothing.
func testShareLinks(t *testing.T, c *realCluster) {
	dir := t.TempDir()
	var text []byte
	for i := 0; len(text) < 1<<20; i++ {
		text = append(text, fmt.Sprintf("confidential memo %06d: the source is in the ministry\n", i)...)
	}
	const name = "memo-for-the-press.txt"
	in := filepath.Join(dir, name)
	os.WriteFile(in, text, 0o644)
	domain := filepath.Join(dir, "domain.key")
	put := func() e2e.Link {
		t.Helper()
		out, errOut, code := c.run("put", "--encrypt", "--domain-key", domain, in)
		if code != 0 {
			t.Fatalf("put --encrypt: exit %d: %s", code, errOut)
		}
		l, err := e2e.ParseLink(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("put --encrypt printed %q: %v", out, err)
		}
		return l
	}
	link, again := put(), put()
	if link.ID == again.ID || link.Key == again.Key {
		t.Fatal("two puts gave the same link")
	}

	// The recipient has the cluster's CA certificate and nothing else.
	recipient := filepath.Join(dir, "recipient")
	os.MkdirAll(recipient, 0o700)
	ca, _ := os.ReadFile(filepath.Join(c.certs, "ca.crt"))
	os.WriteFile(filepath.Join(recipient, "ca.crt"), ca, 0o644)
	get := func(args ...string) (string, int) {
		cmd := c.command(append([]string{"get", "--certs-dir", recipient}, args...)...)
		cmd.Dir = recipient
		var e bytes.Buffer
		cmd.Stderr = &e
		err := cmd.Run()
		if err != nil {
			return e.String(), cmd.ProcessState.ExitCode()
		}
		return e.String(), 0
	}
	if e, code := get(link.String()); code != 0 {
		t.Fatalf("get LINK: exit %d: %s", code, e)
	}
	if got, _ := os.ReadFile(filepath.Join(recipient, name)); !bytes.Equal(got, text) {
		t.Fatalf("get LINK wrote %d bytes, want %d identical", len(got), len(text))
	}
	if e, code := get(again.String(), "-o", "second.txt"); code != 0 {
		t.Fatalf("get the second link: %s", e)
	}
	if e, code := get(link.String()); code == 0 || !strings.Contains(e, "exists") {
		t.Fatalf("get over an existing file: exit %d, %s", code, e)
	}
	wrong := link
	wrong.Key[0] ^= 1
	if e, code := get(wrong.String(), "-o", "wrong.txt"); code == 0 || !strings.Contains(e, "altered") {
		t.Fatalf("a link with a damaged key: exit %d, %s", code, e)
	}
	if _, err := os.Stat(filepath.Join(recipient, "wrong.txt")); err == nil {
		t.Fatal("a failed download left its output file")
	}

	// What the nodes hold: ciphertext only.
	dk, _ := os.ReadFile(domain)
	secrets := map[string][]byte{"file name": []byte(name), "domain key": bytes.TrimSpace(dk)}
	for i, l := range []e2e.Link{link, again} {
		k, _ := l.Key.MarshalText()
		secrets[fmt.Sprint("link key ", i)] = k
		secrets[fmt.Sprint("raw link key ", i)] = l.Key[:]
	}
	// Windows every 16 bytes: any stored run of 47 plaintext bytes holds one.
	// (Few, so the test process stays small: TestLargeRoundTrip measures its
	// children's peak RSS, which a vfork starts at the parent's.)
	windows := map[string]bool{}
	for i := 0; i+32 <= len(text); i += 16 {
		windows[string(text[i:i+32])] = true
	}
	defer debug.FreeOSMemory()
	files, sealedBytes := 0, int64(0)
	for n := range c.procs {
		filepath.WalkDir(filepath.Join(c.dir, fmt.Sprint("n", n)), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.Contains(path, "certs") {
				return err
			}
			files++
			n := scanFile(t, path, func(b []byte) {
				for what, s := range secrets {
					if bytes.Contains(b, s) || bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString(s))) {
						t.Errorf("%s holds the %s", path, what)
					}
				}
				for i := 0; i+32 <= len(b); i++ {
					if windows[string(b[i:i+32])] {
						t.Errorf("%s holds plaintext", path)
						break
					}
				}
			})
			if strings.Contains(path, "shards") {
				sealedBytes += n
			}
			return nil
		})
	}
	if files == 0 || sealedBytes == 0 {
		t.Fatalf("scanned %d files, %d shard bytes: looked in the wrong place", files, sealedBytes)
	}

	// Revoked: the link opens nothing, the other still does.
	if _, e, code := c.run("link", "rm", link.String()); code != 0 {
		t.Fatalf("link rm: exit %d: %s", code, e)
	}
	if e, code := get(link.String(), "-o", "revoked.txt"); code == 0 || !strings.Contains(e, "not found") {
		t.Fatalf("a revoked link: exit %d, %s", code, e)
	}
	if e, code := get(again.String(), "-o", "still.txt"); code != 0 {
		t.Fatalf("the other link after one was revoked: %s", e)
	}
}

// scanFile passes path to fn in blocks that overlap by 64 bytes (so no
// secret or window up to that long falls between two), without holding
// the whole file: badger's files are large. It returns the file's size.
func scanFile(t *testing.T, path string, fn func([]byte)) int64 {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const overlap = 64
	buf := make([]byte, 1<<20)
	have, total := 0, int64(0)
	for {
		n, err := f.Read(buf[have:])
		total += int64(n)
		have += n
		if have > 0 && (have == len(buf) || err != nil) {
			fn(buf[:have])
			keep := min(overlap, have)
			copy(buf, buf[have-keep:have])
			have = keep
			if err != nil {
				return total
			}
		}
		if err != nil {
			return total
		}
	}
}
