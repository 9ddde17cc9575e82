package node

import (
	"context"
	"fmt"
	"net/http"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/raftstore"
)

// Operator actions on nodes. Both run on the leader (other nodes forward):
//
//	POST   /v1/nodes/{id}/drain  mark the node draining: it takes no new
//	                             shards, and the reconciler moves its shards
//	                             away while it keeps serving them
//	DELETE /v1/nodes/{id}        remove the node from the layout and raft;
//	                             refused (409) while any chunk still has a
//	                             shard there
//	POST /v1/nodes/{id}/revoke   remove a seized or compromised node now,
//	                             shards and all: the reconciler rebuilds
//	                             them from the other regions' shards
//
// A removed node's identity stays on the deny list (Layout.Removed): every
// node refuses its certificate from then on (auth.go).

func (n *Node) handleDrain(w http.ResponseWriter, r *http.Request) {
	id := blob.NodeID(r.PathValue("id"))
	_, err := viaLeader(r.Context(), n, http.MethodPost, r.URL.Path, nil, func(ctx context.Context) (raftstore.Result, error) {
		l, err := n.meta.Layout()
		if err != nil {
			return raftstore.Result{}, err
		}
		m, ok := l.Member(id)
		if !ok {
			return raftstore.Result{}, fmt.Errorf("node %s: %w", id, blob.ErrNotFound)
		}
		if m.State == raftstore.StateDraining {
			return raftstore.Result{}, nil
		}
		m.State = raftstore.StateDraining
		cmd := raftstore.SetMemberCommand(m)
		n.log.Info("node draining", "member", id)
		return n.meta.Apply(ctx, cmd)
	})
	n.writeAdminResult(w, err)
}

func (n *Node) handleRemove(w http.ResponseWriter, r *http.Request) { n.remove(w, r, false) }

func (n *Node) handleRevoke(w http.ResponseWriter, r *http.Request) { n.remove(w, r, true) }

func (n *Node) remove(w http.ResponseWriter, r *http.Request, revoke bool) {
	id := blob.NodeID(r.PathValue("id"))
	_, err := viaLeader(r.Context(), n, r.Method, r.URL.Path, nil, func(ctx context.Context) (raftstore.Result, error) {
		if err := n.meta.Barrier(ctx); err != nil {
			return raftstore.Result{}, err
		}
		l, err := n.meta.Layout()
		if err != nil {
			return raftstore.Result{}, err
		}
		if id == n.cfg.ID {
			return raftstore.Result{}, &blob.Error{Code: "conflict", Status: http.StatusConflict, Message: "the raft leader cannot remove itself; remove it from another node after leadership moves"}
		}
		if _, ok := l.Member(id); !ok && !revoke {
			return raftstore.Result{}, fmt.Errorf("node %s: %w", id, blob.ErrNotFound)
		}
		held := 0
		n.meta.Chunks(func(c raftstore.Chunk, _, _ int) bool {
			for _, s := range c.Shards {
				if s == id {
					held++
				}
			}
			return true
		})
		if held > 0 && !revoke {
			return raftstore.Result{}, &blob.Error{Code: "conflict", Status: http.StatusConflict,
				Message: fmt.Sprintf("node %s still holds %d shards, some the only copy of their shard: drain it first (atoll node drain %s)", id, held, id)}
		}
		cmd := raftstore.RemoveMemberCommand(id)
		n.log.Info("node removed", "member", id, "revoked", revoke, "shards_lost", held)
		return n.meta.Apply(ctx, cmd)
	})
	n.writeAdminResult(w, err)
}

func (n *Node) writeAdminResult(w http.ResponseWriter, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
