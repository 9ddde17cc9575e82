package raftstore

import (
	"net/http"
	"reflect"
	"slices"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/placement"
)

// Blob is the committed record of a stored blob.
type Blob struct {
	ID     blob.ID `json:"id"`
	Size   int64   `json:"size"`
	K      int     `json:"k"`
	M      int     `json:"m"`
	Chunks []Chunk `json:"chunks"`
	// Segments, in a blob of more chunks than one command carries, list
	// its chunks instead of Chunks (segments.go).
	Segments []Segment `json:"segments,omitempty"`
	Created  time.Time `json:"created"`
	// LayoutVersion is the layout the blob's shards were placed under.
	LayoutVersion uint64 `json:"layout_version"`
	// Owner, in a PutBlob command, is the tenant storing it (tenants.go);
	// never part of the stored record.
	Owner string `json:"owner,omitempty"`
}

// Chunk is one chunk of a blob and where its shards live. Shards[i] holds
// shard i. Chunks are content-addressed and shared between blobs.
type Chunk struct {
	ID     blob.ID       `json:"id"`
	Len    int64         `json:"len"`
	Shards []blob.NodeID `json:"shards,omitempty"`
	// Format is the shard format (erasure.Format) its shards were coded
	// in; 0 means 1 (Plain), what chunks written before formats existed use.
	Format uint8 `json:"format,omitempty"`
	// K and M are the chunk's own erasure code, when it differs from its
	// blob's (small chunks use a cheaper one); 0 means the blob's. Records
	// read back always carry them.
	K int `json:"k,omitempty"`
	M int `json:"m,omitempty"`
	// Reused marks a chunk a put did not write because it was already
	// stored: the commit must find it still referenced, since its shards
	// may be reclaimed once no blob holds it.
	Reused bool `json:"reused,omitempty"`
}

// ErrChunkGone is returned when a put reused a chunk that was deleted and
// reclaimed before the put committed; the put must be retried. It wraps
// blob.ErrMissingChunks, so it keeps its meaning across the wire (a
// command forwarded to the leader).
var ErrChunkGone = blob.NewError("chunk_gone", 0, "a reused chunk was reclaimed before the commit", blob.ErrMissingChunks)

// ErrStale is returned by a shard move whose expected locations no longer
// match: someone else moved the chunk first.
var ErrStale = blob.NewError("stale", http.StatusConflict, "chunk locations changed", nil)

// Member states in the layout. Only active members receive new shards and
// raft votes.
const (
	StateActive   = ""         // takes shards
	StateDead     = "dead"     // gone longer than the grace period: its shards are rebuilt elsewhere
	StateDraining = "draining" // its shards are moved away; it keeps serving until empty
)

// Member is a node of the cluster layout.
type Member struct {
	placement.Node
	API    string `json:"api"`    // base URL of the node's HTTP API
	Raft   string `json:"raft"`   // host:port of the node's raft transport
	Gossip string `json:"gossip"` // host:port of the node's gossip
	State  string `json:"state,omitempty"`
	// ShardFormat is the newest shard format (erasure.Format) the node's
	// release reads; a cluster writes a format once every member reads it.
	ShardFormat uint8 `json:"shard_format,omitempty"`
	// Commands is the newest command version the node's release applies
	// (CommandVersion; 0 means 1).
	Commands int `json:"commands,omitempty"`
}

// Layout is the replicated cluster layout. Version grows with every change.
type Layout struct {
	Version uint64   `json:"version"`
	Nodes   []Member `json:"nodes"`
	// Removed lists nodes an operator removed; gossip does not add them
	// back (a removed machine rejoins only with a fresh data directory).
	Removed []blob.NodeID `json:"removed,omitempty"`
}

// PlacementNodes returns every member of the layout as placement input.
func (l Layout) PlacementNodes() []placement.Node {
	ns := make([]placement.Node, len(l.Nodes))
	for i, m := range l.Nodes {
		ns[i] = m.Node
	}
	return ns
}

// Active returns the members that take new shards.
func (l Layout) Active() []Member {
	var out []Member
	for _, m := range l.Nodes {
		if m.State == StateActive {
			out = append(out, m)
		}
	}
	return out
}

// Member returns the layout entry for id.
func (l Layout) Member(id blob.NodeID) (Member, bool) {
	for _, m := range l.Nodes {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// chunkRecord is the FSM's row for a chunk: its shards and how many blobs
// reference it. A chunk uploaded on its own (StageChunk) starts with no
// reference; Staged (unix ns, from the command) dates it so the leader can
// drop it if no blob claims it within the grace.
type chunkRecord struct {
	Len    int64         `json:"len"`
	K      int           `json:"k"`
	M      int           `json:"m"`
	Shards []blob.NodeID `json:"shards"`
	Refs   int           `json:"refs"`
	Staged int64         `json:"staged,omitempty"`
	Format uint8         `json:"format,omitempty"`
}

// chunk is the record as the Chunk it describes.
func (cr chunkRecord) chunk(id blob.ID) Chunk {
	return Chunk{ID: id, Len: cr.Len, Shards: cr.Shards, Format: cr.Format, K: cr.K, M: cr.M}
}

// StagedChunk is a chunk stored ahead of the blob that will reference it
// (client-side chunking uploads chunks, then commits a manifest).
type StagedChunk struct {
	Chunk // with its code (K, M; entries before version 3 wrote them as "K", "M", which decode into the same fields)
	// At is when it was staged, set by the proposer (the FSM must not read
	// clocks). Staging a chunk again refreshes it.
	At time.Time `json:"at"`
	// Owner is the tenant that sent the chunk's bytes (tenants.go).
	Owner string `json:"owner,omitempty"`
}

// TouchStaged restarts the grace of those IDs that are staged and still
// unreferenced: an upload that found them present will claim them soon.
type TouchStaged struct {
	IDs []blob.ID `json:"ids"`
	At  time.Time `json:"at"`
}

// DropStaged deletes the staged chunks among IDs that are still
// unreferenced and were last staged before Before.
type DropStaged struct {
	IDs    []blob.ID `json:"ids"`
	Before time.Time `json:"before"`
}

// ShardMove re-points a chunk's shards from From (the locations the mover
// saw) to To, once the shards at To are durable. It is a compare-and-set:
// if the chunk's locations are no longer From, it fails with ErrStale.
type ShardMove struct {
	Chunk blob.ID       `json:"chunk"`
	From  []blob.NodeID `json:"from"`
	To    []blob.NodeID `json:"to"`
}

// CommandVersion is the newest command version this build applies. A
// command is stamped with the version of its operation (Command.Version),
// and a replica refuses (deterministically, as a rejected command) one
// newer than it knows. Version 2 added share links, version 3 chunks with
// a code of their own (Chunk.K, Chunk.M), version 4 chunk lists in
// segments (segments.go). A node proposes an
// operation of a new version only once every member of the layout applies
// it (Member.Commands), or replicas of two releases would diverge.
const CommandVersion = 4

// Version is the command version c's operation needs.
func (c Command) Version() int {
	switch {
	case c.StageSegment != nil, c.DropSegments != nil, c.DropParts != nil, c.ReleaseUpload != nil, len(c.segmentList()) > 0:
		return 4
	case c.ownCodes():
		return 3
	case c.PutLink != nil, c.DeleteLink != nil, c.DropLinks != nil, c.ReleaseBlob != nil,
		c.PutBlob != nil && c.PutBlob.Owner != "", c.StageChunk != nil && c.StageChunk.Owner != "":
		return 2
	}
	return 1
}

// Command is one raft log entry: a version marker and exactly one
// operation. Build commands with the XCommand constructors; Store.Apply
// stamps the version.
type Command struct {
	V int `json:"v,omitempty"` // the operation's Version, stamped by Apply; 0 (entries older than the marker) is 1

	PutBlob      *Blob        `json:"put_blob,omitempty"`
	DeleteBlob   *blob.ID     `json:"delete_blob,omitempty"`
	SetMember    *Member      `json:"set_member,omitempty"`
	MoveShards   *ShardMove   `json:"move_shards,omitempty"`
	RemoveMember *blob.NodeID `json:"remove_member,omitempty"`
	StageChunk   *StagedChunk `json:"stage_chunk,omitempty"`
	TouchStaged  *TouchStaged `json:"touch_staged,omitempty"`
	DropStaged   *DropStaged  `json:"drop_staged,omitempty"`

	CreateBucket    *Bucket        `json:"create_bucket,omitempty"`
	DeleteBucket    *string        `json:"delete_bucket,omitempty"`
	PutObject       *Object        `json:"put_object,omitempty"`
	DeleteObject    *ObjectRef     `json:"delete_object,omitempty"`
	DeleteObjects   *deleteObjects `json:"delete_objects,omitempty"`
	PutAccessKey    *AccessKey     `json:"put_access_key,omitempty"`
	DeleteAccessKey *string        `json:"delete_access_key,omitempty"`

	CreateUpload   *Upload         `json:"create_upload,omitempty"`
	PutPart        *putPart        `json:"put_part,omitempty"`
	CompleteUpload *CompleteUpload `json:"complete_upload,omitempty"`
	AbortUpload    *UploadRef      `json:"abort_upload,omitempty"`

	ReleaseBlob *ReleaseBlob `json:"release_blob,omitempty"`
	PutLink     *Link        `json:"put_link,omitempty"`
	DeleteLink  *string      `json:"delete_link,omitempty"`
	DropLinks   *DropLinks   `json:"drop_links,omitempty"`

	StageSegment *StagedSegment `json:"stage_segment,omitempty"`
	DropSegments *DropStaged    `json:"drop_segments,omitempty"`
	DropParts    *string        `json:"drop_parts,omitempty"`
	// ReleaseUpload aborts an upload, its parts released afterwards.
	ReleaseUpload *UploadRef `json:"release_upload,omitempty"`
}

// Bounds on one command, checked before it is proposed, so that it applies
// in one metadata transaction (badger's limit, about 1.2 MB of writes here,
// took a 9-shard PutBlob of about 7,000 chunks). A blob or object of more
// chunks has its chunk list committed in segments (segments.go). A
// command that still does not fit is rejected by every replica alike.
// MaxCommandSize leaves room for raft's own fields so that an entry stays
// under badger's value threshold (badgerOptions).
const (
	MaxChunksPerCommand = 4096
	MaxCommandSize      = 1<<20 - 4<<10
)

// chunks counts the chunk references c carries.
func (c Command) chunks() int {
	cs, _, _ := c.chunkList()
	return len(cs)
}

// chunkList returns the chunks c's operation references and the code
// they have unless they state their own.
func (c Command) chunkList() ([]Chunk, int, int) {
	switch {
	case c.PutBlob != nil:
		return c.PutBlob.Chunks, c.PutBlob.K, c.PutBlob.M
	case c.PutObject != nil:
		return c.PutObject.Chunks, c.PutObject.K, c.PutObject.M
	case c.PutPart != nil:
		return c.PutPart.Part.Chunks, c.PutPart.Part.K, c.PutPart.Part.M
	case c.CompleteUpload != nil:
		return c.CompleteUpload.Object.Chunks, c.CompleteUpload.Object.K, c.CompleteUpload.Object.M
	case c.StageSegment != nil:
		return c.StageSegment.Chunks, c.StageSegment.K, c.StageSegment.M
	}
	return nil, 0, 0
}

// segmentList returns the segments c's operation references.
func (c Command) segmentList() []Segment {
	switch {
	case c.PutBlob != nil:
		return c.PutBlob.Segments
	case c.PutObject != nil:
		return c.PutObject.Segments
	case c.PutPart != nil:
		return c.PutPart.Part.Segments
	case c.CompleteUpload != nil:
		return c.CompleteUpload.Object.Segments
	}
	return nil
}

// ownCodes reports whether a chunk of c states a code other than the one
// it would have without (a release before version 3 ignores the field).
func (c Command) ownCodes() bool {
	cs, k, m := c.chunkList()
	return slices.ContainsFunc(cs, func(ch Chunk) bool { return ch.K != 0 && (ch.K != k || ch.M != m) })
}

// operations counts the operations set in c (a valid command has one).
func (c Command) operations() int {
	n := 0
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			n++
		}
	}
	return n
}

// Result is what a committed command returns besides its error.
type Result struct {
	Blob *Blob `json:"blob,omitempty"` // PutBlob: the record now stored (an existing one for known content)
}
