package disk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/storage"
)

// The journal makes small shards durable with one shared fdatasync
// instead of two fsyncs and a file creation each: a small shard is
// appended to the current segment (concurrent appends are group-committed
// by one writer goroutine), and only once that is durable is its file
// written — without fsync — and renamed into place. A checkpoint (every
// segmentMax bytes or checkpointEvery) syncs the file system once and
// deletes the segments it covers; Open replays the segments a crash (or a
// Close) left, so every acknowledged shard is on disk whatever the page
// cache lost.
//
// A segment is segmentMagic followed by records:
//
//	u32 body length | u32 CRC-32C of body | body
//	body = kind (1) | chunk ID (32) | index (u16) | unix nanos (i64) | shard file (put only)
//
// A record that is short or fails its checksum ends the segment: it can
// only be the tail of an append that never completed (and was never
// acknowledged).
const (
	segmentMagic    = "ATOLLJ1\n"
	segmentMax      = 16 << 20
	checkpointEvery = 5 * time.Second
	// SmallShard is the largest shard file (header included) that goes
	// through the journal; larger ones are written and fsync'd on their own.
	SmallShard = 64 << 10

	recordHead = 8
	bodyHead   = 1 + 32 + 2 + 8
	maxBody    = bodyHead + SmallShard
)

// Record kinds. The last record of a ref in the journal says what replay
// makes of its file.
const (
	kindPut    byte = 1 // the file holds these bytes
	kindRemove byte = 2 // the file was removed
	kindForget byte = 3 // the file was written durably on its own: keep it if it is intact
)

type record struct {
	kind byte
	ref  storage.Ref
	mod  time.Time
	file []byte // kindPut: the shard file
}

// sealRecord fills in the heads of the record b, whose shard file (if
// any) is already in place after them.
func sealRecord(b []byte, kind byte, ref storage.Ref, mod time.Time) []byte {
	body := b[recordHead:]
	body[0] = kind
	copy(body[1:33], ref.Chunk[:])
	binary.LittleEndian.PutUint16(body[33:35], uint16(ref.Index))
	binary.LittleEndian.PutUint64(body[35:43], uint64(mod.UnixNano()))
	binary.LittleEndian.PutUint32(b, uint32(len(body)))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(body, castagnoli))
	return b
}

// parseRecords returns the records of a segment's contents up to the
// first one that is torn or damaged. Records alias seg.
func parseRecords(seg []byte) (recs []record, intact bool) {
	if !strings.HasPrefix(string(seg[:min(len(seg), len(segmentMagic))]), segmentMagic) {
		return nil, false
	}
	b := seg[len(segmentMagic):]
	for len(b) > 0 {
		if len(b) < recordHead {
			return recs, false
		}
		n := int(binary.LittleEndian.Uint32(b))
		if n < bodyHead || n > maxBody || len(b)-recordHead < n {
			return recs, false
		}
		body := b[recordHead : recordHead+n]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
			return recs, false
		}
		rec := record{kind: body[0], mod: time.Unix(0, int64(binary.LittleEndian.Uint64(body[35:43])))}
		copy(rec.ref.Chunk[:], body[1:33])
		rec.ref.Index = int(binary.LittleEndian.Uint16(body[33:35]))
		if rec.kind < kindPut || rec.kind > kindForget || rec.ref.Index > storage.MaxIndex || (rec.kind != kindPut && n != bodyHead) {
			return recs, false
		}
		if rec.kind == kindPut {
			rec.file = body[bodyHead:]
		}
		recs = append(recs, rec)
		b = b[recordHead+n:]
	}
	return recs, true
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errJournalClosed is what appends get once the store is closed or the
// journal has failed; the caller writes the shard on its own instead.
var errJournalClosed = errors.New("disk: journal closed")

type appendReq struct {
	rec  []byte
	seg  uint64 // the segment it went to
	done chan error
}

type journal struct {
	dir  string
	reqs chan *appendReq
	kick chan chan uint64 // checkpoint: seal the segment, answer its number
	stop chan struct{}
	wg   sync.WaitGroup

	closeOnce sync.Once

	// gate: every small Receive holds it shared from its append to its
	// rename, so a checkpoint taking it exclusively knows the files of
	// sealed segments are all in place.
	gate sync.RWMutex

	mu        sync.Mutex
	journaled map[storage.Ref]uint64 // refs with a record in a live segment → the newest such segment

	checkpointing sync.Mutex
	dropped       uint64 // segments up to this one are gone (under checkpointing)

	// owned by the writer goroutine
	f     *os.File
	seq   uint64
	size  int64
	syncs int // fdatasyncs done (tests read it after Close)
}

func segmentName(seq uint64) string { return fmt.Sprintf("%016x.log", seq) }

// segments lists the journal's segment numbers in order.
func segments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if seq, err := strconv.ParseUint(name, 16, 64); ok && err == nil && len(name) == 16 {
			out = append(out, seq)
		}
	}
	slices.Sort(out)
	return out, nil
}

// openJournal replays what the journal in dir holds into s, syncs it,
// clears the journal and starts a new segment.
func openJournal(dir string, s *Store) (*journal, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	old, err := segments(dir)
	if err != nil {
		return nil, err
	}
	if err := s.replay(dir, old); err != nil {
		return nil, fmt.Errorf("disk: replaying the journal: %w", err)
	}
	j := &journal{dir: dir, reqs: make(chan *appendReq, 256), kick: make(chan chan uint64), stop: make(chan struct{}), journaled: map[storage.Ref]uint64{}}
	if len(old) > 0 {
		if err := syncFS(s.dir); err != nil {
			return nil, err
		}
		if err := j.drop(old[len(old)-1]); err != nil {
			return nil, err
		}
		j.seq = old[len(old)-1]
		j.dropped = j.seq
	}
	if err := j.rotate(); err != nil {
		return nil, err
	}
	j.wg.Go(j.write)
	j.wg.Go(j.checkpoints(s))
	return j, nil
}

// replay brings the shard files in line with the segments' records, the
// last record of each ref deciding.
func (s *Store) replay(dir string, segs []uint64) error {
	last := map[storage.Ref]record{}
	put := map[storage.Ref]record{} // the last put, for a forget over a torn file
	for _, seq := range segs {
		b, err := os.ReadFile(filepath.Join(dir, segmentName(seq)))
		if err != nil {
			return err
		}
		recs, _ := parseRecords(b)
		for _, r := range recs {
			last[r.ref] = r
			if r.kind == kindPut {
				put[r.ref] = r
			}
		}
	}
	for ref, r := range last {
		var err error
		switch r.kind {
		case kindPut:
			err = s.restore(r)
		case kindRemove:
			if err = os.Remove(s.Path(ref)); errors.Is(err, os.ErrNotExist) {
				err = nil
			}
		case kindForget:
			if s.intact(ref) {
				break
			}
			if p, ok := put[ref]; ok {
				err = s.restore(p)
			} else if err = os.Remove(s.Path(ref)); errors.Is(err, os.ErrNotExist) {
				err = nil
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// restore makes ref's file hold r's bytes, written when r was.
func (s *Store) restore(r record) error {
	p := s.Path(r.ref)
	if have, err := os.ReadFile(p); err == nil && string(have) == string(r.file) {
		return nil
	}
	if err := s.mkdir(filepath.Dir(p)); err != nil {
		return err
	}
	if err := os.WriteFile(p+".replay.tmp", r.file, 0o644); err != nil {
		return err
	}
	if err := os.Chtimes(p+".replay.tmp", r.mod, r.mod); err != nil {
		return err
	}
	return os.Rename(p+".replay.tmp", p)
}

// intact reports whether ref's file is a whole, uncorrupted shard.
func (s *Store) intact(ref storage.Ref) bool {
	f, err := os.Open(s.Path(ref))
	if err != nil {
		return false
	}
	defer f.Close()
	return storage.Check(context.Background(), fileFetcher{f}, ref) == nil
}

// fileFetcher serves one open file as any shard.
type fileFetcher struct{ f *os.File }

func (ff fileFetcher) Fetch(context.Context, storage.Ref) (io.ReadCloser, error) {
	return io.NopCloser(ff.f), nil
}

// rotate starts a new segment (the writer goroutine's, or before it runs).
func (j *journal) rotate() error {
	j.seq++
	f, err := os.OpenFile(filepath.Join(j.dir, segmentName(j.seq)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(segmentMagic); err != nil {
		f.Close()
		return err
	}
	if err := syncDir(j.dir); err != nil {
		f.Close()
		return err
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.size = f, int64(len(segmentMagic))
	return nil
}

// append makes rec durable and returns the segment it is in.
func (j *journal) append(rec []byte) (uint64, error) {
	req := &appendReq{rec: rec, done: make(chan error, 1)}
	select {
	case j.reqs <- req:
	case <-j.stop:
		return 0, errJournalClosed
	}
	select {
	case err := <-req.done:
		return req.seg, err
	case <-j.stop: // NB: the writer may still take it: a shard's bytes written twice
		return 0, errJournalClosed
	}
}

// write is the writer goroutine: it takes every append waiting, writes
// them with one write and one fdatasync, and answers them all.
func (j *journal) write() {
	defer func() {
		if j.f != nil {
			j.f.Close()
		}
	}()
	var batch []*appendReq
	var buf []byte
	broken := false
	for {
		batch, buf = batch[:0], buf[:0]
		select {
		case <-j.stop:
			return
		case ack := <-j.kick:
			if broken || j.size > int64(len(segmentMagic)) {
				broken = j.rotate() != nil
			}
			ack <- j.seq - 1
			continue
		case req := <-j.reqs:
			batch = append(batch, req)
		}
	more:
		for len(batch) < cap(j.reqs) {
			select {
			case req := <-j.reqs:
				batch = append(batch, req)
			default:
				break more
			}
		}
		var err error
		if broken {
			err = errJournalClosed
		} else {
			for _, req := range batch {
				buf = append(buf, req.rec...)
			}
			if err = j.appendSync(buf); err != nil {
				broken = true // later appends go around the journal until the next segment
			}
		}
		for _, req := range batch {
			req.seg = j.seq
			req.done <- err
		}
		if !broken && j.size >= segmentMax {
			if err := j.rotate(); err != nil {
				broken = true
			}
		}
	}
}

// appendSync writes buf at the end of the segment and syncs it; on failure
// it cuts the segment back so no half-written record precedes later ones.
func (j *journal) appendSync(buf []byte) error {
	_, err := j.f.Write(buf)
	if err == nil {
		err = fdatasync(j.f)
		j.syncs++
	}
	if err != nil {
		if terr := j.f.Truncate(j.size); terr == nil {
			j.f.Seek(j.size, io.SeekStart)
		}
		return err
	}
	j.size += int64(len(buf))
	return nil
}

// mark records that ref has a record in segment seq.
func (j *journal) mark(ref storage.Ref, seq uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.journaled[ref] < seq {
		j.journaled[ref] = seq
	}
}

// has reports whether ref has a record in a live segment.
func (j *journal) has(ref storage.Ref) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, ok := j.journaled[ref]
	return ok
}

// checkpoints runs a checkpoint every checkpointEvery, and whenever the
// writer sealed a full segment.
func (j *journal) checkpoints(s *Store) func() {
	return func() {
		t := time.NewTicker(checkpointEvery)
		defer t.Stop()
		for {
			select {
			case <-j.stop:
				return
			case <-t.C:
			}
			j.checkpoint(s) // NB: a failed one leaves its segments to the next one, or to replay

		}
	}
}

// checkpoint seals the current segment, waits until every shard file its
// records (and older ones') describe is in place, syncs the file system
// and deletes those segments.
func (j *journal) checkpoint(s *Store) error {
	j.checkpointing.Lock()
	defer j.checkpointing.Unlock()
	ack := make(chan uint64, 1)
	select {
	case j.kick <- ack:
	case <-j.stop:
		return nil
	}
	sealed := <-ack
	if sealed <= j.dropped {
		return nil // nothing written since the last checkpoint
	}
	j.gate.Lock()
	j.gate.Unlock() //nolint:staticcheck // a barrier: every append before the seal has its file in place
	if err := syncFS(s.dir); err != nil {
		return err
	}
	return j.drop(sealed)
}

// drop deletes the segments up to seq, whose records are all reflected in
// durable files, and forgets the refs only they named.
func (j *journal) drop(seq uint64) error {
	segs, err := segments(j.dir)
	if err != nil {
		return err
	}
	for _, n := range segs {
		if n <= seq {
			if err := os.Remove(filepath.Join(j.dir, segmentName(n))); err != nil {
				return err
			}
		}
	}
	if err := syncDir(j.dir); err != nil {
		return err
	}
	j.dropped = seq
	j.mu.Lock()
	defer j.mu.Unlock()
	for ref, n := range j.journaled {
		if n <= seq {
			delete(j.journaled, ref)
		}
	}
	return nil
}

func (j *journal) close() {
	j.closeOnce.Do(func() { close(j.stop) })
	j.wg.Wait()
}

// note appends a remove or forget record for ref if the journal still
// names it, so that replay does not bring back what a later operation on
// its own undid.
func (j *journal) note(kind byte, ref storage.Ref) error {
	if !j.has(ref) {
		return nil
	}
	seq, err := j.append(sealRecord(make([]byte, recordHead+bodyHead), kind, ref, time.Now()))
	if err != nil {
		return fmt.Errorf("%w: journal: %v", blob.ErrUnavailable, err)
	}
	j.mark(ref, seq)
	return nil
}
