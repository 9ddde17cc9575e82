package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/raftstore"
	"github.com/atollstore/atoll/storage"
	"github.com/atollstore/atoll/storage/remote"
)

// Node-to-node calls. Shard traffic goes to /internal/shards/{chunk}/{index}
// as the raw shard file (header + payload); metadata writes are forwarded to
// the leader at /internal/apply.

// store returns m's shard store: this node's own, or m's over HTTP.
func (n *Node) store(m raftstore.Member) storage.Shards {
	if m.ID == n.cfg.ID {
		return n.shards
	}
	return &remote.Client{Node: m.ID, URL: m.API, HTTP: n.peers}
}

// answered notes that node id answered a request (whatever it said), so it
// is no longer suspect.
func (n *Node) answered(id blob.NodeID, err error) {
	if id != n.cfg.ID && !errors.Is(err, blob.ErrUnavailable) {
		n.gossip.succeeded(id)
	}
}

// writeShard stores a shard on node m (locally if m is this node).
func (n *Node) writeShard(ctx context.Context, m raftstore.Member, h erasure.Header, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timings.ShardTimeout)
	defer cancel()
	start := time.Now()
	err := storage.Write(ctx, n.store(m), h, payload)
	n.answered(m.ID, err)
	if m.ID != n.cfg.ID {
		n.metrics.shardDone("write", m.ID, start, err)
	}
	return err
}

// readShard fetches and verifies shard index of chunk c from node m. A
// shard whose header disagrees with the chunk's record (its format or
// length) is corrupt: decoding it would yield garbage.
func (n *Node) readShard(ctx context.Context, m raftstore.Member, c raftstore.Chunk, index int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timings.ShardTimeout)
	defer cancel()
	start := time.Now()
	h, p, err := storage.Read(ctx, n.store(m), storage.Ref{Chunk: c.ID, Index: index})
	if err == nil && (h.Format != chunkFormat(c) || h.ChunkLen != c.Len) {
		p, err = nil, fmt.Errorf("%w: shard %s/%d is %s of %d bytes, the record says %s of %d", blob.ErrCorrupt, c.ID, index, h.Format, h.ChunkLen, chunkFormat(c), c.Len)
	}
	n.answered(m.ID, err)
	if m.ID != n.cfg.ID {
		n.metrics.shardDone("read", m.ID, start, err)
	}
	return p, err
}

// checkShard has node m verify a shard where it lies (only the verdict
// crosses the network).
func (n *Node) checkShard(ctx context.Context, m raftstore.Member, chunk blob.ID, index int) error {
	return storage.Check(ctx, n.store(m), storage.Ref{Chunk: chunk, Index: index})
}

// apply commits a metadata command through the leader, retrying across
// elections until ctx ends (30 s if it has no deadline).
func (n *Node) apply(ctx context.Context, cmd raftstore.Command) (raftstore.Result, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return raftstore.Result{}, err
	}
	start := time.Now()
	res, err := viaLeader(ctx, n, http.MethodPost, "/internal/apply", body,
		func(ctx context.Context) (raftstore.Result, error) { return n.meta.Apply(ctx, cmd) })
	if err == nil {
		n.metrics.applyLatency.Observe(time.Since(start).Seconds())
	}
	return res, err
}

// viaLeader runs local if this node leads, or else sends the request to
// the leader and decodes its answer; it retries while there is no leader
// or the leader is unreachable, until ctx ends.
func viaLeader[T any](ctx context.Context, n *Node, method, path string, body []byte, local func(context.Context) (T, error)) (T, error) {
	for {
		var v T
		var err error
		if n.meta.IsLeader() {
			v, err = local(ctx)
		} else {
			v, err = askLeader[T](ctx, n, method, path, bytes.NewReader(body))
		}
		if !errors.Is(err, raftstore.ErrNotLeader) && !errors.Is(err, blob.ErrUnavailable) {
			return v, err
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("%w: no raft leader reachable: %v", blob.ErrUnavailable, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// askLeader sends one request to the leader; 421 means it no longer leads.
func askLeader[T any](ctx context.Context, n *Node, method, path string, body io.Reader) (T, error) {
	var v T
	leader, err := n.leader()
	if err != nil {
		return v, err
	}
	req, err := http.NewRequestWithContext(ctx, method, leader.API+path, body)
	if err != nil {
		return v, err
	}
	resp, err := n.peers.Do(req)
	if err != nil {
		return v, fmt.Errorf("%w: leader %s: %v", blob.ErrUnavailable, leader.ID, err)
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusOK:
		return v, decodeAnswer(resp, &v)
	case http.StatusNoContent:
		return v, nil
	}
	return v, blob.ReadError(resp) // 421: raftstore.ErrNotLeader
}

// leader returns the current leader's addresses.
func (n *Node) leader() (raftstore.Member, error) {
	id := n.meta.Leader()
	if id == "" {
		return raftstore.Member{}, fmt.Errorf("%w: no raft leader", raftstore.ErrNotLeader)
	}
	l, _ := n.meta.Layout()
	if m, ok := n.member(id, l); ok {
		return m, nil
	}
	return raftstore.Member{}, fmt.Errorf("%w: leader %s has no known address", raftstore.ErrNotLeader, id)
}

// lookup returns blob id's record as of now: the replica first catches up
// with the leader's read index (Sync). Neither a local miss nor a local
// hit is trusted — this replica may lag a put acknowledged elsewhere a
// moment ago, or a delete. While no leader can be reached the answer is
// ErrUnavailable, never a stale record or ErrNotFound.
func (n *Node) lookup(ctx context.Context, id blob.ID) (*raftstore.Blob, error) {
	if err := n.Sync(ctx); err != nil {
		return nil, err
	}
	return n.meta.Blob(id)
}

// member resolves a node ID to its addresses: the layout's, which the
// leader verified against the node's certificate (verifyMember), and
// gossip's only for a node not in the layout yet — with credentials never,
// since anyone holding the gossip key may gossip any claim.
func (n *Node) member(id blob.NodeID, l raftstore.Layout) (raftstore.Member, bool) {
	if m, ok := l.Member(id); ok || n.cfg.Creds != nil {
		return m, ok
	}
	return n.gossip.member(id)
}

// maxAnswer bounds a peer's JSON answer: the largest, a commit's Result,
// holds one blob's chunk list.
const maxAnswer = 16 << 20

// decodeAnswer decodes a peer's JSON answer, reading at most maxAnswer.
func decodeAnswer(resp *http.Response, v any) error {
	return json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(v)
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
