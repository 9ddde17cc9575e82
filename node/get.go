package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/placement"
	"github.com/atollstore/atoll/raftstore"
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
		start int64  // offset of the chunk in the blob
		plain []byte // the chunk's bytes, verified
		err   error
	}
	pending := make(chan chan fetched, getPrefetch)
	go func() {
		defer close(pending)
		send := func(res chan fetched) bool {
			select {
			case pending <- res:
				return true
			case <-ctx.Done():
				return false
			}
		}
		err := n.eachChunk(b, off, func(cStart int64, c raftstore.Chunk) bool {
			if cStart >= off+length {
				return false
			}
			res := make(chan fetched, 1)
			if !send(res) {
				return false
			}
			go func() {
				var plain []byte
				k, m := b.K, b.M
				if c.K != 0 { // its own code (records read back always state it)
					k, m = c.K, c.M
				}
				codec, err := n.codecFor(k, m)
				if err == nil {
					_, plain, err = n.fetchChunk(ctx, codec, c, n.chunkBuf())
				}
				res <- fetched{start: cStart, plain: plain, err: err}
			}()
			return true
		})
		if err != nil { // a segment unreadable: the range ends in an error
			res := make(chan fetched, 1)
			res <- fetched{err: err}
			send(res)
		}
	}()
	out := &window{w: w, skip: off, left: length}
	for res := range pending {
		f := <-res
		if f.err != nil {
			return f.err
		}
		out.skip = max(0, off-f.start)
		_, err := out.Write(f.plain)
		n.chunkBufs.Put(f.plain[:0])
		if err != nil {
			return err
		}
	}
	if out.left != 0 {
		return ctx.Err()
	}
	return nil
}

// fetchChunk gathers k verified shards of chunk c, decodes them and
// checks the chunk's hash. It returns the shards (missing data shards
// rebuilt) and the chunk's bytes appended to dst. Shards are tried in
// placement.RankReads' order of preference, k at a time; each failure
// starts the next candidate.
func (n *Node) fetchChunk(ctx context.Context, codec *erasure.Codec, c raftstore.Chunk, dst []byte) ([][]byte, []byte, error) {
	k, total := codec.K(), codec.N()
	if len(c.Shards) != total {
		return nil, dst, fmt.Errorf("%w: chunk %s lists %d shard locations, want %d", blob.ErrCorrupt, c.ID, len(c.Shards), total)
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
			p, err := n.readShard(ctx, cd.m, c, cd.index)
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
			return nil, dst, ctx.Err()
		}
		return nil, dst, fmt.Errorf("%w: chunk %s: %d of %d needed shards readable: %w", blob.ErrUnavailable, c.ID, have, k, errors.Join(errs...))
	}
	// NB: a clone: decoding fills in missing data shards, which must not
	// pass for fetched ones if a forgery is hunted below.
	if plain, ok, err := decodesTo(codec, slices.Clone(shards), c, dst); err != nil || ok {
		return shards, plain, err
	}
	// A shard passed its own checks (header, CRC) yet is wrong: forged by a
	// lying node, or rotted along with its checksum. The chunk's ID, which
	// the metadata holds and no storage node can change, decides: fetch
	// every other shard and look for k that decode to it.
	var wg sync.WaitGroup
	for _, cd := range cands[next:] {
		wg.Go(func() {
			if p, err := n.readShard(ctx, cd.m, c, cd.index); err == nil {
				shards[cd.index] = p // NB: distinct indices
			}
		})
	}
	wg.Wait()
	good, plain, bad := findGoodShards(codec, shards, c, dst)
	if good == nil {
		return nil, dst, fmt.Errorf("%w: chunk %s: no %d of its shards decode to it (%d tried)", blob.ErrCorrupt, c.ID, k, maxShardCombos)
	}
	for _, i := range bad {
		from := members[c.Shards[i]]
		n.log.Warn("shard passes its checks but is wrong (forged or rotted); rewriting it", "chunk", c.ID, "index", i, "node", from.ID)
		h := shardHeader(codec, c, i, good[i])
		n.wg.Go(func() { n.writeShard(n.ctx, from, h, good[i]) }) // read repair, best effort
	}
	return good, plain, nil
}

// shardHeader is the header of shard i of chunk c with payload p.
func shardHeader(codec *erasure.Codec, c raftstore.Chunk, i int, p []byte) erasure.Header {
	return erasure.Header{Format: chunkFormat(c), K: codec.K(), M: codec.M(), Index: i, ChunkLen: c.Len, ShardLen: len(p), Chunk: c.ID, Checksum: erasure.Checksum(p)}
}

// codecFor returns a codec for k+m: the node's main or small one, or a
// new one for chunks written under another configuration.
func (n *Node) codecFor(k, m int) (*erasure.Codec, error) {
	for _, c := range []*erasure.Codec{n.codec, n.small} {
		if k == c.K() && m == c.M() {
			return c, nil
		}
	}
	return erasure.New(k, m)
}

// chunkBuf returns an empty buffer for a chunk's bytes (pooled: a get
// holds getPrefetch+1 at once).
func (n *Node) chunkBuf() []byte { return n.chunkBufs.Get().([]byte) }

// maxShardCombos bounds the k-subsets findGoodShards decodes: every one
// for 6+3 (84), the first 256 for wider codes.
const maxShardCombos = 256

// decodesTo decodes shards (at least k; missing data shards are filled
// in), appending the chunk to dst, and reports whether it is the chunk c's
// ID names.
func decodesTo(codec *erasure.Codec, shards [][]byte, c raftstore.Chunk, dst []byte) ([]byte, bool, error) {
	plain, err := codec.Decode(shards, c.Len, chunkFormat(c), dst)
	if err != nil {
		return dst, false, err
	}
	return plain, blob.Sum(plain[len(dst):]) == c.ID, nil
}

// findGoodShards looks for k of the fetched shards that decode to chunk
// c, rebuilds every shard from them, and returns all n, the chunk
// appended to dst, and the indices of fetched shards that differ from what
// they should be. nil if no subset decodes.
func findGoodShards(codec *erasure.Codec, shards [][]byte, c raftstore.Chunk, dst []byte) (good [][]byte, plain []byte, bad []int) {
	var have []int
	for i, p := range shards {
		if p != nil {
			have = append(have, i)
		}
	}
	tried := 0
	for combo := range combinations(len(have), codec.K()) {
		if tried++; tried > maxShardCombos {
			return nil, dst, nil
		}
		sub := make([][]byte, len(shards))
		for _, j := range combo {
			sub[have[j]] = shards[have[j]]
		}
		plain, ok, err := decodesTo(codec, slices.Clone(sub), c, dst)
		if err != nil || !ok {
			continue
		}
		if err := codec.Reconstruct(sub); err != nil {
			return nil, dst, nil
		}
		for _, i := range have {
			if !bytes.Equal(shards[i], sub[i]) {
				bad = append(bad, i)
			}
		}
		return sub, plain, bad
	}
	return nil, dst, nil
}

// combinations yields the k-subsets of [0, n) in lexicographic order.
func combinations(n, k int) iter.Seq[[]int] {
	return func(yield func([]int) bool) {
		if k > n {
			return
		}
		idx := make([]int, k)
		for i := range idx {
			idx[i] = i
		}
		for {
			if !yield(idx) {
				return
			}
			i := k - 1
			for i >= 0 && idx[i] == n-k+i {
				i--
			}
			if i < 0 {
				return
			}
			idx[i]++
			for j := i + 1; j < k; j++ {
				idx[j] = idx[j-1] + 1
			}
		}
	}
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
