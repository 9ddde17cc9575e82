package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/raftstore"
	"github.com/atollstore/atoll/storage"
	"golang.org/x/time/rate"
)

// The scrubber runs on every node. Each pass it
//
//  1. re-reads and verifies every shard the metadata says this node holds,
//     rebuilding a missing or corrupt one in place from any k others; and
//  2. reclaims shard files no chunk references here — shards of deleted
//     blobs, old copies left by moves, stale shards of a node that was
//     declared dead and came back, leftovers of failed puts — once they have
//     been unreferenced and unmodified for OrphanGrace. The grace covers
//     puts in flight (their shards are unreferenced until the commit) and
//     readers still holding old locations.
//
// Reads are rate-limited to ScrubBandwidth.

// scrubPass returns the scrub worker's pass; the limiter and the orphans
// seen so far carry over from pass to pass.
func (n *Node) scrubPass() func(context.Context) error {
	limiter := rate.NewLimiter(rate.Limit(n.cfg.ScrubBandwidth), 4<<20)
	orphans := map[storage.Ref]time.Time{} // first seen unreferenced
	return func(ctx context.Context) error {
		n.scrub(ctx, limiter, orphans)
		return nil
	}
}

type heldShard struct {
	chunk raftstore.Chunk
	index int
	k, m  int
}

func (n *Node) scrub(ctx context.Context, limiter *rate.Limiter, orphans map[storage.Ref]time.Time) {
	var held []heldShard
	n.meta.Chunks(func(c raftstore.Chunk, k, m int) bool {
		for i, id := range c.Shards {
			if id == n.cfg.ID {
				held = append(held, heldShard{c, i, k, m})
			}
		}
		return true
	})
	for _, h := range held {
		if ctx.Err() != nil {
			return
		}
		limiter.WaitN(ctx, min(int(erasure.ShardSize(chunkFormat(h.chunk).PackageLen(h.chunk.Len), h.k)), limiter.Burst()))
		_, err := n.readShard(ctx, n.self, h.chunk, h.index) // NB: also checks the header against the record
		if err == nil || !(errors.Is(err, blob.ErrNotFound) || errors.Is(err, blob.ErrCorrupt)) {
			continue
		}
		n.log.Warn("scrub: shard damaged; rebuilding", "chunk", h.chunk.ID, "index", h.index, "err", err)
		shards, err := n.rebuildChunk(ctx, h.k, h.m, h.chunk)
		if err != nil {
			n.log.Error("scrub: cannot rebuild shard", "chunk", h.chunk.ID, "index", h.index, "err", err)
			continue
		}
		p := shards[h.index]
		hdr := erasure.Header{Format: chunkFormat(h.chunk), K: h.k, M: h.m, Index: h.index, ChunkLen: h.chunk.Len, ShardLen: len(p), Chunk: h.chunk.ID, Checksum: erasure.Checksum(p)}
		if err := n.writeShard(ctx, n.self, hdr, p); err != nil {
			n.log.Error("scrub: cannot write rebuilt shard", "chunk", h.chunk.ID, "index", h.index, "err", err)
			continue
		}
		n.scrubRepairs.Add(1)
	}
	n.reclaim(ctx, orphans)
}

// reclaim deletes shard files that have been unreferenced for OrphanGrace.
// The local replica only nominates candidates: it may lag (a node just
// added is still replaying the log), so the leader, after a barrier,
// confirms each one before it is deleted. No leader, no deletion.
func (n *Node) reclaim(ctx context.Context, orphans map[storage.Ref]time.Time) {
	now := time.Now()
	seen := map[storage.Ref]bool{}
	var due []api.ShardRef
	n.shards.Walk(ctx, func(ref storage.Ref, _ storage.Info) error {
		if n.holds(ref.Chunk, ref.Index, n.cfg.ID) {
			return nil
		}
		seen[ref] = true
		if first, ok := orphans[ref]; !ok {
			orphans[ref] = now
		} else if now.Sub(first) >= n.cfg.OrphanGrace {
			due = append(due, api.ShardRef{Chunk: ref.Chunk, Index: ref.Index, Node: n.cfg.ID})
		}
		return nil
	})
	for ref := range orphans {
		if !seen[ref] {
			delete(orphans, ref) // referenced again, or gone
		}
	}
	if len(due) == 0 || ctx.Err() != nil {
		return
	}
	confirmed, err := n.confirmUnreferenced(ctx, due)
	if err != nil {
		n.log.Debug("scrub: cannot confirm orphans with the leader; keeping them", "count", len(due), "err", err)
		return
	}
	for _, r := range confirmed {
		ref := storage.Ref{Chunk: r.Chunk, Index: r.Index}
		removed, err := n.shards.RemoveIfOlder(ctx, ref, now.Add(-n.cfg.OrphanGrace))
		if err != nil {
			n.log.Warn("scrub: cannot reclaim shard", "shard", ref, "err", err)
		}
		if removed {
			n.log.Debug("scrub: reclaimed unreferenced shard", "shard", ref)
			n.scrubReclaimed.Add(1)
			delete(orphans, ref)
		}
	}
}

// holds reports whether the local replica places shard index of chunk on node.
func (n *Node) holds(chunk blob.ID, index int, node blob.NodeID) bool {
	c, err := n.meta.Chunk(chunk)
	return err == nil && index < len(c.Shards) && c.Shards[index] == node
}

// confirmUnreferenced returns those of refs the leader's complete replica
// does not reference.
func (n *Node) confirmUnreferenced(ctx context.Context, refs []api.ShardRef) ([]api.ShardRef, error) {
	if n.meta.IsLeader() {
		return n.unreferenced(ctx, refs)
	}
	leader, err := n.leader()
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(refs)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, leader.API+"/internal/unreferenced", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := n.peers.Do(req)
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, blob.ReadError(resp)
	}
	var out []api.ShardRef
	return out, decodeAnswer(resp, &out)
}

// unreferenced (leader only) filters refs down to those no chunk record
// references, after a barrier so that the answer reflects every commit.
func (n *Node) unreferenced(ctx context.Context, refs []api.ShardRef) ([]api.ShardRef, error) {
	if err := n.meta.Barrier(ctx); err != nil {
		return nil, err
	}
	var out []api.ShardRef
	for _, r := range refs {
		if !n.holds(r.Chunk, r.Index, r.Node) {
			out = append(out, r)
		}
	}
	return out, nil
}
