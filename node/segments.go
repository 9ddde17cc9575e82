package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/raftstore"
)

// segmentCommands is the command version of chunk lists in segments.
const segmentCommands = 4

// ChunkList builds a content's chunk list in order: inline while it fits
// the command that will commit the content (up to Config.SegmentChunks
// chunks), else committed in segments of
// SegmentChunks as it grows (raftstore.StagedSegment), each renewing the
// grace of those before it that are half a grace old, so that the list in
// memory and in any one command stays bounded whatever the content's
// size.
type ChunkList struct {
	n        *Node
	owner    string
	run      []raftstore.Chunk // not yet in a segment
	segments []raftstore.Segment
	dated    []time.Time // when each segment this list staged was last dated; zero: held by another record
}

// NewChunkList starts the chunk list of a content stored for tenant owner
// ("" records none).
func (n *Node) NewChunkList(owner string) *ChunkList { return &ChunkList{n: n, owner: owner} }

// Add appends cs, committing full segments once the list outgrew one
// command.
func (l *ChunkList) Add(ctx context.Context, cs ...raftstore.Chunk) error {
	l.run = append(l.run, cs...)
	s := l.n.cfg.SegmentChunks
	for len(l.run) > s || (len(l.segments) > 0 && len(l.run) == s) {
		if err := l.stage(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// AddSegments appends segments already committed (a part's, to an
// object): the chunks before them become segments of their own.
func (l *ChunkList) AddSegments(ctx context.Context, segs ...raftstore.Segment) error {
	if err := l.flush(ctx); err != nil {
		return err
	}
	if len(l.segments)+len(segs) > raftstore.MaxSegments {
		return l.n.listTooLong()
	}
	l.segments = append(l.segments, segs...)
	l.dated = append(l.dated, make([]time.Time, len(segs))...)
	return nil
}

// Done returns the list: its chunks inline, or else its segments, the
// last of them committed now.
func (l *ChunkList) Done(ctx context.Context) ([]raftstore.Chunk, []raftstore.Segment, error) {
	if len(l.segments) == 0 {
		return l.run, nil, nil
	}
	err := l.flush(ctx)
	return nil, l.segments, err
}

// flush commits every chunk not yet in a segment.
func (l *ChunkList) flush(ctx context.Context) error {
	for len(l.run) > 0 {
		if err := l.stage(ctx, min(len(l.run), l.n.cfg.SegmentChunks)); err != nil {
			return err
		}
	}
	return nil
}

// stage commits the first n chunks of the run as a segment.
func (l *ChunkList) stage(ctx context.Context, n int) error {
	if !l.n.segmentsAllowed() || len(l.segments) == raftstore.MaxSegments {
		return l.n.listTooLong()
	}
	cs := l.run[:n]
	now := time.Now().UTC()
	var renew []int // the segments dated half a grace ago or more, oldest first
	for i, d := range l.dated {
		if !d.IsZero() && now.Sub(d) >= l.n.cfg.OrphanGrace/2 && len(renew) < raftstore.MaxRenew {
			renew = append(renew, i)
		}
	}
	seg := raftstore.StagedSegment{ID: raftstore.SegmentID(cs), Chunks: cs, K: l.n.cfg.K, M: l.n.cfg.M, At: now, Owner: l.owner}
	for _, i := range renew {
		seg.Renew = append(seg.Renew, l.segments[i].ID)
	}
	if _, err := l.n.apply(ctx, raftstore.StageSegmentCommand(seg)); err != nil {
		if errors.Is(err, blob.ErrMissingChunks) { // a reused chunk was reclaimed meanwhile
			err = fmt.Errorf("%w: %v", blob.ErrUnavailable, err) // the client may retry
		}
		return fmt.Errorf("committing a segment of the chunk list: %w", err)
	}
	ref := raftstore.Segment{ID: seg.ID, Chunks: n}
	for _, c := range cs {
		ref.Len += c.Len
	}
	for _, i := range renew {
		l.dated[i] = now
	}
	l.segments, l.dated = append(l.segments, ref), append(l.dated, now)
	l.run = append(l.run[:0], l.run[n:]...)
	return nil
}

// listTooLong is the error for a chunk list that cannot be committed:
// longer than one command while a member does not apply segments yet, or
// longer than MaxSegments.
func (n *Node) listTooLong() error {
	if !n.segmentsAllowed() {
		return fmt.Errorf("%w: a chunk list of more than %d chunks needs every node to apply command version %d (an upgrade in progress)",
			blob.ErrTooLarge, n.cfg.SegmentChunks, segmentCommands)
	}
	return fmt.Errorf("%w: a chunk list of more than %d segments of %d chunks", blob.ErrTooLarge, raftstore.MaxSegments, n.cfg.SegmentChunks)
}

// segmentsAllowed reports whether every member applies chunk lists in
// segments.
func (n *Node) segmentsAllowed() bool {
	return n.CanPropose(raftstore.StageSegmentCommand(raftstore.StagedSegment{}))
}

// eachChunk calls fn with each chunk of content (a blob, or an object's
// view) that ends after byte off, in order, with its offset, until fn
// returns false.
func (n *Node) eachChunk(content *raftstore.Blob, off int64, fn func(start int64, c raftstore.Chunk) bool) error {
	return n.walkChunks(content, func(_ int, end int64) bool { return end <= off },
		func(_ int, start int64, c raftstore.Chunk) bool { return fn(start, c) })
}

// walkChunks calls fn with each chunk of content, its index and offset,
// in order, until fn returns false — but for chunks, and whole segments,
// that before says lie before the part wanted, given the chunk count and
// byte offset they end at. Skipped segments are not read; the others are
// read one at a time, so memory stays bounded by a segment.
func (n *Node) walkChunks(content *raftstore.Blob, before func(chunks int, end int64) bool, fn func(i int, start int64, c raftstore.Chunk) bool) error {
	i, start := 0, int64(0)
	visit := func(cs []raftstore.Chunk) bool {
		for _, c := range cs {
			ci, cStart := i, start
			i, start = i+1, start+c.Len
			if !before(i, start) && !fn(ci, cStart, c) {
				return false
			}
		}
		return true
	}
	if !visit(content.Chunks) {
		return nil
	}
	for _, s := range content.Segments {
		if before(i+s.Chunks, start+s.Len) {
			i, start = i+s.Chunks, start+s.Len
			continue
		}
		cs, err := n.meta.Segment(s.ID)
		if err != nil {
			return err
		}
		if len(cs) != s.Chunks {
			return fmt.Errorf("%w: segment %s lists %d chunks, its reference %d", blob.ErrCorrupt, s.ID, len(cs), s.Chunks)
		}
		if !visit(cs) {
			return nil
		}
	}
	return nil
}

// chunkCount is how many chunks content lists.
func chunkCount(content *raftstore.Blob) int {
	n := len(content.Chunks)
	for _, s := range content.Segments {
		n += s.Chunks
	}
	return n
}
