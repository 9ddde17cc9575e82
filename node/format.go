package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/internal/atomicfile"
	"github.com/atollstore/atoll/raftstore"
)

// DataFormat is the version of a node's data directory as a whole: the
// shard files' layout and header, the badger keys of the raft log and
// state machine. A node refuses to start on a directory written by a newer
// format (a downgrade that would misread it); an older one it upgrades, or
// reads as it is. The shard header and raft commands carry versions of
// their own (erasure, raftstore.CommandVersion).
//
// Format 2: shards may be erasure.Dispersed, which format-1 releases
// cannot decode.
const DataFormat = 2

const formatFile = "FORMAT"

// CommandVersion is the version of the raft commands this node proposes
// and the newest it applies.
const CommandVersion = raftstore.CommandVersion

// checkFormat records DataFormat in a new data directory, and refuses one
// written by a newer Atoll.
func checkFormat(dir string) error {
	p := filepath.Join(dir, formatFile)
	var f struct {
		Format int `json:"format"`
	}
	switch b, err := os.ReadFile(p); {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		return writeFormat(p)
	case err != nil:
		return err
	case json.Unmarshal(b, &f) != nil || f.Format < 1:
		return fmt.Errorf("node: %s is not a format file this Atoll understands: %q", p, b)
	case f.Format > DataFormat:
		return fmt.Errorf("node: the data in %s has format %d, written by a newer Atoll; this binary reads format %d at most: run the newer binary (downgrades are not supported)", dir, f.Format, DataFormat)
	case f.Format < DataFormat: // every older format is read as it is; mark the directory so older releases keep off it
		return writeFormat(p)
	}
	return nil
}

func writeFormat(p string) error {
	b, _ := json.Marshal(map[string]int{"format": DataFormat})
	return atomicfile.Write(p, 0o644, func(w io.Writer) error { _, err := w.Write(append(b, '\n')); return err })
}

// shardFormat is the format new chunks are coded in: the newest that
// every member of the layout reads, so that during a rolling upgrade no
// node of the previous release meets a shard it cannot decode. Members a
// previous release added to the layout advertise nothing (Plain).
func shardFormat(l raftstore.Layout) erasure.Format {
	f := erasure.Newest
	for _, m := range l.Nodes {
		f = min(f, max(erasure.Plain, erasure.Format(m.ShardFormat)))
	}
	return f
}

// CanPropose reports whether every member of the cluster applies c's
// version, so that c may be proposed (an older alternative otherwise).
func (n *Node) CanPropose(c raftstore.Command) bool {
	l, err := n.meta.Layout()
	return err == nil && everyMemberApplies(l, c.Version())
}

// everyMemberApplies reports whether every member of l applies commands of
// version v (raftstore.CommandVersion).
func everyMemberApplies(l raftstore.Layout, v int) bool {
	for _, m := range l.Nodes {
		if max(1, m.Commands) < v {
			return false
		}
	}
	return true
}

// chunkFormat is the format chunk c's shards were coded in.
func chunkFormat(c raftstore.Chunk) erasure.Format {
	return max(erasure.Plain, erasure.Format(c.Format))
}
