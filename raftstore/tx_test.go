package raftstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/atollstore/atoll/blob"
	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// TestScanSeesTheTransaction: a write transaction's scan — committed rows
// merged with its own writes — lists exactly what badger's own iterator
// over the transaction lists, for random writes over committed rows and
// random prefixes, starting points and early stops.
func TestScanSeesTheTransaction(t *testing.T) {
	db, err := badger.Open(badgerOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() []byte { // few distinct keys, so writes meet committed rows
		k := []byte{prefixFSM}
		for range 1 + rng.IntN(3) {
			k = append(k, "abc"[rng.IntN(3)])
		}
		return k
	}
	val := func() []byte { return fmt.Appendf(nil, "v%d", rng.IntN(1000)) }
	if err := update(db, func(txn *tx) error {
		for range 20 {
			if err := txn.Set(key(), val()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	type row struct{ k, v string }
	badgers := func(txn *tx, prefix, start []byte, limit int) []row {
		var out []row
		it := txn.Txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Seek(start); it.ValidForPrefix(prefix) && len(out) < limit; it.Next() {
			v, _ := it.Item().ValueCopy(nil)
			out = append(out, row{string(it.Item().Key()), string(v)})
		}
		return out
	}
	ours := func(txn *tx, prefix, start []byte, limit int) []row {
		var out []row
		err := txn.scan(prefix, start, func(k, v []byte) (bool, error) {
			out = append(out, row{string(k), string(v)})
			return len(out) < limit, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for round := range 20 {
		err := update(db, func(txn *tx) error {
			for op := range 40 {
				var err error
				if rng.IntN(3) == 0 {
					err = txn.Delete(key())
				} else {
					err = txn.Set(key(), val())
				}
				if err != nil {
					return err
				}
				prefix := key()[:1+rng.IntN(2)]
				start := append(bytes.Clone(prefix), key()[1:]...)[:len(prefix)+rng.IntN(2)]
				limit := 1 + rng.IntN(30)
				want, got := badgers(txn, prefix, start, limit), ours(txn, prefix, start, limit)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("round %d, op %d: scan of %q from %q (at most %d):\n got %v\nwant %v", round, op, prefix, start, limit, got, want)
				}
			}
			if rng.IntN(4) == 0 {
				return errRejected // some rounds leave nothing behind
			}
			return nil
		})
		if err != nil && err != errRejected {
			t.Fatal(err)
		}
	}
}

// BenchmarkBulkDelete applies three 1,000-key DeleteObjects committed
// together (one transaction), each key's object with a chunk of its own:
// every deleted chunk scans for its tenant rows.
func BenchmarkBulkDelete(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := openFSM(b)
		idx := uint64(0)
		entry := func(c Command) *raft.Log {
			c.V = c.Version()
			data, _ := json.Marshal(c)
			idx++
			return &raft.Log{Index: idx, Type: raft.LogCommand, Data: data}
		}
		if r := f.Apply(entry(CreateBucketCommand(Bucket{Name: "b"}))).(applyResult); r.Err != nil {
			b.Fatal(r.Err)
		}
		var keys []string
		var puts []*raft.Log
		for i := range 3000 {
			keys = append(keys, fmt.Sprint("key", i))
			o := Object{Bucket: "b", Key: keys[i], Size: 10, K: 4, M: 2, Chunks: []Chunk{{ID: blob.Sum(fmt.Append(nil, i)), Len: 10, Shards: []blob.NodeID{"a", "b", "c", "d", "e", "f"}}}}
			puts = append(puts, entry(PutObjectCommand(o)))
		}
		for i := 0; i < len(puts); i += 64 {
			f.ApplyBatch(puts[i:min(i+64, len(puts))])
		}
		var dels []*raft.Log
		for i := 0; i < len(keys); i += 1000 {
			dels = append(dels, entry(DeleteObjectsCommand("b", keys[i:i+1000])))
		}
		b.StartTimer()
		for _, r := range f.ApplyBatch(dels) {
			if err := r.(applyResult).Err; err != nil {
				b.Fatal(err)
			}
		}
	}
}
