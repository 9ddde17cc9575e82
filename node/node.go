// Package node is the Atoll storage daemon: it wires gossip membership, the
// shard store (package storage: this node's disk, its peers' over HTTP),
// the raft metadata store and the HTTP API together, and runs the put and
// get data paths. Decisions are made by pure planners elsewhere (placement:
// where shards go, which to read first, whether the cluster survives a
// region's loss); node carries them out.
//
// Every long-lived goroutine of a node runs under its root context and is
// stopped by Close or Shutdown: the HTTP server (plus one per request), the
// join loop (until the first successful join), and four workers (worker.go)
// whose status `atoll cluster --json` reports —
//
//   - control: bootstrap, the fragility warning, and on the leader layout
//     upkeep and raft voter reconciliation;
//   - reconnect: re-joins layout members gossip believes dead;
//   - repair (leader only): the reconciler (repair.go), then dropping
//     abandoned staged chunks;
//   - scrub: re-verifies this node's shards and reclaims orphans (scrub.go);
//
// plus those of memberlist, raft and badger. Timings holds every period and
// timeout; DefaultConfig every default.
package node

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/pki"
	"github.com/atollstore/atoll/placement"
	"github.com/atollstore/atoll/raftstore"
	"github.com/atollstore/atoll/storage"
	"github.com/atollstore/atoll/storage/disk"
)

// Default ports, all on the bind address.
const (
	DefaultAPIPort    = 8700
	DefaultGossipPort = 8701
	DefaultRaftPort   = 8702
)

// Config configures a node. Start it from DefaultConfig, the single source
// of defaults (cmd/atoll's flags and testcluster read it); zero fields of a
// Config built from scratch get the same defaults.
type Config struct {
	Dir    string      // data directory (required)
	ID     blob.NodeID // default: read from Dir, else generated and saved there
	Region blob.Region // required
	Zone   blob.Zone   // default: "default"
	Bind   string      // IP to listen on (required)
	// Ports; 0 means the default port unless EphemeralPorts is set, in
	// which case 0 lets the kernel choose (tests).
	APIPort, GossipPort, RaftPort int
	EphemeralPorts                bool
	Join                          []string // other nodes' gossip addresses (IP or IP:port)
	BootstrapExpect               int      // form a cluster once this many nodes are seen (default 1)
	Weight                        float64  // relative capacity (default 1)
	// DeadAfter is how long a node may be gone before it is declared dead
	// and its shards are rebuilt elsewhere (default 5 minutes).
	DeadAfter time.Duration
	// RepairBandwidth caps the shard bytes per second the reconciler writes
	// (default 128 MiB/s); RepairParallel the chunks it moves at once (8).
	RepairBandwidth int
	RepairParallel  int
	// ScrubInterval is the pause between scrub passes (default 6 h);
	// ScrubBandwidth caps scrub reads (default 32 MiB/s); OrphanGrace is how
	// long an unreferenced shard is kept (default 1 h: longer than any put).
	ScrubInterval  time.Duration
	ScrubBandwidth int
	OrphanGrace    time.Duration

	K, M      int // erasure coding (default 6+3)
	ChunkSize int // bytes per chunk (default 4 MiB)
	// Chunks of at most SmallMax bytes (default 64 KiB; negative: none)
	// use the SmallK+SmallM code (default 4+2): a small object costs per
	// shard, not per byte, and 4+2 writes 6 shards instead of 9 and reads
	// 4 instead of 6, at the same 1.5x. It still survives a region's loss
	// (2 shards per region of 3), no region holds enough to decode — even
	// with a region down, when 3 per region remain, fewer than 4 — but it
	// tolerates 2 failed nodes, not 3. Like K and M, cluster-wide.
	SmallMax       int
	SmallK, SmallM int
	MaxBlobSize    int64 // largest accepted upload (default 1 TiB)
	PutParallel    int   // chunks in flight per put (default 4)
	// SegmentChunks is how many chunks a segment of a long chunk list
	// holds (default and most raftstore.SegmentChunks); a list of up to
	// as many is committed inline. Tests make it small.
	SegmentChunks int
	// ShardFormat is the newest shard format this node advertises (default
	// erasure.Newest); the cluster writes the newest every member reads.
	// Only benchmarks comparing formats set it.
	ShardFormat erasure.Format

	// Timings are the node's timeouts and loop periods (default:
	// WANTimings; LoopbackTimings for clusters on one machine).
	Timings Timings

	// MasterKey (32 bytes, the same on every node) seals S3 secrets in the
	// metadata; without it no access key can be created or used.
	MasterKey []byte

	// Creds, if set, are the node's certificate, CA bundle and gossip keys
	// (package pki): every channel — API, shard transfer, raft, gossip —
	// is then authenticated and encrypted, /internal/* answers only to
	// nodes and admin actions only to operator clients. Without Creds
	// everything is plaintext and open: for benchmarks and tests only.
	Creds *pki.Creds

	// MetricsToken, if set, also lets a scraper without a certificate read
	// /metrics (Authorization: Bearer TOKEN).
	MetricsToken string

	// WrapStorage, if set, wraps the node's shard store (testcluster
	// injects disk faults through it).
	WrapStorage func(storage.Storage) storage.Storage

	Network   *Network     // optional link filter (testcluster)
	Logger    *slog.Logger // default: discard
	LogOutput io.Writer    // raft and memberlist logs; default: discard
}

// Timings are the durations a node runs by, in one place.
type Timings struct {
	// Raft: heartbeat and election timeouts, leader lease.
	RaftHeartbeat, RaftElection, RaftLeaderLease time.Duration
	// Gossip (memberlist): probe interval and timeout, gossip interval,
	// full state sync, TCP timeout, and the suspicion multiplier.
	GossipProbe, GossipProbeTimeout, GossipInterval, GossipPushPull, GossipTCPTimeout time.Duration
	GossipSuspicionMult                                                               int
	// SuspectFor is how long a node that failed a request is avoided by
	// placement and ranked last by reads.
	SuspectFor time.Duration
	// ShardTimeout bounds one shard transfer; HedgeAfter is how long a get
	// waits on a slow shard before also asking another node.
	ShardTimeout, HedgeAfter time.Duration
	// ClientIdle is how long a request's body or response may make no
	// progress before the connection is cut (NewHTTPServer).
	ClientIdle time.Duration
	// Loop periods: layout upkeep and bootstrap (Control), re-joining nodes
	// gossip believes dead (Reconnect), reconciler passes (Repair).
	ControlEvery, ReconnectEvery, RepairEvery time.Duration
}

// WANTimings suit regions in different countries: raft per shared/DEPS.md
// §1.4, memberlist's LAN probing (its WAN profile notices a death in
// tens of seconds).
func WANTimings() Timings {
	return Timings{
		RaftHeartbeat: 2 * time.Second, RaftElection: 2 * time.Second, RaftLeaderLease: time.Second,
		GossipProbe: time.Second, GossipProbeTimeout: 500 * time.Millisecond, GossipInterval: 200 * time.Millisecond,
		GossipPushPull: 5 * time.Second, GossipTCPTimeout: 10 * time.Second, GossipSuspicionMult: 4,
		SuspectFor:   10 * time.Second,
		ShardTimeout: 10 * time.Second, HedgeAfter: 500 * time.Millisecond, ClientIdle: time.Minute,
		ControlEvery: 250 * time.Millisecond, ReconnectEvery: 5 * time.Second, RepairEvery: 10 * time.Second,
	}
}

// LoopbackTimings suit a cluster on one machine (tests, `atoll dev`): a
// dead node is noticed in about a second (shared/DEPS.md §2.5) and a write
// commits about a second after the leader dies.
func LoopbackTimings() Timings {
	return Timings{
		RaftHeartbeat: 500 * time.Millisecond, RaftElection: 500 * time.Millisecond, RaftLeaderLease: 250 * time.Millisecond,
		GossipProbe: 200 * time.Millisecond, GossipProbeTimeout: 100 * time.Millisecond, GossipInterval: 50 * time.Millisecond,
		GossipPushPull: time.Second, GossipTCPTimeout: time.Second, GossipSuspicionMult: 3,
		SuspectFor:   2 * time.Second,
		ShardTimeout: 3 * time.Second, HedgeAfter: 100 * time.Millisecond, ClientIdle: 10 * time.Second,
		ControlEvery: 250 * time.Millisecond, ReconnectEvery: time.Second, RepairEvery: 500 * time.Millisecond,
	}
}

// DefaultConfig returns a Config with every default set; the caller adds
// Dir, Region and Bind (and whatever else it changes).
func DefaultConfig() Config {
	return Config{
		Zone:    "default",
		APIPort: DefaultAPIPort, GossipPort: DefaultGossipPort, RaftPort: DefaultRaftPort,
		BootstrapExpect: 1,
		Weight:          1,
		DeadAfter:       5 * time.Minute,
		RepairBandwidth: 128 << 20, RepairParallel: 8,
		ScrubInterval: 6 * time.Hour, ScrubBandwidth: 32 << 20, OrphanGrace: time.Hour,
		K: 6, M: 3,
		ChunkSize: 4 << 20,
		SmallMax:  64 << 10, SmallK: 4, SmallM: 2,
		MaxBlobSize:   1 << 40,
		PutParallel:   4,
		SegmentChunks: raftstore.SegmentChunks,
		Timings:       WANTimings(),
	}
}

// withDefaults returns c with its zero fields set from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	or := func(p *int, v int) { *p = cmp.Or(*p, v) }
	if !c.EphemeralPorts {
		or(&c.APIPort, d.APIPort)
		or(&c.GossipPort, d.GossipPort)
		or(&c.RaftPort, d.RaftPort)
	}
	or(&c.BootstrapExpect, d.BootstrapExpect)
	or(&c.K, d.K)
	or(&c.M, d.M)
	or(&c.ChunkSize, d.ChunkSize)
	or(&c.SmallMax, d.SmallMax)
	or(&c.SmallK, d.SmallK)
	or(&c.SmallM, d.SmallM)
	or(&c.PutParallel, d.PutParallel)
	or(&c.SegmentChunks, d.SegmentChunks)
	or(&c.RepairBandwidth, d.RepairBandwidth)
	or(&c.RepairParallel, d.RepairParallel)
	or(&c.ScrubBandwidth, d.ScrubBandwidth)
	c.Zone = cmp.Or(c.Zone, d.Zone)
	c.Weight = cmp.Or(c.Weight, d.Weight)
	c.MaxBlobSize = cmp.Or(c.MaxBlobSize, d.MaxBlobSize)
	c.DeadAfter = cmp.Or(c.DeadAfter, d.DeadAfter)
	c.ScrubInterval = cmp.Or(c.ScrubInterval, d.ScrubInterval)
	c.OrphanGrace = cmp.Or(c.OrphanGrace, d.OrphanGrace)
	if c.Timings == (Timings{}) {
		c.Timings = d.Timings
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.LogOutput == nil {
		c.LogOutput = io.Discard
	}
	return c
}

// Validate reports the first setting a node cannot run with.
func (c Config) Validate() error {
	switch {
	case c.Dir == "" || c.Region == "" || c.Bind == "":
		return errors.New("node: Dir, Region and Bind are required")
	case c.K < 1 || c.M < 1 || c.K+c.M > storage.MaxIndex+1:
		return fmt.Errorf("node: invalid erasure coding %d+%d", c.K, c.M)
	case c.ChunkSize < 1 || c.ChunkSize > storage.MaxShardSize:
		return fmt.Errorf("node: chunk size %d outside [1, %d]", c.ChunkSize, storage.MaxShardSize)
	case c.SmallK < 1 || c.SmallM < 1 || c.SmallK+c.SmallM > storage.MaxIndex+1:
		return fmt.Errorf("node: invalid erasure coding %d+%d for small chunks", c.SmallK, c.SmallM)
	case c.SmallMax > 0 && (placement.Policy{K: c.SmallK, M: c.SmallM}).RegionsNeeded() > (placement.Policy{K: c.K, M: c.M}).RegionsNeeded():
		return fmt.Errorf("node: the small-chunk code %d+%d needs more regions to survive a region's loss than %d+%d", c.SmallK, c.SmallM, c.K, c.M)
	case c.Weight <= 0 || c.MaxBlobSize <= 0 || c.PutParallel <= 0 || c.RepairParallel <= 0 || c.RepairBandwidth <= 0 || c.ScrubBandwidth <= 0 || c.BootstrapExpect <= 0:
		return errors.New("node: capacity, sizes, parallelism, bandwidths and bootstrap-expect must be positive")
	case c.SegmentChunks < 1 || c.SegmentChunks > raftstore.SegmentChunks:
		return fmt.Errorf("node: segments of %d chunks outside [1, %d]", c.SegmentChunks, raftstore.SegmentChunks)
	case c.DeadAfter <= 0 || c.ScrubInterval <= 0 || c.OrphanGrace <= 0:
		return errors.New("node: dead-after, scrub-interval and orphan-grace must be positive")
	case len(c.MasterKey) != 0 && len(c.MasterKey) != 32:
		return fmt.Errorf("node: the master key has %d bytes, want 32", len(c.MasterKey))
	}
	return c.Timings.validate()
}

func (t Timings) validate() error {
	for _, d := range []time.Duration{t.RaftHeartbeat, t.RaftElection, t.RaftLeaderLease, t.GossipProbe, t.GossipProbeTimeout, t.GossipInterval,
		t.GossipPushPull, t.GossipTCPTimeout, t.SuspectFor, t.ShardTimeout, t.HedgeAfter, t.ClientIdle, t.ControlEvery, t.ReconnectEvery, t.RepairEvery} {
		if d <= 0 {
			return fmt.Errorf("node: every timing must be positive: %+v", t)
		}
	}
	if t.GossipSuspicionMult < 1 {
		return errors.New("node: gossip suspicion multiplier must be at least 1")
	}
	return nil
}

// loadOrCreateID keeps the node's identity in its data directory.
func loadOrCreateID(dir string, region blob.Region) (blob.NodeID, error) {
	p := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(p); err == nil {
		return blob.NodeID(strings.TrimSpace(string(b))), nil
	}
	var r [4]byte
	rand.Read(r[:])
	id := blob.NodeID(fmt.Sprintf("%s-%s", region, hex.EncodeToString(r[:])))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return id, os.WriteFile(p, []byte(id+"\n"), 0o644)
}

// Node is a running storage node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	self   raftstore.Member
	codec  *erasure.Codec
	small  *erasure.Codec // for chunks of at most SmallMax bytes
	policy placement.Policy
	shards storage.Storage
	disk   *disk.Store // under shards; closed last
	meta   *raftstore.Store
	gossip *gossip
	http   *http.Server
	peers  *http.Client

	stripes sync.Pool // *erasure.Stripe of ChunkSize, for streamed puts
	// chunkStripes (of api.MaxChunkSize) serve chunks uploaded on their
	// own, at most PutParallel at once (chunkSlots).
	chunkStripes sync.Pool
	smallStripes sync.Pool // of the small code, SmallMax
	chunkBufs    sync.Pool // []byte for decoded chunks (get.go)
	chunkSlots   chan struct{}
	repair       repairState
	degraded     costly // degradedChunks
	metrics      *metrics
	readIndex    readIndexRounds // Sync's shared requests to the leader

	scrubRepairs, scrubReclaimed atomic.Int64 // shards rebuilt / deleted by the scrubber

	started time.Time
	joined  atomic.Bool // the --join seeds answered (or there were none)
	closing atomic.Bool
	// ctx is the node's root context: every background goroutine runs
	// under it, and shutdown cancels it, then waits for them (wg).
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	workers []*worker
}

// Start starts a node and returns once it is listening. It joins and
// forms the cluster in the background.
func Start(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkFormat(cfg.Dir); err != nil {
		return nil, err
	}
	if cfg.ID == "" && cfg.Creds != nil {
		cfg.ID = blob.NodeID(cfg.Creds.Identity().Name) // the certificate names the node
	}
	if cfg.ID == "" {
		id, err := loadOrCreateID(cfg.Dir, cfg.Region)
		if err != nil {
			return nil, err
		}
		cfg.ID = id
	}
	codec, err := erasure.New(cfg.K, cfg.M)
	if err != nil {
		return nil, err
	}
	small, err := erasure.New(cfg.SmallK, cfg.SmallM)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.ID), codec: codec, small: small, policy: placement.Policy{K: cfg.K, M: cfg.M}, started: time.Now()}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.stripes.New = func() any { return codec.NewStripe(cfg.ChunkSize) }
	n.chunkStripes.New = func() any { return codec.NewStripe(api.MaxChunkSize) }
	n.smallStripes.New = func() any { return small.NewStripe(max(cfg.SmallMax, 1)) }
	n.chunkBufs.New = func() any { return make([]byte, 0, cfg.ChunkSize) } // grows for larger uploaded chunks
	n.chunkSlots = make(chan struct{}, cfg.PutParallel)
	local, err := disk.Open(filepath.Join(cfg.Dir, "shards"))
	if err != nil {
		return nil, err
	}
	n.disk, n.shards = local, local
	if cfg.WrapStorage != nil {
		n.shards = cfg.WrapStorage(local)
	}
	ln, err := net.Listen("tcp", hostPort(cfg.Bind, cfg.APIPort))
	if err != nil {
		local.Close()
		return nil, fmt.Errorf("node: API listen: %w", err)
	}
	cleanup := []func(){local.Close, func() { ln.Close() }}
	fail := func(err error) (*Node, error) {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
		return nil, err
	}
	t := cfg.Timings
	ropts := raftstore.Options{Dir: cfg.Dir, NodeID: cfg.ID, Bind: hostPort(cfg.Bind, cfg.RaftPort), Logger: n.log, LogOutput: cfg.LogOutput,
		Heartbeat: t.RaftHeartbeat, Election: t.RaftElection, LeaderLease: t.RaftLeaderLease}
	if cfg.Network != nil || cfg.Creds != nil {
		if ropts.Stream, err = cfg.Network.RaftStreamLayer(ropts.Bind, cfg.Creds); err != nil {
			return fail(fmt.Errorf("node: raft listen: %w", err))
		}
		cleanup = append(cleanup, func() { ropts.Stream.Close() }) // NB: a second Close after raft's is harmless
	}
	if n.meta, err = raftstore.Open(ropts); err != nil {
		return fail(err)
	}
	cleanup = append(cleanup, func() { n.meta.Close() })
	scheme := "http://"
	if cfg.Creds != nil {
		if id := cfg.Creds.Identity(); id != pki.Node(cfg.ID, cfg.Region) {
			return fail(fmt.Errorf("node: the certificate is for %s, but this node is %s", id, pki.Node(cfg.ID, cfg.Region)))
		}
		cfg.Creds.Deny(n.revoked)
		scheme = "https://"
	}
	n.self = raftstore.Member{
		Node: placement.Node{ID: cfg.ID, Region: cfg.Region, Zone: cfg.Zone, Weight: cfg.Weight},
		API:  scheme + ln.Addr().String(),
		Raft: n.meta.Addr(),
		// The newest shard format this release reads: once every member
		// advertises it, chunks are written in it (shardFormat).
		ShardFormat: uint8(cmp.Or(cfg.ShardFormat, erasure.Newest)),
		Commands:    raftstore.CommandVersion,
	}
	if cfg.GossipPort == 0 {
		// memberlist picks the port at Create, but the port is part of the
		// metadata it advertises: pick it first.
		if cfg.GossipPort, err = freePort(cfg.Bind); err != nil {
			return fail(err)
		}
	}
	n.self.Gossip = hostPort(cfg.Bind, cfg.GossipPort)
	var gossipKeys [][]byte
	if cfg.Creds != nil {
		gossipKeys = cfg.Creds.GossipKeys()
	}
	if n.gossip, err = newGossip(n.self, cfg.Bind, cfg.GossipPort, cfg.Timings, cfg.LogOutput, cfg.Network, gossipKeys); err != nil {
		return fail(err)
	}
	tr := &http.Transport{
		DialContext:           cfg.Network.DialContext,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: cfg.Timings.ShardTimeout,
	}
	apiLn := cfg.Network.Listener(ln)
	if cfg.Creds != nil {
		tr.DialTLSContext = cfg.Creds.DialTLS(cfg.Network.DialContext)
		apiLn = tls.NewListener(apiLn, cfg.Creds.ServerTLS(pki.AnyPeer))
	}
	n.peers = &http.Client{Transport: tr}
	n.metrics = newMetrics(n)
	n.http = NewHTTPServer(n.Instrument("native", n.routes()), cfg.Timings.ClientIdle, n.log)

	n.wg.Go(n.joinLoop)
	n.startWorker(&worker{name: "control", every: t.ControlEvery, pass: n.controlPass()})
	n.startWorker(&worker{name: "reconnect", every: t.ReconnectEvery, pass: n.reconnectPass})
	n.startWorker(&worker{name: "repair", every: t.RepairEvery, leaderOnly: true, pass: n.repairPass()})
	n.startWorker(&worker{name: "scrub", every: cfg.ScrubInterval, pass: n.scrubPass()})
	go n.http.Serve(apiLn) // NB: after n.workers is complete; handlers read it
	n.log.Info("node started", "region", cfg.Region, "zone", cfg.Zone, "api", n.self.API, "raft", n.self.Raft, "gossip", n.GossipAddr())
	return n, nil
}

// ID returns the node's ID.
func (n *Node) ID() blob.NodeID { return n.cfg.ID }

// URL returns the base URL of the node's HTTP API.
func (n *Node) URL() string { return n.self.API }

// GossipAddr returns the gossip address other nodes join.
func (n *Node) GossipAddr() string { return hostPort(n.cfg.Bind, n.gossip.Port()) }

// Ports returns the bound API, gossip and raft ports, so a restart can
// reuse them.
func (n *Node) Ports() (api, gossip, raft int) {
	_, a, _ := net.SplitHostPort(n.self.API[strings.Index(n.self.API, "://")+3:])
	_, r, _ := net.SplitHostPort(n.self.Raft)
	fmt.Sscan(a, &api)
	fmt.Sscan(r, &raft)
	return api, n.gossip.Port(), raft
}

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.meta.IsLeader() }

// Close stops the node abruptly, as a crash would, except that files are
// closed cleanly: peers see it die, not leave.
func (n *Node) Close() error { return n.shutdown(false) }

// Shutdown stops the node gracefully: it refuses new requests, lets
// in-flight ones finish (until ctx ends) and leaves the gossip pool.
func (n *Node) Shutdown(ctx context.Context) error {
	n.closing.Store(true)
	n.http.Shutdown(ctx)
	return n.shutdown(true)
}

func (n *Node) shutdown(graceful bool) error {
	if n.closing.Swap(true) && !graceful {
		return nil
	}
	if n.ctx.Err() != nil {
		return nil
	}
	n.cancel()
	n.http.Close()
	n.gossip.shutdown(graceful)
	n.wg.Wait()
	n.peers.CloseIdleConnections()
	defer n.disk.Close() // NB: a handler still running then writes its shard as a file
	return n.meta.Close()
}

// joinLoop joins the seeds, retrying until one answers.
func (n *Node) joinLoop() {
	var seeds []string
	for _, s := range n.cfg.Join {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = hostPort(s, DefaultGossipPort)
		}
		if s != n.GossipAddr() {
			seeds = append(seeds, s)
		}
	}
	if len(seeds) == 0 {
		n.joined.Store(true)
	}
	for len(seeds) > 0 {
		if _, err := n.gossip.join(seeds); err == nil {
			n.joined.Store(true)
			return
		} else {
			n.log.Debug("join failed, retrying", "err", err)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// reconnectPass re-joins layout members that gossip believes dead.
// memberlist only talks to nodes it thinks alive, so without this two sides
// of a healed partition (or a node restarted without --join) would never
// meet again.
func (n *Node) reconnectPass(context.Context) error {
	l, err := n.meta.Layout()
	if err != nil {
		return err
	}
	var dead []string
	for _, m := range l.Nodes {
		if m.ID != n.cfg.ID && m.Gossip != "" && n.gossip.state(m.ID) == api.StateDead {
			dead = append(dead, m.Gossip)
		}
	}
	if len(dead) > 0 {
		if k, err := n.gossip.join(dead); k > 0 {
			n.log.Info("reconnected to nodes thought dead", "count", k, "err", err)
		}
	}
	return nil
}

// freePort asks the kernel for an unused TCP port on ip.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", hostPort(ip, 0))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// controlPass returns the control worker's pass: it forms the cluster
// and, on the leader, keeps the layout and the raft configuration in line
// with gossip.
func (n *Node) controlPass() func(context.Context) error {
	warned := false
	return func(ctx context.Context) error {
		if !n.meta.HasState() {
			n.maybeBootstrap()
			return nil
		}
		n.gossip.setFormed()
		warned = n.warnIfFragile(warned)
		if !n.meta.IsLeader() {
			return nil
		}
		if err := n.maintainLayout(ctx); err != nil {
			n.log.Debug("layout upkeep", "err", err)
		}
		return nil
	}
}

// warnIfFragile logs, once per change, when the cluster's layout cannot
// survive losing a region (for example only two regions for 6+3).
func (n *Node) warnIfFragile(warned bool) bool {
	l, err := n.meta.Layout()
	if err != nil || len(l.Nodes) < n.cfg.BootstrapExpect {
		return warned
	}
	fragile := !n.policy.ToleratesRegionLoss(l.PlacementNodes())
	if fragile && !warned {
		n.log.Warn("cluster layout does NOT tolerate the loss of a region",
			"regions", len(placement.Regions(l.PlacementNodes())), "k", n.cfg.K, "m", n.cfg.M,
			"regions_needed", n.policy.RegionsNeeded())
	}
	return fragile
}

// maybeBootstrap forms a new cluster once BootstrapExpect nodes gossip:
// the one with the lowest ID bootstraps alone, then adds the others. A node
// never bootstraps before its --join seeds answered, nor when any member it
// sees already belongs to a formed cluster — it waits to be added instead,
// or it would split the cluster in two.
func (n *Node) maybeBootstrap() {
	alive := n.gossip.alive()
	if !n.joined.Load() || n.gossip.anyFormed() || len(alive) < n.cfg.BootstrapExpect || alive[0].ID != n.cfg.ID {
		return
	}
	n.log.Info("bootstrapping cluster", "nodes_seen", len(alive))
	if err := n.meta.Bootstrap(n.cfg.ID); err != nil {
		n.log.Error("bootstrap failed", "err", err)
	}
}

// maintainLayout (leader only) keeps the layout in line with gossip: it
// adds gossiping nodes or updates their addresses, declares a member dead
// once gossip has not seen it for DeadAfter (so its shards get rebuilt
// elsewhere), and active again when it returns. Then it reconciles raft's
// voters with the layout.
func (n *Node) maintainLayout(ctx context.Context) error {
	l, err := n.meta.Layout()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	set := func(m raftstore.Member, why string) error {
		cmd := raftstore.SetMemberCommand(m)
		if _, err := n.meta.Apply(ctx, cmd); err != nil {
			return err
		}
		n.log.Info("layout: "+why, "member", m.ID, "region", m.Region, "state", m.State)
		return nil
	}
	alive := map[blob.NodeID]bool{}
	for _, m := range n.gossip.alive() {
		alive[m.ID] = true
		if slices.Contains(l.Removed, m.ID) {
			continue
		}
		cur, ok := l.Member(m.ID)
		m.State = cur.State
		if cur.State == raftstore.StateDead {
			m.State = raftstore.StateActive // back from the dead
		}
		if ok && cur == m {
			continue
		}
		if !ok || cur.API != m.API || cur.Raft != m.Raft || cur.Gossip != m.Gossip || cur.Region != m.Region {
			if err := n.verifyMember(ctx, m); err != nil {
				n.log.Warn("layout: refusing a node whose certificate does not match its claims", "member", m.ID, "err", err)
				continue
			}
		}
		if err := set(m, "node added or updated"); err != nil {
			return err
		}
	}
	for _, m := range l.Nodes {
		if alive[m.ID] || m.ID == n.cfg.ID || m.State != raftstore.StateActive {
			continue
		}
		if since := n.gossip.goneSince(m.ID, n.started); time.Since(since) >= n.cfg.DeadAfter {
			m.State = raftstore.StateDead
			if err := set(m, fmt.Sprintf("node declared dead after %v", time.Since(since).Round(time.Second))); err != nil {
				return err
			}
		}
	}
	if l, err = n.meta.Layout(); err != nil {
		return err
	}
	alive[n.cfg.ID] = true
	return n.meta.Reconcile(l, alive)
}
