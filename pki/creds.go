package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
)

// GossipKeySize is the size of a gossip key (AES-256-GCM).
const GossipKeySize = 32

// Creds are one party's live credentials. The zero value is not usable;
// build them with NewCreds, LoadNode or LoadClient.
type Creds struct {
	load func() (*state, error) // re-reads the files (nil: in memory)
	cur  atomic.Pointer[state]
	deny atomic.Pointer[func(Identity) bool]
}

type state struct {
	cert   *tls.Certificate // nil: a client with no certificate (anonymous)
	id     Identity
	roots  *x509.CertPool
	gossip [][]byte // primary first
}

// NewCreds builds credentials from PEM: the party's certificate and key
// (both nil for an anonymous client), the CA bundle it trusts (one or
// more CA certificates), and for nodes the gossip keys, primary first.
func NewCreds(certPEM, keyPEM, caPEM []byte, gossipKeys [][]byte) (*Creds, error) {
	st, err := newState(certPEM, keyPEM, caPEM, gossipKeys)
	if err != nil {
		return nil, err
	}
	c := &Creds{}
	c.cur.Store(st)
	return c, nil
}

func newState(certPEM, keyPEM, caPEM []byte, gossipKeys [][]byte) (*state, error) {
	cas, err := parseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA bundle: %w", err)
	}
	st := &state{roots: x509.NewCertPool(), gossip: gossipKeys}
	for _, ca := range cas {
		st.roots.AddCert(ca)
	}
	for _, k := range gossipKeys {
		if len(k) != GossipKeySize {
			return nil, fmt.Errorf("pki: a gossip key has %d bytes, want %d", len(k), GossipKeySize)
		}
	}
	if certPEM == nil && keyPEM == nil {
		return st, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if st.id, err = IdentityOf(cert.Leaf); err != nil {
		return nil, err
	}
	// A party must trust its own certificate: this catches a node given a
	// certificate of another cluster, before its peers refuse it.
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: st.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("pki: own certificate (%s) is not signed by the CA bundle: %w", st.id, err)
	}
	st.cert = &cert
	return st, nil
}

// Reload re-reads the files the credentials came from (a SIGHUP): new
// handshakes use the new certificate, CA bundle and gossip keys; open
// connections keep theirs. On error the old credentials stay in force.
func (c *Creds) Reload() error {
	if c.load == nil {
		return nil
	}
	st, err := c.load()
	if err != nil {
		return err
	}
	return c.swap(st)
}

// swap puts st in force, unless it would change who these credentials
// are (a node is its certificate's identity for life).
func (c *Creds) swap(st *state) error {
	if old := c.cur.Load(); old.cert != nil && st.id != old.id {
		return fmt.Errorf("pki: the new certificate is for %s, not %s", st.id, old.id)
	}
	c.cur.Store(st)
	return nil
}

// Identity is who these credentials authenticate as (the zero Identity
// for an anonymous client).
func (c *Creds) Identity() Identity { return c.cur.Load().id }

// GossipKeys are the gossip encryption keys, primary first.
func (c *Creds) GossipKeys() [][]byte { return slices.Clone(c.cur.Load().gossip) }

// Deny makes every handshake, in both directions, refuse peers for
// which denied reports true (revoked nodes).
func (c *Creds) Deny(denied func(Identity) bool) { c.deny.Store(&denied) }

// Rotate replaces the credentials in memory (in-process clusters; files
// are reloaded with Reload); nil gossipKeys keeps the current ones.
func (c *Creds) Rotate(certPEM, keyPEM, caPEM []byte, gossipKeys [][]byte) error {
	old := c.cur.Load()
	if gossipKeys == nil {
		gossipKeys = old.gossip
	}
	st, err := newState(certPEM, keyPEM, caPEM, gossipKeys)
	if err != nil {
		return err
	}
	return c.swap(st)
}

// Policy says which peers a server accepts.
type Policy int

const (
	// NodesOnly requires a node certificate (raft, and node listeners
	// that carry nothing else).
	NodesOnly Policy = iota
	// AnyPeer accepts nodes, clients and anonymous peers; a certificate
	// that is offered must still verify. Handlers decide with PeerOf.
	AnyPeer
)

// ServerTLS is the configuration of a listener serving under p.
func (c *Creds) ServerTLS(p Policy) *tls.Config {
	auth := tls.RequireAnyClientCert
	if p == AnyPeer {
		auth = tls.RequestClientCert
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: auth, // NB: verified by verify, against the current CA bundle
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if st := c.cur.Load(); st.cert != nil {
				return st.cert, nil
			}
			return nil, errors.New("pki: no certificate to serve with")
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 && p == AnyPeer {
				return nil
			}
			id, err := c.verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth, "")
			if err == nil && p == NodesOnly && id.Role != RoleNode {
				err = fmt.Errorf("pki: %s is not a node", id)
			}
			return err
		},
	}
}

// ClientTLS is the configuration for calling the node at host: the server
// must hold a node certificate valid for host (an IP or name in its
// certificate), and these credentials' certificate, if any, is offered.
func (c *Creds) ClientTLS(host string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: host,
		// NB: not skipped: verify checks the chain against the current CA
		// bundle (which Reload may change) and the host name, below.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if st := c.cur.Load(); st.cert != nil {
				return st.cert, nil
			}
			return &tls.Certificate{}, nil // anonymous
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			// NB: host, not cs.ServerName: Go sends no SNI for an IP.
			id, err := c.verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, host)
			if err == nil && id.Role != RoleNode {
				err = fmt.Errorf("pki: %s is not a node", id)
			}
			return err
		},
	}
}

// DialTLS wraps dial so that each connection it makes is a TLS client of
// the node dialled (ClientTLS), handshaken before it is returned. It suits
// http.Transport's DialTLSContext and raft's stream layer.
func (c *Creds) DialTLS(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(raw, c.ClientTLS(host))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		return tc, nil
	}
}

// verify checks a peer's chain against the current CA bundle, for usage
// (and host, if set), and that its identity is valid and not denied.
func (c *Creds) verify(chain []*x509.Certificate, usage x509.ExtKeyUsage, host string) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, errors.New("pki: the peer offered no certificate")
	}
	opts := x509.VerifyOptions{Roots: c.cur.Load().roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: host}
	for _, ic := range chain[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := chain[0].Verify(opts); err != nil {
		return Identity{}, fmt.Errorf("pki: peer certificate: %w", err)
	}
	id, err := IdentityOf(chain[0])
	if err != nil {
		return Identity{}, err
	}
	if d := c.deny.Load(); d != nil && (*d)(id) {
		return Identity{}, fmt.Errorf("pki: %s is revoked", id)
	}
	return id, nil
}

// PeerOf is the identity a verified TLS peer presented; ok is false for an
// anonymous peer or a connection without TLS.
func PeerOf(cs *tls.ConnectionState) (id Identity, ok bool) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return Identity{}, false
	}
	id, err := IdentityOf(cs.PeerCertificates[0])
	return id, err == nil
}

// ParseGossipKeys reads a gossip key file: one key per line in hex, the
// primary first; blank lines and # comments are skipped.
func ParseGossipKeys(b []byte) ([][]byte, error) {
	var keys [][]byte
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := hex.DecodeString(line)
		if err != nil || len(k) != GossipKeySize {
			return nil, fmt.Errorf("pki: a gossip key must be %d bytes in hex", GossipKeySize)
		}
		if slices.ContainsFunc(keys, func(o []byte) bool { return bytes.Equal(o, k) }) {
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("pki: no gossip key")
	}
	return keys, nil
}

// FormatGossipKeys is the file form of keys, primary first.
func FormatGossipKeys(keys [][]byte) []byte {
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%x\n", k)
	}
	return b.Bytes()
}
