package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/zeebo/blake3"
)

// realCluster is a cluster of real `atoll server` processes on loopback
// addresses 127.X.region.index, driven through the CLI.
type realCluster struct {
	t      *testing.T
	dir    string
	bin    string
	procs  []*exec.Cmd
	apis   []string // each node's API URL
	s3s    []string // each node's S3 endpoint
	server string   // the first node's API, the CLI's default
	certs  string   // the operator's certs dir: ca.crt and client.admin.*
}

// metricsToken lets a scraper read /metrics without a certificate.
const metricsToken = "scrape-me-0123456789"

// startReal builds the binary and starts regions × perRegion servers.
func startReal(t *testing.T, regions, perRegion int) *realCluster {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	c := &realCluster{t: t, dir: t.TempDir()}
	c.bin = filepath.Join(c.dir, "atoll")
	if out, err := exec.Command("go", "build", "-o", c.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	octet := 10 + rand.IntN(240)
	var ips []string
	for r := 1; r <= regions; r++ {
		for i := 1; i <= perRegion; i++ {
			ips = append(ips, fmt.Sprintf("127.%d.%d.%d", octet, r, i))
		}
	}
	for _, ip := range ips {
		c.apis = append(c.apis, "https://"+ip+":8700")
		c.s3s = append(c.s3s, "https://"+ip+":8900")
	}
	c.server = c.apis[0]
	// The operator's machine: a CA, then a certificate per node (copied
	// with ca.crt and gossip.key to the node's certs dir) and one for the
	// operator's CLI.
	ca := filepath.Join(c.dir, "ca")
	c.certs = filepath.Join(c.dir, "operator")
	certCmd := func(args ...string) {
		if out, err := exec.Command(c.bin, append([]string{"cert"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("atoll cert %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	certCmd("create-ca", "--certs-dir", ca)
	certCmd("create-client", "--certs-dir", ca, "--out", c.certs, "admin")
	for i, ip := range ips {
		certCmd("create-node", "--certs-dir", ca, "--out", filepath.Join(c.dir, fmt.Sprint("n", i), "certs"),
			"--region", fmt.Sprint("region", i/perRegion+1), "--id", fmt.Sprint("node", i), "--ip", ip)
	}
	tokenFile := filepath.Join(c.dir, "metrics.token")
	if err := os.WriteFile(tokenFile, []byte(metricsToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(c.dir, "master.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("a1", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, ip := range ips {
		// Settings come from all three sources: flags, the environment and
		// a config file.
		conf := filepath.Join(c.dir, fmt.Sprintf("n%d.toml", i))
		var seeds []string
		for _, o := range ips {
			if o != ip {
				seeds = append(seeds, strconv.Quote(o))
			}
		}
		os.WriteFile(conf, fmt.Appendf(nil, "log-level = \"warn\"\ns3-master-key-file = %q\nmetrics-token-file = %q\njoin = [%s]\n",
			keyFile, tokenFile, strings.Join(seeds, ", ")), 0o600)
		cmd := exec.Command(c.bin, "server", "--data", filepath.Join(c.dir, fmt.Sprint("n", i)), "--region", fmt.Sprint("region", i/perRegion+1),
			"--bind", ip, "--config", conf, "--certs-dir", filepath.Join(c.dir, fmt.Sprint("n", i), "certs"))
		cmd.Env = append(os.Environ(), fmt.Sprintf("ATOLL_BOOTSTRAP_EXPECT=%d", len(ips)))
		logf, _ := os.Create(filepath.Join(c.dir, fmt.Sprintf("n%d.log", i)))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c.procs = append(c.procs, cmd)
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			p.Process.Kill()
			p.Wait()
		}
	})
	return c
}

// command returns the CLI invoked with args against the cluster.
func (c *realCluster) command(args ...string) *exec.Cmd {
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), "ATOLL_SERVER="+c.server, "ATOLL_CERTS_DIR="+c.certs)
	return cmd
}

// run runs the CLI to completion.
func (c *realCluster) run(args ...string) (stdout, stderr string, code int) {
	cmd := c.command(args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// TestRealBinary runs three `atoll server` processes, one per region, and
// drives them through the CLI exactly as a script would.
func TestRealBinary(t *testing.T) {
	c := startReal(t, 3, 1)
	dir, server, run := c.dir, c.server, c.run
	procs := c.procs

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

	snap := filepath.Join(dir, "meta.snap")
	if _, e, code := run("snapshot", "save", snap); code != 0 {
		t.Fatalf("snapshot save: %s", e)
	}
	if fi, err := os.Stat(snap); err != nil || fi.Size() == 0 {
		t.Fatalf("snapshot file: %v", err)
	}
	if out, _, code := run("version"); code != 0 || !strings.Contains(out, "formats: data directory 2") {
		t.Fatalf("version: exit %d: %s", code, out)
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
	cmd := c.command("put", "--server", server, "-")
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

	testShareLinks(t, c)

	// Kill a region (SIGKILL); the blob still reads through the others.
	procs[2].Process.Signal(syscall.SIGKILL)
	procs[2].Wait()
	if _, errOut, code := run("get", id, "-o", outFile, "--server", c.apis[1]); code != 0 {
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

// waitFormed waits until the cluster reports n alive nodes and a leader.
func (c *realCluster) waitFormed(n int) {
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _, code := c.run("cluster", "--json")
		var ci struct {
			Leader string `json:"leader"`
			Nodes  []struct{ State string }
		}
		alive := 0
		if code == 0 && json.Unmarshal([]byte(out), &ci) == nil {
			for _, nd := range ci.Nodes {
				if nd.State == "alive" {
					alive++
				}
			}
		}
		if ci.Leader != "" && alive == n {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster of %d did not form: %s", n, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// peakRSS returns a process's peak resident set (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestLargeRoundTrip puts and gets a generated file through a 3×3
// cluster of real processes and checks that neither the CLI nor the
// gateway node needs memory that grows with the size: both stay under
// 300 MiB of peak RSS. ATOLL_LARGE_MIB sets the size (default 256; the
// measurement in BENCHMARKS.md uses 10240).
func TestLargeRoundTrip(t *testing.T) {
	mib := 256
	if s := os.Getenv("ATOLL_LARGE_MIB"); s != "" {
		mib, _ = strconv.Atoi(s)
	}
	c := startReal(t, 3, 3)
	in := filepath.Join(c.dir, "large.in")
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	gen := rand.NewChaCha8([32]byte{7})
	sum := blake3.New()
	w := io.MultiWriter(f, sum)
	buf := make([]byte, 8<<20)
	for range mib / 8 {
		gen.Read(buf)
		w.Write(buf)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := blob.ID(sum.Sum(nil)).String()
	c.waitFormed(9)

	const limit = 300 << 20
	timed := func(args ...string) (string, time.Duration, int64) {
		cmd := c.command(args...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, e.String())
		}
		return strings.TrimSpace(o.String()), time.Since(start), cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	}
	id, putTook, putRSS := timed("put", "--quiet", in)
	if id != want {
		t.Fatalf("put answered %s, want %s", id, want)
	}
	gwPut := peakRSS(t, c.procs[0].Process.Pid)
	out := filepath.Join(c.dir, "large.out")
	_, getTook, getRSS := timed("get", "--quiet", id, "-o", out) // verified against the ID
	gwGet := peakRSS(t, c.procs[0].Process.Pid)
	if st, err := os.Stat(out); err != nil || st.Size() != int64(mib)<<20 {
		t.Fatalf("downloaded file: %v %v", st, err)
	}
	mb := float64(int64(mib)<<20) / 1e6
	t.Logf("%d MiB: put %.1fs (%.0f MB/s), CLI peak RSS %d MiB; get %.1fs (%.0f MB/s), CLI peak RSS %d MiB; gateway peak RSS %d MiB after put, %d MiB after get",
		mib, putTook.Seconds(), mb/putTook.Seconds(), putRSS>>20, getTook.Seconds(), mb/getTook.Seconds(), getRSS>>20, gwPut>>20, gwGet>>20)
	for what, rss := range map[string]int64{"put CLI": putRSS, "get CLI": getRSS, "gateway": gwGet} {
		if rss > limit {
			t.Errorf("%s peak RSS %d MiB, over %d MiB", what, rss>>20, limit>>20)
		}
	}
}
