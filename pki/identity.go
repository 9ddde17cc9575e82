// Package pki is Atoll's certificate authority and identities. Every node
// and every operator client holds a certificate signed by the cluster's
// CA; the certificate is the identity. A node certificate names its node
// ID and region (a URI SAN, atoll://node/REGION/ID) and the IPs it may
// claim; a client certificate names an operator (atoll://client/NAME) and
// can authenticate only as a client, never serve or speak raft.
//
// Creds are a party's live credentials — its certificate, the CA bundle
// it trusts (which may hold an old and a new CA during rotation) and the
// gossip keys — and reload from their files without a restart; every TLS
// configuration they hand out reads the current state at each handshake,
// verifies the peer's role, and asks a deny list (revoked nodes).
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/atollstore/atoll/blob"
)

// Role is what a certificate may do.
type Role string

const (
	// RoleNode serves the API, raft and shards, and calls other nodes.
	RoleNode Role = "node"
	// RoleClient is an operator: it may call a node's API (admin actions
	// included) but never serves, never speaks raft, never writes shards.
	RoleClient Role = "client"
)

// Identity is who a certificate says its holder is.
type Identity struct {
	Role   Role
	Name   string      // node ID or client name
	Region blob.Region // nodes only
}

// Node is the identity of node id in region r.
func Node(id blob.NodeID, r blob.Region) Identity {
	return Identity{Role: RoleNode, Name: string(id), Region: r}
}

// Client is the identity of the operator client name.
func Client(name string) Identity { return Identity{Role: RoleClient, Name: name} }

func (id Identity) String() string { return id.uri().String() }

const scheme = "atoll"

// validName bounds what an identity may name (it ends up in file names,
// gossip metadata and logs).
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate reports whether id can be put in a certificate.
func (id Identity) Validate() error {
	switch {
	case id.Role != RoleNode && id.Role != RoleClient:
		return fmt.Errorf("pki: unknown role %q", id.Role)
	case !validName.MatchString(id.Name):
		return fmt.Errorf("pki: invalid name %q (letters, digits, '.', '_', '-'; at most 63)", id.Name)
	case id.Role == RoleNode && !validName.MatchString(string(id.Region)):
		return fmt.Errorf("pki: invalid region %q", id.Region)
	case id.Role == RoleClient && id.Region != "":
		return errors.New("pki: a client identity has no region")
	}
	return nil
}

func (id Identity) uri() *url.URL {
	p := "/" + id.Name
	if id.Role == RoleNode {
		p = "/" + string(id.Region) + p
	}
	return &url.URL{Scheme: scheme, Host: string(id.Role), Path: p}
}

// IdentityOf reads the identity a certificate carries: exactly one atoll://
// URI SAN, valid for its role.
func IdentityOf(c *x509.Certificate) (Identity, error) {
	var found []*url.URL
	for _, u := range c.URIs {
		if u.Scheme == scheme {
			found = append(found, u)
		}
	}
	if len(found) != 1 {
		return Identity{}, fmt.Errorf("pki: certificate %q carries %d Atoll identities, want 1", c.Subject.CommonName, len(found))
	}
	u := found[0]
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	var id Identity
	switch Role(u.Host) {
	case RoleNode:
		if len(parts) == 2 {
			id = Node(blob.NodeID(parts[1]), blob.Region(parts[0]))
		}
	case RoleClient:
		if len(parts) == 1 {
			id = Client(parts[0])
		}
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("pki: certificate identity %q: %w", u, err)
	}
	return id, nil
}
