package node

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/placement"
	"github.com/atollstore/atoll/raftstore"
)

// Cluster reports the cluster as this node sees it.
func (n *Node) Cluster(ctx context.Context) api.ClusterInfo {
	layout, _ := n.meta.Layout()
	servers, _ := n.meta.Servers()
	voters := map[blob.NodeID]bool{}
	for _, s := range servers {
		voters[s.ID] = s.Voter
	}
	ci := api.ClusterInfo{Leader: n.meta.Leader(), K: n.cfg.K, M: n.cfg.M, ChunkSize: n.cfg.ChunkSize, LayoutVersion: layout.Version}
	ci.Blobs, ci.StoredBytes, _ = n.meta.Stats()
	members := layout.Nodes
	for _, m := range n.gossip.alive() {
		if _, ok := layout.Member(m.ID); !ok {
			members = append(members, m) // joining, not yet in the layout
		}
	}
	var wg sync.WaitGroup
	ci.Nodes = make([]api.NodeInfo, len(members))
	for i, m := range members {
		lm, inLayout := layout.Member(m.ID)
		placementState := lm.State
		switch {
		case !inLayout:
			placementState = "joining"
		case placementState == raftstore.StateActive:
			placementState = "active"
		}
		if g, ok := n.gossip.member(m.ID); ok {
			m = g
		}
		state := n.gossip.state(m.ID)
		if m.ID == n.cfg.ID {
			state = api.StateAlive
		}
		ci.Nodes[i] = api.NodeInfo{ID: m.ID, Region: m.Region, Zone: m.Zone, Addr: m.API, State: state, Voter: voters[m.ID], InLayout: inLayout, Placement: placementState}
		if state != api.StateDead {
			wg.Go(func() {
				info := n.peerInfo(ctx, m)
				ci.Nodes[i].UsedBytes, ci.Nodes[i].Workers = info.UsedBytes, info.Workers
			})
		}
	}
	wg.Wait()
	for _, ni := range ci.Nodes {
		ci.UsedBytes += ni.UsedBytes
	}
	ci.DegradedChunks = n.degradedChunks(layout)
	ci.Repair = n.repairStatus(ctx)
	ci.Regions = placement.Regions(layout.PlacementNodes())
	ci.ToleratesRegionLoss, ci.Warnings = n.guarantee(layout, voters, ci.Nodes)
	for _, ni := range ci.Nodes {
		if ni.State != api.StateAlive {
			ci.Warnings = append(ci.Warnings, fmt.Sprintf("node %s (%s) is %s", ni.ID, ni.Region, ni.State))
		}
	}
	if ci.Leader == "" {
		ci.Warnings = append(ci.Warnings, "no raft leader: metadata writes are blocked")
	}
	return ci
}

// guarantee says whether the cluster, as it is now, survives losing one
// more region (placement.Policy.Assess).
func (n *Node) guarantee(layout raftstore.Layout, voters map[blob.NodeID]bool, nodes []api.NodeInfo) (bool, []string) {
	alive := map[blob.NodeID]bool{}
	for _, ni := range nodes {
		alive[ni.ID] = ni.State == api.StateAlive // NB: suspect counts as at risk
	}
	members := make([]placement.Member, len(layout.Nodes))
	for i, m := range layout.Nodes {
		members[i] = placement.Member{Node: m.Node, Alive: alive[m.ID], Voter: voters[m.ID]}
	}
	return n.policy.Assess(members)
}

// degradedChunks counts chunks with a shard on a node that is not both
// active in the layout and alive. It reads every chunk record, so a count
// is reused a while (see costly).
func (n *Node) degradedChunks(layout raftstore.Layout) int {
	return n.degraded.get(func() int { return n.countDegraded(layout) })
}

func (n *Node) countDegraded(layout raftstore.Layout) int {
	healthy := map[blob.NodeID]bool{}
	for _, m := range layout.Active() {
		healthy[m.ID] = m.ID == n.cfg.ID || n.gossip.state(m.ID) != api.StateDead
	}
	count := 0
	n.meta.Chunks(func(c raftstore.Chunk, _, _ int) bool {
		for _, id := range c.Shards {
			if !healthy[id] {
				count++
				break
			}
		}
		return true
	})
	return count
}

// repairStatus is the leader's repair progress.
func (n *Node) repairStatus(ctx context.Context) api.RepairStatus {
	if n.meta.IsLeader() {
		return n.repair.get()
	}
	var st api.RepairStatus
	leader, err := n.leader()
	if err != nil {
		return st
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, leader.API+"/internal/repair", nil)
	if err != nil {
		return st
	}
	if resp, err := n.peers.Do(req); err == nil {
		defer drain(resp)
		decodeAnswer(resp, &st)
	}
	return st
}

func (n *Node) peerInfo(ctx context.Context, m raftstore.Member) api.Info {
	if m.ID == n.cfg.ID {
		return n.info()
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var info api.Info
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.API+"/internal/info", nil)
	if err != nil {
		return info
	}
	resp, err := n.peers.Do(req)
	if err != nil {
		return info
	}
	defer drain(resp)
	decodeAnswer(resp, &info)
	return info
}

func (n *Node) handleCluster(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.Cluster(r.Context()))
}

// info is what this node reports of itself to the others.
func (n *Node) info() api.Info {
	return api.Info{ID: n.cfg.ID, UsedBytes: n.shards.Used(), Workers: n.workerStatus()}
}

// costly memoizes a count that is expensive to make: it is reused for 20
// times as long as it took (a 2 ms scan for 40 ms, a 3 s scan of millions
// of chunks for a minute), so however often /metrics and the cluster
// report ask, making it costs at most about 5 % of a core. Concurrent
// callers wait for one computation instead of each running their own.
type costly struct {
	mu    sync.Mutex
	value int
	until time.Time
}

func (c *costly) get(compute func() int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Before(c.until) {
		return c.value
	}
	start := time.Now()
	c.value = compute()
	c.until = time.Now().Add(20 * time.Since(start))
	return c.value
}
