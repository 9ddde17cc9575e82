// Package api holds the JSON types of Atoll's HTTP API, shared by the
// node that serves them and the client that reads them.
package api

import (
	"cmp"
	"slices"
	"time"

	"github.com/atollstore/atoll/blob"
)

// Liveness states reported for a node.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
)

// PutResult is the answer to a put.
type PutResult struct {
	ID   blob.ID `json:"id"`
	Size int64   `json:"size"`
}

// Stat describes a blob and the health of each of its shards, a page of
// at most StatPage chunks at a time: GET /v1/blobs/{id}/stat?from=N
// describes chunks N onwards (from 0), and Next, when not 0, is where the
// next page starts.
type Stat struct {
	ID         blob.ID     `json:"id"`
	Size       int64       `json:"size"`
	K          int         `json:"k"`
	M          int         `json:"m"`
	ChunkCount int         `json:"chunk_count"`
	From       int         `json:"from,omitempty"`
	Chunks     []ChunkStat `json:"chunks"`
	Next       int         `json:"next,omitempty"`
}

// StatPage bounds the chunks one stat request describes (and the shard
// checks it makes: up to k+m a chunk).
const StatPage = 1024

// ChunkStat describes one chunk.
type ChunkStat struct {
	ID     blob.ID     `json:"id"`
	Len    int64       `json:"len"`
	K      int         `json:"k"` // the chunk's code: small chunks have their own
	M      int         `json:"m"`
	Shards []ShardStat `json:"shards"`
}

// ShardStat describes one shard: where it is and whether it could be read
// back and verified just now.
type ShardStat struct {
	Index   int         `json:"index"`
	Node    blob.NodeID `json:"node"`
	Region  blob.Region `json:"region"`
	Healthy bool        `json:"healthy"`
	// State is "healthy", "missing", "corrupt", "unreachable", "node-dead"
	// or "unknown-node".
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// Info is a node's report about itself.
type Info struct {
	ID        blob.NodeID    `json:"id"`
	UsedBytes int64          `json:"used_bytes"`
	Workers   []WorkerStatus `json:"workers,omitempty"`
}

// WorkerStatus is the state of one of a node's background loops (control,
// reconnect, repair, scrub).
type WorkerStatus struct {
	Name        string    `json:"name"`
	State       string    `json:"state"` // idle, running, standby (leader-only work on a follower)
	Passes      int       `json:"passes"`
	Errors      int       `json:"errors,omitempty"` // passes that failed
	LastStart   time.Time `json:"last_start,omitzero"`
	LastSeconds float64   `json:"last_seconds"`
	LastError   string    `json:"last_error,omitempty"` // of the last pass
}

// ClusterInfo is what `atoll cluster` shows.
type ClusterInfo struct {
	Leader              blob.NodeID   `json:"leader"`
	Nodes               []NodeInfo    `json:"nodes"`
	Regions             []blob.Region `json:"regions"`
	K                   int           `json:"k"`
	M                   int           `json:"m"`
	ChunkSize           int           `json:"chunk_size"`
	LayoutVersion       uint64        `json:"layout_version"`
	Blobs               int           `json:"blobs"`
	StoredBytes         int64         `json:"stored_bytes"`
	UsedBytes           int64         `json:"used_bytes"`
	ToleratesRegionLoss bool          `json:"tolerates_region_loss"`
	// DegradedChunks counts chunks with a shard on a node that is dead,
	// draining or unreachable: they have fewer than k+m healthy shards.
	DegradedChunks int          `json:"degraded_chunks"`
	Repair         RepairStatus `json:"repair"`
	Warnings       []string     `json:"warnings,omitempty"`
}

// NodeInfo is one node as the cluster sees it.
type NodeInfo struct {
	ID       blob.NodeID `json:"id"`
	Region   blob.Region `json:"region"`
	Zone     blob.Zone   `json:"zone"`
	Addr     string      `json:"addr"`
	State    string      `json:"state"`
	Voter    bool        `json:"voter"`
	InLayout bool        `json:"in_layout"`
	// Placement is "active" (takes shards), "draining", "dead" (declared
	// dead after the grace period; its shards are rebuilt elsewhere) or
	// "joining" (gossiping, not yet in the layout).
	Placement string         `json:"placement"`
	UsedBytes int64          `json:"used_bytes"`
	Workers   []WorkerStatus `json:"workers,omitempty"`
}

// RepairStatus is the leader's progress in moving shards to where
// placement wants them (repair, drain, rebalance).
type RepairStatus struct {
	Running        bool      `json:"running"`
	Total          int       `json:"total"` // chunks to move in the current pass
	Done           int       `json:"done"`
	Failed         int       `json:"failed,omitempty"` // retried next pass
	Bytes          int64     `json:"bytes"`            // shard bytes written this pass
	BytesPerSecond float64   `json:"bytes_per_second"`
	ETASeconds     float64   `json:"eta_seconds"`
	Started        time.Time `json:"started,omitzero"`
}

// ShardRef names one shard on one node.
type ShardRef struct {
	Chunk blob.ID     `json:"chunk"`
	Index int         `json:"index"`
	Node  blob.NodeID `json:"node"`
}

// MaxChunkSize is the largest chunk a client may upload on its own
// (PUT /v1/chunks/{id}); client-side chunking cuts at most this much.
const MaxChunkSize = 8 << 20

// MaxManifestChunks bounds a manifest (and a have-check): 1 TiB in chunks
// of the 1 MiB minimum, at about 80 bytes each on the wire.
const MaxManifestChunks = 1 << 20

// MaxHaveChunks bounds one have-check; clients send longer lists in
// batches.
const MaxHaveChunks = 10000

// HaveRequest asks which of these chunks the cluster lacks.
type HaveRequest struct {
	Chunks []blob.ID `json:"chunks"`
}

// HaveResponse lists the requested chunks the cluster does not hold.
type HaveResponse struct {
	Missing []blob.ID `json:"missing"`
}

// ChunkRef is one entry of a manifest: a chunk and its length.
type ChunkRef struct {
	ID  blob.ID `json:"id"`
	Len int64   `json:"len"`
}

// Manifest commits a blob made of chunks already stored. ID is the BLAKE3
// of the whole content, as for a streamed put; the cluster checks it.
type Manifest struct {
	ID     blob.ID    `json:"id"`
	Size   int64      `json:"size"`
	Chunks []ChunkRef `json:"chunks"`
}

// AccessKey is a data credential: for S3 (SigV4) and for the native API
// (Authorization: Bearer ACCESS_KEY:SECRET_KEY). SecretKey is only ever
// sent once, in the answer to its creation. Scopes limit what it may do
// (ScopeRead, ScopeWrite, ScopeDelete; all when empty); Buckets, when not
// empty, limit it to those S3 buckets, and then it has no access to the
// native API's blobs.
type AccessKey struct {
	AccessKey string    `json:"access_key"`
	SecretKey string    `json:"secret_key,omitempty"`
	Created   time.Time `json:"created"`
	Scopes    []string  `json:"scopes,omitempty"`
	Buckets   []string  `json:"buckets,omitempty"`
	// Tenant owns what the key stores through the native API; keys of
	// one tenant share their blobs, and no other tenant can reach them,
	// not even by their content hash. Empty: the key is its own tenant.
	Tenant string `json:"tenant,omitempty"`
}

// TenantName is the tenant k acts for.
func (k AccessKey) TenantName() string { return cmp.Or(k.Tenant, k.AccessKey) }

// Scopes of an access key.
const (
	ScopeRead   = "read"   // get, head, stat, list
	ScopeWrite  = "write"  // put, upload chunks and manifests, create buckets
	ScopeDelete = "delete" // delete blobs, objects, buckets
)

// Allows reports whether k may act with scope on bucket ("" for the
// native API's blobs).
func (k AccessKey) Allows(scope, bucket string) bool {
	if len(k.Scopes) > 0 && !slices.Contains(k.Scopes, scope) {
		return false
	}
	return len(k.Buckets) == 0 || (bucket != "" && slices.Contains(k.Buckets, bucket))
}

// KeyRequest is the body of POST /v1/keys (optional: no body makes a key
// with every scope on everything).
type KeyRequest struct {
	Scopes  []string `json:"scopes,omitempty"`
	Buckets []string `json:"buckets,omitempty"`
	Tenant  string   `json:"tenant,omitempty"`
}

// LinkRequest creates a share link (POST /v1/links). The client makes the
// ID (random, package e2e) and seals the envelope; the cluster keeps both.
type LinkRequest struct {
	ID      string    `json:"id"`
	Blob    blob.ID   `json:"blob"`
	Sealed  []byte    `json:"sealed"`           // base64 in JSON
	Expires time.Time `json:"expires,omitzero"` // zero: never
}

// Link is a share link's record as anyone holding the link reads it (GET
// /v1/links/{id}, no credentials): the blob's content is at
// /v1/links/{id}/content.
type Link struct {
	ID      string    `json:"id"`
	Blob    blob.ID   `json:"blob"`
	Size    int64     `json:"size"` // of the (sealed) blob
	Sealed  []byte    `json:"sealed"`
	Expires time.Time `json:"expires,omitzero"`
}
