package placement

import (
	"slices"
	"strings"
	"testing"

	"github.com/atollstore/atoll/blob"
)

func TestRegionsNeeded(t *testing.T) {
	for _, c := range []struct{ k, m, want int }{
		{6, 3, 3}, {4, 2, 3}, {2, 1, 3}, {10, 4, 4}, {1, 1, 2}, {8, 4, 3}, {12, 4, 4},
	} {
		p := Policy{c.k, c.m}
		if got := p.RegionsNeeded(); got != c.want {
			t.Errorf("%d+%d: RegionsNeeded = %d, want %d", c.k, c.m, got, c.want)
		}
		// It is the smallest region count that tolerates a region's loss.
		if !p.ToleratesRegionLoss(grid(c.want, 1)) || (c.want > 1 && p.ToleratesRegionLoss(grid(c.want-1, 1))) {
			t.Errorf("%d+%d: RegionsNeeded disagrees with ToleratesRegionLoss", c.k, c.m)
		}
	}
}

func without(nodes []Node, drop ...blob.NodeID) []Node {
	return slices.DeleteFunc(slices.Clone(nodes), func(n Node) bool { return slices.Contains(drop, n.ID) })
}

func TestTarget(t *testing.T) {
	p := Policy{6, 3}
	full := grid(3, 3)
	id := ids(1)[0]
	placed, err := p.Place(full, id)
	if err != nil {
		t.Fatal(err)
	}
	moved := func(from, to []blob.NodeID) int {
		n := 0
		for i := range from {
			if from[i] != to[i] {
				n++
			}
		}
		return n
	}
	cases := []struct {
		name    string
		nodes   []Node
		current []blob.NodeID
		// want: nil, or how many shards move and a check on the result
		wantNil   bool
		wantMoved int
		maxRegion int
	}{
		{name: "already placed", nodes: full, current: placed, wantNil: true},
		{name: "one node dead", nodes: without(full, placed[0]), current: placed, wantMoved: 1, maxRegion: 3},
		{name: "draining node leaves the active set", nodes: without(full, placed[8]), current: placed, wantMoved: 1, maxRegion: 3},
		{name: "region down: fewer regions than needed", nodes: without(full, "r0-n0", "r0-n1", "r0-n2"), current: placed, wantMoved: 3, maxRegion: 5},
		{name: "record of another policy", nodes: full, current: placed[:5], wantNil: true},
		{name: "no nodes", nodes: nil, current: placed, wantNil: true},
	}
	region := regionOf(full)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			to := p.Target(c.nodes, id, c.current)
			if c.wantNil {
				if to != nil {
					t.Fatalf("Target = %v, want nil", to)
				}
				return
			}
			if got := moved(c.current, to); got != c.wantMoved {
				t.Fatalf("%d shards move (%v -> %v), want %d", got, c.current, to, c.wantMoved)
			}
			live := map[blob.NodeID]bool{} // the active nodes
			for _, n := range c.nodes {
				live[n.ID] = true
			}
			per := map[blob.Region]int{}
			for i, n := range to {
				if !live[n] {
					t.Fatalf("shard %d targets %s, not an active node", i, n)
				}
				per[region[n]]++
			}
			for r, count := range per {
				if count > c.maxRegion {
					t.Fatalf("region %s holds %d shards, limit %d: %v", r, count, c.maxRegion, to)
				}
			}
			// A second pass over the same nodes has nothing left to do.
			if again := p.Target(c.nodes, id, to); again != nil {
				t.Fatalf("not a fixed point: %v then %v", to, again)
			}
		})
	}
}

// Adding a node moves only the shards it wins, about its fair share.
func TestTargetGrowthMovesOnlyToNewNode(t *testing.T) {
	p := Policy{6, 3}
	before := grid(3, 3)
	after := append(slices.Clone(before), Node{ID: "r0-new", Region: "r0", Zone: "z1"})
	movedShards := 0
	for _, id := range ids(300) {
		cur, _ := p.Place(before, id)
		to := p.Target(after, id, cur)
		for i := range to {
			if to[i] != cur[i] {
				movedShards++
				if to[i] != "r0-new" {
					t.Fatalf("chunk %s: shard %d moved to %s, not to the new node", id, i, to[i])
				}
			}
		}
	}
	if frac := float64(movedShards) / float64(300*9); frac < 0.05 || frac > 0.2 {
		t.Fatalf("%.1f%% of shards moved to one new node of 10 (fair share 10%%)", 100*frac)
	}
}

func members(alive func(Node) bool, voters ...blob.NodeID) []Member {
	var out []Member
	for _, n := range grid(3, 3) {
		out = append(out, Member{Node: n, Alive: alive(n), Voter: slices.Contains(voters, n.ID)})
	}
	return out
}

func TestAssess(t *testing.T) {
	all := func(Node) bool { return true }
	spread := []blob.NodeID{"r0-n0", "r0-n1", "r1-n0", "r1-n1", "r2-n0"} // 2+2+1, as DesiredVoters picks
	cases := []struct {
		name    string
		members []Member
		ok      bool
		warns   []string // substrings, in order
	}{
		{"healthy 3x3", members(all, spread...), true, nil},
		{"a region down", members(func(n Node) bool { return n.Region != "r2" }, spread...), false,
			[]string{"1 region(s) entirely down", "span 2 region(s)", "losing region r0 would lose the raft quorum", "losing region r1 would lose the raft quorum"}},
		{"voters crowded in one region", members(all, "r0-n0", "r0-n1", "r0-n2", "r1-n0", "r2-n0"), false,
			[]string{"losing region r0 would lose the raft quorum (3 of 5 live voters are there, 3 needed)"}},
		{"one node suspect", members(func(n Node) bool { return n.ID != "r1-n2" }, spread...), true, nil},
		{"a voter down", members(func(n Node) bool { return n.ID != "r2-n0" }, spread...), false,
			[]string{"losing region r0 would lose the raft quorum", "losing region r1 would lose the raft quorum"}},
		{"two regions only", slices.DeleteFunc(members(all, spread...), func(m Member) bool { return m.Region == "r2" }), false,
			[]string{"span 2 region(s); 6+3 with at most 3 shards per region needs 3", "losing region r0 would lose the raft quorum (2 of 4", "losing region r1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ok, warns := Policy{6, 3}.Assess(c.members)
			if ok != c.ok || len(warns) != len(c.warns) {
				t.Fatalf("Assess = %v, %q; want %v with %d warnings", ok, warns, c.ok, len(c.warns))
			}
			for i, w := range c.warns {
				if !strings.Contains(warns[i], w) {
					t.Errorf("warning %d = %q, want it to contain %q", i, warns[i], w)
				}
			}
		})
	}
}

func TestRankReads(t *testing.T) {
	holders := map[blob.NodeID]Holder{
		"me":        {Region: "eu", Local: true},
		"eu-peer":   {Region: "eu"},
		"us-peer":   {Region: "us"},
		"eu-sus":    {Region: "eu", Health: Suspect},
		"us-dead":   {Region: "us", Health: Dead},
		"eu-dead":   {Region: "eu", Health: Dead},
		"ap-peer":   {Region: "ap"},
		"elsewhere": {Region: "us", Local: true}, // the reader itself, in another region's list: local wins
	}
	lookup := func(id blob.NodeID) (Holder, bool) { h, ok := holders[id]; return h, ok }
	cases := []struct {
		name string
		locs []blob.NodeID
		k    int
		want []int
	}{
		{"local and own region first, data before parity", []blob.NodeID{"us-peer", "eu-peer", "me", "ap-peer", "eu-peer"}, 3, []int{1, 2, 4, 0, 3}},
		{"suspect after live, dead last", []blob.NodeID{"eu-dead", "eu-sus", "us-peer", "us-dead"}, 2, []int{2, 1, 0, 3}},
		{"unknown holders left out", []blob.NodeID{"gone", "eu-peer", "gone", "us-peer"}, 2, []int{1, 3}},
		{"ties keep index order", []blob.NodeID{"us-peer", "ap-peer", "us-peer"}, 3, []int{0, 1, 2}},
		{"local in another region", []blob.NodeID{"us-peer", "elsewhere"}, 2, []int{1, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := RankReads(c.locs, c.k, "eu", lookup)
			if !slices.Equal(got, c.want) {
				t.Fatalf("RankReads = %v, want %v", got, c.want)
			}
		})
	}
}
