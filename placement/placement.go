// Package placement decides which nodes hold the shards of a chunk.
//
// It is pure: (nodes, chunk ID) -> node per shard index, with no I/O and no
// clock, so every node computes the same answer from the same layout.
//
// The choice is weighted rendezvous (highest-random-weight) hashing: each
// node scores weight / -ln(u), where u is a uniform hash of (chunk, node),
// and the best-scoring nodes win. Adding a node therefore moves only the
// shards the new node wins — about its fair share.
//
// Rules, in priority order (later rules give way first when the nodes at
// hand cannot satisfy all of them):
//
//  1. distinct nodes (a node holds two shards of a chunk only when fewer
//     than n nodes are available, e.g. during a region outage);
//  2. at most RegionCap shards in any region: at most m, so losing a
//     region loses at most m, and fewer than k, so no region alone holds
//     enough shards to decode (with dispersal, to learn anything);
//  3. spread over zones inside a region.
//
// Data shards (index < k) go to the best-scoring nodes.
package placement

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/atollstore/atoll/blob"
	"github.com/cespare/xxhash/v2"
)

// Node is one storage node as placement sees it.
type Node struct {
	ID     blob.NodeID `json:"id"`
	Region blob.Region `json:"region"`
	Zone   blob.Zone   `json:"zone"`
	// Weight is relative capacity; 0 is treated as 1.
	Weight float64 `json:"weight,omitempty"`
}

// Policy is a k+m erasure-coding policy.
type Policy struct{ K, M int }

// N is the number of shards per chunk.
func (p Policy) N() int { return p.K + p.M }

// RegionCap is the most shards of a chunk one region should hold:
// min(m, k-1), and at least 1.
func (p Policy) RegionCap() int { return max(1, min(p.M, p.K-1)) }

// ToleratesRegionLoss reports whether nodes span enough regions that every
// chunk can keep at most RegionCap shards per region, so that losing any
// one region leaves k shards of every chunk.
func (p Policy) ToleratesRegionLoss(nodes []Node) bool {
	return len(Regions(nodes))*p.RegionCap() >= p.N()
}

// Regions returns the distinct regions of nodes, sorted.
func Regions(nodes []Node) []blob.Region {
	var rs []blob.Region
	for _, n := range nodes {
		if !slices.Contains(rs, n.Region) {
			rs = append(rs, n.Region)
		}
	}
	slices.Sort(rs)
	return rs
}

// Place returns the node for each of the n shards of chunk id.
func (p Policy) Place(nodes []Node, id blob.ID) ([]blob.NodeID, error) {
	assign := make([]blob.NodeID, p.N())
	return assign, p.Fill(nodes, id, assign)
}

// Fill chooses nodes for the empty ("") entries of assign, keeping the
// others: it is used both for a fresh placement and to replace a node that
// failed mid-write. Entries of assign naming nodes not in nodes still count
// toward the region, zone and node limits only if they are in nodes.
func (p Policy) Fill(nodes []Node, id blob.ID, assign []blob.NodeID) error {
	if len(assign) != p.N() {
		return fmt.Errorf("placement: assign has %d slots, want %d", len(assign), p.N())
	}
	if len(nodes) == 0 {
		return fmt.Errorf("placement: %w: no nodes", blob.ErrUnavailable)
	}
	ranked := rank(nodes, id)
	byID := make(map[blob.NodeID]*Node, len(nodes))
	for i := range nodes {
		byID[nodes[i].ID] = &nodes[i]
	}
	perNode := map[blob.NodeID]int{}
	perRegion := map[blob.Region]int{}
	perZone := map[[2]string]int{}
	empty := 0
	add := func(n *Node) {
		perNode[n.ID]++
		perRegion[n.Region]++
		perZone[[2]string{string(n.Region), string(n.Zone)}]++
	}
	for _, a := range assign {
		if a == "" {
			empty++
		} else if n := byID[a]; n != nil {
			add(n)
		}
	}
	next := 0 // next slot to fill
	put := func(n *Node) {
		for assign[next] != "" {
			next++
		}
		assign[next] = n.ID
		add(n)
		empty--
	}
	n := p.N()
	// Caps only grow, so picks from a stricter pass stay valid in later ones.
	for nodeCap := 1; nodeCap <= n; nodeCap++ {
		for regionCap := p.RegionCap(); regionCap <= n; regionCap++ {
			for zoneCap := 1; zoneCap <= n; zoneCap++ {
				for _, c := range ranked {
					if empty == 0 {
						return nil
					}
					if perNode[c.ID] < nodeCap && perRegion[c.Region] < regionCap &&
						perZone[[2]string{string(c.Region), string(c.Zone)}] < zoneCap {
						put(c)
					}
				}
				if empty == 0 {
					return nil
				}
			}
		}
	}
	return nil // unreachable: nodeCap n always fits
}

// rank orders nodes by descending rendezvous score for id.
func rank(nodes []Node, id blob.ID) []*Node {
	type scored struct {
		n     *Node
		score float64
	}
	s := make([]scored, len(nodes))
	for i := range nodes {
		s[i] = scored{&nodes[i], Score(id, nodes[i])}
	}
	slices.SortFunc(s, func(a, b scored) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.n.ID, b.n.ID)
	})
	out := make([]*Node, len(s))
	for i := range s {
		out[i] = s[i].n
	}
	return out
}

// Score is node n's weighted rendezvous score for chunk id.
func Score(id blob.ID, n Node) float64 {
	d := xxhash.New()
	d.Write(id[:])
	d.WriteString(string(n.ID))
	// 53 random bits -> u in (0,1), never 0 or 1.
	u := (float64(d.Sum64()>>11) + 0.5) / (1 << 53)
	w := n.Weight
	if w <= 0 {
		w = 1
	}
	return w / -math.Log(u)
}
