package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/placement"
	"github.com/atollstore/atoll/raftstore"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
)

// The reconciler (leader only) makes every chunk's shard locations match
// where placement wants them now. One mechanism serves four needs:
//
//   - repair: a node declared dead is no longer active, so its shards are
//     rebuilt (from any k others) on the nodes placement now picks;
//   - drain: a draining node is not active either, but still serves, so its
//     shards are copied off it;
//   - growth: a new node wins about its fair share of chunks, which move;
//   - return: when a dead region comes back, chunks spread over the
//     survivors during the outage move back to restore ≤ m per region.
//
// Each pass scans all chunks and computes the moves from the replicated
// state, so it resumes by itself after a leader change or restart. A move
// writes the new shard durably, then commits a compare-and-set of the
// chunk's locations through raft; it never deletes the old shard — the old
// holder's scrubber reclaims it once it has been unreferenced for a grace
// period, so readers holding the old locations keep working meanwhile.

// repairState is the leader's progress report.
type repairState struct {
	mu        sync.Mutex
	status    api.RepairStatus
	lastBytes int64
	lastAt    time.Time
}

func (r *repairState) get() api.RepairStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

func (r *repairState) update(fn func(*api.RepairStatus)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(&r.status)
	if now := time.Now(); now.Sub(r.lastAt) >= time.Second || r.lastAt.IsZero() {
		if !r.lastAt.IsZero() {
			r.status.BytesPerSecond = float64(r.status.Bytes-r.lastBytes) / now.Sub(r.lastAt).Seconds()
		}
		r.lastBytes, r.lastAt = r.status.Bytes, now
	}
	left := r.status.Total - r.status.Done
	r.status.ETASeconds = 0
	if left > 0 && r.status.BytesPerSecond > 0 && r.status.Done > 0 {
		perChunk := float64(r.status.Bytes) / float64(r.status.Done)
		r.status.ETASeconds = perChunk * float64(left) / r.status.BytesPerSecond
	}
}

// repairPass returns the repair worker's pass (leader only): a
// reconciliation pass, then dropping abandoned staged chunks and purging
// dead links.
func (n *Node) repairPass() func(context.Context) error {
	limiter := rate.NewLimiter(rate.Limit(n.cfg.RepairBandwidth), 16<<20)
	return func(ctx context.Context) error {
		err := n.reconcile(ctx, limiter) // NB: a failed reconcile does not skip the drop, as before
		if derr := n.dropAbandoned(ctx); derr != nil {
			err = errors.Join(err, fmt.Errorf("dropping abandoned chunks: %w", derr))
		}
		if perr := n.purgeLinks(ctx); perr != nil {
			err = errors.Join(err, fmt.Errorf("purging links: %w", perr))
		}
		return err
	}
}

// planned is one chunk whose shards must move.
type planned struct {
	chunk raftstore.Chunk
	k, m  int
	to    []blob.NodeID
}

// reconcile runs one pass: plan every move, then carry them out with
// bounded concurrency and bandwidth.
func (n *Node) reconcile(ctx context.Context, limiter *rate.Limiter) error {
	layout, err := n.meta.Layout()
	if err != nil {
		return err
	}
	active := placementNodes(layout.Active())
	if len(active) == 0 {
		return nil
	}
	var plan []planned
	err = n.meta.Chunks(func(c raftstore.Chunk, k, m int) bool {
		if to := (placement.Policy{K: k, M: m}).Target(active, c.ID, c.Shards); to != nil {
			plan = append(plan, planned{c, k, m, to})
		}
		return true
	})
	if err != nil {
		return err
	}
	if len(plan) == 0 {
		n.repair.update(func(s *api.RepairStatus) { *s = api.RepairStatus{} })
		return nil
	}
	n.log.Info("repair: chunks to move", "count", len(plan))
	n.repair.update(func(s *api.RepairStatus) {
		*s = api.RepairStatus{Running: true, Total: len(plan), Started: time.Now().UTC()}
	})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(n.cfg.RepairParallel)
	var failed int
	var mu sync.Mutex
	for _, p := range plan {
		g.Go(func() error {
			moved, err := n.move(gctx, layout, p, limiter)
			if err != nil && gctx.Err() == nil {
				n.log.Debug("repair: move failed; retrying next pass", "chunk", p.chunk.ID, "err", err)
				mu.Lock()
				failed++
				mu.Unlock()
			}
			n.repair.update(func(s *api.RepairStatus) {
				s.Done++
				s.Bytes += moved
			})
			return nil
		})
	}
	g.Wait()
	n.repair.update(func(s *api.RepairStatus) { s.Running = false; s.Failed = failed })
	return ctx.Err()
}

// move carries out one planned chunk: each shard that changes node is
// copied from its old holder if that one answers with a verified shard,
// else rebuilt from any k shards; written durably to its new node; and
// then the new locations are committed. It returns the bytes written.
func (n *Node) move(ctx context.Context, layout raftstore.Layout, p planned, limiter *rate.Limiter) (int64, error) {
	c := p.chunk
	var rebuilt [][]byte // all k+m shards, reconstructed once if needed
	var written int64
	for i, to := range p.to {
		if to == c.Shards[i] {
			continue
		}
		var payload []byte
		if from, ok := n.member(c.Shards[i], layout); ok && n.gossip.state(from.ID) != api.StateDead {
			payload, _ = n.readShard(ctx, from, c, i) // unreachable or corrupt: rebuild below
		}
		if payload == nil {
			if rebuilt == nil {
				var err error
				if rebuilt, err = n.rebuildChunk(ctx, p.k, p.m, c); err != nil {
					return written, err
				}
			}
			payload = rebuilt[i]
		}
		dst, ok := n.member(to, layout)
		if !ok {
			return written, fmt.Errorf("target node %s has no address", to)
		}
		if err := limiter.WaitN(ctx, min(len(payload), limiter.Burst())); err != nil {
			return written, err
		}
		if err := n.writeShard(ctx, dst, erasure.Header{Format: chunkFormat(c), K: p.k, M: p.m, Index: i, ChunkLen: c.Len, ShardLen: len(payload), Chunk: c.ID, Checksum: erasure.Checksum(payload)}, payload); err != nil {
			return written, err
		}
		written += int64(len(payload))
	}
	cmd := raftstore.MoveShardsCommand(raftstore.ShardMove{Chunk: c.ID, From: c.Shards, To: p.to})
	if _, err := n.apply(ctx, cmd); err != nil {
		if errors.Is(err, raftstore.ErrStale) || errors.Is(err, blob.ErrNotFound) {
			return written, nil // moved or deleted meanwhile; the next pass decides again
		}
		return written, err
	}
	return written, nil
}

// rebuildChunk gathers k verified shards of c and reconstructs all k+m.
func (n *Node) rebuildChunk(ctx context.Context, k, m int, c raftstore.Chunk) ([][]byte, error) {
	codec, err := n.codecFor(k, m)
	if err != nil {
		return nil, err
	}
	shards, plain, err := n.fetchChunk(ctx, codec, c, n.chunkBuf())
	n.chunkBufs.Put(plain[:0])
	if err != nil {
		return nil, err
	}
	if err := codec.Reconstruct(shards); err != nil {
		return nil, err
	}
	return shards, nil
}
