package raftstore

import (
	"bytes"
	"fmt"

	"github.com/atollstore/atoll/blob"
	"github.com/dgraph-io/badger/v4"
)

// Tenants. Blob IDs and chunk IDs are content hashes, which anyone who
// knows a file can compute; so that a hash is never a key to data the
// holder never had, the state machine records, per tenant (the owner of an
// access key, or all operators together):
//
//   - which blobs it owns (f W <blob><tenant>): a tenant reads, stats and
//     deletes only those; a delete releases its ownership, and the blob goes
//     with its last owner;
//   - which chunks it has proven to hold by sending their bytes (f T
//     <chunk><tenant>), in a chunk upload or a streamed put: its have-check
//     counts only those, so it sends the bytes of a chunk other tenants
//     stored (once; the cluster keeps one copy), and a manifest of chunks it
//     never sent is refused. The rows go when the chunk goes.
//
// A blob stored before tenants existed has no owner rows: every tenant
// may read it, as before. Commands carry an Owner only once every member
// applies command version 2 (Command.Version).

// OperatorsTenant owns what operators (client certificates) store.
const OperatorsTenant = "@operators"

// ReleaseBlob is a tenant's delete: its ownership of the blob goes, and
// the blob with it if no other tenant owns it.
type ReleaseBlob struct {
	ID    blob.ID `json:"id"`
	Owner string  `json:"owner"`
}

// ReleaseBlobCommand is a tenant's delete of a blob.
func ReleaseBlobCommand(r ReleaseBlob) Command { return Command{ReleaseBlob: &r} }

func ownerKey(id blob.ID, tenant string) []byte {
	return append(append([]byte{prefixFSM, 'W'}, id[:]...), tenant...)
}

func knownKey(chunk blob.ID, tenant string) []byte {
	return append(append([]byte{prefixFSM, 'T'}, chunk[:]...), tenant...)
}

func validTenant(t string) error {
	if len(t) > 128 {
		return fmt.Errorf("%w: tenant name of %d bytes", blob.ErrBadRequest, len(t))
	}
	return nil
}

// own records tenant as an owner of blob b and as holding its chunks.
func own(txn *tx, b Blob, tenant string) error {
	if tenant == "" {
		return nil
	}
	if err := validTenant(tenant); err != nil {
		return err
	}
	if err := txn.Set(ownerKey(b.ID, tenant), nil); err != nil {
		return err
	}
	for _, c := range b.Chunks {
		if err := txn.Set(knownKey(c.ID, tenant), nil); err != nil {
			return err
		}
	}
	return nil
}

// deletePrefix deletes every FSM row under p.
func deletePrefix(txn *tx, p []byte) error {
	var keys [][]byte
	if err := txn.scan(p, nil, func(k, _ []byte) (bool, error) { keys = append(keys, bytes.Clone(k)); return true, nil }); err != nil {
		return err
	}
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func applyReleaseBlob(txn *tx, r ReleaseBlob) error {
	if _, err := txn.Get(ownerKey(r.ID, r.Owner)); err != nil {
		return fmt.Errorf("blob %s of %s: %w", r.ID, r.Owner, blob.ErrNotFound)
	}
	if err := txn.Delete(ownerKey(r.ID, r.Owner)); err != nil {
		return err
	}
	if hasRows(txn, ownerKey(r.ID, "")) {
		return nil
	}
	return applyDeleteBlob(txn, r.ID)
}

// hasRows reports whether any FSM row lies under prefix p.
func hasRows(txn *tx, p []byte) bool {
	found := false
	txn.scan(p, nil, func(_, _ []byte) (bool, error) { found = true; return false, nil })
	return found
}

// Owners returns the tenants owning blob id (none for a blob stored before
// tenants, or in a cluster without credentials).
func (s *Store) Owners(id blob.ID) ([]string, error) {
	var out []string
	p := ownerKey(id, "")
	err := s.scan(p, nil, func(k, _ []byte) (bool, error) {
		out = append(out, string(k[len(p):]))
		return true, nil
	})
	return out, err
}

// Holds reports whether tenant has proven to hold chunk (sent its bytes).
func (s *Store) Holds(tenant string, chunk blob.ID) (bool, error) {
	err := view(s.db, func(txn *tx) error {
		_, err := txn.Get(knownKey(chunk, tenant))
		return err
	})
	if err == badger.ErrKeyNotFound {
		return false, nil
	}
	return err == nil, err
}
