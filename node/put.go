package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/placement"
	"github.com/atollstore/atoll/raftstore"
	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"
)

// Put stores the stream r as a blob. It returns only after every shard of
// every chunk is durable on its node and the blob record is committed
// through raft; on any error nothing is committed, so no partial blob is
// ever visible. Shards written before a failure are orphans, invisible to
// readers.
//
// Memory is bounded by PutParallel stripes (about ChunkSize·(k+m)/k each),
// whatever the blob's size. The blob's ID is the BLAKE3 hash of its bytes.
func (n *Node) Put(ctx context.Context, r io.Reader) (*raftstore.Blob, error) {
	return n.put(ctx, "", r)
}

// put is Put for tenant owner ("" records none).
func (n *Node) put(ctx context.Context, owner string, r io.Reader) (*raftstore.Blob, error) {
	rec, err := n.storeStream(ctx, owner, r)
	if err != nil {
		return nil, err
	}
	rec.Owner = owner
	cmd := raftstore.PutBlobCommand(*rec)
	if _, err := n.apply(ctx, cmd); err != nil {
		if errors.Is(err, blob.ErrMissingChunks) { // a reused chunk was reclaimed meanwhile
			err = fmt.Errorf("%w: %v", blob.ErrUnavailable, err) // the client may retry
		}
		return nil, fmt.Errorf("committing blob %s: %w", rec.ID, err)
	}
	return rec, nil
}

// StoreStream stores the stream r as chunks and returns the blob record
// that would commit them, without committing it: every shard is durable,
// nothing references the chunks yet (they are orphans, reclaimed after
// OrphanGrace, until a command commits them — PutBlob, or PutObject for
// the S3 API). Chunks already stored are marked Reused and not written.
// A chunk list too long for one command is committed in segments as the
// stream goes (ChunkList): staged, dropped after OrphanGrace unless a
// record claims them.
func (n *Node) StoreStream(ctx context.Context, r io.Reader) (*raftstore.Blob, error) {
	return n.storeStream(ctx, "", r)
}

func (n *Node) storeStream(ctx context.Context, owner string, r io.Reader) (*raftstore.Blob, error) {
	layout, err := n.meta.Layout()
	if err != nil {
		return nil, err
	}
	if len(layout.Nodes) == 0 {
		return nil, fmt.Errorf("%w: the cluster has not formed yet", blob.ErrUnavailable)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	slots := make(chan struct{}, n.cfg.PutParallel)
	whole := blake3.New()
	list := n.NewChunkList(owner)
	var run []*raftstore.Chunk // in order, some still being written
	var written sync.WaitGroup // run's writes
	// settle moves the run, once written, to the list (a chunk write that
	// failed cancels ctx while the stream is read).
	settle := func(ctx context.Context) error {
		written.Wait()
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, c := range run {
			if err := list.Add(ctx, *c); err != nil {
				return err
			}
		}
		run = run[:0]
		return nil
	}
	var size int64
	readErr := func() error {
		for {
			select {
			case slots <- struct{}{}:
			case <-gctx.Done():
				return nil // a chunk write failed; g.Wait reports it
			}
			st := n.stripes.Get().(*erasure.Stripe)
			release := func() { n.stripes.Put(st); <-slots }
			got, err := st.Fill(r, n.cfg.ChunkSize)
			if got == 0 {
				release()
				if err == io.EOF {
					return nil
				}
				return err
			}
			if size += int64(got); size > n.cfg.MaxBlobSize {
				release()
				return fmt.Errorf("%w: blob exceeds the limit of %d bytes", blob.ErrTooLarge, n.cfg.MaxBlobSize)
			}
			if len(run) == n.cfg.SegmentChunks {
				if err := settle(gctx); err != nil {
					release()
					if gctx.Err() != nil {
						return nil // a chunk write failed; g.Wait reports it
					}
					return err
				}
			}
			whole.Write(st.Data())
			c := &raftstore.Chunk{Len: int64(got)}
			run = append(run, c)
			coded, put := n.stripeFor(st, &n.stripes, layout)
			written.Add(1)
			g.Go(func() (err error) {
				defer func() { put(); <-slots; written.Done() }()
				c.ID = blob.Sum(coded.Data())
				return n.writeChunk(gctx, layout, coded, c)
			})
			if err != nil {
				return err
			}
		}
	}()
	if readErr != nil {
		cancel() // the upload is lost: stop writing its chunks
		g.Wait()
		return nil, fmt.Errorf("reading upload: %w", readErr)
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := settle(ctx); err != nil {
		return nil, err
	}
	chunks, segments, err := list.Done(ctx)
	if err != nil {
		return nil, err
	}
	rec := raftstore.Blob{ID: blob.ID(whole.Sum(nil)), Size: size, K: n.cfg.K, M: n.cfg.M, Chunks: chunks, Segments: segments,
		Created: time.Now().UTC(), LayoutVersion: layout.Version}
	return &rec, nil
}

// stripeFor returns the stripe chunk st (of the main code, from pool)
// is coded with: st itself, or for a small chunk (smallChunk) a stripe of
// the small code holding a copy, st going back to pool at once. put
// returns the stripe in use to its pool.
func (n *Node) stripeFor(st *erasure.Stripe, pool *sync.Pool, layout raftstore.Layout) (coded *erasure.Stripe, put func()) {
	if !n.smallChunk(len(st.Data()), layout) {
		return st, func() { pool.Put(st) }
	}
	small := n.smallStripes.Get().(*erasure.Stripe)
	small.SetLen(copy(small.Buffer(), st.Data()))
	pool.Put(st)
	return small, func() { n.smallStripes.Put(small) }
}

// smallChunk reports whether a chunk of size bytes is coded with the
// small code: by its size alone, so every writer of the same content codes
// it alike (shards of two codes under one chunk ID would clash), once
// every member applies chunks with a code of their own.
func (n *Node) smallChunk(size int, layout raftstore.Layout) bool {
	return size <= n.cfg.SmallMax && everyMemberApplies(layout, smallChunkCommands)
}

// smallChunkCommands is the command version of chunks with their own code.
const smallChunkCommands = 3

// writeChunk encodes the stripe holding chunk c (c.ID and c.Len set) in
// the cluster's shard format and makes all k+m shards of the stripe's
// code durable, each on its placed node. A node that fails is replaced by
// the next best live one (placement.Fill), so a put succeeds while any
// region is down. It sets c's format, code and the node of each shard,
// and marks c Reused if it was already stored (then nothing is written,
// and the commit checks it is still referenced).
func (n *Node) writeChunk(ctx context.Context, layout raftstore.Layout, st *erasure.Stripe, c *raftstore.Chunk) error {
	if have, err := n.meta.Chunk(c.ID); err == nil && len(have.Shards) == have.K+have.M {
		c.Shards, c.Format, c.K, c.M, c.Reused = have.Shards, have.Format, have.K, have.M, true // content already stored (chunks are content-addressed)
		return nil
	}
	format := shardFormat(layout)
	if err := st.Encode(format); err != nil {
		return err
	}
	c.Format = uint8(format)
	codec := st.Codec()
	c.K, c.M = codec.K(), codec.M()
	policy := placement.Policy{K: codec.K(), M: codec.M()}
	id := c.ID
	candidates := n.liveNodes(layout)
	assign := make([]blob.NodeID, codec.N())
	done := make([]bool, codec.N())
	var lastErr error
	for attempt := 0; attempt < 4; attempt++ {
		if len(candidates) == 0 {
			break
		}
		if err := policy.Fill(placementNodes(candidates), id, assign); err != nil {
			return err
		}
		failed := n.writeShards(ctx, candidates, st, id, assign, done)
		if len(failed) == 0 {
			c.Shards = assign
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for node, err := range failed {
			lastErr = err
			n.log.Warn("shard write failed; placing elsewhere", "chunk", id, "peer", node, "err", err)
			n.gossip.failed(node)
			candidates = slices.DeleteFunc(candidates, func(m raftstore.Member) bool { return m.ID == node })
			for i := range assign {
				if assign[i] == node {
					assign[i], done[i] = "", false
				}
			}
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no live nodes")
	}
	if errors.Is(lastErr, blob.ErrNoSpace) {
		return fmt.Errorf("chunk %s: %w", id, lastErr)
	}
	return fmt.Errorf("%w: chunk %s: could not store all %d shards: %v", blob.ErrUnavailable, id, codec.N(), lastErr)
}

// writeShards writes, in parallel, the shards whose slots are not done,
// marks the ones that succeed, and returns the nodes that failed.
func (n *Node) writeShards(ctx context.Context, candidates []raftstore.Member, st *erasure.Stripe, id blob.ID, assign []blob.NodeID, done []bool) map[blob.NodeID]error {
	var mu sync.Mutex
	failed := map[blob.NodeID]error{}
	var wg sync.WaitGroup
	for i, nodeID := range assign {
		if done[i] {
			continue
		}
		m := candidates[slices.IndexFunc(candidates, func(m raftstore.Member) bool { return m.ID == nodeID })]
		wg.Go(func() {
			h, p := st.Shard(id, i)
			err := n.writeShard(ctx, m, h, p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[nodeID] = err
			} else {
				done[i] = true
			}
		})
	}
	wg.Wait()
	return failed
}

// liveNodes returns the layout's active nodes that gossip reports alive
// and that have not failed a request lately.
func (n *Node) liveNodes(l raftstore.Layout) []raftstore.Member {
	var out []raftstore.Member
	for _, m := range l.Active() {
		if m.ID == n.cfg.ID || n.gossip.state(m.ID) == api.StateAlive {
			out = append(out, m) // NB: the layout's addresses (see member)
		}
	}
	return out
}
