package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atollstore/atoll/pki"
)

// TestRealOutsiders runs real processes: the stock binary without
// credentials cannot join; without an operator certificate the CLI cannot
// do admin actions nor anyone reach /internal; a client certificate
// cannot speak raft; and SIGHUP makes a node serve its new certificate.
func TestRealOutsiders(t *testing.T) {
	c := startReal(t, 3, 1)
	c.waitFormed(3)
	host := strings.TrimSuffix(strings.TrimPrefix(c.apis[0], "https://"), ":8700")

	// The stock binary, no credentials, tries to join.
	outsiderIP := host[:strings.LastIndex(host, ".")-1] + "9.9" // 127.X.9.9
	out := exec.Command(c.bin, "server", "--insecure", "--data", filepath.Join(c.dir, "outsider"), "--region", "evil",
		"--bind", outsiderIP, "--join", host, "--bootstrap-expect", "9", "--s3-port", "0")
	logf, _ := os.Create(filepath.Join(c.dir, "outsider.log"))
	out.Stdout, out.Stderr = logf, logf
	if err := out.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Process.Kill(); out.Wait() })

	// Without an operator certificate: no admin action.
	anon := filepath.Join(c.dir, "anonymous")
	os.MkdirAll(anon, 0o700)
	ca, _ := os.ReadFile(filepath.Join(c.certs, pki.CACert))
	os.WriteFile(filepath.Join(anon, pki.CACert), ca, 0o644)
	cmd := c.command("key", "create")
	cmd.Env = append(cmd.Env, "ATOLL_CERTS_DIR="+anon)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "forbidden") {
		t.Fatalf("key create without an operator certificate: %v, %s", err, stderr.String())
	}
	creds, err := pki.LoadClient(anon, "")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialTLSContext: creds.DialTLS((&net.Dialer{}).DialContext)}}
	resp, err := hc.Post(c.apis[0]+"/internal/apply", "application/json", strings.NewReader(`{"v":1,"remove_member":"node1"}`))
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous /internal/apply: %v %v", resp, err)
	}
	resp.Body.Close()

	// /metrics: the token, or a certificate; not anonymous.
	for token, want := range map[string]int{metricsToken: 200, "wrong-token-0123456789": 403, "": 403} {
		req, _ := http.NewRequest("GET", c.apis[0]+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == 200 && !bytes.Contains(body, []byte("atoll_raft_term"))) {
			t.Fatalf("/metrics with token %q: %d, want %d", token, resp.StatusCode, want)
		}
	}

	// An operator certificate cannot speak raft.
	op, err := pki.LoadClient(c.certs, "admin")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", host+":8702", op.ClientTLS(host))
	if err == nil {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		conn.Write([]byte{0})
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("raft with a client certificate: %v", err)
	}

	// SIGHUP: node 0 gets a new certificate and serves it.
	nodeCerts := filepath.Join(c.dir, "n0", "certs")
	if b, err := exec.Command(c.bin, "cert", "create-node", "--certs-dir", filepath.Join(c.dir, "ca"), "--out", nodeCerts,
		"--region", "region1", "--id", "node0", "--ip", host).CombinedOutput(); err != nil {
		t.Fatalf("re-issue: %v %s", err, b)
	}
	crt, _ := os.ReadFile(filepath.Join(nodeCerts, pki.NodeCert))
	p, _ := pem.Decode(crt)
	fresh, err := x509.ParseCertificate(p.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	c.procs[0].Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.Dial("tcp", host+":8700", op.ClientTLS(host))
		if err == nil {
			served := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			if served.SerialNumber.Cmp(fresh.SerialNumber) == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 0 still serves its old certificate after SIGHUP (%v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The outsider never made it in (it ran all along, trying), and the
	// cluster still works.
	time.Sleep(2 * time.Second)
	if logs, _ := os.ReadFile(filepath.Join(c.dir, "outsider.log")); !bytes.Contains(logs, []byte("listening on")) {
		t.Fatalf("the outsider did not start:\n%s", logs)
	}
	o, e, code := c.run("cluster", "--json")
	var ci struct {
		Nodes []struct{ ID, Region string }
	}
	if code != 0 || json.Unmarshal([]byte(o), &ci) != nil || len(ci.Nodes) != 3 {
		t.Fatalf("cluster after the outsider tried to join: exit %d %s %s", code, o, e)
	}
	for _, n := range ci.Nodes {
		if n.Region == "evil" {
			t.Fatalf("the outsider is in the cluster: %s", o)
		}
	}
	if o, e, code := c.run("key", "create"); code != 0 {
		t.Fatalf("operator key create after the reload: %s %s", o, e)
	}
}
