// Package testcluster runs a multi-region Atoll cluster inside one process:
// every node is a real node.Node with its own loopback address
// (127.X.region.index), its own data directory, real TCP, raft and gossip.
// Tests use it to kill nodes or whole regions, restart them, and cut a
// region off the network; `atoll dev` and `atoll demo` use it too.
//
// It does not import package testing, so it can ship in the binary.
package testcluster

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/node"
	"github.com/atollstore/atoll/pki"
	"github.com/atollstore/atoll/s3"
	"github.com/atollstore/atoll/storage"
	"github.com/atollstore/atoll/storage/faulty"
)

// Options configure a cluster.
type Options struct {
	Regions        int // default 3
	NodesPerRegion int // default 3
	K, M           int // default 6+3
	ChunkSize      int // default: node's default
	SmallMax       int // chunks this small use the small code; default: node's (negative: none)
	MaxBlobSize    int64
	SegmentChunks  int           // chunks per segment of a long chunk list; default: node's
	ShardTimeout   time.Duration // per-shard transfer timeout; default: node's
	ClientIdle     time.Duration // a stalled client is cut after this; default: node.LoopbackTimings
	// DeadAfter is the grace before a gone node's shards are rebuilt
	// elsewhere (default here: 1 hour, i.e. no repair unless a test asks).
	DeadAfter time.Duration
	// ScrubInterval and OrphanGrace: see node.Config (defaults here: 1 hour,
	// i.e. no scrubbing or reclaiming unless a test asks).
	ScrubInterval, OrphanGrace time.Duration
	RepairBandwidth            int    // bytes/s; default: node's
	S3Domain                   string // enables virtual-hosted–style S3 requests (s3.Server.Domain)
	Dir                        string // parent of the nodes' data dirs; default: a new temp dir, removed by Close
	// Plaintext runs the nodes without credentials: no TLS anywhere, every
	// endpoint open (the "before" of the mTLS benchmarks). By default the
	// cluster has its own CA, every node a certificate, and gossip a key.
	Plaintext bool
	// ShardFormat: see node.Config (benchmarks comparing formats).
	ShardFormat erasure.Format
	// WAN emulates a wide-area network between the nodes (nil: loopback
	// as it is); timeouts that a round trip must fit in grow with it.
	WAN       *WAN
	Logger    *slog.Logger // default: discard
	LogOutput io.Writer    // raft/memberlist logs; default: discard
}

// RegionNames are the names given to regions, in order.
var RegionNames = []string{"eu-west", "us-east", "ap-south", "sa-east", "af-south", "oc-east"}

// Member is one node slot of the cluster; Node is nil while it is down.
type Member struct {
	ID     blob.NodeID
	Region blob.Region
	IP     string
	Dir    string
	Node   *node.Node
	Net    *node.Network
	// S3 is the node's S3 endpoint (https://IP:port) while it runs.
	S3 string
	// Creds are the node's credentials (nil in a Plaintext cluster); they
	// survive restarts, and Rotate replaces them in place.
	Creds *pki.Creds
	// Disk wraps the node's shard store so tests can inject disk faults
	// (errors, bit flips, latency, torn writes). A restart starts with a
	// fresh one, without faults.
	Disk *faulty.Store

	api, gossip, raft, s3port int // ports, reused on restart
	s3srv                     *http.Server
}

// Cluster is a running test cluster.
type Cluster struct {
	opts      Options
	ownDir    bool
	masterKey []byte      // seals S3 secrets, the same on every node
	pki       *clusterPKI // nil when Plaintext

	mu      sync.Mutex
	members []*Member
}

// Start starts the cluster and waits until it has formed: every node is in
// the layout and the raft voters are in place.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Regions == 0 {
		opts.Regions = 3
	}
	if opts.NodesPerRegion == 0 {
		opts.NodesPerRegion = 3
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range []*time.Duration{&opts.DeadAfter, &opts.ScrubInterval, &opts.OrphanGrace} {
		if *d == 0 {
			*d = time.Hour
		}
	}
	c := &Cluster{opts: opts, masterKey: make([]byte, 32)}
	crand.Read(c.masterKey)
	if !opts.Plaintext {
		var err error
		if c.pki, err = newClusterPKI(); err != nil {
			return nil, err
		}
	}
	if c.opts.Dir == "" {
		d, err := os.MkdirTemp("", "atoll-testcluster-")
		if err != nil {
			return nil, err
		}
		c.opts.Dir, c.ownDir = d, true
	}
	// A random second octet keeps concurrently running clusters apart.
	octet := 10 + rand.IntN(240)
	for r := range opts.Regions {
		region := fmt.Sprintf("region-%d", r+1)
		if r < len(RegionNames) {
			region = RegionNames[r]
		}
		for i := range opts.NodesPerRegion {
			m := &Member{
				ID:     blob.NodeID(fmt.Sprintf("%s-%d", region, i+1)),
				Region: blob.Region(region),
				IP:     fmt.Sprintf("127.%d.%d.%d", octet, r+1, i+1),
			}
			m.Dir = filepath.Join(c.opts.Dir, string(m.ID))
			m.Net = node.NewNetwork(m.IP)
			c.members = append(c.members, m)
		}
	}
	for _, m := range c.members {
		c.shape(m)
	}
	for _, m := range c.members {
		if err := c.start(m); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.WaitFormed(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(m *Member) error {
	var seeds []string
	for _, o := range c.members {
		if o != m && o.Node != nil {
			seeds = append(seeds, o.Node.GossipAddr())
		}
	}
	cfg := node.DefaultConfig()
	cfg.Dir, cfg.ID, cfg.Region, cfg.Zone = m.Dir, m.ID, m.Region, blob.Zone(fmt.Sprintf("%s-z%d", m.Region, len(seeds)%2+1))
	cfg.Bind, cfg.APIPort, cfg.GossipPort, cfg.RaftPort, cfg.EphemeralPorts = m.IP, m.api, m.gossip, m.raft, true
	cfg.Join, cfg.BootstrapExpect = seeds, len(c.members)
	cfg.DeadAfter, cfg.ScrubInterval, cfg.OrphanGrace = c.opts.DeadAfter, c.opts.ScrubInterval, c.opts.OrphanGrace
	cfg.K = cmp.Or(c.opts.K, cfg.K)
	cfg.ShardFormat = c.opts.ShardFormat
	cfg.M = cmp.Or(c.opts.M, cfg.M)
	cfg.ChunkSize = cmp.Or(c.opts.ChunkSize, cfg.ChunkSize)
	cfg.SmallMax = cmp.Or(c.opts.SmallMax, cfg.SmallMax)
	cfg.MaxBlobSize = cmp.Or(c.opts.MaxBlobSize, cfg.MaxBlobSize)
	cfg.SegmentChunks = cmp.Or(c.opts.SegmentChunks, cfg.SegmentChunks)
	cfg.RepairBandwidth = cmp.Or(c.opts.RepairBandwidth, cfg.RepairBandwidth)
	cfg.Timings = node.LoopbackTimings()
	cfg.Timings.ShardTimeout = cmp.Or(c.opts.ShardTimeout, cfg.Timings.ShardTimeout)
	cfg.Timings.ClientIdle = cmp.Or(c.opts.ClientIdle, cfg.Timings.ClientIdle)
	if w := c.opts.WAN; w != nil {
		rtt := 2 * (w.Between.Delay + w.Between.Jitter)
		t := &cfg.Timings
		t.GossipProbeTimeout = max(t.GossipProbeTimeout, 3*rtt)
		t.GossipProbe = max(t.GossipProbe, 2*t.GossipProbeTimeout)
		t.HedgeAfter = max(t.HedgeAfter, 3*rtt)
	}
	cfg.Network, cfg.Logger, cfg.LogOutput, cfg.MasterKey = m.Net, c.opts.Logger, c.opts.LogOutput, c.masterKey
	cfg.WrapStorage = func(s storage.Storage) storage.Storage { m.Disk = faulty.New(s); return m.Disk }
	if c.pki != nil && m.Creds == nil {
		var err error
		if m.Creds, err = c.pki.nodeCreds(m.ID, m.Region, m.IP); err != nil {
			return err
		}
	}
	cfg.Creds = m.Creds
	n, err := node.Start(cfg)
	if err != nil {
		return fmt.Errorf("testcluster: start %s: %w", m.ID, err)
	}
	m.Node = n
	m.api, m.gossip, m.raft = n.Ports()
	ln, err := net.Listen("tcp", net.JoinHostPort(m.IP, strconv.Itoa(m.s3port)))
	if err != nil {
		n.Close()
		m.Node = nil
		return fmt.Errorf("testcluster: S3 listen for %s: %w", m.ID, err)
	}
	m.s3port = ln.Addr().(*net.TCPAddr).Port
	s3h := s3.New(n, c.opts.Logger)
	s3h.Domain = c.opts.S3Domain
	m.s3srv = node.NewHTTPServer(n.Instrument("s3", s3h), cfg.Timings.ClientIdle, c.opts.Logger)
	s3ln := m.Net.Listener(ln)
	m.S3 = "http://" + ln.Addr().String()
	if m.Creds != nil {
		s3ln, m.S3 = tls.NewListener(s3ln, m.Creds.ServerTLS(pki.AnyPeer)), "https://"+ln.Addr().String()
	}
	go m.s3srv.Serve(s3ln)
	return nil
}

// S3URLs returns the S3 endpoints of the running nodes.
func (c *Cluster) S3URLs() []string {
	var out []string
	for _, m := range c.Members() {
		if m.Node != nil {
			out = append(out, m.S3)
		}
	}
	return out
}

// CreateAccessKey makes an access key, limited as req says, through any
// running node.
func (c *Cluster) CreateAccessKey(ctx context.Context, req api.KeyRequest) (api.AccessKey, error) {
	for _, m := range c.Members() {
		if m.Node != nil {
			return m.Node.CreateAccessKey(ctx, req)
		}
	}
	return api.AccessKey{}, errors.New("testcluster: no node running")
}

// WaitFormed waits until a leader has every node in the layout and the
// raft configuration has its voters.
func (c *Cluster) WaitFormed(ctx context.Context) error {
	return c.waitFor(ctx, "cluster to form", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		ci := l.Node.Cluster(ctx)
		voters, inLayout := 0, 0
		for _, n := range ci.Nodes {
			if n.Voter {
				voters++
			}
			if n.InLayout {
				inLayout++
			}
		}
		return inLayout == len(c.members) && voters == min(5, len(c.members))
	})
}

func (c *Cluster) waitFor(ctx context.Context, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("testcluster: waiting for %s: %w", what, ctx.Err())
		case <-time.After(200 * time.Millisecond): // NB: conditions often ask every node for its view
		}
	}
	return nil
}

// AddNode starts a new node in region r (joining the running cluster) and
// returns its slot.
func (c *Cluster) AddNode(r blob.Region) (*Member, error) {
	c.mu.Lock()
	var ip string
	count := 0
	for _, m := range c.members {
		if m.Region == r {
			count++
			ip = m.IP
		}
	}
	if ip == "" {
		c.mu.Unlock()
		return nil, fmt.Errorf("testcluster: no region %s", r)
	}
	parts := strings.Split(ip, ".")
	m := &Member{
		ID:     blob.NodeID(fmt.Sprintf("%s-%d", r, count+1)),
		Region: r,
		IP:     fmt.Sprintf("%s.%s.%s.%d", parts[0], parts[1], parts[2], count+1),
	}
	m.Dir = filepath.Join(c.opts.Dir, string(m.ID))
	m.Net = node.NewNetwork(m.IP)
	c.members = append(c.members, m)
	c.mu.Unlock()
	c.shape(m)
	return m, c.start(m)
}

// Members returns every node slot, up or down.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.members)
}

// Member returns the slot of node id.
func (c *Cluster) Member(id blob.NodeID) *Member {
	for _, m := range c.Members() {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// Regions returns the region names in order.
func (c *Cluster) Regions() []blob.Region {
	var rs []blob.Region
	for _, m := range c.Members() {
		if !slices.Contains(rs, m.Region) {
			rs = append(rs, m.Region)
		}
	}
	return rs
}

// URLs returns the API URLs of the running nodes.
func (c *Cluster) URLs() []string {
	var out []string
	for _, m := range c.Members() {
		if m.Node != nil {
			out = append(out, m.Node.URL())
		}
	}
	return out
}

// Leader returns the running node that is raft leader, or nil.
func (c *Cluster) Leader() *Member {
	for _, m := range c.Members() {
		if m.Node != nil && m.Node.IsLeader() {
			return m
		}
	}
	return nil
}

// WaitLeader waits until some running node is leader.
func (c *Cluster) WaitLeader(ctx context.Context) (*Member, error) {
	var l *Member
	err := c.waitFor(ctx, "a raft leader", func() bool { l = c.Leader(); return l != nil })
	return l, err
}

// KillNode stops node id as a crash would (no graceful leave).
func (c *Cluster) KillNode(id blob.NodeID) error {
	m := c.Member(id)
	if m == nil {
		return fmt.Errorf("testcluster: no node %s", id)
	}
	if m.Node == nil {
		return nil
	}
	m.s3srv.Close()
	err := m.Node.Close()
	m.Node, m.S3 = nil, ""
	return err
}

// RestartNode starts a killed node again from its data directory, on the
// same address and ports.
func (c *Cluster) RestartNode(id blob.NodeID) error {
	m := c.Member(id)
	if m == nil {
		return fmt.Errorf("testcluster: no node %s", id)
	}
	if m.Node != nil {
		return nil
	}
	return c.start(m)
}

// KillRegion kills every node of region r.
func (c *Cluster) KillRegion(r blob.Region) error {
	var errs []error
	for _, m := range c.Members() {
		if m.Region == r {
			errs = append(errs, c.KillNode(m.ID))
		}
	}
	return errors.Join(errs...)
}

// RestartRegion restarts every killed node of region r.
func (c *Cluster) RestartRegion(r blob.Region) error {
	var errs []error
	for _, m := range c.Members() {
		if m.Region == r {
			errs = append(errs, c.RestartNode(m.ID))
		}
	}
	return errors.Join(errs...)
}

// Partition cuts region r off from the other regions: no traffic of any
// kind passes between them, in either direction, until Heal; attempts fail
// at once. Nodes inside r still reach each other, and clients still reach
// every node.
func (c *Cluster) Partition(r blob.Region) { c.cut(r, (*node.Network).Block) }

// Blackhole cuts region r off like Partition, except that traffic across
// the cut is silently dropped: calls hang until their timeouts, as behind
// a firewall that drops packets or a seized data center.
func (c *Cluster) Blackhole(r blob.Region) { c.cut(r, (*node.Network).Blackhole) }

func (c *Cluster) cut(r blob.Region, block func(*node.Network, ...string)) {
	var inside, outside []string
	for _, m := range c.Members() {
		if m.Region == r {
			inside = append(inside, m.IP)
		} else {
			outside = append(outside, m.IP)
		}
	}
	for _, m := range c.Members() {
		if m.Region == r {
			block(m.Net, outside...)
		} else {
			block(m.Net, inside...)
		}
	}
}

// Heal removes every partition.
func (c *Cluster) Heal() {
	for _, m := range c.Members() {
		m.Net.Heal()
	}
}

// Close stops every node and removes the data unless Options.Dir was given.
func (c *Cluster) Close() error {
	var errs []error
	for _, m := range c.Members() {
		errs = append(errs, c.KillNode(m.ID))
	}
	if c.ownDir {
		errs = append(errs, os.RemoveAll(c.opts.Dir))
	}
	return errors.Join(errs...)
}

// WAN describes emulated links (node.Link: delay each way, jitter,
// bandwidth): Between regions and Within one.
type WAN struct{ Between, Within node.Link }

// shape sets the WAN links between m and every other member, both ways.
func (c *Cluster) shape(m *Member) {
	w := c.opts.WAN
	if w == nil {
		return
	}
	for _, o := range c.Members() {
		if o == m {
			continue
		}
		l := w.Between
		if o.Region == m.Region {
			l = w.Within
		}
		m.Net.Shape(l, o.IP)
		o.Net.Shape(l, m.IP)
	}
}
