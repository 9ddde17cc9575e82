package node

import (
	"context"
	"fmt"
	"net/http"
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
func (n *Node) Sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	idx, err := viaLeader(ctx, n, http.MethodPost, "/internal/readindex", nil, n.meta.ReadIndex)
	if err != nil {
		return err
	}
	if err := n.meta.WaitApplied(ctx, idx); err != nil {
		return fmt.Errorf("%w: this replica is behind the leader: %v", blob.ErrUnavailable, err)
	}
	return nil
}

// Meta is this node's replica of the cluster metadata, read-only. Reads
// are local: call Sync first where a read must see every committed write.
func (n *Node) Meta() raftstore.Reader { return n.meta }

func (n *Node) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	idx, err := n.meta.ReadIndex(r.Context())
	writeLeaderAnswer(w, idx, err)
}
