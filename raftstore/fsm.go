package raftstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// FSM keys, all under prefixFSM:
//
//	f a          last applied raft index (8 bytes BE)
//	f r          "restore in progress" marker
//	f l          layout (JSON)
//	f b <id>     blob record (JSON, chunk shards omitted)
//	f c <id>     chunk record (JSON); deleted when no blob or object references
//	             it, after which the nodes' scrubbers reclaim its shards
//	f s, f S     segments of long chunk lists and their states (segments.go)
//	f B, f o, f K  buckets, objects and access keys (objects.go)
//	f U, f P       multipart uploads and their parts (multipart.go)
var (
	keyApplied   = []byte{prefixFSM, 'a'}
	keyRestoring = []byte{prefixFSM, 'r'}
	keyLayout    = []byte{prefixFSM, 'l'}
)

func blobKey(id blob.ID) []byte  { return append([]byte{prefixFSM, 'b'}, id[:]...) }
func chunkKey(id blob.ID) []byte { return append([]byte{prefixFSM, 'c'}, id[:]...) }

// fsm applies commands to badger. Each Apply (or ApplyBatch) writes its
// effects and the applied index in one transaction, so replaying an
// already-applied entry after a restart is a no-op. Applies are not synced: a crash may lose the
// last ones, and raft replays them from the (synced) log.
type fsm struct {
	db *badger.DB

	mu      sync.Mutex
	applied uint64        // last raft index applied (commands only)
	changed chan struct{} // closed and replaced when applied grows

	layout layoutCache
}

func newFSM(db *badger.DB) (*fsm, error) {
	f := &fsm{db: db, changed: make(chan struct{})}
	return f, f.loadApplied()
}

// loadApplied reads the applied index from the DB (at open, after a restore).
func (f *fsm) loadApplied() error {
	var idx uint64
	err := view(f.db, func(txn *tx) (err error) {
		idx, err = getUint64(txn, keyApplied)
		return err
	})
	if err == nil {
		f.setApplied(idx)
	}
	return err
}

func (f *fsm) setApplied(idx uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if idx > f.applied {
		f.applied = idx
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

// waitApplied blocks until every command up to idx is applied here.
func (f *fsm) waitApplied(ctx context.Context, idx uint64) error {
	for {
		f.mu.Lock()
		done, changed := f.applied >= idx, f.changed
		f.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// applyResult is what Apply returns through raft's future.
type applyResult struct {
	Blob *Blob
	Err  error
}

func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	var res applyResult
	layoutChanged := false
	markApplied := func(txn *tx) error {
		return txn.Set(keyApplied, binary.BigEndian.AppendUint64(nil, l.Index))
	}
	err := update(f.db, func(txn *tx) (err error) {
		applied, err := getUint64(txn, keyApplied)
		if err != nil {
			return err
		}
		if l.Index <= applied {
			return nil
		}
		res, layoutChanged = applyEntry(txn, l)
		if res.Err != nil {
			return errRejected
		}
		return markApplied(txn)
	})
	if errors.Is(err, badger.ErrTxnTooBig) || errors.Is(res.Err, badger.ErrTxnTooBig) {
		// Too much for one transaction (badger's limit is the same on
		// every replica): rejected like any other command that fails.
		res.Err = fmt.Errorf("%w: command at %d does not fit one metadata transaction", blob.ErrTooLarge, l.Index)
		err = errRejected
	}
	if errors.Is(err, errRejected) {
		// A rejected command changes nothing: its partial writes (say, the
		// references a put took before meeting a reclaimed chunk) are
		// discarded with the transaction; only the index advances.
		err = update(f.db, markApplied)
	}
	f.doneApplying(l.Index, layoutChanged, err)
	return res
}

// doneApplying publishes that entries up to idx are applied, or panics
// if the write that applied them failed (err).
func (f *fsm) doneApplying(idx uint64, layoutChanged bool, err error) {
	if layoutChanged {
		f.layout.invalidate() // NB: committed, and before waiters on the applied index wake
	}
	if err != nil {
		// NB: a failed write leaves the FSM behind the log; panicking lets
		// raft's supervisor restart and replay rather than diverge silently.
		panic(fmt.Sprintf("raftstore: apply %d: %v", idx, err))
	}
	f.setApplied(idx)
}

// applyEntry decodes and applies one command entry in txn. Whatever the
// entry holds, every replica reaches the same verdict: an entry that
// cannot be applied is rejected (res.Err), never a panic (which would
// recur on every replica and every replay).
func applyEntry(txn *tx, l *raft.Log) (res applyResult, layoutChanged bool) {
	defer func() {
		if p := recover(); p != nil {
			res.Err = fmt.Errorf("raftstore: command at %d cannot be applied: %v", l.Index, p)
		}
	}()
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return applyResult{Err: fmt.Errorf("raftstore: undecodable command at %d: %v", l.Index, err)}, false
	}
	return apply(txn, c), c.SetMember != nil || c.RemoveMember != nil
}

// ApplyBatch applies what raft committed together in one badger
// transaction — one commit for the batch instead of one per entry, on
// every replica. If an entry is rejected, or the batch does not fit one
// transaction, the batch is applied entry by entry instead: commands are
// deterministic and each sees the effects of those before it either way,
// so the results are the same.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	if out, ok := f.applyTogether(logs); ok {
		return out
	}
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = f.Apply(l)
	}
	return out
}

// errSeparately abandons a batch transaction for entry-by-entry applies.
var errSeparately = errors.New("apply the batch entry by entry")

func (f *fsm) applyTogether(logs []*raft.Log) ([]any, bool) {
	var out []any
	var last uint64
	layoutChanged := false
	err := update(f.db, func(txn *tx) error {
		out, last, layoutChanged = make([]any, len(logs)), 0, false
		applied, err := getUint64(txn, keyApplied)
		if err != nil {
			return err
		}
		for i, l := range logs {
			if l.Type != raft.LogCommand || l.Index <= applied {
				continue
			}
			res, lc := applyEntry(txn, l)
			if res.Err != nil {
				return errSeparately
			}
			out[i], last, layoutChanged = res, l.Index, layoutChanged || lc
		}
		if last == 0 {
			return nil
		}
		return txn.Set(keyApplied, binary.BigEndian.AppendUint64(nil, last))
	})
	if errors.Is(err, errSeparately) || errors.Is(err, badger.ErrTxnTooBig) {
		return nil, false
	}
	if last != 0 || err != nil {
		f.doneApplying(last, layoutChanged, err)
	}
	return out, true
}

// errRejected aborts the transaction of a command whose result is an error.
var errRejected = errors.New("command rejected")

// apply executes one command. Domain errors (e.g. deleting an unknown blob)
// are returned in the result, not as transaction errors. The switch covers
// every operation of Command (TestApplyCoversEveryCommand).
func apply(txn *tx, c Command) applyResult {
	if c.V > CommandVersion {
		return applyResult{Err: fmt.Errorf("raftstore: command of version %d, this build knows up to %d", c.V, CommandVersion)}
	}
	if n := c.operations(); n != 1 {
		return applyResult{Err: fmt.Errorf("raftstore: a command holds %d operations, want 1", n)}
	}
	switch {
	case c.PutBlob != nil:
		b, err := applyPutBlob(txn, *c.PutBlob)
		return applyResult{Blob: b, Err: err}
	case c.DeleteBlob != nil:
		return applyResult{Err: applyDeleteBlob(txn, *c.DeleteBlob)}
	case c.SetMember != nil:
		return applyResult{Err: applySetMember(txn, *c.SetMember)}
	case c.MoveShards != nil:
		return applyResult{Err: applyMoveShards(txn, *c.MoveShards)}
	case c.RemoveMember != nil:
		return applyResult{Err: applyRemoveMember(txn, *c.RemoveMember)}
	case c.StageChunk != nil:
		return applyResult{Err: applyStageChunk(txn, *c.StageChunk)}
	case c.TouchStaged != nil:
		return applyResult{Err: applyTouchStaged(txn, *c.TouchStaged)}
	case c.DropStaged != nil:
		return applyResult{Err: applyDropStaged(txn, *c.DropStaged)}
	case c.CreateBucket != nil:
		return applyResult{Err: applyCreateBucket(txn, *c.CreateBucket)}
	case c.DeleteBucket != nil:
		return applyResult{Err: applyDeleteBucket(txn, *c.DeleteBucket)}
	case c.PutObject != nil:
		return applyResult{Err: applyPutObject(txn, *c.PutObject)}
	case c.DeleteObject != nil:
		return applyResult{Err: applyDeleteObject(txn, *c.DeleteObject)}
	case c.DeleteObjects != nil:
		return applyResult{Err: applyDeleteObjects(txn, *c.DeleteObjects)}
	case c.PutAccessKey != nil:
		return applyResult{Err: applyPutAccessKey(txn, *c.PutAccessKey)}
	case c.DeleteAccessKey != nil:
		return applyResult{Err: applyDeleteAccessKey(txn, *c.DeleteAccessKey)}
	case c.CreateUpload != nil:
		return applyResult{Err: applyCreateUpload(txn, *c.CreateUpload)}
	case c.PutPart != nil:
		return applyResult{Err: applyPutPart(txn, *c.PutPart)}
	case c.CompleteUpload != nil:
		return applyResult{Err: applyCompleteUpload(txn, *c.CompleteUpload)}
	case c.AbortUpload != nil:
		return applyResult{Err: applyAbortUpload(txn, *c.AbortUpload)}
	case c.ReleaseBlob != nil:
		return applyResult{Err: applyReleaseBlob(txn, *c.ReleaseBlob)}
	case c.PutLink != nil:
		return applyResult{Err: applyPutLink(txn, *c.PutLink)}
	case c.DeleteLink != nil:
		return applyResult{Err: applyDeleteLink(txn, *c.DeleteLink)}
	case c.DropLinks != nil:
		return applyResult{Err: applyDropLinks(txn, *c.DropLinks)}
	case c.StageSegment != nil:
		return applyResult{Err: applyStageSegment(txn, *c.StageSegment)}
	case c.DropSegments != nil:
		return applyResult{Err: applyDropSegments(txn, *c.DropSegments)}
	case c.DropParts != nil:
		return applyResult{Err: applyDropParts(txn, *c.DropParts)}
	case c.ReleaseUpload != nil:
		return applyResult{Err: applyReleaseUpload(txn, *c.ReleaseUpload)}
	}
	return applyResult{Err: errUnknownCommand}
}

// errUnknownCommand is apply's verdict on an operation it has no case for:
// a bug, caught by TestApplyCoversEveryCommand.
var errUnknownCommand = errors.New("raftstore: command with no apply case")

func applyPutBlob(txn *tx, b Blob) (*Blob, error) {
	var existing Blob
	switch err := getJSON(txn, blobKey(b.ID), &existing); {
	case err == nil:
		return &existing, own(txn, existing, b.Owner) // same content: stored once
	case !errors.Is(err, blob.ErrNotFound):
		return nil, err
	}
	if err := addContentRefs(txn, b.Chunks, b.Segments, b.K, b.M); err != nil {
		return nil, err
	}
	if err := own(txn, b, b.Owner); err != nil {
		return nil, err
	}
	rec := b
	rec.Chunks, rec.Owner = withoutShards(b.Chunks), ""
	return &b, setJSON(txn, blobKey(b.ID), rec)
}

func applyDeleteBlob(txn *tx, id blob.ID) error {
	var b Blob
	if err := getJSON(txn, blobKey(id), &b); err != nil {
		return err
	}
	if err := dropContentRefs(txn, b.Chunks, b.Segments); err != nil {
		return err
	}
	if err := deletePrefix(txn, ownerKey(id, "")); err != nil {
		return err
	}
	return txn.Delete(blobKey(id))
}

// addRefs takes one reference on each distinct chunk of cs (a blob or an
// object references a chunk once, however often it repeats). A chunk
// written for this commit gets its record here; a Reused one must still
// exist.
func addRefs(txn *tx, cs []Chunk, k, m int) error {
	seen := map[blob.ID]bool{}
	for _, c := range cs {
		if seen[c.ID] {
			continue
		}
		seen[c.ID] = true
		var cr chunkRecord
		switch err := getJSON(txn, chunkKey(c.ID), &cr); {
		case errors.Is(err, blob.ErrNotFound):
			if c.Reused {
				return fmt.Errorf("chunk %s: %w", c.ID, ErrChunkGone)
			}
			ck, cm := k, m
			if c.K != 0 {
				ck, cm = c.K, c.M
			}
			if ck < 1 || cm < 1 || len(c.Shards) != ck+cm {
				return fmt.Errorf("raftstore: chunk %s has %d shard locations for %d+%d", c.ID, len(c.Shards), ck, cm)
			}
			cr = chunkRecord{Len: c.Len, K: ck, M: cm, Shards: c.Shards, Format: c.Format}
		case err != nil:
			return err
		}
		cr.Refs++
		if err := setJSON(txn, chunkKey(c.ID), cr); err != nil {
			return err
		}
	}
	return nil
}

// dropRefs releases the references addRefs took; a chunk no longer
// referenced is deleted (its shards become orphans the scrubbers reclaim).
func dropRefs(txn *tx, cs []Chunk) error {
	seen := map[blob.ID]bool{}
	for _, c := range cs {
		if seen[c.ID] {
			continue
		}
		seen[c.ID] = true
		var cr chunkRecord
		if err := getJSON(txn, chunkKey(c.ID), &cr); err != nil {
			return err
		}
		if cr.Refs--; cr.Refs > 0 {
			if err := setJSON(txn, chunkKey(c.ID), cr); err != nil {
				return err
			}
			continue
		}
		if err := dropChunk(txn, c.ID); err != nil {
			return err
		}
	}
	return nil
}

// withoutShards is the chunk list as stored in a blob or object record:
// locations live in the chunk records only, so moves touch one row.
func withoutShards(cs []Chunk) []Chunk {
	out := make([]Chunk, len(cs))
	for i, c := range cs {
		out[i] = Chunk{ID: c.ID, Len: c.Len}
	}
	return out
}

func applyStageChunk(txn *tx, sc StagedChunk) error {
	var cr chunkRecord
	switch err := getJSON(txn, chunkKey(sc.ID), &cr); {
	case errors.Is(err, blob.ErrNotFound):
		if len(sc.Shards) != sc.K+sc.M || sc.K <= 0 {
			return fmt.Errorf("raftstore: staged chunk %s has %d shard locations for %d+%d", sc.ID, len(sc.Shards), sc.K, sc.M)
		}
		cr = chunkRecord{Len: sc.Len, K: sc.K, M: sc.M, Shards: sc.Shards, Format: sc.Format}
	case err != nil:
		return err
	}
	if sc.Owner != "" {
		if err := validTenant(sc.Owner); err != nil {
			return err
		}
		if err := txn.Set(knownKey(sc.ID, sc.Owner), nil); err != nil {
			return err
		}
	}
	if cr.Refs > 0 {
		return nil // already part of a blob: nothing to date
	}
	cr.Staged = max(cr.Staged, sc.At.UnixNano())
	return setJSON(txn, chunkKey(sc.ID), cr)
}

func applyTouchStaged(txn *tx, ts TouchStaged) error {
	return unclaimedBefore(txn, ts.IDs, ts.At, func(id blob.ID, cr chunkRecord) error {
		cr.Staged = ts.At.UnixNano()
		return setJSON(txn, chunkKey(id), cr)
	})
}

func applyDropStaged(txn *tx, d DropStaged) error {
	return unclaimedBefore(txn, d.IDs, d.Before, func(id blob.ID, _ chunkRecord) error {
		return dropChunk(txn, id)
	})
}

// dropChunk deletes a chunk's record and the tenants' proofs of holding it.
func dropChunk(txn *tx, id blob.ID) error {
	if err := deletePrefix(txn, knownKey(id, "")); err != nil {
		return err
	}
	return txn.Delete(chunkKey(id))
}

// unclaimedBefore calls fn for each of ids that is a staged chunk no blob
// or object references, last staged before t.
func unclaimedBefore(txn *tx, ids []blob.ID, t time.Time, fn func(blob.ID, chunkRecord) error) error {
	for _, id := range ids {
		var cr chunkRecord
		switch err := getJSON(txn, chunkKey(id), &cr); {
		case errors.Is(err, blob.ErrNotFound):
			continue
		case err != nil:
			return err
		}
		if cr.Refs == 0 && cr.Staged < t.UnixNano() {
			if err := fn(id, cr); err != nil {
				return err
			}
		}
	}
	return nil
}

func applySetMember(txn *tx, m Member) error {
	var l Layout
	if err := getJSON(txn, keyLayout, &l); err != nil && !errors.Is(err, blob.ErrNotFound) {
		return err
	}
	if slices.Contains(l.Removed, m.ID) {
		return fmt.Errorf("node %s was removed from the cluster; start it with a fresh data directory to rejoin", m.ID)
	}
	i := slices.IndexFunc(l.Nodes, func(n Member) bool { return n.ID == m.ID })
	switch {
	case i < 0:
		l.Nodes = append(l.Nodes, m)
		slices.SortFunc(l.Nodes, func(a, b Member) int { return compareStrings(string(a.ID), string(b.ID)) })
	case l.Nodes[i] == m:
		return nil
	default:
		l.Nodes[i] = m
	}
	l.Version++
	return setJSON(txn, keyLayout, l)
}

func applyMoveShards(txn *tx, mv ShardMove) error {
	var cr chunkRecord
	if err := getJSON(txn, chunkKey(mv.Chunk), &cr); err != nil {
		return fmt.Errorf("chunk %s: %w", mv.Chunk, err)
	}
	if !slices.Equal(cr.Shards, mv.From) || len(mv.To) != len(mv.From) {
		return fmt.Errorf("chunk %s: %w", mv.Chunk, ErrStale)
	}
	cr.Shards = mv.To
	return setJSON(txn, chunkKey(mv.Chunk), cr)
}

func applyRemoveMember(txn *tx, id blob.NodeID) error {
	var l Layout
	if err := getJSON(txn, keyLayout, &l); err != nil {
		return err
	}
	i := slices.IndexFunc(l.Nodes, func(n Member) bool { return n.ID == id })
	if i < 0 {
		return fmt.Errorf("node %s: %w", id, blob.ErrNotFound)
	}
	l.Nodes = slices.Delete(l.Nodes, i, i+1)
	l.Removed = append(l.Removed, id)
	l.Version++
	return setJSON(txn, keyLayout, l)
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Snapshot captures a consistent badger read view; Persist streams it.
// It first syncs the FSM: a restart does not load the snapshot but
// replays the log after it (NoSnapshotRestoreOnStart), so what the
// snapshot covers must already be on disk — raft may drop those entries.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.db.Sync(); err != nil {
		return nil, err
	}
	return &fsmSnapshot{txn: f.db.NewTransaction(false)}, nil
}

type fsmSnapshot struct{ txn *badger.Txn }

// Persist writes (len key, key, len value, value)* with uvarint lengths.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeFSM(s.txn, sink, false); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

// writeFSM writes the state machine as txn sees it in the snapshot format.
// A backup (forBackup) carries applied index 0 instead of this cluster's:
// restored into another cluster, whose log has other indexes, it must not
// make that cluster skip its next entries as already applied.
func writeFSM(txn *badger.Txn, out io.Writer, forBackup bool) error {
	w := bufio.NewWriterSize(out, 256<<10)
	var lb [binary.MaxVarintLen64]byte
	put := func(k, v []byte) {
		for _, b := range [][]byte{k, v} {
			w.Write(lb[:binary.PutUvarint(lb[:], uint64(len(b)))])
			w.Write(b)
		}
	}
	p := []byte{prefixFSM}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true})
	defer it.Close()
	for it.Seek(p); it.ValidForPrefix(p); it.Next() {
		item := it.Item()
		k := item.Key()
		if bytes.Equal(k, keyRestoring) || (forBackup && bytes.Equal(k, keyApplied)) {
			continue
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		put(k, v)
	}
	if forBackup {
		put(keyApplied, make([]byte, 8))
	}
	return w.Flush()
}

func (s *fsmSnapshot) Release() { s.txn.Discard() }

// Restore replaces the FSM with a snapshot. A marker key makes a crash
// mid-restore visible at the next open (see Open).
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	defer f.layout.invalidate() // NB: also on failure: the FSM is half dropped
	if err := f.db.Update(func(txn *badger.Txn) error { return txn.Set(keyRestoring, nil) }); err != nil {
		return err
	}
	if err := f.db.Sync(); err != nil { // the marker before the drop
		return err
	}
	if err := dropFSM(f.db); err != nil {
		return err
	}
	r := bufio.NewReaderSize(rc, 256<<10)
	wb := f.db.NewWriteBatch()
	defer wb.Cancel()
	for {
		k, err := readChunk(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		v, err := readChunk(r)
		if err != nil {
			return fmt.Errorf("raftstore: truncated snapshot: %w", err)
		}
		if err := wb.Set(k, v); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	if err := f.db.Sync(); err != nil { // the state before the marker goes
		return err
	}
	if err := f.db.Update(func(txn *badger.Txn) error { return txn.Delete(keyRestoring) }); err != nil {
		return err
	}
	f.layout.invalidate() // before the applied index moves
	return f.loadApplied()
}

// dropFSM deletes every FSM key except the restore marker: a key-only
// scan, so no kind of record can be forgotten.
func dropFSM(db *badger.DB) error {
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	err := db.View(func(txn *badger.Txn) error {
		p := []byte{prefixFSM}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			if k := it.Item().KeyCopy(nil); !bytes.Equal(k, keyRestoring) {
				if err := wb.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return wb.Flush()
}

func readChunk(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > 64<<20 {
		return nil, fmt.Errorf("raftstore: snapshot entry of %d bytes", n)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}

// update runs fn in a read-write transaction, retrying on conflicts.

func getUint64(txn *tx, k []byte) (uint64, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var v uint64
	err = item.Value(func(b []byte) error {
		if len(b) != 8 {
			return errors.New("raftstore: bad applied index")
		}
		v = binary.BigEndian.Uint64(b)
		return nil
	})
	return v, err
}

// getJSON reads k into v; a missing key yields blob.ErrNotFound.
func getJSON(txn *tx, k []byte, v any) error {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return blob.ErrNotFound
	}
	if err != nil {
		return err
	}
	return item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
}

func setJSON(txn *tx, k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set(k, b)
}
