package disk

import (
	"bytes"
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

	"github.com/atollstore/atoll/storage"
)

// Small shards (at most SmallShard bytes, header included) live in
// volumes, not files of their own: creating a file, fsyncing it, renaming
// it and fsyncing its directory cost more than the shard itself. A
// volume is a directory of append-only segment files; one writer
// goroutine appends every record waiting and makes them durable with one
// write and one fdatasync (group commit), and a write is acknowledged once
// its record is durable. An index in memory maps each shard to where its
// bytes are; Open rebuilds it by reading the segments in order, the last
// record of a shard deciding.
//
// A segment is segmentMagic followed by records:
//
//	u32 length of the rest | u32 CRC-32C of head | head | shard file (put only)
//	head = kind (1) | chunk ID (32) | index (u16) | unix nanos (i64)
//
// The checksum covers the lengths and the head only: a shard's bytes carry
// their own (erasure's header and payload CRCs), so bit rot in one shard
// is found and repaired as in a file, without hiding the records after it.
// A record whose head does not check ends its segment. Only the last
// segment can end in a torn append (segments are sealed after a
// successful sync), so there, and only there, a put whose shard does not
// verify is skipped: it was never acknowledged (or it rotted, and it is
// missing rather than corrupt; repair treats both alike).
//
// Deleted and overwritten shards leave garbage. When more than half of the
// sealed segments' bytes are garbage, the cleaner copies the live records
// of the oldest segment to the head of the log and deletes it — oldest
// first, so a remove record dropped with it can no longer shadow anything.
const (
	segmentMagic = "ATOLLV1\n"
	volumeDir    = "volumes"
	// SmallShard is the largest shard file (header included) kept in
	// volumes; larger ones get a file each.
	SmallShard = 256 << 10

	recordHead = 8
	bodyHead   = 1 + 32 + 2 + 8
	maxBody    = bodyHead + SmallShard
	maxBatch   = 4 << 20 // bytes one write and sync take at most
)

// Record kinds. The last record of a shard in the log says whether the
// index holds it.
const (
	kindPut    byte = 1 // the shard's bytes follow
	kindRemove byte = 2 // the shard was removed
	kindForget byte = 3 // the shard was rewritten as a file of its own
)

type record struct {
	kind byte
	ref  storage.Ref
	mod  time.Time
	file []byte // kindPut: the shard file
	off  int64  // of the record in its segment
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
	binary.LittleEndian.PutUint32(b[4:], headSum(b))
	return b
}

// headSum is the checksum of a record's length and head.
func headSum(rec []byte) uint32 {
	c := crc32.Update(0, castagnoli, rec[:4])
	return crc32.Update(c, castagnoli, rec[recordHead:recordHead+bodyHead])
}

// parseRecords returns the records of a segment's contents up to the
// first one whose head is torn or damaged, and whether every byte was a
// good record. With verify, puts whose shards do not verify are left out
// (the last segment's torn tail). Records alias seg.
func parseRecords(seg []byte, verify bool) (recs []record, clean bool) {
	if !bytes.HasPrefix(seg, []byte(segmentMagic)) {
		return nil, false
	}
	clean = true
	off := len(segmentMagic)
	for off < len(seg) {
		b := seg[off:]
		if len(b) < recordHead+bodyHead {
			return recs, false
		}
		n := int(binary.LittleEndian.Uint32(b))
		if n < bodyHead || n > maxBody || len(b)-recordHead < n || headSum(b) != binary.LittleEndian.Uint32(b[4:]) {
			return recs, false
		}
		body := b[recordHead : recordHead+n]
		rec := record{kind: body[0], mod: time.Unix(0, int64(binary.LittleEndian.Uint64(body[35:43]))), off: int64(off)}
		copy(rec.ref.Chunk[:], body[1:33])
		rec.ref.Index = int(binary.LittleEndian.Uint16(body[33:35]))
		if rec.kind < kindPut || rec.kind > kindForget || rec.ref.Index > storage.MaxIndex || (rec.kind != kindPut && n != bodyHead) {
			return recs, false
		}
		off += recordHead + n
		if rec.kind == kindPut {
			rec.file = body[bodyHead:]
			if verify && storage.Verify(rec.ref, rec.file) != nil {
				clean = false
				continue
			}
		}
		recs = append(recs, rec)
	}
	return recs, clean
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errVolumeClosed is what appends get once the store is closed, or while
// the volume cannot be written; the caller writes the shard as a file.
var errVolumeClosed = errors.New("disk: volume unavailable")

type segment struct {
	seq  uint64
	f    *os.File // appended to by the writer, read with ReadAt
	size int64    // bytes written and synced (under volume.mu)
	live int64    // bytes of the records the index points into (under volume.mu)
}

// loc is where a shard's bytes are.
type loc struct {
	seg *segment
	off int64 // of the shard file
	n   int
	mod time.Time
}

func (l loc) recordSize() int64 { return int64(recordHead + bodyHead + l.n) }

type appendReq struct {
	rec  []byte
	seg  *segment
	off  int64 // of the record
	done chan error
}

type volume struct {
	dir    string
	segMax int64 // a segment is sealed once this big
	reqs   chan *appendReq
	stop   chan struct{} // closed once no append can be sent any more
	wg     sync.WaitGroup

	sending sync.RWMutex // held shared while an append is being sent
	stopped bool         // under sending

	mu    sync.RWMutex
	index map[storage.Ref]loc
	segs  []*segment // oldest first; the last is the writer's
	bytes int64      // of the indexed shards

	syncs int // fdatasyncs (the writer's; tests read it after close)
}

func segmentName(seq uint64) string { return fmt.Sprintf("%016x.seg", seq) }

// segmentSeqs lists the segment numbers in dir, in order.
func segmentSeqs(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if seq, err := strconv.ParseUint(name, 16, 64); ok && err == nil && len(name) == 16 {
			out = append(out, seq)
		}
	}
	slices.Sort(out)
	return out, nil
}

// openVolume reads the segments in dir into the index. The writer goes on
// in the last one if it ends in a good record, else in a new one.
func openVolume(dir string, segMax int64) (*volume, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	seqs, err := segmentSeqs(dir)
	if err != nil {
		return nil, err
	}
	v := &volume{dir: dir, segMax: segMax, reqs: make(chan *appendReq, 256), stop: make(chan struct{}), index: map[storage.Ref]loc{}}
	clean := false
	for i, seq := range seqs {
		if clean, err = v.load(seq, i == len(seqs)-1); err != nil {
			v.closeFiles()
			return nil, err
		}
	}
	if !clean { // NB: also when there is no segment yet
		var next uint64 = 1
		if len(seqs) > 0 {
			next = seqs[len(seqs)-1] + 1
		}
		seg, err := v.create(next)
		if err != nil {
			v.closeFiles()
			return nil, err
		}
		v.segs = append(v.segs, seg)
	}
	v.wg.Go(v.write)
	return v, nil
}

// load reads segment seq into the index and reports whether it was all
// good records; last is the segment a crash may have torn.
func (v *volume) load(seq uint64, last bool) (clean bool, err error) {
	p := filepath.Join(v.dir, segmentName(seq))
	b, err := os.ReadFile(p)
	if err != nil {
		return false, err
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	seg := &segment{seq: seq, f: f, size: int64(len(b))}
	v.segs = append(v.segs, seg)
	recs, clean := parseRecords(b, last)
	for _, r := range recs {
		l := loc{}
		if r.kind == kindPut {
			l = loc{seg: seg, off: r.off + recordHead + bodyHead, n: len(r.file), mod: r.mod}
		}
		v.set(r.ref, l)
	}
	return clean, nil
}

// create starts segment seq.
func (v *volume) create(seq uint64) (*segment, error) {
	f, err := os.OpenFile(filepath.Join(v.dir, segmentName(seq)), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(segmentMagic); err == nil {
		err = fdatasync(f)
	}
	if err == nil {
		err = syncDir(v.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &segment{seq: seq, f: f, size: int64(len(segmentMagic))}, nil
}

// get returns where ref's bytes are.
func (v *volume) get(ref storage.Ref) (loc, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	l, ok := v.index[ref]
	return l, ok
}

// set points ref at l (nowhere if l.seg is nil) and returns where it was.
func (v *volume) set(ref storage.Ref, l loc) (old loc, had bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, had = v.index[ref]; had {
		old.seg.live -= old.recordSize()
		v.bytes -= int64(old.n)
		delete(v.index, ref)
	}
	if l.seg != nil {
		v.index[ref] = l
		l.seg.live += l.recordSize()
		v.bytes += int64(l.n)
	}
	return old, had
}

// read returns the bytes at l; os.ErrClosed if its segment was cleaned
// away meanwhile.
func (l loc) read() ([]byte, error) {
	b := make([]byte, l.n)
	_, err := l.seg.f.ReadAt(b, l.off)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // the segment is shorter than its index says
	}
	return b, err
}

// append makes rec durable and returns where it went. Every request sent
// is answered (the writer reads rec until then, so the caller must not
// reuse it before).
func (v *volume) append(rec []byte) (*segment, int64, error) {
	req := &appendReq{rec: rec, done: make(chan error, 1)}
	v.sending.RLock()
	if v.stopped {
		v.sending.RUnlock()
		return nil, 0, errVolumeClosed
	}
	v.reqs <- req
	v.sending.RUnlock()
	err := <-req.done
	return req.seg, req.off, err
}

// write is the writer goroutine: it takes every append waiting, writes
// them with one write and one fdatasync, and answers them all.
func (v *volume) write() {
	v.mu.RLock()
	seg := v.segs[len(v.segs)-1]
	v.mu.RUnlock()
	broken := false // the segment failed a write: go on in a new one
	var batch []*appendReq
	var buf []byte
	for {
		batch, buf = batch[:0], buf[:0]
		select {
		case <-v.stop: // nothing more is sent: answer what is left
			for {
				select {
				case req := <-v.reqs:
					req.done <- errVolumeClosed
				default:
					return
				}
			}
		case req := <-v.reqs:
			batch = append(batch, req)
		}
		size := len(batch[0].rec)
	more:
		for len(batch) < cap(v.reqs) && size < maxBatch {
			select {
			case req := <-v.reqs:
				batch = append(batch, req)
				size += len(req.rec)
			default:
				break more
			}
		}
		if broken || seg.size >= v.segMax {
			if next, err := v.create(seg.seq + 1); err == nil {
				v.mu.Lock()
				v.segs = append(v.segs, next)
				v.mu.Unlock()
				seg, broken = next, false
			}
		}
		err := errVolumeClosed
		if !broken {
			for _, req := range batch {
				req.seg, req.off = seg, seg.size+int64(len(buf))
				buf = append(buf, req.rec...)
			}
			if err = v.appendSync(seg, buf); err != nil {
				broken = true
			}
		}
		for _, req := range batch {
			req.done <- err
		}
	}
}

// appendSync writes buf at the end of seg and syncs it; on failure it cuts
// the segment back, so no half-written record precedes later ones.
func (v *volume) appendSync(seg *segment, buf []byte) error {
	_, err := seg.f.WriteAt(buf, seg.size)
	if err == nil {
		err = fdatasync(seg.f)
		v.syncs++
	}
	if err != nil {
		seg.f.Truncate(seg.size)
		return diskErr(err)
	}
	v.mu.Lock()
	seg.size += int64(len(buf))
	v.mu.Unlock()
	return nil
}

// note appends a remove or forget record for ref and drops it from the
// index, if the index holds it, and reports whether it did.
func (v *volume) note(kind byte, ref storage.Ref) (bool, error) {
	if _, ok := v.get(ref); !ok {
		return false, nil
	}
	if _, _, err := v.append(sealRecord(make([]byte, recordHead+bodyHead), kind, ref, time.Now())); err != nil {
		return false, err
	}
	v.set(ref, loc{})
	return true, nil
}

// oldestIfDirty returns the oldest sealed segment if more than half of the
// sealed segments' bytes, and at least minGarbage, are garbage.
func (v *volume) oldestIfDirty(minGarbage int64) *segment {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var size, live int64
	for _, s := range v.segs[:len(v.segs)-1] {
		size += s.size - int64(len(segmentMagic))
		live += s.live
	}
	if garbage := size - live; garbage < minGarbage || garbage*2 <= size {
		return nil
	}
	return v.segs[0]
}

// drop deletes seg, whose live records are all elsewhere now.
func (v *volume) drop(seg *segment) error {
	v.mu.Lock()
	v.segs = slices.DeleteFunc(v.segs, func(s *segment) bool { return s == seg })
	v.mu.Unlock()
	seg.f.Close() // NB: a read still holding a loc in it gets os.ErrClosed and looks again
	if err := os.Remove(filepath.Join(v.dir, segmentName(seg.seq))); err != nil {
		return err
	}
	return syncDir(v.dir)
}

// shut refuses appends from now on and tells the writer (and the
// cleaner) to stop.
func (v *volume) shut() {
	v.sending.Lock()
	defer v.sending.Unlock()
	if !v.stopped {
		v.stopped = true
		close(v.stop)
	}
}

func (v *volume) close() {
	v.shut()
	v.wg.Wait()
	v.closeFiles()
}

func (v *volume) closeFiles() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range v.segs {
		s.f.Close()
	}
}
