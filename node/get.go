package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/placement"
	"github.com/atollstore/atoll/raftstore"
	"github.com/zeebo/blake3"
)

// getPrefetch is how many chunks a get fetches ahead of the one it is
// writing: it hides fetch latency; each costs about a chunk and a half of
// memory.
const getPrefetch = 3

// WriteRange writes bytes [off, off+length) of blob b to w, fetching only
// the chunks that range covers. Every shard is verified before decoding
// and every chunk's hash after, so w never receives wrong bytes: on a
// failure WriteRange returns an error, having written a correct prefix.
func (n *Node) WriteRange(ctx context.Context, b *raftstore.Blob, off, length int64, w io.Writer) error {
	if off < 0 || length < 0 || off+length > b.Size {
		return fmt.Errorf("range %d+%d outside blob of %d bytes", off, length, b.Size)
	}
	if length == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type fetched struct {
		chunk  raftstore.Chunk
		start  int64 // offset of the chunk in the blob
		shards [][]byte
		err    error
	}
	pending := make(chan chan fetched, getPrefetch)
	go func() {
		defer close(pending)
		var start int64
		for _, c := range b.Chunks {
			cStart := start
			start += c.Len
			if cStart+c.Len <= off || cStart >= off+length {
				continue
			}
			res := make(chan fetched, 1)
			select {
			case pending <- res:
			case <-ctx.Done():
				return
			}
			go func() {
				shards, err := n.fetchChunk(ctx, b.K, b.M, c)
				res <- fetched{chunk: c, start: cStart, shards: shards, err: err}
			}()
		}
	}()
	out := &window{w: w, skip: off, left: length}
	for res := range pending {
		f := <-res
		if f.err != nil {
			return f.err
		}
		out.skip = max(0, off-f.start)
		if err := n.codec.Decode(f.shards, f.chunk.Len, out); err != nil {
			return err
		}
	}
	if out.left != 0 {
		return ctx.Err()
	}
	return nil
}

// fetchChunk gathers k verified shards of chunk c, reconstructing missing
// data shards, and checks the chunk's hash. Shards are tried in
// placement.RankReads' order of preference, k at a time; each failure
// starts the next candidate.
func (n *Node) fetchChunk(ctx context.Context, k, m int, c raftstore.Chunk) ([][]byte, error) {
	total := k + m
	if len(c.Shards) != total {
		return nil, fmt.Errorf("%w: chunk %s lists %d shard locations, want %d", blob.ErrCorrupt, c.ID, len(c.Shards), total)
	}
	layout, _ := n.meta.Layout()
	type candidate struct {
		index int
		m     raftstore.Member
	}
	var cands []candidate
	members := map[blob.NodeID]raftstore.Member{}
	order := placement.RankReads(c.Shards, k, n.cfg.Region, func(id blob.NodeID) (placement.Holder, bool) {
		m, ok := n.member(id, layout)
		members[id] = m
		return placement.Holder{Region: m.Region, Health: n.health(id), Local: id == n.cfg.ID}, ok
	})
	for _, i := range order {
		cands = append(cands, candidate{i, members[c.Shards[i]]})
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		c       candidate
		payload []byte
		err     error
	}
	results := make(chan result, len(cands)) // buffered: stragglers never block
	shards := make([][]byte, total)
	next, running, have := 0, 0, 0
	launch := func() bool {
		if next == len(cands) {
			return false
		}
		cd := cands[next]
		go func() {
			p, err := n.readShard(ctx, cd.m, c.ID, cd.index)
			results <- result{cd, p, err}
		}()
		next++
		running++
		return true
	}
	for next < k && launch() {
	}
	// Hedge: a shard that has not arrived after HedgeAfter may be behind a
	// link that drops packets; rather than wait for its timeout, ask the
	// next candidate too. The first k good answers win.
	hedge := time.NewTicker(n.cfg.Timings.HedgeAfter)
	defer hedge.Stop()
	var errs []error
	for have < k && running > 0 {
		var r result
		select {
		case r = <-results:
		case <-hedge.C:
			launch()
			continue
		}
		running--
		if r.err != nil {
			errs = append(errs, r.err)
			if errors.Is(r.err, blob.ErrUnavailable) {
				n.gossip.failed(r.c.m.ID)
			}
			if errors.Is(r.err, blob.ErrCorrupt) {
				n.log.Warn("corrupt shard; reading another", "chunk", c.ID, "index", r.c.index, "peer", r.c.m.ID, "err", r.err)
			}
			launch()
			continue
		}
		shards[r.c.index] = r.payload
		have++
	}
	if have < k {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: chunk %s: %d of %d needed shards readable: %w", blob.ErrUnavailable, c.ID, have, k, errors.Join(errs...))
	}
	h := blake3.New()
	if err := n.codec.Decode(shards, c.Len, h); err != nil {
		return nil, err
	}
	if blob.ID(h.Sum(nil)) != c.ID {
		return nil, fmt.Errorf("%w: chunk %s decoded to different bytes", blob.ErrCorrupt, c.ID)
	}
	return shards, nil
}

// window passes on bytes [skip, skip+left) of what is written to it.
type window struct {
	w          io.Writer
	skip, left int64
}

func (w *window) Write(p []byte) (int, error) {
	n := len(p)
	if w.skip >= int64(len(p)) {
		w.skip -= int64(len(p))
		return n, nil
	}
	p = p[w.skip:]
	w.skip = 0
	if int64(len(p)) > w.left {
		p = p[:w.left]
	}
	if len(p) > 0 {
		if _, err := w.w.Write(p); err != nil {
			return 0, err
		}
		w.left -= int64(len(p))
	}
	return n, nil
}

// health is how gossip and recent requests see node id.
func (n *Node) health(id blob.NodeID) placement.Health {
	switch n.gossip.state(id) {
	case api.StateDead:
		return placement.Dead
	case api.StateSuspect:
		return placement.Suspect
	}
	return placement.Alive
}
