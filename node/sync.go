package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/raftstore"
)

// Apply commits a raftstore command through the leader. It does not wait
// for this node's replica to apply it: every read that must see it calls
// Sync first, which waits then (a write's latency does not include the
// time this replica takes to hear of the commit).
func (n *Node) Apply(ctx context.Context, cmd raftstore.Command) error {
	_, err := n.apply(ctx, cmd)
	return err
}

// Sync makes this node's replica reflect every write committed before the
// call (a raft read index obtained from the leader), so reads of Meta()
// that follow are linearizable. It costs the leader a heartbeat round to a
// quorum (raftstore.ReadIndex), and this replica the wait until it hears
// of the commits up to that index (within raft's CommitTimeout).
// Concurrent calls share one request to the leader (readIndexRounds).
func (n *Node) Sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	idx, err := n.readIndex.wait(ctx, n.fetchReadIndex)
	if err != nil {
		return err
	}
	if err := n.meta.WaitApplied(ctx, idx); err != nil {
		return fmt.Errorf("%w: this replica is behind the leader: %v", blob.ErrUnavailable, err)
	}
	return nil
}

const syncTimeout = 15 * time.Second

// readRoundTimeout bounds one shared request for a read index, so that a
// request stuck on a leader that went away does not hold up the callers
// queued behind it; they retry with a fresh one.
const readRoundTimeout = 2 * time.Second

// fetchReadIndex asks the leader for a read index (or, on the leader,
// takes one).
func (n *Node) fetchReadIndex() (uint64, error) {
	ctx, cancel := context.WithTimeout(n.ctx, readRoundTimeout)
	defer cancel()
	return viaLeader(ctx, n, http.MethodPost, "/internal/readindex", nil, n.meta.ReadIndex)
}

// readIndexRounds lets concurrent Syncs share read indexes, as etcd's
// linearizable read loop does: one request to the leader at a time, and
// every caller that arrives while it is out waits for the next one. A
// round's index is good for exactly the callers that arrived before it
// was asked for, since it covers every write acknowledged before then;
// joining a round already out would miss the writes acknowledged between
// its asking and the caller's arrival.
type readIndexRounds struct {
	mu   sync.Mutex
	out  bool       // a round is out
	next *readRound // the round callers arriving now will share; nil if none waits
}

type readRound struct {
	done chan struct{}
	idx  uint64
	err  error
}

// wait returns the index of a round asked for (by fetch) after the call.
// A round that finds no leader is retried with the next one until ctx
// ends; a caller that gives up leaves its round to the others.
func (b *readIndexRounds) wait(ctx context.Context, fetch func() (uint64, error)) (uint64, error) {
	for {
		r := b.join(fetch)
		select {
		case <-r.done:
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: no read index from the leader: %v", blob.ErrUnavailable, ctx.Err())
		}
		if r.err == nil || !errors.Is(r.err, raftstore.ErrNotLeader) && !errors.Is(r.err, blob.ErrUnavailable) {
			return r.idx, r.err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: no read index from the leader: %v", blob.ErrUnavailable, r.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (b *readIndexRounds) join(fetch func() (uint64, error)) *readRound {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next == nil {
		b.next = &readRound{done: make(chan struct{})}
	}
	if !b.out {
		b.out = true
		go b.run(fetch)
	}
	return b.next
}

// run asks for rounds while callers wait for one.
func (b *readIndexRounds) run(fetch func() (uint64, error)) {
	for {
		b.mu.Lock()
		r := b.next
		b.next = nil
		if r == nil {
			b.out = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		r.idx, r.err = fetch()
		close(r.done)
	}
}

// Meta is this node's replica of the cluster metadata, read-only. Reads
// are local: call Sync first where a read must see every committed write.
func (n *Node) Meta() raftstore.Reader { return n.meta }

func (n *Node) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	idx, err := n.meta.ReadIndex(r.Context())
	writeLeaderAnswer(w, idx, err)
}
