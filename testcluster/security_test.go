package testcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/node"
	"github.com/atollstore/atoll/pki"
	"github.com/atollstore/atoll/raftstore"
	"github.com/atollstore/atoll/storage"
)

// httpAs is an HTTP client presenting creds (which may be anonymous).
func httpAs(creds *pki.Creds) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialTLSContext: creds.DialTLS(d.DialContext)}}
}

// status sends one request and returns its status (0 if it failed).
func status(hc *http.Client, method, url string, body []byte) (int, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// forgedShard is a self-consistent shard file (valid header and CRC).
func forgedShard(t *testing.T) (storage.Ref, []byte) {
	t.Helper()
	payload := []byte("a shard an attacker made up")
	ref := storage.Ref{Chunk: blob.Sum(payload), Index: 0}
	h := erasure.Header{K: 2, M: 1, Index: ref.Index, ChunkLen: int64(2 * len(payload)), ShardLen: len(payload), Chunk: ref.Chunk, Checksum: erasure.Checksum(payload)}
	b := h.Marshal()
	return ref, append(b[:], payload...)
}

func mustCreds(t *testing.T, ca *pki.CA, id pki.Identity, ip string, bundle []byte, gossip []byte) *pki.Creds {
	t.Helper()
	var ips []net.IP
	if ip != "" {
		ips = []net.IP{net.ParseIP(ip)}
	}
	crt, key, err := ca.Issue(id, ips, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	if gossip != nil {
		keys = [][]byte{gossip}
	}
	creds, err := pki.NewCreds(crt, key, bundle, keys)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// TestOutsidersAreRefused: without a node certificate nobody writes a
// shard, commits a command, reads a node's internals or speaks raft; an
// operator's client certificate allows admin actions and nothing of the
// nodes' own.
func TestOutsidersAreRefused(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1})
	target := c.Members()[0]
	url := target.Node.URL()
	_, _, raftPort := target.Node.Ports()
	raftAddr := net.JoinHostPort(target.IP, strconv.Itoa(raftPort))
	ref, shard := forgedShard(t)
	evil, _ := json.Marshal(raftstore.SetMemberCommand(raftstore.Member{Raft: "127.0.0.1:1"}))
	layoutBefore, _ := target.Node.Meta().Layout()

	anonymous, operator := httpAs(c.pki.anonymous), httpAs(c.pki.operator)
	for _, tc := range []struct {
		who          string
		hc           *http.Client
		method, path string
		body         []byte
		want         int
	}{
		{"anonymous", anonymous, "PUT", fmt.Sprintf("/internal/shards/%s/%d", ref.Chunk, ref.Index), shard, 403},
		{"anonymous", anonymous, "POST", "/internal/apply", evil, 403},
		{"anonymous", anonymous, "GET", "/internal/info", nil, 403},
		{"anonymous", anonymous, "POST", "/internal/readindex", nil, 403},
		{"anonymous", anonymous, "POST", "/v1/keys", nil, 403},
		{"anonymous", anonymous, "POST", "/v1/nodes/" + string(target.ID) + "/drain", nil, 403},
		{"anonymous", anonymous, "POST", "/v1/nodes/" + string(target.ID) + "/revoke", nil, 403},
		{"anonymous", anonymous, "DELETE", "/v1/nodes/" + string(target.ID), nil, 403},
		{"operator", operator, "PUT", fmt.Sprintf("/internal/shards/%s/%d", ref.Chunk, ref.Index), shard, 403},
		{"operator", operator, "POST", "/internal/apply", evil, 403},
		{"operator", operator, "GET", "/internal/info", nil, 403},
		{"operator", operator, "POST", "/v1/keys", nil, 201},
		{"anonymous", anonymous, "GET", "/v1/cluster", nil, 403},
		{"operator", operator, "GET", "/v1/cluster", nil, 200},
	} {
		got, err := status(tc.hc, tc.method, url+tc.path, tc.body)
		if got != tc.want {
			t.Errorf("%s %s %s: %d %v, want %d", tc.who, tc.method, tc.path, got, err, tc.want)
		}
	}
	if _, err := target.Disk.Stat(context.Background(), ref); err == nil {
		t.Error("the forged shard was stored")
	}
	if l, _ := target.Node.Meta().Layout(); l.Version != layoutBefore.Version {
		t.Errorf("the layout changed: version %d -> %d", layoutBefore.Version, l.Version)
	}

	// Plain HTTP gets no answer but a refusal.
	if got, _ := status(http.DefaultClient, "GET", strings.Replace(url, "https://", "http://", 1)+"/v1/cluster", nil); got == 200 {
		t.Error("the API answered plain HTTP")
	}

	// Raft: neither a client certificate, nor a node certificate of
	// another CA, nor no certificate completes a handshake.
	other, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	for name, creds := range map[string]*pki.Creds{
		"operator":          c.pki.operator,
		"anonymous":         c.pki.anonymous,
		"node of other CA":  mustCreds(t, other, pki.Node("eu-west-9", "eu-west"), target.IP, append(other.CertPEM(), c.CA().CertPEM()...), nil),
		"client of our CA2": mustCreds(t, c.CA(), pki.Client("x"), "", c.CA().CertPEM(), nil),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		conn, err := creds.DialTLS((&net.Dialer{}).DialContext)(ctx, "tcp", raftAddr)
		if err == nil {
			// TLS 1.3: a refused client certificate shows on the first read.
			conn.SetDeadline(time.Now().Add(2 * time.Second))
			conn.Write([]byte{1}) // raft's RPC type byte
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		cancel()
		if err == nil || (!strings.Contains(err.Error(), "certificate") && !strings.Contains(err.Error(), "not a node")) {
			t.Errorf("raft port, %s: %v, want a refused handshake", name, err)
		}
	}
	if conn, err := net.Dial("tcp", raftAddr); err == nil {
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		conn.Write([]byte{0, 1, 2, 3}) // raft without TLS
		if n, _ := conn.Read(make([]byte, 64)); n > 0 {
			t.Error("the raft port answered plaintext")
		}
		conn.Close()
	}
}

// rogue starts a node outside the cluster's control that tries to join
// through target's gossip.
func rogue(t *testing.T, c *Cluster, id blob.NodeID, region blob.Region, ip string, creds *pki.Creds) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.Dir, cfg.ID, cfg.Region, cfg.Bind, cfg.EphemeralPorts = t.TempDir(), id, region, ip, true
	cfg.Join, cfg.BootstrapExpect = []string{c.Members()[0].Node.GossipAddr()}, 99
	cfg.Timings, cfg.Creds = node.LoopbackTimings(), creds
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("rogue %s: %v", id, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestRogueNodesAreNotAdmitted: a node with no credentials cannot even
// gossip with the cluster; one with the gossip key but a certificate of
// another CA, or a valid certificate for another address, gossips but is
// never let into the layout, so never holds a shard or a vote.
func TestRogueNodesAreNotAdmitted(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1})
	base := c.Members()[0].IP[:strings.LastIndex(c.Members()[0].IP, ".")]
	other, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	rogue(t, c, "stock", "eu-west", base+".7", nil) // the stock binary, --insecure
	rogue(t, c, "forged", "eu-west", base+".8",
		mustCreds(t, other, pki.Node("forged", "eu-west"), base+".8", append(other.CertPEM(), c.CA().CertPEM()...), c.GossipKey()))
	rogue(t, c, "elsewhere", "eu-west", base+".9", // a valid certificate, for another IP
		mustCreds(t, c.CA(), pki.Node("elsewhere", "eu-west"), base+".19", c.CA().CertPEM(), c.GossipKey()))

	// Positive control: a properly issued node joins meanwhile.
	good, err := c.AddNode("eu-west")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.waitFor(ctx, "the good node in the layout", func() bool {
		leader := c.Leader()
		if leader == nil {
			return false
		}
		l, _ := leader.Node.Meta().Layout()
		_, ok := l.Member(good.ID)
		return ok
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // a dozen upkeep passes
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := leader.Node.Meta().Layout()
	ci := leader.Node.Cluster(ctx)
	for _, id := range []blob.NodeID{"stock", "forged", "elsewhere"} {
		if _, ok := l.Member(id); ok {
			t.Errorf("rogue node %s is in the layout", id)
		}
		if slices.ContainsFunc(ci.Nodes, func(n api.NodeInfo) bool { return n.ID == id && (n.Voter || n.InLayout) }) {
			t.Errorf("rogue node %s is a raft voter or in the layout", id)
		}
	}
	if slices.ContainsFunc(ci.Nodes, func(n api.NodeInfo) bool { return n.ID == "stock" }) {
		t.Error("a node without the gossip key is in gossip")
	}
	if !slices.ContainsFunc(ci.Nodes, func(n api.NodeInfo) bool { return n.ID == "forged" }) {
		t.Log("note: the forged node did not even show in gossip")
	}
}

// TestRevokedNodeIsRefused: once revoked, a node is refused by every
// other node within seconds, its shards are rebuilt elsewhere, and the
// cluster keeps reading and writing throughout.
func TestRevokedNodeIsRefused(t *testing.T) {
	c := start(t, Options{})
	ctx := context.Background()
	cl := c.Client()
	blobs := corpus(61, 12)
	ids := putAll(t, cl, blobs)
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var victim *Member
	for _, m := range c.Members() {
		if m.Region != leader.Region {
			victim = m
			break
		}
	}
	ask := httpAs(victim.Creds) // the seized node's own credentials
	peer := c.Members()[0]
	if peer == victim {
		peer = c.Members()[1]
	}
	if got, err := status(ask, "GET", peer.Node.URL()+"/internal/info", nil); got != 200 {
		t.Fatalf("before revocation: %d %v", got, err)
	}
	if err := c.Client().RevokeNode(ctx, victim.ID); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	for _, m := range c.Members() {
		if m == victim {
			continue
		}
		if err := c.waitFor(ctx, "revocation to reach "+string(m.ID), func() bool {
			got, _ := status(httpAs(victim.Creds), "GET", m.Node.URL()+"/internal/info", nil) // a fresh handshake
			kept, _ := status(ask, "GET", m.Node.URL()+"/internal/info", nil)                 // a connection opened before
			return got == 0 && kept != 200
		}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("every node refuses the revoked node %v after revocation", time.Since(revokedAt).Round(time.Millisecond))
	// The cluster stays writable and readable, and rebuilds what the
	// revoked node held on the others. (Clients stop using the revoked
	// node: whoever holds it now may answer anything.)
	var urls []string
	for _, m := range c.Members() {
		if m != victim {
			urls = append(urls, m.Node.URL())
		}
	}
	cl = c.Client(urls...)
	more := corpus(62, 4)
	ids = append(ids, putAll(t, cl, more)...)
	blobs = append(blobs, more...)
	if err := c.waitFor(ctx, "the revoked node's shards rebuilt", func() bool {
		for _, id := range ids {
			st, err := cl.Stat(ctx, id)
			if err != nil {
				return false
			}
			for _, ch := range st.Chunks {
				for _, s := range ch.Shards {
					if s.Node == victim.ID {
						return false
					}
				}
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		mustRead(t, cl, id, blobs[i])
	}
	// A restart does not bring it back.
	c.KillNode(victim.ID)
	if err := c.RestartNode(victim.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	leader, err = c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := leader.Node.Meta().Layout(); slices.ContainsFunc(l.Nodes, func(m raftstore.Member) bool { return m.ID == victim.ID }) {
		t.Fatal("the revoked node is back in the layout after a restart")
	}
}

// TestCertificateRotation rotates the CA and the gossip key of a running
// 3x3 cluster, step by step as an operator would (trust both, re-issue,
// retire the old), under a steady load of reads and writes: no request
// fails, and afterwards a node restarted with the new credentials rejoins
// while a certificate of the old CA is refused.
func TestCertificateRotation(t *testing.T) {
	c := start(t, Options{})
	ctx := context.Background()
	cl := c.Client()
	blobs := corpus(71, 6)
	l := startLoad(cl, putAll(t, cl, blobs), blobs)

	oldCA, oldKey := c.CA(), c.GossipKey()
	newCA, err := pki.NewCA("rotated")
	if err != nil {
		t.Fatal(err)
	}
	newKey := make([]byte, pki.GossipKeySize)
	rand.Read(newKey)
	both := append(newCA.CertPEM(), oldCA.CertPEM()...)
	step := func(name string, ca *pki.CA, bundle []byte, keys [][]byte) {
		t.Helper()
		for _, m := range c.Members() {
			crt, key, err := ca.Issue(pki.Node(m.ID, m.Region), []net.IP{net.ParseIP(m.IP)}, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Creds.Rotate(crt, key, bundle, keys); err != nil {
				t.Fatalf("%s: %s: %v", name, m.ID, err)
			}
			if err := m.Node.Reload(); err != nil {
				t.Fatalf("%s: %s: %v", name, m.ID, err)
			}
		}
		if err := c.pki.anonymous.Rotate(nil, nil, bundle, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second) // gossip, heartbeats and the load run across the step
	}
	step("trust both, add the gossip key", oldCA, both, [][]byte{oldKey, newKey})
	step("re-issue under the new CA, use the new key", newCA, both, [][]byte{newKey, oldKey})
	step("retire the old CA and key", newCA, newCA.CertPEM(), [][]byte{newKey})
	l.finish(t)

	// New handshakes everywhere: a node restarts with its new credentials
	// and the cluster takes it back.
	m := c.Members()[4]
	c.KillNode(m.ID)
	if err := c.RestartNode(m.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.waitFor(ctx, "the restarted node alive", func() bool {
		leader := c.Leader()
		if leader == nil {
			return false
		}
		ci := leader.Node.Cluster(ctx)
		return slices.ContainsFunc(ci.Nodes, func(n api.NodeInfo) bool { return n.ID == m.ID && n.State == "alive" })
	}); err != nil {
		t.Fatal(err)
	}
	for i, id := range l.ids[:len(blobs)] {
		mustRead(t, cl, id, blobs[i])
	}
	stale := mustCreds(t, oldCA, pki.Node("eu-west-1", "eu-west"), c.Members()[0].IP, both, nil)
	if got, err := status(httpAs(stale), "GET", c.Members()[1].Node.URL()+"/internal/info", nil); got != 0 || !strings.Contains(fmt.Sprint(err), "certificate") {
		t.Errorf("a certificate of the retired CA: %d %v", got, err)
	}
	if _, err := tls.Dial("tcp", strings.TrimPrefix(c.Members()[1].Node.URL(), "https://"), c.pki.anonymous.ClientTLS(c.Members()[1].IP)); err != nil {
		t.Errorf("a client trusting the new CA: %v", err)
	}
}

// TestForgedShardNeverReachesClient: a node replaces one of its shards
// with a forgery that passes every check a shard carries (header, CRC).
// Reads through that very node still return the right bytes, the
// forgery is identified by the chunk's ID and rewritten.
func TestForgedShardNeverReachesClient(t *testing.T) {
	c := start(t, Options{})
	ctx := context.Background()
	data := randBytes(mrand.New(mrand.NewPCG(81, 81)), 3*chunk+5)
	id, err := c.Client().Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Client().Stat(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	ch := st.Chunks[1]
	liar := c.Member(ch.Shards[0].Node) // holds data shard 0
	ref := storage.Ref{Chunk: ch.ID, Index: 0}
	h, honest, err := storage.Read(ctx, liar.Disk, ref)
	if err != nil {
		t.Fatal(err)
	}
	forged := slices.Clone(honest)
	copy(forged, "forged by a lying node")
	h.Checksum = erasure.Checksum(forged)
	if err := storage.Write(ctx, liar.Disk, h, forged); err != nil {
		t.Fatal(err)
	}
	if _, p, err := storage.Read(ctx, liar.Disk, ref); err != nil || !bytes.Equal(p, forged) {
		t.Fatalf("the forgery is not in place (it must pass the shard's own checks): %v", err)
	}
	mustRead(t, c.Client(liar.Node.URL()), id, data) // the liar is the gateway: it reads its own shard first
	if err := c.waitFor(ctx, "the forged shard rewritten", func() bool {
		_, p, err := storage.Read(ctx, liar.Disk, ref)
		return err == nil && bytes.Equal(p, honest)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAccessKeyScopes: data calls need an operator certificate or an
// access key, and a key does only what its scopes and buckets allow, on
// the native API and on S3 (one tenant cannot read or list another's
// private bucket).
func TestAccessKeyScopes(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1})
	ctx := context.Background()
	data := []byte("a private file")
	key := func(scopes []string, buckets ...string) api.AccessKey {
		t.Helper()
		k, err := c.CreateAccessKey(ctx, api.KeyRequest{Scopes: scopes, Buckets: buckets, Tenant: "team"})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	reader, writer, deleter := key([]string{"read"}), key([]string{"write"}), key([]string{"delete"})
	id, err := c.KeyClient(writer).Put(ctx, bytes.NewReader(data)) // the team's, shared by its keys
	if err != nil {
		t.Fatal(err)
	}
	tenantA, tenantB := key(nil, "tenant-a"), key(nil, "tenant-b")
	forged := reader
	forged.SecretKey = "not the secret"

	if got, _ := status(httpAs(c.pki.anonymous), "GET", c.URLs()[0]+"/v1/blobs/"+id.String(), nil); got != 403 {
		t.Errorf("anonymous get: %d, want 403", got)
	}
	forbidden := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, blob.ErrForbidden) {
			t.Errorf("%s: %v, want forbidden", what, err)
		}
	}
	_, err = getBytes(c.KeyClient(forged), id)
	forbidden("a wrong secret", err)
	mustRead(t, c.KeyClient(reader), id, data)
	_, err = c.KeyClient(reader).Put(ctx, strings.NewReader("x"))
	forbidden("put with a read key", err)
	forbidden("delete with a read key", c.KeyClient(reader).Delete(ctx, id))
	_, err = getBytes(c.KeyClient(writer), id)
	forbidden("get with a write key", err)
	if _, err := c.KeyClient(writer).Put(ctx, strings.NewReader("written with a key")); err != nil {
		t.Errorf("put with a write key: %v", err)
	}
	_, err = getBytes(c.KeyClient(tenantA), id)
	forbidden("a bucket-limited key on the native API", err)
	_, err = c.KeyClient(reader).CreateAccessKey(ctx, api.KeyRequest{})
	forbidden("minting a key with a key", err)
	if err := c.KeyClient(deleter).Delete(ctx, id); err != nil {
		t.Errorf("delete with a delete key: %v", err)
	}

	// S3: tenants in their own buckets.
	endpoint := c.S3URLs()[0]
	a, b, ro := awsClient(c, endpoint, tenantA), awsClient(c, endpoint, tenantB), awsClient(c, endpoint, reader)
	if _, err := a.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("tenant-a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("tenant-a"), Key: aws.String("secret.txt"), Body: strings.NewReader("tenant a's")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("tenant-b")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("tenant-a"), Key: aws.String("secret.txt")}); s3Code(err) != "AccessDenied" {
		t.Errorf("tenant b reading tenant a's object: %v", err)
	}
	if _, err := b.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("tenant-a"), Key: aws.String("x"), Body: strings.NewReader("x")}); s3Code(err) != "AccessDenied" {
		t.Errorf("tenant b writing into tenant a's bucket: %v", err)
	}
	if _, err := b.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("tenant-c")}); s3Code(err) != "AccessDenied" {
		t.Errorf("tenant b creating a bucket outside its list: %v", err)
	}
	if out, err := b.ListBuckets(ctx, &s3.ListBucketsInput{}); err != nil || len(out.Buckets) != 1 || *out.Buckets[0].Name != "tenant-b" {
		t.Errorf("tenant b lists buckets: %v %v", out, err)
	}
	if _, err := ro.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("tenant-a"), Key: aws.String("y"), Body: strings.NewReader("y")}); s3Code(err) != "AccessDenied" {
		t.Errorf("a read-only key writing: %v", err)
	}
	if got, _ := getObject(t, ro, "tenant-a", "secret.txt"); string(got) != "tenant a's" {
		t.Errorf("a read key (every bucket) reading: %q", got)
	}
	ks, err := c.Client().AccessKeys(ctx)
	if err != nil || !slices.ContainsFunc(ks, func(k api.AccessKey) bool {
		return k.AccessKey == tenantA.AccessKey && slices.Equal(k.Buckets, []string{"tenant-a"})
	}) {
		t.Errorf("key list: %+v %v", ks, err)
	}
}
