package node

import (
	"context"
	"encoding/json"
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
		_, inLayout := layout.Member(m.ID)
		if g, ok := n.gossip.member(m.ID); ok {
			m = g
		}
		state := n.gossip.state(m.ID)
		if m.ID == n.cfg.ID {
			state = api.StateAlive
		}
		ci.Nodes[i] = api.NodeInfo{ID: m.ID, Region: m.Region, Zone: m.Zone, Addr: m.API, State: state, Voter: voters[m.ID], InLayout: inLayout}
		if state != api.StateDead {
			wg.Go(func() { ci.Nodes[i].UsedBytes = n.peerInfo(ctx, m).UsedBytes })
		}
	}
	wg.Wait()
	for _, ni := range ci.Nodes {
		ci.UsedBytes += ni.UsedBytes
	}
	ci.Regions = placement.Regions(layout.PlacementNodes())
	ci.ToleratesRegionLoss, ci.Warnings = n.guarantee(layout, voters)
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

// guarantee decides whether the cluster survives losing any one region:
// placement must be able to keep at most m shards per region, and the
// voters outside every region must still be a majority.
func (n *Node) guarantee(layout raftstore.Layout, voters map[blob.NodeID]bool) (bool, []string) {
	var warns []string
	ok := true
	regions := placement.Regions(layout.PlacementNodes())
	if !n.policy.ToleratesRegionLoss(layout.PlacementNodes()) {
		ok = false
		warns = append(warns, fmt.Sprintf("%d region(s) cannot hold %d+%d shards with at most %d per region: losing a region can lose data (need %d regions)",
			len(regions), n.cfg.K, n.cfg.M, n.cfg.M, (n.cfg.K+2*n.cfg.M-1)/n.cfg.M))
	}
	total := 0
	perRegion := map[blob.Region]int{}
	for _, m := range layout.Nodes {
		if voters[m.ID] {
			total++
			perRegion[m.Region]++
		}
	}
	for _, r := range regions {
		if total-perRegion[r] <= total/2 {
			ok = false
			warns = append(warns, fmt.Sprintf("losing region %s would lose the raft quorum (%d of %d voters there)", r, perRegion[r], total))
		}
	}
	return ok, warns
}

func (n *Node) peerInfo(ctx context.Context, m raftstore.Member) api.Info {
	if m.ID == n.cfg.ID {
		return api.Info{ID: m.ID, UsedBytes: n.shards.used.Load()}
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
	json.NewDecoder(resp.Body).Decode(&info)
	return info
}

func (n *Node) handleCluster(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.Cluster(r.Context()))
}
