package node

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/raftstore"
)

func TestCombinations(t *testing.T) {
	var got [][]int
	for c := range combinations(4, 2) {
		got = append(got, slices.Clone(c))
	}
	want := [][]int{{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("got %v", got)
	}
	count := 0
	for range combinations(9, 6) {
		count++
	}
	if count != 84 {
		t.Fatalf("C(9,6) = %d", count)
	}
	for range combinations(2, 3) {
		t.Fatal("a 3-subset of 2")
	}
}

// TestFindGoodShards: shards that pass their own checks but are wrong
// (forged) are found by decoding k-subsets against the chunk's ID, as long
// as k honest shards remain.
func TestFindGoodShards(t *testing.T) {
	codec, err := erasure.New(6, 3)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20+123)
	rand.NewChaCha8([32]byte{3}).Read(data)
	st := codec.NewStripe(len(data))
	copy(st.Buffer(), data)
	st.SetLen(len(data))
	if err := st.Encode(erasure.Dispersed); err != nil {
		t.Fatal(err)
	}
	c := raftstore.Chunk{ID: blob.Sum(data), Len: int64(len(data)), Format: uint8(erasure.Dispersed)}
	honest := make([][]byte, 9)
	for i := range honest {
		_, p := st.Shard(c.ID, i)
		honest[i] = slices.Clone(p)
	}
	for _, tc := range []struct {
		forged []int
		ok     bool
	}{{nil, true}, {[]int{0}, true}, {[]int{2, 7}, true}, {[]int{0, 1, 8}, true}, {[]int{0, 3, 5, 6}, false}} {
		shards := make([][]byte, 9)
		for i := range shards {
			shards[i] = slices.Clone(honest[i])
		}
		for _, i := range tc.forged {
			shards[i][10] ^= 0xff
		}
		good, plain, bad := findGoodShards(codec, shards, c, []byte("x"))
		if (good != nil) != tc.ok {
			t.Fatalf("forged %v: found a good set = %v", tc.forged, good != nil)
		}
		if !tc.ok {
			continue
		}
		if !bytes.Equal(plain, append([]byte("x"), data...)) {
			t.Errorf("forged %v: decoded chunk differs", tc.forged)
		}
		if !slices.Equal(bad, tc.forged) {
			t.Errorf("forged %v: reported bad %v", tc.forged, bad)
		}
		for i := range good {
			if !bytes.Equal(good[i], honest[i]) {
				t.Errorf("forged %v: shard %d not restored", tc.forged, i)
			}
		}
	}
}

// TestShardFormatWaitsForEveryMember: chunks are written Dispersed only
// once every member of the layout reads it (a rolling upgrade's old nodes
// advertise nothing).
func TestShardFormatWaitsForEveryMember(t *testing.T) {
	l := raftstore.Layout{Nodes: []raftstore.Member{{ShardFormat: uint8(erasure.Dispersed)}, {ShardFormat: uint8(erasure.Dispersed)}}}
	if f := shardFormat(l); f != erasure.Dispersed {
		t.Fatalf("all members read Dispersed: writing %s", f)
	}
	l.Nodes = append(l.Nodes, raftstore.Member{})
	if f := shardFormat(l); f != erasure.Plain {
		t.Fatalf("a member of the previous release: writing %s", f)
	}
	if f := chunkFormat(raftstore.Chunk{}); f != erasure.Plain {
		t.Fatalf("a chunk recorded before formats: %s", f)
	}
}
