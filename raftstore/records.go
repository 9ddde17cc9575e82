package raftstore

import (
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/placement"
)

// Blob is the committed record of a stored blob.
type Blob struct {
	ID      blob.ID   `json:"id"`
	Size    int64     `json:"size"`
	K       int       `json:"k"`
	M       int       `json:"m"`
	Chunks  []Chunk   `json:"chunks"`
	Created time.Time `json:"created"`
	// LayoutVersion is the layout the blob's shards were placed under.
	LayoutVersion uint64 `json:"layout_version"`
}

// Chunk is one chunk of a blob and where its shards live. Shards[i] holds
// shard i. Chunks are content-addressed and shared between blobs.
type Chunk struct {
	ID     blob.ID       `json:"id"`
	Len    int64         `json:"len"`
	Shards []blob.NodeID `json:"shards,omitempty"`
}

// Member is a node of the cluster layout.
type Member struct {
	placement.Node
	API    string `json:"api"`    // base URL of the node's HTTP API
	Raft   string `json:"raft"`   // host:port of the node's raft transport
	Gossip string `json:"gossip"` // host:port of the node's gossip
}

// Layout is the replicated cluster layout. Version grows with every change.
type Layout struct {
	Version uint64   `json:"version"`
	Nodes   []Member `json:"nodes"`
}

// PlacementNodes returns the layout as placement input.
func (l Layout) PlacementNodes() []placement.Node {
	ns := make([]placement.Node, len(l.Nodes))
	for i, m := range l.Nodes {
		ns[i] = m.Node
	}
	return ns
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
// reference it.
type chunkRecord struct {
	Len    int64         `json:"len"`
	K      int           `json:"k"`
	M      int           `json:"m"`
	Shards []blob.NodeID `json:"shards"`
	Refs   int           `json:"refs"`
}

// command is one raft log entry. Exactly one field is set.
type command struct {
	PutBlob    *Blob    `json:"put_blob,omitempty"`
	DeleteBlob *blob.ID `json:"delete_blob,omitempty"`
	SetMember  *Member  `json:"set_member,omitempty"`
}
