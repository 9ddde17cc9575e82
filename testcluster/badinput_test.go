package testcluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/node"
)

func blobCount(t *testing.T, cl *client.Client) int {
	t.Helper()
	ci, err := cl.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ci.Blobs
}

func httpError(t *testing.T, resp *http.Response) (int, string) {
	t.Helper()
	defer resp.Body.Close()
	var e blob.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("error body is not JSON: %v", err)
	}
	return resp.StatusCode, e.Code
}

func TestBadInput(t *testing.T) {
	c := start(t, Options{MaxBlobSize: 100 << 10})
	url := c.URLs()[0]
	cl := c.Client()
	ctx := context.Background()

	t.Run("unknown id", func(t *testing.T) {
		_, err := cl.Get(ctx, blob.Sum([]byte("never stored")))
		if !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("get unknown = %v, want not found", err)
		}
		if _, err := cl.Stat(ctx, blob.Sum([]byte("never stored"))); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat unknown = %v", err)
		}
		if err := cl.Delete(ctx, blob.Sum([]byte("never stored"))); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("delete unknown = %v", err)
		}
	})
	t.Run("malformed id", func(t *testing.T) {
		for _, bad := range []string{"abc", strings.Repeat("!", 52), strings.Repeat("a", 53), "../../etc/passwd"} {
			resp, err := c.HTTPClient().Get(url + "/v1/blobs/" + bad)
			if err != nil {
				t.Fatal(err)
			}
			if status, code := httpError(t, resp); status != 400 && status != 404 {
				t.Fatalf("GET %q: %d %s", bad, status, code)
			}
		}
		for _, bad := range []string{strings.Repeat("1", 52), strings.Repeat("7", 52), strings.ToUpper(blob.Sum(nil).String())} {
			resp, err := c.HTTPClient().Get(url + "/v1/blobs/" + bad)
			if err != nil {
				t.Fatal(err)
			}
			if status, code := httpError(t, resp); status != 400 || code != "invalid_id" {
				t.Fatalf("id %q: %d %s, want 400 invalid_id", bad, status, code)
			}
		}
	})
	t.Run("too large", func(t *testing.T) {
		before := blobCount(t, cl)
		big := bytes.Repeat([]byte{1}, 200<<10)
		// With a Content-Length: refused before any byte is stored.
		if _, err := cl.Put(ctx, bytes.NewReader(big)); !errors.Is(err, blob.ErrTooLarge) {
			t.Fatalf("put of 200 KiB with a 100 KiB limit = %v", err)
		}
		// Streamed without a length: refused once the limit is crossed.
		if _, err := cl.Put(ctx, io.MultiReader(bytes.NewReader(big))); !errors.Is(err, blob.ErrTooLarge) {
			t.Fatalf("streamed put of 200 KiB = %v", err)
		}
		if after := blobCount(t, cl); after != before {
			t.Fatalf("blob count %d -> %d after refused puts", before, after)
		}
		if _, err := cl.Get(ctx, blob.Sum(big)); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("refused blob is visible: %v", err)
		}
	})
	t.Run("truncated upload", func(t *testing.T) {
		before := blobCount(t, cl)
		body := bytes.Repeat([]byte("x"), 70<<10)
		conn, err := c.Dial(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /v1/blobs HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 90<<10)
		conn.Write(body) // 70 KiB of the promised 90, then the client vanishes
		conn.(interface{ CloseWrite() error }).CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			if resp.StatusCode < 400 {
				t.Fatalf("truncated upload answered %s", resp.Status)
			}
			resp.Body.Close()
		}
		conn.Close()
		time.Sleep(200 * time.Millisecond)
		if after := blobCount(t, cl); after != before {
			t.Fatalf("blob count %d -> %d after a truncated upload", before, after)
		}
		if _, err := cl.Get(ctx, blob.Sum(body)); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("the truncated prefix became a blob: %v", err)
		}
	})
	t.Run("bad range", func(t *testing.T) {
		data := []byte("0123456789")
		id, err := cl.Put(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			rg     string
			status int
			body   string
		}{
			{"bytes=0-0", 206, "0"}, {"bytes=9-", 206, "9"}, {"bytes=-3", 206, "789"},
			{"bytes=5-100", 206, "56789"}, {"bytes=10-", 416, ""}, {"bytes=-0", 416, ""},
			{"bytes=0-", 200, "0123456789"}, {"bytes=3-1", 200, "0123456789"},
		} {
			req, _ := http.NewRequest("GET", url+"/v1/blobs/"+id.String(), nil)
			req.Header.Set("Range", tc.rg)
			resp, err := c.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || (tc.status != 416 && string(b) != tc.body) {
				t.Errorf("Range %s: %d %q, want %d %q", tc.rg, resp.StatusCode, b, tc.status, tc.body)
			}
		}
	})
}

func TestShutdownNodeFailsOver(t *testing.T) {
	c := start(t, Options{})
	ms := c.Members()
	cl := c.Client(ms[1].Node.URL(), ms[2].Node.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ms[1].Node.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ms[1].Node = nil
	data := []byte("written while a node shuts down")
	id, err := cl.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("put with the first node shut down: %v", err)
	}
	if got, err := getBytes(cl, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get: %q %v", got, err)
	}
}

// TestFullDisk gives one node a 256 KiB disk: puts keep succeeding, the
// shards that do not fit land elsewhere, and everything reads back.
func TestFullDisk(t *testing.T) {
	c := start(t, Options{})
	victim := c.Members()[4]
	if err := c.KillNode(victim.ID); err != nil {
		t.Fatal(err)
	}
	shards := filepath.Join(victim.Dir, "shards")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", shards).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs here (needs root): %v %s", err, out)
	}
	t.Cleanup(func() {
		c.KillNode(victim.ID)
		exec.Command("umount", shards).Run()
	})
	if err := c.RestartNode(victim.ID); err != nil {
		t.Fatal(err)
	}
	waitAlive(t, c)
	cl := c.Client()
	r := rand.New(rand.NewPCG(9, 9))
	var blobs [][]byte
	for range 12 {
		blobs = append(blobs, randBytes(r, 10*chunk)) // ~36 KiB of shards per node each
	}
	ids := putAll(t, cl, blobs)
	verifyAll(t, cl, ids, blobs)
	if free := freeBytes(shards); free > 64<<10 {
		t.Fatalf("the small disk still has %d bytes free: the test did not fill it", free)
	}
	if entries, _ := os.ReadDir(shards); len(entries) == 0 {
		t.Fatal("the node with the small disk stored nothing")
	}
}

func freeBytes(path string) int64 {
	var s syscall.Statfs_t
	if err := syscall.Statfs(path, &s); err != nil {
		return -1
	}
	return int64(s.Bavail) * s.Bsize
}

// TestBlobOverTheLimit: a blob larger than the node accepts is refused up
// front — by its declared length, or by its manifest — with 413, before
// any byte is stored, and the cluster goes on. (A long chunk list is no
// limit: TestLongChunkLists.)
func TestBlobOverTheLimit(t *testing.T) {
	const limit = 1 << 20
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1, MaxBlobSize: limit})
	url := c.URLs()[0]

	// A declared length one byte over: answered before the body is sent.
	conn, err := c.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/blobs HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", limit+1)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, wire := httpError(t, resp); code != http.StatusRequestEntityTooLarge || wire != "too_large" {
		t.Fatalf("declared %d bytes: %d %s", limit+1, code, wire)
	}

	// A manifest of one byte too many.
	m := api.Manifest{ID: blob.Sum([]byte("big")), Size: limit + 1}
	for i := range 2 {
		m.Chunks = append(m.Chunks, api.ChunkRef{ID: blob.Sum([]byte(fmt.Sprint(i))), Len: limit/2 + int64(i)})
	}
	body, _ := json.Marshal(m)
	code, msg := send(t, c, http.MethodPost, url+"/v1/manifests", body)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "limit") {
		t.Fatalf("manifest of %d chunks: %d %s", len(m.Chunks), code, msg)
	}
	cl := c.Client()
	data := bytes.Repeat([]byte("still fine"), 1000)
	id, err := cl.Put(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	mustRead(t, cl, id, data)
}

// TestStalledClientsAreCut: clients that stop sending — mid-headers, or
// mid-body while holding every node-wide chunk upload slot — are cut after
// the idle limit, and an honest upload then goes through.
func TestStalledClientsAreCut(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1, ClientIdle: time.Second})
	url := c.URLs()[0]
	stall := func(request string) net.Conn {
		conn, err := c.Dial(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := io.WriteString(conn, request); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	var stalled []net.Conn
	stalled = append(stalled, stall("PUT /v1/chunks/"+blob.Sum(nil).String()+" HTTP/1.1\r\nHost: x\r\nX-Half: "))
	for i := range node.DefaultConfig().PutParallel { // every upload slot
		id := blob.Sum([]byte(fmt.Sprint("stalled", i)))
		stalled = append(stalled, stall(fmt.Sprintf("PUT /v1/chunks/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nten bytes.", id, 1<<20)))
	}
	// An honest upload gets a slot once the stalled ones are cut.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data := bytes.Repeat([]byte("honest "), 50000)
	code, body := sendCtx(ctx, t, c, http.MethodPut, url+"/v1/chunks/"+blob.Sum(data).String(), data)
	if code != http.StatusCreated {
		t.Fatalf("honest chunk upload behind stalled clients: %d %s", code, body)
	}
	for i, conn := range stalled {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		rest, err := io.ReadAll(conn) // the server closes the connection (perhaps after an error answer)
		if err != nil {
			t.Fatalf("stalled client %d was not cut: %v (read %q)", i, err, rest)
		}
	}
}
