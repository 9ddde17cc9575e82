package node

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/raftstore"
)

// Tenancy on the native API (raftstore/tenants.go keeps the records): a
// tenant reads, stats, links and deletes only blobs it stored, and its
// have-check counts only chunks whose bytes it sent, so a content hash
// alone never reaches data (the hash-as-capability hole of client-side
// deduplication: Halevi et al., CCS 2011). Storage stays deduplicated
// across tenants; only the first upload by each tenant sends the bytes.
// Operators reach everything.

var validTenant = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$`)

// tenantCommands is the command version owner records need.
const tenantCommands = 2

// owner is the tenant a write by r's caller records, or "" when none is
// recorded: a cluster without credentials, or members that do not apply
// owner records yet (a rolling upgrade).
func (n *Node) owner(r *http.Request) string {
	t := callerOf(r).Tenant
	if t == "" {
		return ""
	}
	if l, err := n.meta.Layout(); err != nil || !everyMemberApplies(l, tenantCommands) {
		return ""
	}
	return t
}

// lookupFor is lookup for r's caller: an operator reaches every blob; a
// tenant one it owns, or one with no owner (stored before tenants).
// Otherwise the blob does not exist for it.
func (n *Node) lookupFor(r *http.Request, id blob.ID) (*raftstore.Blob, error) {
	b, err := n.lookup(r.Context(), id)
	if err == nil {
		err = n.mayRead(r, id)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// mayRead reports, from this replica, whether r's caller may read blob id:
// an operator may; a tenant if it owns it, or if no tenant does (blobs
// from before tenants). Otherwise the blob is not found, for that tenant.
func (n *Node) mayRead(r *http.Request, id blob.ID) error {
	if callerOf(r).Operator {
		return nil
	}
	owners, err := n.meta.Owners(id)
	if err != nil {
		return err
	}
	if len(owners) > 0 && !slices.Contains(owners, callerOf(r).Tenant) {
		return fmt.Errorf("blob %s: %w", id, blob.ErrNotFound)
	}
	return nil
}

// deleteBlob deletes blob id for r's caller: an operator deletes it
// outright; a tenant releases its ownership (the blob goes with its last
// owner), or deletes a blob stored before tenants.
func (n *Node) deleteBlob(r *http.Request, id blob.ID) error {
	c := callerOf(r)
	if c.Operator {
		return n.Apply(r.Context(), raftstore.DeleteBlobCommand(id))
	}
	if _, err := n.lookup(r.Context(), id); err != nil {
		return err
	}
	owners, err := n.meta.Owners(id)
	switch {
	case err != nil:
		return err
	case len(owners) == 0:
		return n.Apply(r.Context(), raftstore.DeleteBlobCommand(id))
	case !slices.Contains(owners, c.Tenant):
		return blob.ErrNotFound
	}
	err = n.Apply(r.Context(), raftstore.ReleaseBlobCommand(raftstore.ReleaseBlob{ID: id, Owner: c.Tenant}))
	if errors.Is(err, blob.ErrNotFound) {
		return nil // released meanwhile by a concurrent delete of the same tenant
	}
	return err
}
