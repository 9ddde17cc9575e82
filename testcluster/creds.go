package testcluster

import (
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/pki"
)

// OperatorName is the client certificate name of the cluster's operator.
const OperatorName = "admin"

// clusterPKI is a cluster's CA and gossip key, made fresh for each cluster.
type clusterPKI struct {
	ca        *pki.CA
	gossipKey []byte
	operator  *pki.Creds // an operator's client certificate
	anonymous *pki.Creds // trusts the CA, presents nothing
}

func newClusterPKI() (*clusterPKI, error) {
	ca, err := pki.NewCA("testcluster")
	if err != nil {
		return nil, err
	}
	p := &clusterPKI{ca: ca, gossipKey: make([]byte, pki.GossipKeySize)}
	rand.Read(p.gossipKey)
	crt, key, err := ca.Issue(pki.Client(OperatorName), nil, nil, 0)
	if err != nil {
		return nil, err
	}
	if p.operator, err = pki.NewCreds(crt, key, ca.CertPEM(), nil); err != nil {
		return nil, err
	}
	if p.anonymous, err = pki.NewCreds(nil, nil, ca.CertPEM(), nil); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *clusterPKI) nodeCreds(id blob.NodeID, r blob.Region, ip string) (*pki.Creds, error) {
	crt, key, err := p.ca.Issue(pki.Node(id, r), []net.IP{net.ParseIP(ip)}, nil, 0)
	if err != nil {
		return nil, err
	}
	return pki.NewCreds(crt, key, p.ca.CertPEM(), [][]byte{p.gossipKey})
}

// CA is the cluster's certificate authority (nil when Plaintext): tests
// issue certificates with it, forged or rotated ones included.
func (c *Cluster) CA() *pki.CA {
	if c.pki == nil {
		return nil
	}
	return c.pki.ca
}

// GossipKey is the cluster's gossip encryption key (nil when Plaintext).
func (c *Cluster) GossipKey() []byte {
	if c.pki == nil {
		return nil
	}
	return c.pki.gossipKey
}

// Client is a client of the nodes at urls (default: every running node)
// with the operator's certificate: it may do anything.
func (c *Cluster) Client(urls ...string) *client.Client {
	return c.newClient(c.operatorCreds(), urls)
}

// KeyClient is a client that presents no certificate and authenticates
// with access key k: it may do what k's scopes allow.
func (c *Cluster) KeyClient(k api.AccessKey, urls ...string) *client.Client {
	var creds *pki.Creds
	if c.pki != nil {
		creds = c.pki.anonymous
	}
	return c.newClient(creds, urls).WithAccessKey(k.AccessKey, k.SecretKey)
}

func (c *Cluster) operatorCreds() *pki.Creds {
	if c.pki == nil {
		return nil
	}
	return c.pki.operator
}

func (c *Cluster) newClient(creds *pki.Creds, urls []string) *client.Client {
	if len(urls) == 0 {
		urls = c.URLs()
	}
	if creds == nil {
		return client.New(urls...)
	}
	return client.NewTLS(creds, urls...)
}

// HTTPClient is a plain HTTP client that trusts the cluster's nodes and
// presents the operator's certificate (for tests that speak the API or S3
// by hand).
func (c *Cluster) HTTPClient() *http.Client {
	if c.pki == nil {
		return http.DefaultClient
	}
	d := &net.Dialer{}
	return &http.Client{Transport: &http.Transport{DialTLSContext: c.pki.operator.DialTLS(d.DialContext)}}
}

// WriteClientCerts writes the CA bundle and the operator's certificate
// into dir, as `atoll cert` would (ca.crt, client.admin.crt and .key), so
// the atoll CLI and S3 tools can talk to the cluster.
func (c *Cluster) WriteClientCerts(dir string) error {
	if c.pki == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	crt, key, err := c.pki.ca.Issue(pki.Client(OperatorName), nil, nil, 0)
	if err != nil {
		return err
	}
	crtFile, keyFile := pki.ClientFiles(OperatorName)
	for _, f := range []struct {
		name string
		b    []byte
	}{{pki.CACert, c.pki.ca.CertPEM()}, {crtFile, crt}, {keyFile, key}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Dial opens a raw connection to the endpoint at url (a node's API or S3
// URL), through TLS as the operator unless the cluster is Plaintext: for
// tests that write requests byte by byte.
func (c *Cluster) Dial(ctx context.Context, url string) (net.Conn, error) {
	scheme, host, _ := strings.Cut(url, "://")
	d := &net.Dialer{}
	if scheme == "https" && c.pki != nil {
		return c.pki.operator.DialTLS(d.DialContext)(ctx, "tcp", host)
	}
	return d.DialContext(ctx, "tcp", host)
}
