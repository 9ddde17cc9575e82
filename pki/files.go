package pki

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/atollstore/atoll/internal/atomicfile"
)

// A certs directory, as `atoll cert` writes it (like `cockroach cert`):
//
//	ca.crt             the CA bundle every party trusts (newest CA first)
//	ca.key             the CA's key: keep it on the operator's machine only
//	gossip.key         gossip encryption keys, hex, primary first (nodes)
//	node.crt, node.key this node's certificate and key
//	client.NAME.crt, client.NAME.key   an operator's certificate and key
const (
	CACert    = "ca.crt"
	CAKey     = "ca.key"
	GossipKey = "gossip.key"
	NodeCert  = "node.crt"
	NodeKey   = "node.key"
)

// ClientFiles are the certificate and key file names of client name.
func ClientFiles(name string) (cert, key string) {
	return "client." + name + ".crt", "client." + name + ".key"
}

// CreateCA creates a new CA and a gossip key in dir. With rotate, an
// existing CA is kept in the bundle (after the new one) so that parties
// trust both while certificates are re-issued, its key is moved to
// ca.key.prev, and a new gossip key becomes the primary ahead of the old.
// Without rotate it refuses to overwrite anything.
func CreateCA(dir string, rotate bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var oldCerts, oldKeys []byte
	if rotate {
		var err error
		if oldCerts, err = os.ReadFile(filepath.Join(dir, CACert)); err != nil {
			return fmt.Errorf("pki: rotate: %w", err)
		}
		if err := os.Rename(filepath.Join(dir, CAKey), filepath.Join(dir, CAKey+".prev")); err != nil {
			return fmt.Errorf("pki: rotate: %w", err)
		}
		oldKeys, _ = os.ReadFile(filepath.Join(dir, GossipKey))
	} else {
		for _, f := range []string{CACert, CAKey, GossipKey} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				return fmt.Errorf("pki: %s already exists (use rotate to replace the CA)", filepath.Join(dir, f))
			}
		}
	}
	ca, err := NewCA("Atoll CA " + time.Now().UTC().Format("2006-01-02"))
	if err != nil {
		return err
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	gk := make([]byte, GossipKeySize)
	rand.Read(gk)
	keys := [][]byte{gk}
	if len(oldKeys) > 0 {
		old, err := ParseGossipKeys(oldKeys)
		if err != nil {
			return err
		}
		keys = append(keys, old...)
	}
	if err := writeFile(dir, CAKey, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFile(dir, GossipKey, FormatGossipKeys(keys), 0o600); err != nil {
		return err
	}
	return writeFile(dir, CACert, append(ca.CertPEM(), oldCerts...), 0o644)
}

// LoadCA reads the CA (the bundle's first certificate and ca.key) from dir.
func LoadCA(dir string) (*CA, error) {
	c, err := os.ReadFile(filepath.Join(dir, CACert))
	if err != nil {
		return nil, err
	}
	k, err := os.ReadFile(filepath.Join(dir, CAKey))
	if err != nil {
		return nil, err
	}
	return ParseCA(c, k)
}

// WriteNode issues a node certificate into dir (node.crt, node.key).
func (ca *CA) WriteNode(dir string, id Identity, ips []net.IP, dnsNames []string, validity time.Duration) error {
	if id.Role != RoleNode {
		return errors.New("pki: not a node identity")
	}
	return ca.writeLeaf(dir, NodeCert, NodeKey, id, ips, dnsNames, validity)
}

// WriteClient issues a client certificate into dir (client.NAME.crt/.key).
func (ca *CA) WriteClient(dir, name string, validity time.Duration) error {
	crt, key := ClientFiles(name)
	return ca.writeLeaf(dir, crt, key, Client(name), nil, nil, validity)
}

func (ca *CA) writeLeaf(dir, certFile, keyFile string, id Identity, ips []net.IP, dnsNames []string, validity time.Duration) error {
	certPEM, keyPEM, err := ca.Issue(id, ips, dnsNames, validity)
	if err != nil {
		return err
	}
	// NB: a reload between the two writes finds a key and certificate
	// that do not match, fails, and keeps the credentials in force.
	if err := writeFile(dir, keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(dir, certFile, certPEM, 0o644)
}

// LoadNode reads a node's credentials from dir: node.crt, node.key, ca.crt
// and gossip.key. Reload re-reads them.
func LoadNode(dir string) (*Creds, error) {
	return loadCreds(func() (*state, error) {
		keys, err := os.ReadFile(filepath.Join(dir, GossipKey))
		if err != nil {
			return nil, err
		}
		gossip, err := ParseGossipKeys(keys)
		if err != nil {
			return nil, err
		}
		st, err := loadState(dir, NodeCert, NodeKey, gossip)
		if err == nil && st.id.Role != RoleNode {
			err = fmt.Errorf("pki: %s holds a %s certificate, not a node's", filepath.Join(dir, NodeCert), st.id.Role)
		}
		return st, err
	})
}

// LoadClient reads a client's credentials from dir: ca.crt and, if name is
// not empty, client.NAME.crt and .key (else the client is anonymous).
func LoadClient(dir, name string) (*Creds, error) {
	return loadCreds(func() (*state, error) {
		if name == "" {
			return loadState(dir, "", "", nil)
		}
		crt, key := ClientFiles(name)
		return loadState(dir, crt, key, nil)
	})
}

func loadCreds(load func() (*state, error)) (*Creds, error) {
	st, err := load()
	if err != nil {
		return nil, err
	}
	c := &Creds{load: load}
	c.cur.Store(st)
	return c, nil
}

func loadState(dir, certFile, keyFile string, gossip [][]byte) (*state, error) {
	ca, err := os.ReadFile(filepath.Join(dir, CACert))
	if err != nil {
		return nil, err
	}
	var c, k []byte
	if certFile != "" {
		if c, err = os.ReadFile(filepath.Join(dir, certFile)); err != nil {
			return nil, err
		}
		if k, err = readPrivate(filepath.Join(dir, keyFile)); err != nil {
			return nil, err
		}
	}
	return newState(c, k, ca, gossip)
}

// readPrivate reads a key file, refusing one that others may read (as ssh
// does): a key that leaked is no identity.
func readPrivate(p string) ([]byte, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("pki: %s is readable by others (mode %v): chmod 600 it", p, fi.Mode().Perm())
	}
	return os.ReadFile(p)
}

// writeFile replaces dir/name atomically.
func writeFile(dir, name string, b []byte, mode fs.FileMode) error {
	return atomicfile.Write(filepath.Join(dir, name), mode, func(w io.Writer) error { _, err := w.Write(b); return err })
}
