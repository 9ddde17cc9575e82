package pki

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var loopback = []net.IP{net.ParseIP("127.0.0.1")}

func mustCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func creds(t *testing.T, ca *CA, id Identity, ips []net.IP, trusted ...*CA) *Creds {
	t.Helper()
	var crt, key []byte
	if id != (Identity{}) {
		var err error
		if crt, key, err = ca.Issue(id, ips, nil, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	var bundle []byte
	for _, tc := range append(trusted, ca) {
		bundle = append(bundle, tc.CertPEM()...)
	}
	c, err := NewCreds(crt, key, bundle, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake runs a TLS handshake over a pipe and returns the client's
// error, the server's error and the identity the server saw.
func handshake(t *testing.T, server *Creds, p Policy, client *Creds, host string) (cerr, serr error, seen Identity) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a, err := l.Accept()
		if err != nil {
			serr = err
			return
		}
		s := tls.Server(a, server.ServerTLS(p))
		serr = s.Handshake()
		if serr == nil {
			cs := s.ConnectionState()
			seen, _ = PeerOf(&cs)
			s.Write([]byte{1}) // TLS 1.3: the client learns of a refusal on its first read
		}
		s.Close()
	}()
	b, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(b, client.ClientTLS(host))
	cerr = c.Handshake()
	if cerr == nil {
		_, cerr = c.Read(make([]byte, 1))
	}
	c.Close()
	<-done
	return cerr, serr, seen
}

func TestIdentityRoundTrip(t *testing.T) {
	ca := mustCA(t)
	for _, id := range []Identity{Node("eu-1", "eu"), Client("alice")} {
		var ips []net.IP
		if id.Role == RoleNode {
			ips = loopback
		}
		c := creds(t, ca, id, ips)
		if got := c.Identity(); got != id {
			t.Errorf("identity %v, want %v", got, id)
		}
	}
	for _, bad := range []Identity{{Role: "root", Name: "x"}, Node("", "eu"), Node("a/b", "eu"), Node("n", ""), {Role: RoleClient, Name: "c", Region: "eu"}, Client(strings.Repeat("x", 64))} {
		if _, _, err := ca.Issue(bad, loopback, nil, time.Hour); err == nil {
			t.Errorf("issued a certificate for invalid %+v", bad)
		}
	}
	if _, _, err := ca.Issue(Client("c"), loopback, nil, time.Hour); err == nil {
		t.Error("issued a client certificate naming an address")
	}
}

func TestRolesAndTrust(t *testing.T) {
	ca, other := mustCA(t), mustCA(t)
	nodeA := creds(t, ca, Node("a", "eu"), loopback)
	nodeB := creds(t, ca, Node("b", "us"), loopback)
	client := creds(t, ca, Client("ops"), nil)
	anon := creds(t, ca, Identity{}, nil)
	stranger := creds(t, other, Node("a", "eu"), loopback, ca) // trusts us, but we don't trust it

	cerr, serr, seen := handshake(t, nodeA, NodesOnly, nodeB, "127.0.0.1")
	if cerr != nil || serr != nil || seen != Node("b", "us") {
		t.Fatalf("node to node: client %v, server %v, seen %v", cerr, serr, seen)
	}
	if _, serr, _ := handshake(t, nodeA, NodesOnly, client, "127.0.0.1"); serr == nil || !strings.Contains(serr.Error(), "not a node") {
		t.Errorf("a client certificate spoke to a nodes-only listener: %v", serr)
	}
	if _, serr, _ := handshake(t, nodeA, NodesOnly, anon, "127.0.0.1"); serr == nil {
		t.Error("an anonymous peer spoke to a nodes-only listener")
	}
	if _, serr, _ := handshake(t, nodeA, AnyPeer, stranger, "127.0.0.1"); serr == nil {
		t.Error("a certificate of another CA was accepted")
	}
	cerr, serr, seen = handshake(t, nodeA, AnyPeer, anon, "127.0.0.1")
	if cerr != nil || serr != nil || seen != (Identity{}) {
		t.Errorf("anonymous API client: client %v, server %v, seen %v", cerr, serr, seen)
	}
	if _, _, seen := handshake(t, nodeA, AnyPeer, client, "127.0.0.1"); seen != Client("ops") {
		t.Errorf("operator seen as %v", seen)
	}
	// The server side is checked too: its certificate must be a node's,
	// from our CA, for the host dialled.
	if cerr, _, _ := handshake(t, nodeA, AnyPeer, anon, "127.0.0.2"); cerr == nil {
		t.Error("a node certificate was accepted for an address it does not name")
	}
	if cerr, _, _ := handshake(t, stranger, AnyPeer, anon, "127.0.0.1"); cerr == nil {
		t.Error("a server with another CA's certificate was trusted")
	}
	if cerr, _, _ := handshake(t, client, AnyPeer, nodeA, "127.0.0.1"); cerr == nil {
		t.Error("a client certificate was accepted as a server")
	}
}

func TestDenyRefusesBothWays(t *testing.T) {
	ca := mustCA(t)
	a := creds(t, ca, Node("a", "eu"), loopback)
	b := creds(t, ca, Node("b", "us"), loopback)
	a.Deny(func(id Identity) bool { return id.Name == "b" })
	if _, serr, _ := handshake(t, a, NodesOnly, b, "127.0.0.1"); serr == nil || !strings.Contains(serr.Error(), "revoked") {
		t.Errorf("a revoked node called in: %v", serr)
	}
	b2 := creds(t, ca, Node("c", "us"), loopback)
	b2.Deny(func(id Identity) bool { return id.Name == "a" })
	if cerr, _, _ := handshake(t, a, NodesOnly, b2, "127.0.0.1"); cerr == nil || !strings.Contains(cerr.Error(), "revoked") {
		t.Errorf("a revoked node was trusted as a server: %v", cerr)
	}
}

// TestRotation walks a CA rotation on files: both CAs trusted, nodes
// re-issued under the new one, then the old CA dropped.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	if err := CreateCA(dir, false); err != nil {
		t.Fatal(err)
	}
	if err := CreateCA(dir, false); err == nil {
		t.Fatal("CreateCA overwrote an existing CA")
	}
	ca1, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	nodeDir := func(name string) string {
		d := filepath.Join(dir, name)
		os.Mkdir(d, 0o700)
		for _, f := range []string{CACert, GossipKey} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			os.WriteFile(filepath.Join(d, f), b, 0o600)
		}
		return d
	}
	aDir, bDir := nodeDir("a"), nodeDir("b")
	ca1.WriteNode(aDir, Node("a", "eu"), loopback, nil, 0)
	ca1.WriteNode(bDir, Node("b", "us"), loopback, nil, 0)
	a, err := LoadNode(aDir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadNode(bDir)
	if err != nil {
		t.Fatal(err)
	}
	oldGossip := a.GossipKeys()[0]

	if err := CreateCA(dir, true); err != nil {
		t.Fatal(err)
	}
	ca2, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Step 1: the bundle (new CA + old) reaches b; b still runs its old cert.
	nodeDir("b")
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	if keys := b.GossipKeys(); len(keys) != 2 || string(keys[1]) != string(oldGossip) {
		t.Fatalf("gossip keys after rotation: %d, old one second: %v", len(keys), string(keys[1]) == string(oldGossip))
	}
	// Step 2: a gets a certificate from the new CA, the bundle too.
	nodeDir("a")
	ca2.WriteNode(aDir, Node("a", "eu"), loopback, nil, 0)
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if cerr, serr, _ := handshake(t, a, NodesOnly, b, "127.0.0.1"); cerr != nil || serr != nil {
		t.Fatalf("mixed CAs during rotation: client %v, server %v", cerr, serr)
	}
	if cerr, serr, _ := handshake(t, b, NodesOnly, a, "127.0.0.1"); cerr != nil || serr != nil {
		t.Fatalf("mixed CAs during rotation (reverse): client %v, server %v", cerr, serr)
	}
	// Step 3: the old CA leaves b's bundle; a (new cert) is still trusted,
	// a node still on the old CA is not.
	os.WriteFile(filepath.Join(bDir, CACert), ca2.CertPEM(), 0o644)
	ca2.WriteNode(bDir, Node("b", "us"), loopback, nil, 0)
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	if cerr, serr, _ := handshake(t, b, NodesOnly, a, "127.0.0.1"); cerr != nil || serr != nil {
		t.Fatalf("after rotation: client %v, server %v", cerr, serr)
	}
	old := creds(t, ca1, Node("z", "ap"), loopback, ca2)
	if _, serr, _ := handshake(t, b, NodesOnly, old, "127.0.0.1"); serr == nil {
		t.Error("a certificate of the retired CA was accepted")
	}
	// A reload that would change who the node is is refused.
	ca2.WriteNode(bDir, Node("imposter", "us"), loopback, nil, 0)
	if err := b.Reload(); err == nil || b.Identity() != Node("b", "us") {
		t.Errorf("reload to another identity: %v, now %v", err, b.Identity())
	}
}

func TestKeyFilePermissions(t *testing.T) {
	dir := t.TempDir()
	if err := CreateCA(dir, false); err != nil {
		t.Fatal(err)
	}
	ca, _ := LoadCA(dir)
	if err := ca.WriteClient(dir, "ops", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadClient(dir, "ops"); err != nil {
		t.Fatal(err)
	}
	_, key := ClientFiles("ops")
	os.Chmod(filepath.Join(dir, key), 0o644)
	if _, err := LoadClient(dir, "ops"); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("a world-readable key was loaded: %v", err)
	}
	if _, err := LoadNode(dir); err == nil {
		t.Error("node credentials loaded from a directory with no node certificate")
	}
}

func TestParseGossipKeys(t *testing.T) {
	k := strings.Repeat("ab", GossipKeySize)
	keys, err := ParseGossipKeys([]byte("# primary first\n" + k + "\n\n" + strings.Repeat("cd", GossipKeySize) + "\n" + k + "\n"))
	if err != nil || len(keys) != 2 || keys[0][0] != 0xab {
		t.Fatalf("keys %x, %v", keys, err)
	}
	for _, bad := range []string{"", "zz", strings.Repeat("ab", 16)} {
		if _, err := ParseGossipKeys([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// BenchmarkHandshake is the cost of one mutual TLS 1.3 handshake between
// two nodes over loopback (ECDSA P-256 both ways, chain and role checks),
// without session resumption: what a new connection costs.
func BenchmarkHandshake(b *testing.B) {
	ca, err := NewCA("bench")
	if err != nil {
		b.Fatal(err)
	}
	mk := func(id Identity) *Creds {
		crt, key, err := ca.Issue(id, loopback, nil, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		c, err := NewCreds(crt, key, ca.CertPEM(), nil)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	server, client := mk(Node("a", "eu")), mk(Node("b", "us"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				s := tls.Server(c, server.ServerTLS(NodesOnly))
				if s.Handshake() == nil {
					s.Write([]byte{1})
				}
				s.Close()
			}()
		}
	}()
	for b.Loop() {
		raw, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c := tls.Client(raw, client.ClientTLS("127.0.0.1"))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
