package raftstore

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

func openFSM(t *testing.T) *fsm {
	t.Helper()
	db, err := badger.Open(badgerOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f, err := newFSM(db)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestApplyCoversEveryCommand: the apply switch has a case for every
// operation a Command can hold (adding a field without a case fails here).
func TestApplyCoversEveryCommand(t *testing.T) {
	f := openFSM(t)
	typ := reflect.TypeFor[Command]()
	ops := 0
	for i := range typ.NumField() {
		field := typ.Field(i)
		if field.Type.Kind() != reflect.Pointer {
			continue
		}
		ops++
		var c Command
		reflect.ValueOf(&c).Elem().Field(i).Set(reflect.New(field.Type.Elem()))
		err := f.db.Update(func(txn *badger.Txn) error {
			if res := apply(txn, c); errors.Is(res.Err, errUnknownCommand) {
				t.Errorf("Command.%s has no apply case", field.Name)
			}
			return errRejected // leave nothing behind
		})
		if !errors.Is(err, errRejected) {
			t.Fatal(err)
		}
	}
	if ops < 19 {
		t.Fatalf("only %d operations found", ops)
	}
}

// Entries no replica can apply — undecodable, of a newer version, with no
// operation or two — are rejected the same way on every replica: an error
// result, the applied index moves on, nothing else changes, and no panic
// (which would recur on every replica and at every replay).
func TestUnapplicableEntriesAreRejected(t *testing.T) {
	f := openFSM(t)
	blobCmd := PutBlobCommand(testBlob(1))
	two := PutBlobCommand(testBlob(2))
	third := testBlob(3).ID
	two.DeleteBlob = &third
	newer := PutBlobCommand(testBlob(4))
	newer.V = CommandVersion + 1
	encode := func(c Command) []byte { b, _ := json.Marshal(c); return b }
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"undecodable", []byte(`{"put_blob": [`), "undecodable"},
		{"wrong types", []byte(`{"delete_blob": 42}`), "undecodable"},
		{"empty", []byte(`{}`), "0 operations"},
		{"two operations", encode(two), "2 operations"},
		{"newer version", encode(newer), "version 2"},
	}
	for i, c := range cases {
		res, _ := f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: c.data}).(applyResult)
		if res.Err == nil || !strings.Contains(res.Err.Error(), c.want) {
			t.Errorf("%s: result %v, want an error about %q", c.name, res.Err, c.want)
		}
		if f.applied != uint64(i+1) {
			t.Errorf("%s: applied index %d, want %d", c.name, f.applied, i+1)
		}
	}
	blobs := 0
	f.db.View(func(txn *badger.Txn) error {
		return scanTxn(txn, blobKey(testBlob(1).ID)[:2], func(k, v []byte) error { blobs++; return nil })
	})
	if blobs != 0 {
		t.Fatalf("rejected entries left %d blob records", blobs)
	}
	// A good command after them applies normally.
	res, _ := f.Apply(&raft.Log{Type: raft.LogCommand, Index: 10, Data: encode(blobCmd)}).(applyResult)
	if res.Err != nil || res.Blob == nil || res.Blob.ID != testBlob(1).ID {
		t.Fatalf("a good command after rejected ones: %+v", res)
	}
}
