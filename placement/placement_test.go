package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/atollstore/atoll/blob"
)

func grid(regions, perRegion int) []Node {
	var ns []Node
	for r := range regions {
		for i := range perRegion {
			ns = append(ns, Node{
				ID:     blob.NodeID(fmt.Sprintf("r%d-n%d", r, i)),
				Region: blob.Region(fmt.Sprintf("r%d", r)),
				Zone:   blob.Zone(fmt.Sprintf("z%d", i%2)),
			})
		}
	}
	return ns
}

func ids(n int) []blob.ID {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]blob.ID, n)
	for i := range out {
		for j := range out[i] {
			out[i][j] = byte(r.Uint32())
		}
	}
	return out
}

func regionOf(nodes []Node) map[blob.NodeID]blob.Region {
	m := map[blob.NodeID]blob.Region{}
	for _, n := range nodes {
		m[n.ID] = n.Region
	}
	return m
}

func TestRulesHold(t *testing.T) {
	p := Policy{6, 3}
	for _, tc := range []struct {
		regions, per   int
		maxPerRegion   int
		distinct, tolr bool
	}{
		{3, 3, 3, true, true},
		{3, 5, 3, true, true},
		{4, 3, 3, true, true},
		{5, 2, 3, true, true},
		{2, 3, 5, false, false}, // region down: 6 nodes for 9 shards
		{2, 6, 5, true, false},
		{1, 3, 9, false, false},
	} {
		nodes := grid(tc.regions, tc.per)
		reg := regionOf(nodes)
		if got := p.ToleratesRegionLoss(nodes); got != tc.tolr {
			t.Errorf("%dx%d: ToleratesRegionLoss=%v, want %v", tc.regions, tc.per, got, tc.tolr)
		}
		for _, id := range ids(500) {
			a, err := p.Place(nodes, id)
			if err != nil {
				t.Fatal(err)
			}
			perRegion := map[blob.Region]int{}
			perNode := map[blob.NodeID]int{}
			for _, n := range a {
				if n == "" {
					t.Fatalf("%dx%d: empty slot in %v", tc.regions, tc.per, a)
				}
				perRegion[reg[n]]++
				perNode[n]++
			}
			for r, c := range perRegion {
				if c > tc.maxPerRegion {
					t.Fatalf("%dx%d: region %s holds %d shards of %v", tc.regions, tc.per, r, c, a)
				}
			}
			maxNode := 1
			if !tc.distinct {
				maxNode = (p.N() + len(nodes) - 1) / len(nodes)
			}
			for n, c := range perNode {
				if c > maxNode {
					t.Fatalf("%dx%d: node %s holds %d shards of %v", tc.regions, tc.per, n, c, a)
				}
			}
			b, _ := p.Place(nodes, id)
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Fatalf("placement not deterministic: %v vs %v", a, b)
			}
		}
	}
}

// TestNoRegionCanDecode: a code with k <= m (3+3) must still keep fewer
// than k shards in every region, or one seized region could decode the
// chunk; 3+3 over three regions is 2+2+2.
func TestNoRegionCanDecode(t *testing.T) {
	p := Policy{3, 3}
	if p.RegionCap() != 2 || p.RegionsNeeded() != 3 || (Policy{6, 3}).RegionCap() != 3 || (Policy{1, 2}).RegionCap() != 1 {
		t.Fatalf("caps: 3+3 %d (needs %d regions), 6+3 %d, 1+2 %d", p.RegionCap(), p.RegionsNeeded(), Policy{6, 3}.RegionCap(), Policy{1, 2}.RegionCap())
	}
	for _, tc := range []struct{ regions, per int }{{3, 3}, {3, 5}, {4, 2}} {
		nodes := grid(tc.regions, tc.per)
		reg := regionOf(nodes)
		if !p.ToleratesRegionLoss(nodes) {
			t.Fatalf("%dx%d: 3+3 does not tolerate a region loss", tc.regions, tc.per)
		}
		for _, id := range ids(500) {
			a, _ := p.Place(nodes, id)
			perRegion := map[blob.Region]int{}
			for _, n := range a {
				if perRegion[reg[n]]++; perRegion[reg[n]] >= p.K {
					t.Fatalf("%dx%d: region %s holds %d shards of %v, enough to decode", tc.regions, tc.per, reg[n], perRegion[reg[n]], a)
				}
			}
		}
	}
	if p.ToleratesRegionLoss(grid(2, 5)) {
		t.Fatal("3+3 over two regions claims to tolerate a region loss")
	}
}

func TestZonesSpread(t *testing.T) {
	// 3 regions x 4 nodes in 2 zones each: 3 shards per region must use both zones.
	p := Policy{6, 3}
	nodes := grid(3, 4)
	zone := map[blob.NodeID]string{}
	for _, n := range nodes {
		zone[n.ID] = string(n.Region) + "/" + string(n.Zone)
	}
	for _, id := range ids(300) {
		a, _ := p.Place(nodes, id)
		zones := map[string]int{}
		for _, n := range a {
			zones[zone[n]]++
		}
		if len(zones) != 6 {
			t.Fatalf("placement %v uses zones %v, want all 6", a, zones)
		}
	}
}

func TestFillKeepsAssigned(t *testing.T) {
	p := Policy{6, 3}
	nodes := grid(3, 3)
	id := ids(1)[0]
	a, _ := p.Place(nodes, id)
	// Node of shard 4 failed: drop it from the candidates and refill slot 4.
	failed := a[4]
	var live []Node
	for _, n := range nodes {
		if n.ID != failed {
			live = append(live, n)
		}
	}
	b := append([]blob.NodeID(nil), a...)
	b[4] = ""
	if err := p.Fill(live, id, b); err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if i != 4 && a[i] != b[i] {
			t.Fatalf("slot %d changed from %s to %s", i, a[i], b[i])
		}
	}
	if b[4] == failed || b[4] == "" {
		t.Fatalf("slot 4 = %q", b[4])
	}
}

// TestAddNodeMovesFairShare: adding one node to N moves about 1/(N+1) of
// all shards, at most 1.5x that.
func TestAddNodeMovesFairShare(t *testing.T) {
	p := Policy{6, 3}
	for _, tc := range []struct{ regions, per int }{{3, 3}, {3, 5}, {4, 4}, {5, 4}} {
		before := grid(tc.regions, tc.per)
		after := append(append([]Node(nil), before...), Node{ID: "new", Region: "r0", Zone: "z0"})
		moved, total := 0, 0
		for _, id := range ids(4000) {
			a, _ := p.Place(before, id)
			b, _ := p.Place(after, id)
			old := map[blob.NodeID]bool{}
			for _, n := range a {
				old[n] = true
			}
			for _, n := range b {
				if !old[n] {
					moved++
				}
			}
			total += p.N()
		}
		frac := float64(moved) / float64(total)
		ideal := 1 / float64(len(before)+1)
		t.Logf("%dx%d + 1 node: moved %.4f of shards, ideal %.4f (ratio %.2f)", tc.regions, tc.per, frac, ideal, frac/ideal)
		if frac > 1.5*ideal {
			t.Errorf("%dx%d: moved %.4f, more than 1.5x the ideal %.4f", tc.regions, tc.per, frac, ideal)
		}
		if moved == 0 {
			t.Errorf("%dx%d: the new node received nothing", tc.regions, tc.per)
		}
	}
}

func TestWeightsSkewLoad(t *testing.T) {
	// One region, 3 of 8 nodes per chunk: a weight-3 node must win clearly more often.
	p := Policy{1, 2}
	nodes := []Node{{ID: "big", Region: "r", Weight: 3}}
	for i := range 7 {
		nodes = append(nodes, Node{ID: blob.NodeID(fmt.Sprint("n", i)), Region: "r", Weight: 1})
	}
	count := map[blob.NodeID]int{}
	for _, id := range ids(6000) {
		a, _ := p.Place(nodes, id)
		for _, n := range a {
			count[n]++
		}
	}
	if count["big"] <= count["n0"]*2 {
		t.Fatalf("weight 3 node got %d shards vs %d for weight 1", count["big"], count["n0"])
	}
}

func BenchmarkPlace3x3(b *testing.B) {
	p := Policy{6, 3}
	nodes := grid(3, 3)
	id := ids(1)[0]
	for b.Loop() {
		p.Place(nodes, id)
	}
}
