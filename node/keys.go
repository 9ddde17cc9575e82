package node

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/raftstore"
)

// Access keys (S3's, and the native API's bearer tokens) live in the replicated metadata with their secrets
// sealed (AES-256-GCM, the access key ID as associated data) under the
// cluster's master key, which every node is given (Config.MasterKey) and
// which is never stored by Atoll: a copy of the metadata alone reveals no
// secret. SigV4 needs the secret itself to check a signature, so it
// cannot be kept as a one-way hash.

// ErrNoMasterKey means the node was started without a master key.
var ErrNoMasterKey = blob.NewError("no_master_key", 0, "no S3 master key configured (--s3-master-key-file)", blob.ErrUnavailable)

const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
const secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomString draws n characters uniformly from alphabet (rejection
// sampling: no modulo bias).
func randomString(n int, alphabet string) string {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	b := make([]byte, 1)
	for len(out) < n {
		rand.Read(b) // never fails (crypto/rand, Go ≥ 1.24)
		if int(b[0]) < limit {
			out = append(out, alphabet[int(b[0])%len(alphabet)])
		}
	}
	return string(out)
}

func (n *Node) aead() (cipher.AEAD, error) {
	if len(n.cfg.MasterKey) == 0 {
		return nil, ErrNoMasterKey
	}
	block, err := aes.NewCipher(n.cfg.MasterKey)
	if err != nil {
		return nil, fmt.Errorf("S3 master key: %w", err)
	}
	return cipher.NewGCM(block)
}

// maxKeyBuckets bounds the buckets one access key names.
const maxKeyBuckets = 100

// CreateAccessKey makes a new access key limited as req says (nothing:
// every scope, everywhere) and returns it, secret included (the only time
// the secret is shown).
func (n *Node) CreateAccessKey(ctx context.Context, req api.KeyRequest) (api.AccessKey, error) {
	aead, err := n.aead()
	if err != nil {
		return api.AccessKey{}, err
	}
	for _, sc := range req.Scopes {
		if sc != api.ScopeRead && sc != api.ScopeWrite && sc != api.ScopeDelete {
			return api.AccessKey{}, fmt.Errorf("%w: unknown scope %q (read, write, delete)", blob.ErrBadRequest, sc)
		}
	}
	if len(req.Buckets) > maxKeyBuckets {
		return api.AccessKey{}, fmt.Errorf("%w: a key may name at most %d buckets", blob.ErrTooLarge, maxKeyBuckets)
	}
	for _, b := range req.Buckets {
		if b == "" || len(b) > 63 {
			return api.AccessKey{}, fmt.Errorf("%w: invalid bucket name %q", blob.ErrBadRequest, b)
		}
	}
	if req.Tenant != "" && !validTenant.MatchString(req.Tenant) {
		return api.AccessKey{}, fmt.Errorf("%w: a tenant name is 1 to 64 of [A-Za-z0-9._-], not starting with a dot: %q", blob.ErrBadRequest, req.Tenant)
	}
	k := api.AccessKey{AccessKey: "AK" + randomString(18, keyAlphabet), SecretKey: randomString(40, secretAlphabet), Created: time.Now().UTC().Truncate(time.Second),
		Scopes: slices.Compact(slices.Sorted(slices.Values(req.Scopes))), Buckets: slices.Compact(slices.Sorted(slices.Values(req.Buckets))), Tenant: req.Tenant}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	sealed := aead.Seal(nonce, nonce, []byte(k.SecretKey), []byte(k.AccessKey))
	cmd := raftstore.PutAccessKeyCommand(raftstore.AccessKey{ID: k.AccessKey, Sealed: sealed, Created: k.Created, Scopes: k.Scopes, Buckets: k.Buckets, Tenant: k.Tenant})
	return k, n.Apply(ctx, cmd)
}

// AccessKey returns access key id with its secret unsealed, or
// blob.ErrNotFound.
func (n *Node) AccessKey(ctx context.Context, id string) (api.AccessKey, error) {
	aead, err := n.aead()
	if err != nil {
		return api.AccessKey{}, err
	}
	k, err := n.meta.AccessKey(id)
	if errors.Is(err, blob.ErrNotFound) { // perhaps created a moment ago elsewhere
		if err = n.Sync(ctx); err == nil {
			k, err = n.meta.AccessKey(id)
		}
	}
	if err != nil {
		return api.AccessKey{}, err
	}
	ns := aead.NonceSize()
	if len(k.Sealed) < ns {
		return api.AccessKey{}, fmt.Errorf("%w: sealed secret of %s", blob.ErrCorrupt, id)
	}
	secret, err := aead.Open(nil, k.Sealed[:ns], k.Sealed[ns:], []byte(id))
	if err != nil {
		return api.AccessKey{}, fmt.Errorf("access key %s: cannot unseal its secret (a different master key?): %w", id, err)
	}
	return api.AccessKey{AccessKey: k.ID, SecretKey: string(secret), Created: k.Created, Scopes: k.Scopes, Buckets: k.Buckets, Tenant: k.Tenant}, nil
}

func (n *Node) handleCreateKey(w http.ResponseWriter, r *http.Request) {
	var req api.KeyRequest
	if r.ContentLength != 0 && !decodeBody(w, r, &req, 64<<10) {
		return
	}
	k, err := n.CreateAccessKey(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, k)
}

func (n *Node) handleListKeys(w http.ResponseWriter, r *http.Request) {
	if err := n.Sync(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	ks, err := n.meta.AccessKeys()
	if err != nil {
		writeError(w, err)
		return
	}
	out := []api.AccessKey{}
	for _, k := range ks {
		out = append(out, api.AccessKey{AccessKey: k.ID, Created: k.Created, Scopes: k.Scopes, Buckets: k.Buckets})
	}
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) handleDeleteKey(w http.ResponseWriter, r *http.Request) {
	if err := n.Apply(r.Context(), raftstore.DeleteAccessKeyCommand(r.PathValue("id"))); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
