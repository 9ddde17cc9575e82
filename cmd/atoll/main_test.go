package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRealBinary runs three `atoll server` processes, one per region, and
// drives them through the CLI exactly as a script would.
func TestRealBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "atoll")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	octet := 10 + rand.IntN(240)
	ips := []string{}
	for r := 1; r <= 3; r++ {
		ips = append(ips, fmt.Sprintf("127.%d.%d.1", octet, r))
	}
	var procs []*exec.Cmd
	for i, ip := range ips {
		var others []string
		for _, o := range ips {
			if o != ip {
				others = append(others, o)
			}
		}
		cmd := exec.Command(bin, "server", "--data", filepath.Join(dir, fmt.Sprint("n", i)), "--region", fmt.Sprint("region", i+1),
			"--bind", ip, "--join", strings.Join(others, ","), "--bootstrap-expect", "3", "--log-level", "warn")
		logf, _ := os.Create(filepath.Join(dir, fmt.Sprintf("n%d.log", i)))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	})
	server := "http://" + ips[0] + ":8700"
	run := func(args ...string) (stdout, stderr string, code int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "ATOLL_SERVER="+server)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}

	// The cluster forms.
	var ci struct {
		Leader string `json:"leader"`
		Nodes  []struct {
			ID, Region, Zone, Addr, State string
			Voter                         bool
		} `json:"nodes"`
		K, M                int
		ToleratesRegionLoss *bool `json:"tolerates_region_loss"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _, code := run("cluster", "--json")
		if code == 0 && json.Unmarshal([]byte(out), &ci) == nil && ci.Leader != "" && len(ci.Nodes) == 3 && ci.ToleratesRegionLoss != nil && *ci.ToleratesRegionLoss {
			break
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(dir, "n0.log"))
			t.Fatalf("cluster did not form: %s\nnode 0 log:\n%s", out, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ci.K != 6 || ci.M != 3 {
		t.Fatalf("k+m = %d+%d", ci.K, ci.M)
	}
	for _, n := range ci.Nodes {
		if n.ID == "" || n.Region == "" || n.Zone == "" || n.Addr == "" || n.State != "alive" {
			t.Fatalf("node entry %+v", n)
		}
	}

	// put prints the ID alone; get returns the bytes.
	data := make([]byte, 9<<19) // 4.5 MiB: a few content-defined chunks
	rand.NewChaCha8([32]byte{1}).Read(data)
	in := filepath.Join(dir, "in.bin")
	os.WriteFile(in, data, 0o644)
	out, errOut, code := run("put", in)
	if code != 0 {
		t.Fatalf("put: exit %d: %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	if out != id+"\n" || len(id) != 52 {
		t.Fatalf("put printed %q", out)
	}
	outFile := filepath.Join(dir, "out.bin")
	if _, errOut, code := run("get", id, "-o", outFile); code != 0 || errOut != "" {
		t.Fatalf("get: exit %d, stderr %q (want no progress output off a terminal)", code, errOut)
	}
	if got, _ := os.ReadFile(outFile); !bytes.Equal(got, data) {
		t.Fatalf("get -o wrote %d bytes, want %d identical", len(got), len(data))
	}
	// A download cut at a random offset resumes to a byte-exact file.
	for _, cut := range []int64{0, 1, rand.Int64N(int64(len(data))), int64(len(data))} {
		os.Truncate(outFile, cut)
		if _, errOut, code := run("get", id, "-o", outFile, "--continue"); code != 0 {
			t.Fatalf("get --continue from %d: exit %d: %s", cut, code, errOut)
		}
		if got, _ := os.ReadFile(outFile); !bytes.Equal(got, data) {
			t.Fatalf("get --continue from %d: %d bytes, not identical", cut, len(got))
		}
	}
	// A damaged partial file is caught by the end-to-end hash check.
	os.Truncate(outFile, 1000)
	f, _ := os.OpenFile(outFile, os.O_RDWR, 0)
	f.WriteAt([]byte{'#'}, 10)
	f.Close()
	if _, errOut, code := run("get", id, "-o", outFile, "--continue"); code != 1 || !strings.Contains(errOut, "verification failed") {
		t.Fatalf("resuming a damaged partial: exit %d, stderr %q", code, errOut)
	}
	// A file longer than the blob is not a partial download of it.
	os.WriteFile(outFile, append(bytes.Clone(data), 'x'), 0o644)
	if _, errOut, code := run("get", id, "-o", outFile, "--continue"); code != 1 || !strings.Contains(errOut, "not a partial download") {
		t.Fatalf("resuming a longer file: exit %d, stderr %q", code, errOut)
	}
	// stdin put and stdout get.
	cmd := exec.Command(bin, "put", "--server", server, "-")
	cmd.Stdin = bytes.NewReader([]byte("from stdin"))
	sid, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := run("get", strings.TrimSpace(string(sid))); got != "from stdin" {
		t.Fatalf("get to stdout: %q", got)
	}

	// stat --json has the documented keys.
	out, _, code = run("stat", "--json", id)
	var st struct {
		ID     string `json:"id"`
		Size   int64  `json:"size"`
		Chunks []struct {
			Len    int64 `json:"len"`
			Shards []struct {
				Node, Region string
				Healthy      *bool `json:"healthy"`
			} `json:"shards"`
		} `json:"chunks"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.ID != id || st.Size != int64(len(data)) || len(st.Chunks) < 2 {
		t.Fatalf("stat --json: exit %d: %s", code, out)
	}
	var sum int64
	for _, c := range st.Chunks {
		sum += c.Len
	}
	if sum != st.Size {
		t.Fatalf("stat --json: chunks add up to %d of %d bytes", sum, st.Size)
	}
	for _, s := range st.Chunks[0].Shards {
		if s.Node == "" || s.Region == "" || s.Healthy == nil || !*s.Healthy {
			t.Fatalf("shard entry %+v", s)
		}
	}

	// Errors: unknown ID, malformed ID, unreachable server.
	unknown := strings.Repeat("a", 52)
	if _, e, code := run("get", unknown); code != 1 || !strings.Contains(e, "not found") {
		t.Fatalf("get unknown: exit %d, stderr %q", code, e)
	}
	if _, e, code := run("stat", "nonsense"); code == 0 || !strings.Contains(e, "invalid id") {
		t.Fatalf("stat malformed: exit %d, stderr %q", code, e)
	}
	if _, e, code := run("cluster", "--server", "http://127.0.0.1:1"); code != 1 || !strings.Contains(e, "unreachable") {
		t.Fatalf("unreachable server: exit %d, stderr %q", code, e)
	}

	// Kill a region (SIGKILL); the blob still reads through the others.
	procs[2].Process.Signal(syscall.SIGKILL)
	procs[2].Wait()
	if _, errOut, code := run("get", id, "-o", outFile, "--server", "http://"+ips[1]+":8700"); code != 0 {
		t.Fatalf("get with a region killed: exit %d: %s", code, errOut)
	}
	if got, _ := os.ReadFile(outFile); !bytes.Equal(got, data) {
		t.Fatal("bytes differ with a region killed")
	}

	// rm, then the blob is gone; a graceful stop exits 0.
	if _, e, code := run("rm", id); code != 0 {
		t.Fatalf("rm: exit %d %s", code, e)
	}
	if _, e, code := run("get", id); code != 1 || !strings.Contains(e, "not found") {
		t.Fatalf("get after rm: exit %d %q", code, e)
	}
	procs[1].Process.Signal(syscall.SIGTERM)
	if err := procs[1].Wait(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
}
