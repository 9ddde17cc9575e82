package node

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/placement"
	"github.com/atollstore/atoll/raftstore"
	"github.com/hashicorp/memberlist"
)

// gossip tracks cluster membership with memberlist. Each node advertises a
// small JSON record (well under memberlist's 512-byte metadata limit).
//
// memberlist calls the event methods on its own goroutines with its locks
// held; they only update gossip's map and never call back into memberlist.
type gossip struct {
	ml      *memberlist.Memberlist
	meta    *metaDelegate
	keyring *memberlist.Keyring // nil: gossip in the clear
	port    int                 // bound gossip port (NB: memberlist's LocalNode is live state; reading it races UpdateNode)

	mu      sync.Mutex
	members map[blob.NodeID]*memberInfo
	// failures remembers data-path errors: a node gossip still calls alive
	// but that failed a request within suspectFor, and has not answered one
	// since, is reported (and ranked) as suspect.
	failures   map[blob.NodeID]time.Time
	suspectFor time.Duration
}

type memberInfo struct {
	raftstore.Member
	formed bool // has raft state: part of a formed cluster
	alive  bool
	since  time.Time
}

// gossipMeta is what a node advertises.
type gossipMeta struct {
	raftstore.Member
	Formed bool `json:"formed,omitempty"`
}

// newGossip starts memberlist. With keys (primary first) every gossip
// message and stream is encrypted and authenticated (AES-256-GCM, the
// keyring's); a process without a key cannot join or be heard.
func newGossip(self raftstore.Member, bind string, port int, t Timings, logOut io.Writer, network *Network, keys [][]byte) (*gossip, error) {
	g := &gossip{members: map[blob.NodeID]*memberInfo{}, failures: map[blob.NodeID]time.Time{}, suspectFor: t.SuspectFor}
	g.meta = &metaDelegate{m: gossipMeta{Member: self}}
	if meta := g.meta.NodeMeta(0); len(meta) > memberlist.MetaMaxSize-16 {
		return nil, fmt.Errorf("node metadata is %d bytes, over memberlist's %d: shorten the node ID, region or zone", len(meta), memberlist.MetaMaxSize)
	}
	c := memberlist.DefaultLANConfig()
	c.Name = string(self.ID)
	c.BindAddr, c.BindPort = bind, port // NB: no AdvertiseAddr, so port 0 advertises the bound port
	c.ProbeInterval, c.ProbeTimeout = t.GossipProbe, t.GossipProbeTimeout
	c.GossipInterval, c.SuspicionMult = t.GossipInterval, t.GossipSuspicionMult
	c.PushPullInterval, c.TCPTimeout = t.GossipPushPull, t.GossipTCPTimeout
	c.DeadNodeReclaimTime = time.Second // a restarted node may come back on a new port
	// NB: memberlist LZW-compresses every message by default, allocating a
	// large buffer each time: a sixth of an idle cluster's CPU, for
	// messages of a few hundred bytes.
	c.EnableCompression = false
	c.Logger = log.New(logOut, "memberlist: ", 0)
	c.Delegate = g.meta
	c.Events = g
	if len(keys) > 0 {
		kr, err := memberlist.NewKeyring(keys[1:], keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip: %w", err)
		}
		c.Keyring, g.keyring = kr, kr
	}
	if network != nil {
		var nt *memberlist.NetTransport
		var err error
		for try := 0; ; try++ { // port 0 may pick a TCP port whose UDP twin is taken
			nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{bind}, BindPort: port, Logger: c.Logger})
			if err == nil || port != 0 || try == 10 {
				break
			}
		}
		if err != nil {
			return nil, err
		}
		c.Transport = &filteredTransport{NetTransport: nt, net: network}
	}
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	g.ml = ml
	g.port = int(ml.LocalNode().Port) // before any UpdateNode can run
	return g, nil
}

// setKeys makes keys (primary first) the keyring: new keys are installed,
// the primary used, keys no longer listed removed — memberlist's rotation
// steps, run on every node by a reload of its credentials.
func (g *gossip) setKeys(keys [][]byte) error {
	kr := g.keyring
	if kr == nil || len(keys) == 0 {
		return errors.New("gossip: encryption can only be configured at start")
	}
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return err
		}
	}
	if err := kr.UseKey(keys[0]); err != nil {
		return err
	}
	for _, k := range kr.GetKeys() {
		if !slices.ContainsFunc(keys, func(o []byte) bool { return bytes.Equal(o, k) }) {
			if err := kr.RemoveKey(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// Port is the gossip port actually bound.
func (g *gossip) Port() int { return g.port }

func (g *gossip) NotifyJoin(n *memberlist.Node)   { g.update(n, true) }
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.update(n, true) }
func (g *gossip) NotifyLeave(n *memberlist.Node)  { g.update(n, false) }

func (g *gossip) update(n *memberlist.Node, alive bool) {
	var gm gossipMeta
	if err := json.Unmarshal(n.Meta, &gm); err != nil || gm.ID == "" {
		return // not an Atoll node
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	cur := g.members[gm.ID]
	if cur == nil || cur.alive != alive {
		g.members[gm.ID] = &memberInfo{Member: gm.Member, formed: gm.Formed, alive: alive, since: time.Now()}
		if alive {
			delete(g.failures, gm.ID)
		}
		return
	}
	cur.Member, cur.formed = gm.Member, gm.Formed
}

// setFormed advertises that this node belongs to a formed cluster.
func (g *gossip) setFormed() {
	if g.meta.setFormed() {
		g.ml.UpdateNode(time.Second)
	}
}

// anyFormed reports whether a live member belongs to a formed cluster.
func (g *gossip) anyFormed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.members {
		if m.alive && m.formed {
			return true
		}
	}
	return false
}

// alive returns the members gossip considers alive, sorted by ID.
func (g *gossip) alive() []raftstore.Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []raftstore.Member
	for _, m := range g.members {
		if m.alive {
			out = append(out, m.Member)
		}
	}
	sortMembers(out)
	return out
}

// state reports a node's liveness.
func (g *gossip) state(id blob.NodeID) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.members[id]
	switch {
	case m == nil || !m.alive:
		return api.StateDead
	case time.Since(g.failures[id]) < g.suspectFor:
		return api.StateSuspect
	}
	return api.StateAlive
}

// goneSince returns when gossip last saw id die; a node it never saw
// counts as gone since this node started.
func (g *gossip) goneSince(id blob.NodeID, started time.Time) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m := g.members[id]; m != nil && !m.alive {
		return m.since
	}
	return started
}

// member returns what gossip knows of id.
func (g *gossip) member(id blob.NodeID) (raftstore.Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.members[id]
	if m == nil {
		return raftstore.Member{}, false
	}
	return m.Member, true
}

// failed records a data-path failure talking to id.
func (g *gossip) failed(id blob.NodeID) {
	g.mu.Lock()
	g.failures[id] = time.Now()
	g.mu.Unlock()
}

// succeeded records that id answered a data-path request.
func (g *gossip) succeeded(id blob.NodeID) {
	g.mu.Lock()
	if _, ok := g.failures[id]; ok {
		delete(g.failures, id)
	}
	g.mu.Unlock()
}

func (g *gossip) join(seeds []string) (int, error) { return g.ml.Join(seeds) }

func (g *gossip) shutdown(graceful bool) {
	if graceful {
		g.ml.Leave(2 * time.Second)
	}
	g.ml.Shutdown()
}

// metaDelegate serves this node's metadata to memberlist.
type metaDelegate struct {
	mu sync.Mutex
	m  gossipMeta
}

func (d *metaDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, _ := json.Marshal(d.m)
	return b
}

func (d *metaDelegate) setFormed() (changed bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	changed, d.m.Formed = !d.m.Formed, true
	return changed
}

func (d *metaDelegate) NotifyMsg([]byte)                           {}
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *metaDelegate) LocalState(join bool) []byte                { return nil }
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

func sortMembers(ms []raftstore.Member) {
	slices.SortFunc(ms, func(a, b raftstore.Member) int { return cmp.Compare(a.ID, b.ID) })
}

// placementNodes converts members for placement.
func placementNodes(ms []raftstore.Member) []placement.Node {
	out := make([]placement.Node, len(ms))
	for i, m := range ms {
		out[i] = m.Node
	}
	return out
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
