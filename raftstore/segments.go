package raftstore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/atollstore/atoll/blob"
)

// Segments. A command must apply in one metadata transaction, so a blob,
// object or part of more than MaxChunksPerCommand chunks cannot carry its
// chunk list in the command that commits it. Its writer commits the list
// in segments of at most SegmentChunks chunks first (StageSegment: the
// segment takes its chunks' references, staged with the grace staged
// chunks have), then the content's record lists its segments in order
// instead of its chunks, and takes one reference on each.
//
// Segments are content-addressed (SegmentID) and immutable, so one
// segment serves every content that has the same run of chunks, and a
// reference to one is as cheap as a chunk's. A segment whose last
// reference goes is not taken apart in the same command (a huge delete
// would not fit one transaction): it is left unreferenced and the leader's
// sweep drops it, a segment a command (DropSegments), as it drops
// abandoned staged chunks.
//
// FSM keys (under prefixFSM):
//
//	f s <id>   segment: its chunk list (JSON, without locations)
//	f S <id>   its state: references, when staged, size
const (
	// SegmentChunks bounds a segment: its command fits MaxCommandSize and
	// its chunks' records and its own fit one transaction (about 1.2 MB of
	// writes) even with nine locations of the longest node IDs (63
	// bytes): about 650 bytes a chunk (TestSegmentedBlobs).
	SegmentChunks = 1024
	// MaxSegments bounds a content's segments: 4,096 segments of 1,024 4 MiB
	// chunks is 16 TiB.
	MaxSegments = 4096
	// MaxRenew bounds the segments one StageSegment renews.
	MaxRenew = 512
)

// Segment is a content record's reference to one of its segments.
type Segment struct {
	ID     blob.ID `json:"id"`
	Chunks int     `json:"chunks"` // how many chunks it lists
	Len    int64   `json:"len"`    // their bytes
}

// StagedSegment commits a run of a content's chunk list ahead of the
// content. Its chunks are as in PutBlob (locations of those written for
// it; Reused ones must still be held).
type StagedSegment struct {
	ID     blob.ID `json:"id"` // SegmentID(Chunks)
	K      int     `json:"k"`  // the content's code
	M      int     `json:"m"`
	Chunks []Chunk `json:"chunks"`
	// At dates it (set by the proposer); Renew names earlier segments of
	// the content (at most MaxRenew), whose grace restarts at At while
	// they are unreferenced, so a long upload keeps all it has staged.
	At    time.Time `json:"at"`
	Renew []blob.ID `json:"renew,omitempty"`
	// Owner is the tenant that sent the chunks' bytes (tenants.go).
	Owner string `json:"owner,omitempty"`
}

// StageSegmentCommand is the command that commits segment s.
func StageSegmentCommand(s StagedSegment) Command { return Command{StageSegment: &s} }

// DropSegmentsCommand drops the segments among d.IDs that are still
// unreferenced and were staged (or released) before d.Before.
func DropSegmentsCommand(d DropStaged) Command { return Command{DropSegments: &d} }

// SegmentID is the address of the chunk list cs: a hash of its chunks' IDs
// and lengths.
func SegmentID(cs []Chunk) blob.ID {
	b := make([]byte, 0, 16+len(cs)*40)
	b = append(b, "atoll segment 1\n"...)
	for _, c := range cs {
		b = append(b, c.ID[:]...)
		b = binary.BigEndian.AppendUint64(b, uint64(c.Len))
	}
	return blob.Sum(b)
}

// segmentState is the FSM's mutable row of a segment (the list itself is
// never rewritten).
type segmentState struct {
	Chunks int   `json:"chunks"`
	Len    int64 `json:"len"`
	Refs   int   `json:"refs"`
	Staged int64 `json:"staged,omitempty"` // unix ns; 0 once released by its last holder
}

func segmentKey(id blob.ID) []byte      { return append([]byte{prefixFSM, 's'}, id[:]...) }
func segmentStateKey(id blob.ID) []byte { return append([]byte{prefixFSM, 'S'}, id[:]...) }

func applyStageSegment(txn *tx, s StagedSegment) error {
	if len(s.Chunks) == 0 || len(s.Chunks) > SegmentChunks || len(s.Renew) > MaxRenew {
		return fmt.Errorf("%w: a segment of %d chunks (1 to %d) renewing %d (at most %d)", blob.ErrBadRequest, len(s.Chunks), SegmentChunks, len(s.Renew), MaxRenew)
	}
	if SegmentID(s.Chunks) != s.ID {
		return fmt.Errorf("%w: segment %s is not the address of its chunks", blob.ErrBadRequest, s.ID)
	}
	var st segmentState
	switch err := getJSON(txn, segmentStateKey(s.ID), &st); {
	case errors.Is(err, blob.ErrNotFound):
		if err := addRefs(txn, s.Chunks, s.K, s.M); err != nil {
			return err
		}
		if err := setJSON(txn, segmentKey(s.ID), withoutShards(s.Chunks)); err != nil {
			return err
		}
		st.Chunks = len(s.Chunks)
		for _, c := range s.Chunks {
			st.Len += c.Len
		}
	case err != nil:
		return err
	}
	if s.Owner != "" {
		if err := validTenant(s.Owner); err != nil {
			return err
		}
		for _, c := range s.Chunks {
			if err := txn.Set(knownKey(c.ID, s.Owner), nil); err != nil {
				return err
			}
		}
	}
	at := s.At.UnixNano()
	if st.Refs == 0 {
		st.Staged = max(st.Staged, at)
	}
	if err := setJSON(txn, segmentStateKey(s.ID), st); err != nil {
		return err
	}
	for _, id := range s.Renew {
		err := updateSegment(txn, id, func(st *segmentState) bool {
			if st.Refs > 0 || st.Staged >= at {
				return false
			}
			st.Staged = at
			return true
		})
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			return err
		}
	}
	return nil
}

// updateSegment reads segment id's state, lets fn change it, and writes
// it back if fn says so.
func updateSegment(txn *tx, id blob.ID, fn func(*segmentState) bool) error {
	var st segmentState
	if err := getJSON(txn, segmentStateKey(id), &st); err != nil {
		return err
	}
	if !fn(&st) {
		return nil
	}
	return setJSON(txn, segmentStateKey(id), st)
}

// addSegmentRefs takes one reference on each distinct segment of segs,
// which must exist, each reference stating its segment's size.
func addSegmentRefs(txn *tx, segs []Segment) error {
	if len(segs) > MaxSegments {
		return fmt.Errorf("%w: %d segments; the limit is %d", blob.ErrTooLarge, len(segs), MaxSegments)
	}
	seen := map[blob.ID]bool{}
	for _, s := range segs {
		var st segmentState
		switch err := getJSON(txn, segmentStateKey(s.ID), &st); {
		case errors.Is(err, blob.ErrNotFound):
			return fmt.Errorf("segment %s: %w", s.ID, ErrChunkGone)
		case err != nil:
			return err
		}
		if st.Chunks != s.Chunks || st.Len != s.Len {
			return fmt.Errorf("%w: segment %s has %d chunks of %d bytes, not %d of %d", blob.ErrBadRequest, s.ID, st.Chunks, st.Len, s.Chunks, s.Len)
		}
		if seen[s.ID] {
			continue
		}
		seen[s.ID] = true
		st.Refs++
		if err := setJSON(txn, segmentStateKey(s.ID), st); err != nil {
			return err
		}
	}
	return nil
}

// releaseSegments drops the references addSegmentRefs took. A segment
// left unreferenced is dated 0, for the next sweep to drop.
func releaseSegments(txn *tx, segs []Segment) error {
	seen := map[blob.ID]bool{}
	for _, s := range segs {
		if seen[s.ID] {
			continue
		}
		seen[s.ID] = true
		err := updateSegment(txn, s.ID, func(st *segmentState) bool {
			if st.Refs--; st.Refs <= 0 {
				st.Refs, st.Staged = 0, 0
			}
			return true
		})
		if err != nil {
			return fmt.Errorf("segment %s: %w", s.ID, err)
		}
	}
	return nil
}

func applyDropSegments(txn *tx, d DropStaged) error {
	for _, id := range d.IDs {
		var st segmentState
		switch err := getJSON(txn, segmentStateKey(id), &st); {
		case errors.Is(err, blob.ErrNotFound):
			continue
		case err != nil:
			return err
		}
		if st.Refs > 0 || st.Staged >= d.Before.UnixNano() {
			continue
		}
		var cs []Chunk
		if err := getJSON(txn, segmentKey(id), &cs); err != nil {
			return err
		}
		if err := dropRefs(txn, cs); err != nil {
			return err
		}
		if err := txn.Delete(segmentKey(id)); err != nil {
			return err
		}
		if err := txn.Delete(segmentStateKey(id)); err != nil {
			return err
		}
	}
	return nil
}

// addContentRefs takes the references of a content record: on its chunks
// and on its segments.
func addContentRefs(txn *tx, cs []Chunk, segs []Segment, k, m int) error {
	if err := addRefs(txn, cs, k, m); err != nil {
		return err
	}
	return addSegmentRefs(txn, segs)
}

// dropContentRefs releases what addContentRefs took.
func dropContentRefs(txn *tx, cs []Chunk, segs []Segment) error {
	if err := dropRefs(txn, cs); err != nil {
		return err
	}
	return releaseSegments(txn, segs)
}

// Segment returns the chunks segment id lists, in order, with their
// locations, from the local replica, or blob.ErrNotFound.
func (s *Store) Segment(id blob.ID) ([]Chunk, error) {
	var cs []Chunk
	err := view(s.db, func(txn *tx) error {
		if err := getJSON(txn, segmentKey(id), &cs); err != nil {
			return fmt.Errorf("segment %s: %w", id, err)
		}
		return fillShards(txn, cs)
	})
	return cs, err
}

// AbandonedSegments returns the segments no content references that were
// staged (or released) before t, from the local replica.
func (s *Store) AbandonedSegments(t time.Time) ([]blob.ID, error) {
	var ids []blob.ID
	err := s.scan([]byte{prefixFSM, 'S'}, nil, func(k, v []byte) (bool, error) {
		var st segmentState
		if err := json.Unmarshal(v, &st); err != nil {
			return false, err
		}
		if st.Refs == 0 && st.Staged < t.UnixNano() {
			ids = append(ids, blob.ID(k[2:]))
		}
		return true, nil
	})
	return ids, err
}
