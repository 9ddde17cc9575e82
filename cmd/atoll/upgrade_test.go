package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/pki"
)

// upgradeFrom is the release a rolling upgrade starts from: the first
// commit with today's wire protocols (mTLS, access keys). Override with
// ATOLL_UPGRADE_FROM=COMMIT.
const upgradeFrom = "08fcdd5"

// TestRollingUpgrade runs a 3x3 cluster of real processes built from an
// earlier commit, replaces the binary node by node (graceful stop, start
// the new one on the same data and certificates, wait until it is ready)
// while clients read and write, and checks that no request failed and no
// blob was lost. It needs the repository's history (git); without it, it
// skips.
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries and runs nine processes")
	}
	if raceEnabled {
		// Nine processes beside the -race suite starve its clusters of
		// CPU; .ci/run runs this test on its own, without -race.
		t.Skip("under -race; run: go test -run TestRollingUpgrade ./cmd/atoll")
	}
	from := upgradeFrom
	if v := os.Getenv("ATOLL_UPGRADE_FROM"); v != "" {
		from = v
	}
	dir := t.TempDir()
	archive, err := exec.Command("git", "-C", "../..", "archive", "--format=tar", from).Output() // the whole repository
	if err != nil {
		t.Skipf("no git history to build %s from: %v", from, err)
	}
	oldSrc := filepath.Join(dir, "old-src")
	if err := untar(archive, oldSrc); err != nil {
		t.Fatal(err)
	}
	oldBin, newBin := filepath.Join(dir, "atoll-old"), filepath.Join(dir, "atoll-new")
	build := exec.Command("go", "build", "-o", oldBin, "./cmd/atoll")
	build.Dir = oldSrc
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", from, err, out)
	}
	if out, err := exec.Command("go", "build", "-o", newBin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	// Certificates, made by the new binary (the format did not change).
	octet := 10 + rand.IntN(240)
	var ips, apis []string
	for r := 1; r <= 3; r++ {
		for i := 1; i <= 3; i++ {
			ip := fmt.Sprintf("127.%d.%d.%d", octet, r, i)
			ips, apis = append(ips, ip), append(apis, "https://"+ip+":8700")
		}
	}
	ca, ops := filepath.Join(dir, "ca"), filepath.Join(dir, "ops")
	certCmd := func(args ...string) {
		if out, err := exec.Command(newBin, append([]string{"cert"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("atoll cert %v: %v\n%s", args, err, out)
		}
	}
	certCmd("create-ca", "--certs-dir", ca)
	certCmd("create-client", "--certs-dir", ca, "--out", ops, "admin")
	args := make([][]string, len(ips))
	for i, ip := range ips {
		region := fmt.Sprint("region", i/3+1)
		certs := filepath.Join(dir, fmt.Sprint("n", i), "certs")
		certCmd("create-node", "--certs-dir", ca, "--out", certs, "--region", region, "--id", fmt.Sprint("node", i), "--ip", ip)
		var seeds []string
		for _, o := range ips {
			if o != ip {
				seeds = append(seeds, o)
			}
		}
		args[i] = []string{"server", "--data", filepath.Join(dir, fmt.Sprint("n", i)), "--region", region, "--bind", ip,
			"--join", strings.Join(seeds, ","), "--bootstrap-expect", "9", "--certs-dir", certs, "--s3-port", "0", "--log-level", "warn"}
	}
	procs := make([]*exec.Cmd, len(ips))
	startNode := func(i int, bin string) {
		cmd := exec.Command(bin, args[i]...)
		logf, _ := os.OpenFile(filepath.Join(dir, fmt.Sprintf("n%d.log", i)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = cmd
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p != nil {
				p.Process.Kill()
				p.Wait()
			}
		}
	})
	for i := range ips {
		startNode(i, oldBin)
	}
	creds, err := pki.LoadClient(ops, "admin")
	if err != nil {
		t.Fatal(err)
	}
	cl := client.NewTLS(creds, apis...)
	ctx := context.Background()
	waitAlive := func(what string) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			ci, err := cl.Cluster(ctx)
			alive := 0
			if err == nil {
				for _, n := range ci.Nodes {
					if n.State == "alive" && n.InLayout {
						alive++
					}
				}
			}
			if err == nil && ci.Leader != "" && alive == 9 {
				return
			}
			if time.Now().After(deadline) {
				logs, _ := os.ReadFile(filepath.Join(dir, "n0.log"))
				t.Fatalf("%s: %v %+v\nnode 0 log:\n%s", what, err, ci, logs)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	waitAlive("the old cluster to form")

	// A steady load through every node's address (the client fails over).
	var mu sync.Mutex
	stored := map[blob.ID][]byte{}
	var ids []blob.ID
	var failures []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		r := rand.New(rand.NewPCG(uint64(w), 5))
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				data := make([]byte, 1+r.IntN(3<<20))
				for i := range data {
					data[i] = byte(r.Uint32())
				}
				id, err := cl.Put(ctx, bytes.NewReader(data))
				mu.Lock()
				if err != nil {
					failures = append(failures, fmt.Errorf("put: %w", err))
				} else {
					stored[id] = data
					ids = append(ids, id)
				}
				var pick blob.ID
				if len(ids) > 0 {
					pick = ids[r.IntN(len(ids))]
				}
				want := stored[pick]
				mu.Unlock()
				if want == nil {
					continue
				}
				rc, err := cl.Get(ctx, pick)
				if err == nil {
					var got []byte
					got, err = io.ReadAll(rc)
					rc.Close()
					if err == nil && !bytes.Equal(got, want) {
						err = errors.New("wrong bytes")
					}
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Errorf("get %s: %w", pick, err))
					mu.Unlock()
				}
			}
		})
	}

	for i := range procs {
		time.Sleep(time.Second)
		procs[i].Process.Signal(syscall.SIGTERM)
		procs[i].Wait()
		startNode(i, newBin)
		waitAlive(fmt.Sprintf("node %d back on the new binary", i))
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	t.Logf("%d blobs written during the upgrade, %d failed requests", len(ids), len(failures))
	if len(failures) > 0 {
		t.Fatalf("%d requests failed during the rolling upgrade; first: %v", len(failures), failures[0])
	}
	if len(ids) < 9 {
		t.Fatalf("only %d writes went through", len(ids))
	}
	for _, id := range ids {
		rc, err := cl.Get(ctx, id)
		if err != nil {
			t.Fatalf("after the upgrade, get %s: %v", id, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, stored[id]) {
			t.Fatalf("after the upgrade, %s came back wrong: %v", id, err)
		}
	}
	if out, err := exec.Command(newBin, "version").Output(); err != nil || !strings.Contains(string(out), "formats:") {
		t.Fatalf("version: %v %s", err, out)
	}
}

// untar extracts a tar archive (git archive's) into dir.
func untar(b []byte, dir string) error {
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, h.Name)
		if !strings.HasPrefix(p, filepath.Clean(dir)+string(os.PathSeparator)) {
			return fmt.Errorf("archive path %q escapes", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
}
