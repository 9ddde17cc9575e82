package raftstore

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// FuzzRestore feeds arbitrary snapshots to the state machine's Restore:
// it never panics and never allocates past an entry's bound; a snapshot
// that is refused leaves the store marked as restoring (it will not serve
// half a state), and one that is accepted is readable.
func FuzzRestore(f *testing.F) {
	var ok bytes.Buffer
	for _, s := range []string{"f/layout", `{"version":1}`} {
		ok.Write(binary.AppendUvarint(nil, uint64(len(s))))
		ok.WriteString(s)
	}
	f.Add(ok.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{5, 'a'})
	f.Add([]byte{})
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	fsm, err := newFSM(db)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, snap []byte) {
		if err := fsm.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
			if db.View(func(txn *badger.Txn) error { _, err := txn.Get(keyRestoring); return err }) != nil {
				t.Fatalf("a refused snapshot (%v) left no restoring mark", err)
			}
			return
		}
		var l Layout
		err := view(db, func(txn *tx) error { return getJSON(txn, keyLayout, &l) })
		_ = err // any layout or none; reading must not panic
	})
}
