package node

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/pki"
	"github.com/atollstore/atoll/raftstore"
)

// Who may do what, when the node runs with credentials (Config.Creds):
//
//   - /internal/* (shards, commands, read index, info) answers only to
//     node certificates: a client certificate can never write a shard or
//     commit a command, and raft's listener takes nodes only;
//   - admin actions (access keys, drain, remove, revoke) answer only to
//     operator client certificates (and to nodes, which forward them to
//     the leader: a node can commit any command anyway);
//   - data (blobs, chunks, manifests, the cluster view) answers to an
//     operator client certificate, or to an access key with the scope the
//     request needs and no bucket limit (Authorization: Bearer
//     ACCESS_KEY:SECRET_KEY);
//   - a node removed from the layout (remove, revoke) is refused at every
//     handshake and every request, in both directions;
//   - a node joins the layout only after the leader has called it over
//     mutual TLS and found the identity it claims in gossip (ID, region)
//     in its certificate, and every address it claims among the
//     certificate's IPs and names.

// revoked reports whether id is a node removed from the layout: the deny
// list every handshake consults.
func (n *Node) revoked(id pki.Identity) bool {
	if id.Role != pki.RoleNode {
		return false
	}
	l, err := n.meta.Layout()
	return err == nil && slices.Contains(l.Removed, blob.NodeID(id.Name))
}

// only lets requests through from peers holding a certificate of one of
// roles (when the node has credentials), that is not revoked.
func (n *Node) only(h http.Handler, roles ...pki.Role) http.Handler {
	if n.cfg.Creds == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pki.PeerOf(r.TLS)
		switch {
		case !ok:
			writeError(w, fmt.Errorf("%w: %s %s needs a %s certificate", blob.ErrForbidden, r.Method, r.URL.Path, roles[0]))
		case !slices.Contains(roles, id.Role):
			writeError(w, fmt.Errorf("%w: %s may not %s %s (needs a %s certificate)", blob.ErrForbidden, id, r.Method, r.URL.Path, roles[0]))
		case n.revoked(id): // NB: a keep-alive connection opened before the revocation
			writeError(w, fmt.Errorf("%w: %s is revoked", blob.ErrForbidden, id))
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// nodesOnly guards /internal/*; adminOnly the operator's actions.
func (n *Node) nodesOnly(h http.HandlerFunc) http.Handler { return n.only(h, pki.RoleNode) }
func (n *Node) adminOnly(h http.HandlerFunc) http.Handler {
	return n.only(h, pki.RoleClient, pki.RoleNode)
}

// data lets requests through that may act with scope on the native API:
// from an operator certificate, or with an access key (bearer) allowed
// scope on blobs.
func (n *Node) data(scope string, h http.HandlerFunc) http.Handler {
	if n.cfg.Creds == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := pki.PeerOf(r.TLS); ok && id.Role == pki.RoleClient {
			h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{Name: "client:" + id.Name, Tenant: raftstore.OperatorsTenant, Operator: true})))
			return
		}
		k, err := n.bearer(r)
		if err == nil && !k.Allows(scope, "") {
			err = fmt.Errorf("%w: access key %s may not %s blobs", blob.ErrForbidden, k.AccessKey, scope)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{Name: "key:" + k.AccessKey, Tenant: k.TenantName()})))
	})
}

// caller is who a data request acts for: an operator's certificate or an
// access key. Without credentials (Config.Creds nil) there is none, and
// everyone is an operator.
type caller struct {
	Name     string // "client:NAME" or "key:ACCESS_KEY"
	Tenant   string // what it stores belongs to (raftstore/tenants.go)
	Operator bool
}

type callerKey struct{}

func callerOf(r *http.Request) caller {
	c, ok := r.Context().Value(callerKey{}).(caller)
	if !ok {
		return caller{Operator: true}
	}
	return c
}

// bearer authenticates the access key a request carries.
func (n *Node) bearer(r *http.Request) (api.AccessKey, error) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return api.AccessKey{}, fmt.Errorf("%w: %s %s needs an access key (Authorization: Bearer ACCESS_KEY:SECRET_KEY) or an operator certificate",
			blob.ErrForbidden, r.Method, r.URL.Path)
	}
	id, secret, _ := strings.Cut(token, ":")
	k, err := n.AccessKey(r.Context(), id)
	switch {
	case errors.Is(err, blob.ErrNotFound), err == nil && subtle.ConstantTimeCompare([]byte(k.SecretKey), []byte(secret)) != 1:
		return api.AccessKey{}, fmt.Errorf("%w: invalid access key or secret", blob.ErrForbidden)
	case err != nil:
		return api.AccessKey{}, err
	}
	return k, nil
}

// verifyMember checks, before the leader lets m into the layout, that the
// node answering at m's API address holds m's certificate and that m's raft
// and gossip addresses are ones that certificate names.
func (n *Node) verifyMember(ctx context.Context, m raftstore.Member) error {
	if n.cfg.Creds == nil || m.ID == n.cfg.ID {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.API+"/internal/info", nil)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(m.API, "https://") {
		return fmt.Errorf("node %s advertises a plaintext API %s", m.ID, m.API)
	}
	resp, err := n.peers.Do(req)
	if err != nil {
		return fmt.Errorf("node %s: %w", m.ID, err)
	}
	drain(resp)
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return fmt.Errorf("node %s answered without a certificate", m.ID)
	}
	cert := resp.TLS.PeerCertificates[0]
	if id, _ := pki.PeerOf(resp.TLS); id != pki.Node(m.ID, m.Region) {
		return fmt.Errorf("node %s (%s) claims an identity its certificate does not hold: %s", m.ID, m.Region, id)
	}
	for _, addr := range []string{m.Raft, m.Gossip} {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("node %s: address %q: %w", m.ID, addr, err)
		}
		if err := cert.VerifyHostname(host); err != nil {
			return fmt.Errorf("node %s claims address %s outside its certificate: %w", m.ID, addr, err)
		}
	}
	return nil
}

// Reload re-reads the node's credentials (on SIGHUP): certificate, CA
// bundle and gossip keys. New connections use them; open ones finish.
func (n *Node) Reload() error {
	if n.cfg.Creds == nil {
		return nil
	}
	if err := n.cfg.Creds.Reload(); err != nil {
		return err
	}
	if err := n.gossip.setKeys(n.cfg.Creds.GossipKeys()); err != nil {
		return err
	}
	n.log.Info("credentials reloaded", "identity", n.cfg.Creds.Identity())
	return nil
}
