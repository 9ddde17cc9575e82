package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestS3Tools drives a real three-process cluster with the S3 tools people
// use: rclone, the AWS CLI and s3cmd (.ci/run installs them from Debian).
// Outside CI a missing tool skips its part; in CI it fails.
func TestS3Tools(t *testing.T) {
	c := startReal(t, 3, 1)
	c.waitFormed(3)
	out, errOut, code := c.run("key", "create", "--json")
	var key struct {
		Access string `json:"access_key"`
		Secret string `json:"secret_key"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &key) != nil || key.Access == "" || key.Secret == "" {
		t.Fatalf("key create --json: exit %d: %s %s", code, out, errOut)
	}
	if out, _, _ := c.run("key", "list"); !strings.Contains(out, key.Access) || strings.Contains(out, key.Secret) {
		t.Fatalf("key list: %s", out)
	}
	endpoint := c.s3s[0]
	host := strings.TrimPrefix(endpoint, "https://")
	caFile := filepath.Join(c.certs, "ca.crt") // every tool checks the node's certificate against it

	// A directory tree to copy around, with awkward names.
	tree := filepath.Join(c.dir, "tree")
	r := rand.New(rand.NewPCG(5, 5))
	files := map[string]int{"a.txt": 10, "empty": 0, "sub/b.bin": 300 << 10, "sub/deeper/c d+e.bin": 2 << 20, "ünïcode/f": 1234}
	for name, size := range files {
		p := filepath.Join(tree, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	big := filepath.Join(c.dir, "big.bin")
	bigData := make([]byte, 100<<20)
	rand.NewChaCha8([32]byte{9}).Read(bigData)
	if err := os.WriteFile(big, bigData, 0o644); err != nil {
		t.Fatal(err)
	}

	tool := func(t *testing.T, name string, env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		// NB: the machine may set a CA bundle of its own (for its proxy).
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(v string) bool { return strings.HasPrefix(v, "AWS_CA_BUNDLE=") }), env...)
		start := time.Now()
		defer func() { t.Logf("%s %s: %v", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond)) }()
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\n%s\n%s", name, strings.Join(args, " "), err, o.String(), e.String())
		}
		return o.String()
	}
	need := func(t *testing.T, name string) {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed (.ci/run installs it)", name)
			}
			t.Skipf("%s is not installed", name)
		}
	}
	sameFile := func(t *testing.T, a, b string) {
		t.Helper()
		x, err1 := os.ReadFile(a)
		y, err2 := os.ReadFile(b)
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			t.Fatalf("%s and %s differ (%v %v)", a, b, err1, err2)
		}
	}

	t.Run("rclone", func(t *testing.T) {
		need(t, "rclone")
		env := []string{"RCLONE_CONFIG_ATOLL_TYPE=s3", "RCLONE_CONFIG_ATOLL_PROVIDER=Other", "RCLONE_CONFIG_ATOLL_ENDPOINT=" + endpoint,
			"RCLONE_CONFIG_ATOLL_ACCESS_KEY_ID=" + key.Access, "RCLONE_CONFIG_ATOLL_SECRET_ACCESS_KEY=" + key.Secret,
			"RCLONE_CONFIG_ATOLL_FORCE_PATH_STYLE=true", "RCLONE_CONFIG=/dev/null", "RCLONE_CA_CERT=" + caFile}
		tool(t, "rclone", env, "mkdir", "atoll:rclone")
		tool(t, "rclone", env, "copy", tree, "atoll:rclone/tree")
		back := filepath.Join(c.dir, "rclone-back")
		tool(t, "rclone", env, "copy", "atoll:rclone/tree", back)
		tool(t, "rclone", env, "check", tree, "atoll:rclone/tree") // sizes and MD5s
		for name := range files {
			sameFile(t, filepath.Join(tree, name), filepath.Join(back, name))
		}
		if ls := tool(t, "rclone", env, "lsf", "-R", "atoll:rclone"); strings.Count(ls, "\n") < len(files) {
			t.Fatalf("rclone lsf: %s", ls)
		}
	})

	t.Run("aws", func(t *testing.T) {
		need(t, "aws")
		cfg := filepath.Join(c.dir, "aws-config")
		os.WriteFile(cfg, []byte("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n"), 0o644)
		env := []string{"AWS_ACCESS_KEY_ID=" + key.Access, "AWS_SECRET_ACCESS_KEY=" + key.Secret, "AWS_CONFIG_FILE=" + cfg,
			"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=", "AWS_CA_BUNDLE=" + caFile}
		aws := func(args ...string) string {
			t.Helper()
			return tool(t, "aws", env, append([]string{"--endpoint-url", endpoint}, args...)...)
		}
		aws("s3", "mb", "s3://awscli")
		aws("s3", "cp", big, "s3://awscli/big.bin") // 100 MiB: a multipart upload
		head := aws("s3api", "head-object", "--bucket", "awscli", "--key", "big.bin")
		if !strings.Contains(head, fmt.Sprint(len(bigData))) || !strings.Contains(head, `-`) {
			t.Fatalf("head-object of a multipart upload: %s", head)
		}
		got := filepath.Join(c.dir, "aws-big")
		aws("s3", "cp", "s3://awscli/big.bin", got)
		sameFile(t, big, got)
		aws("s3", "sync", tree, "s3://awscli/tree")
		if ls := aws("s3", "ls", "--recursive", "s3://awscli/tree/"); strings.Count(ls, "\n") != len(files) {
			t.Fatalf("aws s3 ls: %s", ls)
		}
		back := filepath.Join(c.dir, "aws-back")
		aws("s3", "sync", "s3://awscli/tree", back)
		for name := range files {
			sameFile(t, filepath.Join(tree, name), filepath.Join(back, name))
		}
		if again := aws("s3", "sync", tree, "s3://awscli/tree"); strings.TrimSpace(again) != "" {
			t.Fatalf("a second sync copied again: %s", again)
		}
		if l := aws("s3api", "list-objects-v2", "--bucket", "awscli", "--prefix", "tree/", "--delimiter", "/"); !strings.Contains(l, "tree/sub/") {
			t.Fatalf("list-objects-v2 with a delimiter: %s", l)
		}
	})

	t.Run("s3cmd", func(t *testing.T) {
		need(t, "s3cmd")
		cfg := filepath.Join(c.dir, "s3cmd.cfg")
		os.WriteFile(cfg, []byte(fmt.Sprintf("[default]\naccess_key = %s\nsecret_key = %s\nhost_base = %s\nhost_bucket = %s\nuse_https = True\nca_certs_file = %s\ncheck_ssl_certificate = True\nsignature_v2 = False\nbucket_location = us-east-1\n",
			key.Access, key.Secret, host, host, caFile)), 0o600)
		s3cmd := func(args ...string) string {
			t.Helper()
			return tool(t, "s3cmd", nil, append([]string{"-c", cfg}, args...)...)
		}
		s3cmd("mb", "s3://s3cmd")
		s3cmd("put", filepath.Join(tree, "sub/deeper/c d+e.bin"), "s3://s3cmd/c d+e.bin")
		if ls := s3cmd("ls", "s3://s3cmd"); !strings.Contains(ls, "c d+e.bin") {
			t.Fatalf("s3cmd ls: %s", ls)
		}
		if ls := s3cmd("ls"); !strings.Contains(ls, "s3://s3cmd") {
			t.Fatalf("s3cmd ls (buckets): %s", ls)
		}
		got := filepath.Join(c.dir, "s3cmd-got")
		s3cmd("get", "s3://s3cmd/c d+e.bin", got)
		sameFile(t, filepath.Join(tree, "sub/deeper/c d+e.bin"), got)
		s3cmd("del", "s3://s3cmd/c d+e.bin")
		s3cmd("rb", "s3://s3cmd")
	})
}
