package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/atollstore/atoll/blob"
)

// Metadata backup and disaster recovery (operator certificates only):
//
//	GET  /v1/snapshot  a consistent copy of all metadata, as of now
//	POST /v1/snapshot  replace all metadata with such a copy (the leader
//	                   restores it on every replica; others forward)
//
// The bytes of blobs stay in the shard files; the snapshot says where
// they are. Recovery when every region's metadata is lost but shard disks
// are kept: start the nodes with their old IDs, certificates and shard
// directories but empty raft directories, let them form a cluster, and
// restore the last snapshot (ARCHITECTURE.md, Metadata and Raft).

// maxSnapshot bounds a restore upload (it is spooled to disk first: raft
// needs its size).
const maxSnapshot = 64 << 30

func (n *Node) handleSnapshotSave(w http.ResponseWriter, r *http.Request) {
	if err := n.Sync(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := n.meta.WriteSnapshot(w); err != nil {
		n.log.Warn("snapshot save failed", "err", err)
		panic(http.ErrAbortHandler) // NB: mid-stream: cut the connection, never a short snapshot
	}
}

func (n *Node) handleSnapshotRestore(w http.ResponseWriter, r *http.Request) {
	if !n.meta.IsLeader() { // forwarded once: the body streams, it cannot be sent again
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
		defer cancel()
		if _, err := askLeader[struct{}](ctx, n, r.Method, r.URL.Path, r.Body); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	f, err := os.CreateTemp(n.cfg.Dir, "restore-*.snap")
	if err != nil {
		writeError(w, err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	size, err := io.Copy(f, io.LimitReader(r.Body, maxSnapshot+1))
	switch {
	case err != nil:
		writeError(w, fmt.Errorf("%w: reading the snapshot: %v", blob.ErrUnavailable, err))
		return
	case size > maxSnapshot:
		writeError(w, fmt.Errorf("%w: a snapshot over %d bytes", blob.ErrTooLarge, int64(maxSnapshot)))
		return
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		writeError(w, err)
		return
	}
	if err := n.meta.RestoreSnapshot(f, size, 5*time.Minute); err != nil {
		writeError(w, err)
		return
	}
	n.log.Warn("metadata restored from a snapshot", "bytes", size)
	w.WriteHeader(http.StatusNoContent)
}
