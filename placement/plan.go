package placement

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/atollstore/atoll/blob"
)

// RegionsNeeded is how many regions the nodes must span for every chunk to
// keep at most RegionCap shards per region: ceil(n/RegionCap).
func (p Policy) RegionsNeeded() int { return (p.N() + p.RegionCap() - 1) / p.RegionCap() }

// Target returns where chunk id's shards should be, given their current
// locations, or nil if they already are there. It is the placement over
// nodes, matched against current so that a node keeping a shard keeps its
// index: only what must move, moves. nil also when current does not have n
// entries (a record of another policy) or no placement exists.
func (p Policy) Target(nodes []Node, id blob.ID, current []blob.NodeID) []blob.NodeID {
	ideal, err := p.Place(nodes, id)
	if err != nil || len(current) != len(ideal) {
		return nil
	}
	want := map[blob.NodeID]int{}
	for _, n := range ideal {
		want[n]++
	}
	to := make([]blob.NodeID, len(ideal))
	for i, cur := range current {
		if want[cur] > 0 {
			to[i] = cur
			want[cur]--
		}
	}
	var spare []blob.NodeID
	for _, n := range ideal {
		if want[n] > 0 {
			spare = append(spare, n)
			want[n]--
		}
	}
	changed := false
	for i := range to {
		if to[i] == "" {
			to[i], spare = spare[0], spare[1:]
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return to
}

// Member is a node of the layout as the guarantee sees it: placed, alive
// now (suspect counts as at risk), and a raft voter or not.
type Member struct {
	Node
	Alive, Voter bool
}

// Assess decides whether the cluster, as it is now, survives losing one
// more region, and says why not: the live nodes must span enough regions to
// keep at most m shards per region, and the live voters outside any one
// region must still be a majority of all voters. A region that is down
// therefore voids the guarantee until it returns (or repair restores it).
func (p Policy) Assess(members []Member) (ok bool, warnings []string) {
	var all, live []Node
	voters, liveVoters := 0, 0
	liveVotersIn := map[blob.Region]int{}
	for _, m := range members {
		all = append(all, m.Node)
		if m.Alive {
			live = append(live, m.Node)
		}
		if m.Voter {
			voters++
			if m.Alive {
				liveVoters++
				liveVotersIn[m.Region]++
			}
		}
	}
	ok = true
	if down := len(Regions(all)) - len(Regions(live)); down > 0 {
		warnings = append(warnings, fmt.Sprintf("%d region(s) entirely down: new chunks are spread over the remaining regions", down))
	}
	if !p.ToleratesRegionLoss(live) {
		ok = false
		warnings = append(warnings, fmt.Sprintf("live nodes span %d region(s); %d+%d with at most %d shards per region needs %d: losing a region can lose data",
			len(Regions(live)), p.K, p.M, p.RegionCap(), p.RegionsNeeded()))
	}
	for _, r := range Regions(live) {
		if liveVoters-liveVotersIn[r] <= voters/2 {
			ok = false
			warnings = append(warnings, fmt.Sprintf("losing region %s would lose the raft quorum (%d of %d live voters are there, %d needed)", r, liveVotersIn[r], liveVoters, voters/2+1))
		}
	}
	return ok, warnings
}

// Health is how a reader sees a shard's holder.
type Health int

const (
	Alive   Health = iota
	Suspect        // failed a request lately
	Dead           // gossip has given up on it
)

// Holder is what a reader knows of a node holding a shard.
type Holder struct {
	Region blob.Region
	Health Health
	Local  bool // the reader itself
}

// RankReads orders the shard indices of a chunk by how cheaply and surely
// they can be read: live before suspect before dead, the reader's own and
// its region's before other regions', data (index < k) before parity (no
// decoding needed), then by index. Shards whose holder is unknown (holder
// returns false) are left out.
func RankReads(locations []blob.NodeID, k int, region blob.Region, holder func(blob.NodeID) (Holder, bool)) []int {
	type cand struct{ index, cost int }
	var cands []cand
	for i, id := range locations {
		h, ok := holder(id)
		if !ok {
			continue
		}
		cost := 0
		switch h.Health {
		case Dead:
			cost += 100
		case Suspect:
			cost += 50
		}
		if !h.Local && h.Region != region {
			cost += 2
		}
		if i >= k {
			cost++
		}
		cands = append(cands, cand{i, cost})
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return cmp.Compare(a.cost, b.cost) })
	out := make([]int, len(cands))
	for i, c := range cands {
		out[i] = c.index
	}
	return out
}
