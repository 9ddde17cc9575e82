package node

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/raftstore"
)

// FuzzParseRange: whatever the header, a satisfiable range lies inside
// the blob, and an unsatisfiable one is only ever a start at or past its
// end or an empty suffix.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=-5", "bytes=5-", "bytes=3-1", "bytes=0-1,3-4", "bytes=-0", "bytes=99999999999999999999-", "items=0-1", ""} {
		f.Add(s, int64(10))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 { // math.MinInt64
			return
		}
		off, length, ok := ParseRange(h, size)
		if !ok {
			return
		}
		if off < 0 || length < 0 || off+length > size || (size > 0 && length == 0) {
			t.Fatalf("ParseRange(%q, %d) = %d+%d", h, size, off, length)
		}
	})
}

// FuzzManifest decodes arbitrary manifest bodies as the API does and
// checks them: an accepted manifest has at most the allowed chunks, each
// of a possible length, adding up to its size.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"id":"` + string(make([]byte, 0)) + `","size":3,"chunks":[{"id":"x","len":3}]}`))
	f.Add([]byte(`{"size":-1,"chunks":[]}`))
	f.Add([]byte(`{"size":9223372036854775807,"chunks":[{"len":9223372036854775807},{"len":1}]}`))
	f.Add([]byte(`{"size":0,"chunks":[],"extra":1}`))
	n := &Node{cfg: DefaultConfig().withDefaults()}
	f.Fuzz(func(t *testing.T, body []byte) {
		var m api.Manifest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&m) != nil {
			return
		}
		if n.checkManifest(m) != nil {
			return
		}
		if len(m.Chunks) > raftstore.MaxChunksPerCommand || m.Size > n.cfg.MaxBlobSize {
			t.Fatalf("accepted %d chunks, %d bytes", len(m.Chunks), m.Size)
		}
		var sum int64
		for _, c := range m.Chunks {
			if c.Len <= 0 || c.Len > int64(max(api.MaxChunkSize, n.cfg.ChunkSize)) {
				t.Fatalf("accepted a chunk of %d bytes", c.Len)
			}
			sum += c.Len
		}
		if sum != m.Size {
			t.Fatalf("accepted chunks of %d bytes for a blob of %d", sum, m.Size)
		}
	})
}
