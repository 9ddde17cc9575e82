package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// Key prefixes inside the node's badger DB. Log keys are the prefix plus the
// big-endian index, so byte order is numeric order.
const (
	prefixLog    = 'l'
	prefixStable = 's'
	prefixFSM    = 'f'
)

// logStore implements raft.LogStore and raft.StableStore on badger. Every
// write syncs the DB before it returns, so it is durable — and so is every
// FSM write made before it (badger's logs are sequential), which is what
// lets the FSM write without syncing.
type logStore struct {
	db          *badger.DB
	first, last atomic.Uint64 // cached bounds; 0 when empty
}

var errStableNotFound = errors.New("not found") // NB: raft compares this text

func newLogStore(db *badger.DB) (*logStore, error) {
	s := &logStore{db: db}
	return s, s.loadBounds()
}

func logKey(i uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixLog
	binary.BigEndian.PutUint64(k[1:], i)
	return k
}

func (s *logStore) loadBounds() error {
	return s.db.View(func(txn *badger.Txn) error {
		p := []byte{prefixLog}
		var first, last uint64
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		it.Seek(p)
		if it.ValidForPrefix(p) {
			first = binary.BigEndian.Uint64(it.Item().Key()[1:])
		}
		it.Close()
		rit := txn.NewIterator(badger.IteratorOptions{Prefix: p, Reverse: true})
		rit.Seek(append(p, bytes.Repeat([]byte{0xff}, 8)...))
		if rit.ValidForPrefix(p) {
			last = binary.BigEndian.Uint64(rit.Item().Key()[1:])
		}
		rit.Close()
		s.first.Store(first)
		s.last.Store(last)
		return nil
	})
}

func (s *logStore) FirstIndex() (uint64, error) { return s.first.Load(), nil }
func (s *logStore) LastIndex() (uint64, error)  { return s.last.Load(), nil }

var msgpackHandle = &codec.MsgpackHandle{}

func (s *logStore) GetLog(index uint64, log *raft.Log) error {
	return s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(logKey(index))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return raft.ErrLogNotFound // NB: raft compares by identity; never wrap
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			return codec.NewDecoderBytes(v, msgpackHandle).Decode(log)
		})
	})
}

func (s *logStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

// StoreLogs writes logs in order in as few transactions as fit; a crash
// leaves a contiguous prefix.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for _, l := range logs {
		var buf []byte
		if err := codec.NewEncoderBytes(&buf, msgpackHandle).Encode(l); err != nil {
			return err
		}
		k := logKey(l.Index)
		err := txn.Set(k, buf)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err = txn.Commit(); err != nil {
				return err
			}
			txn = s.db.NewTransaction(true)
			err = txn.Set(k, buf)
		}
		if err != nil {
			return err
		}
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	if err := s.db.Sync(); err != nil {
		return err
	}
	if s.first.Load() == 0 || logs[0].Index < s.first.Load() {
		s.first.Store(logs[0].Index)
	}
	if li := logs[len(logs)-1].Index; li > s.last.Load() {
		s.last.Store(li)
	}
	return nil
}

// DeleteRange removes logs min..max inclusive.
func (s *logStore) DeleteRange(min, max uint64) error {
	var keys [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		p := []byte{prefixLog}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		defer it.Close()
		for it.Seek(logKey(min)); it.ValidForPrefix(p); it.Next() {
			k := it.Item().KeyCopy(nil)
			if binary.BigEndian.Uint64(k[1:]) > max {
				break
			}
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for _, k := range keys {
		err := txn.Delete(k)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err = txn.Commit(); err != nil {
				return err
			}
			txn = s.db.NewTransaction(true)
			err = txn.Delete(k)
		}
		if err != nil {
			return err
		}
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	if err := s.db.Sync(); err != nil {
		return err
	}
	return s.loadBounds()
}

func stableKey(k []byte) []byte { return append([]byte{prefixStable}, k...) }

func (s *logStore) Set(k, v []byte) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(stableKey(k), v) }); err != nil {
		return err
	}
	return s.db.Sync()
}

func (s *logStore) Get(k []byte) ([]byte, error) {
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(stableKey(k))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return errStableNotFound
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	return v, err
}

func (s *logStore) SetUint64(k []byte, v uint64) error {
	return s.Set(k, binary.BigEndian.AppendUint64(nil, v))
}

func (s *logStore) GetUint64(k []byte) (uint64, error) {
	v, err := s.Get(k)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, errors.New("raftstore: stable value is not a uint64")
	}
	return binary.BigEndian.Uint64(v), nil
}
