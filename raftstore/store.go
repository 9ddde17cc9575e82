// Package raftstore replicates Atoll's metadata — blob records, chunk
// reference counts and the cluster layout — with hashicorp/raft, and keeps
// it on badger. It is the only package that imports raft; callers see a
// domain API (Apply-style methods, lookups, voter management).
//
// One badger DB per node holds three key spaces: the raft log ('l'), raft's
// stable store ('s') and the state machine ('f'). A log entry or a vote is
// synced to disk before the call that wrote it returns; applied commands
// are not (their durability is the log's: after a crash the FSM replays
// what it lost), which takes an fsync off every commit's path.
//
// Reads (Blob, Layout, ...) are served from the local state machine and may
// lag the leader; callers that need the latest state ask the leader.
package raftstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// ErrNotLeader is returned by writes on a node that is not the leader.
var ErrNotLeader = blob.NewError("not_leader", http.StatusMisdirectedRequest, "not the raft leader", nil)

// Options configure a Store.
type Options struct {
	Dir    string      // data directory (created if missing)
	NodeID blob.NodeID // stable node identity
	Bind   string      // host:port for the raft transport
	// Heartbeat, Election and LeaderLease are raft's timeouts; zero means
	// the WAN timings of shared/DEPS.md §1.4 (2 s, 2 s, 1 s).
	Heartbeat, Election, LeaderLease time.Duration
	Logger                           *slog.Logger
	LogOutput                        io.Writer // raft's own log; nil discards
	// SnapshotThreshold and TrailingLogs override raft's snapshot cadence
	// (defaults 4096 and 8192); tests lower them to exercise snapshots.
	SnapshotThreshold, TrailingLogs uint64
	// Stream, if set, carries raft's traffic instead of a plain TCP
	// listener on Bind (testcluster uses it to cut links).
	Stream StreamLayer
}

// StreamLayer is a listener plus a dialer for raft's connections.
type StreamLayer interface {
	net.Listener
	Dial(addr string, timeout time.Duration) (net.Conn, error)
}

// streamAdapter presents a StreamLayer to raft.
type streamAdapter struct{ StreamLayer }

func (s streamAdapter) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return s.StreamLayer.Dial(string(addr), timeout)
}

// Store is a node's replica of the metadata.
type Store struct {
	db    *badger.DB
	raft  *raft.Raft
	trans *raft.NetworkTransport
	fsm   *fsm
	log   *slog.Logger
	// readyTerm is the term in which this node, as leader, applied a
	// barrier: from then on its applied index covers every earlier
	// leader's acknowledged writes (ReadIndex).
	readyTerm atomic.Uint64
}

// Open opens (or creates) the store in opts.Dir and starts raft. A fresh
// store is not part of any cluster until Bootstrap or until a leader adds it.
func Open(opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LogOutput == nil {
		opts.LogOutput = io.Discard
	}
	dir := filepath.Join(opts.Dir, "raft")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	db, err := badger.Open(badgerOptions(filepath.Join(dir, "db")))
	if err != nil {
		return nil, fmt.Errorf("raftstore: open badger: %w", err)
	}
	f, err := newFSM(db)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, fsm: f, log: opts.Logger}
	if err := s.start(opts, dir); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) start(opts Options, dir string) error {
	ls, err := newLogStore(s.db)
	if err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclogger(opts.LogOutput, "snapshot"))
	if err != nil {
		return err
	}
	tcpAddr, err := net.ResolveTCPAddr("tcp", opts.Bind)
	if err != nil {
		return err
	}
	var addr net.Addr = tcpAddr
	if tcpAddr.Port == 0 && !tcpAddr.IP.IsUnspecified() {
		addr = nil // advertise the port the kernel picks (NB: an untyped nil)
	}
	// NB: 16 appends in flight per follower (raft's default is 2): across
	// regions a round trip is tens of ms, and with 2 a new entry often
	// waits behind an empty append in flight (shared/DEPS.md §1.2).
	tc := &raft.NetworkTransportConfig{MaxPool: 8, MaxRPCsInFlight: 16, Timeout: 5 * time.Second, Logger: hclogger(opts.LogOutput, "transport")}
	var trans *raft.NetworkTransport
	if opts.Stream != nil {
		tc.Stream = streamAdapter{opts.Stream}
		trans = raft.NewNetworkTransportWithConfig(tc)
	} else if trans, err = raft.NewTCPTransportWithConfig(opts.Bind, addr, tc); err != nil {
		return fmt.Errorf("raftstore: listen %s: %w", opts.Bind, err)
	}
	s.trans = trans

	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(opts.NodeID)
	c.Logger = hclogger(opts.LogOutput, "raft")
	// A follower learns of a commit with the next entry, or with an empty
	// append after CommitTimeout: it bounds how long a read through a
	// follower waits after a write (node.Sync). Raft's 50 ms default made
	// a put-then-get through a follower take that long; 10 ms costs each
	// follower about 70 small RPCs a second when idle.
	c.CommitTimeout = 10 * time.Millisecond
	c.SnapshotThreshold, c.TrailingLogs = 4096, 8192
	if opts.SnapshotThreshold > 0 {
		c.SnapshotThreshold, c.TrailingLogs = opts.SnapshotThreshold, opts.TrailingLogs
		c.SnapshotInterval = 200 * time.Millisecond
	}
	c.HeartbeatTimeout = cmp.Or(opts.Heartbeat, 2*time.Second)
	c.ElectionTimeout = cmp.Or(opts.Election, 2*time.Second)
	c.LeaderLeaseTimeout = cmp.Or(opts.LeaderLease, time.Second)
	// The FSM is persistent and skips entries it already applied, so a
	// restart need not reload the snapshot — unless a Restore was cut short.
	restoring := false
	view(s.db, func(txn *tx) error {
		_, err := txn.Get(keyRestoring)
		restoring = err == nil
		return nil
	})
	c.NoSnapshotRestoreOnStart = !restoring
	r, err := raft.NewRaft(c, s.fsm, ls, ls, snaps, trans)
	if err != nil {
		trans.Close()
		return fmt.Errorf("raftstore: start raft: %w", err)
	}
	s.raft = r
	return nil
}

func badgerOptions(dir string) badger.Options {
	// Tuned so nine nodes fit in one test process (shared/DEPS.md §4.4).
	// NB: the value threshold is badger's most, 1 MiB, and no value we
	// write reaches it (MaxCommandSize), so nothing lives in the value
	// log: a value log is flushed apart from the WAL, and a power cut
	// between the two would leave keys pointing at nothing
	// (TestLargeValuesSurviveAPowerCut).
	return badger.DefaultOptions(dir).
		WithSyncWrites(false). // NB: the log store syncs (logstore.go)
		WithLogger(nil).
		WithMemTableSize(8 << 20).WithNumMemtables(2).
		WithNumLevelZeroTables(2).WithNumLevelZeroTablesStall(4).
		WithBaseTableSize(2 << 20).WithBaseLevelSize(8 << 20).
		WithBlockCacheSize(8 << 20).WithIndexCacheSize(4 << 20).
		WithCompression(options.None).
		WithValueLogFileSize(64 << 20).WithValueThreshold(1 << 20).
		WithNumCompactors(2).WithNumGoroutines(2).WithMetricsEnabled(false)
}

func hclogger(w io.Writer, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: w, Level: hclog.Warn})
}

// Addr is the raft transport's address.
func (s *Store) Addr() string { return string(s.trans.LocalAddr()) }

// Bootstrap makes this node the sole voter of a new cluster. It is a no-op
// for a store that already has raft state.
func (s *Store) Bootstrap(id blob.NodeID) error {
	err := s.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{
		{ID: raft.ServerID(id), Address: s.trans.LocalAddr(), Suffrage: raft.Voter},
	}}).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	return err
}

// HasState reports whether this node has ever been part of a cluster.
func (s *Store) HasState() bool {
	f := s.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// Leader returns the current leader's ID, or "" if unknown.
func (s *Store) Leader() blob.NodeID {
	_, id := s.raft.LeaderWithID()
	return blob.NodeID(id)
}

// WriteSnapshot writes a consistent copy of the whole state machine —
// blobs, chunks and their shard locations, the layout, buckets, objects,
// access keys (secrets sealed) — to w: a backup for RestoreSnapshot.
func (s *Store) WriteSnapshot(w io.Writer) error {
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	return writeFSM(txn, w, true)
}

// RestoreSnapshot (leader only) replaces the state machine of every
// replica with a backup of size bytes made by WriteSnapshot (raft's user
// restore: the log is truncated and followers are sent the snapshot).
func (s *Store) RestoreSnapshot(r io.Reader, size int64, timeout time.Duration) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}
	if err := s.raft.Restore(meta, r, timeout); err != nil {
		return fmt.Errorf("raftstore: restore: %w", err)
	}
	// A command after the restore (one that changes nothing) moves the
	// applied index past it: a replica that reaches a read index from now
	// on has installed the restored state, not just caught up with the old.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := s.Apply(ctx, TouchStagedCommand(TouchStaged{At: time.Now().UTC()}))
	return err
}

// RaftState is this replica's view of raft, for metrics.
type RaftState struct {
	Leader                     bool
	Term, CommitIndex, Applied uint64
	LastContact                time.Duration // since the leader was last heard (followers)
}

// State reports this replica's raft state.
func (s *Store) State() RaftState {
	st := RaftState{Leader: s.IsLeader(), Term: s.raft.CurrentTerm(), CommitIndex: s.raft.CommitIndex(), Applied: s.raft.AppliedIndex()}
	if lc := s.raft.LastContact(); !lc.IsZero() && !st.Leader {
		st.LastContact = time.Since(lc)
	}
	return st
}

// IsLeader reports whether this node is the leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Barrier waits until this node, which must be the leader, has applied
// every entry committed before the call, including those of earlier
// leaders. A miss after Barrier is authoritative.
func (s *Store) Barrier(ctx context.Context) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := s.raft.Barrier(timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return err
	}
	return nil
}

// ReadIndex returns, on the leader, an index such that a replica that has
// applied it reflects every write acknowledged before the call. A replica
// reading after WaitApplied(ReadIndex) is linearizable.
//
// It is the leader's applied index, confirmed by a heartbeat round to a
// quorum (raft's VerifyLeader, as etcd's ReadIndex): no log write, no
// fsync. That index covers every write this leader acknowledged (an Apply
// returns once applied here) and, once the leader has applied a barrier
// of its own term, every write earlier leaders acknowledged; the
// heartbeat round after reading it proves no newer leader could have
// acknowledged anything meanwhile. So the first read of each term pays a
// barrier, the others a heartbeat round, and concurrent ones share it
// (raft coalesces verifications into its next heartbeats).
func (s *Store) ReadIndex(ctx context.Context) (uint64, error) {
	if !s.IsLeader() {
		return 0, ErrNotLeader
	}
	term := s.raft.CurrentTerm()
	if s.readyTerm.Load() != term {
		if err := s.Barrier(ctx); err != nil {
			return 0, err
		}
		if s.raft.CurrentTerm() != term {
			return 0, fmt.Errorf("%w: the term changed during the barrier", ErrNotLeader)
		}
		s.readyTerm.Store(term)
	}
	s.fsm.mu.Lock()
	idx := s.fsm.applied
	s.fsm.mu.Unlock()
	if err := s.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	if s.raft.CurrentTerm() != term {
		return 0, fmt.Errorf("%w: the term changed during the read", ErrNotLeader)
	}
	return idx, nil
}

// WaitApplied waits until this replica has applied index idx.
func (s *Store) WaitApplied(ctx context.Context, idx uint64) error {
	return s.fsm.waitApplied(ctx, idx)
}

// Close stops raft and closes the DB. It does not leave the cluster: a
// closed node is, to its peers, a dead one that may come back.
func (s *Store) Close() error {
	err := s.raft.Shutdown().Error()
	s.trans.Close()
	return errors.Join(err, s.db.Close())
}

// Apply replicates c through raft and returns its result once this
// leader has applied it; only the leader may call it (ErrNotLeader).
// Commands arriving from other nodes come here too: the leader decodes
// them and proposes them again, stamped with their operation's Version.
func (s *Store) Apply(ctx context.Context, c Command) (Result, error) {
	if !s.IsLeader() {
		return Result{}, ErrNotLeader
	}
	c.V = c.Version()
	if n := c.chunks(); n > MaxChunksPerCommand {
		return Result{}, fmt.Errorf("%w: a command with %d chunks; the limit is %d", blob.ErrTooLarge, n, MaxChunksPerCommand)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return Result{}, err
	}
	if len(data) > MaxCommandSize {
		return Result{}, fmt.Errorf("%w: a command of %d bytes; the limit is %d", blob.ErrTooLarge, len(data), MaxCommandSize)
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	f := s.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return Result{}, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return Result{}, err
	}
	res, _ := f.Response().(applyResult)
	return Result{Blob: res.Blob}, res.Err
}

// PutBlobCommand is the command that commits b.
func PutBlobCommand(b Blob) Command { return Command{PutBlob: &b} }

// DeleteBlobCommand is the command that deletes blob id.
func DeleteBlobCommand(id blob.ID) Command { return Command{DeleteBlob: &id} }

// SetMemberCommand is the command that adds or updates m in the layout.
func SetMemberCommand(m Member) Command { return Command{SetMember: &m} }

// MoveShardsCommand is a compare-and-set of a chunk's shard locations.
func MoveShardsCommand(mv ShardMove) Command { return Command{MoveShards: &mv} }

// RemoveMemberCommand is the removal of a node from the layout.
func RemoveMemberCommand(id blob.NodeID) Command { return Command{RemoveMember: &id} }

// StageChunkCommand is the command that records a chunk stored ahead
// of its blob.
func StageChunkCommand(c StagedChunk) Command { return Command{StageChunk: &c} }

// TouchStagedCommand is the renewal of staged chunks' grace.
func TouchStagedCommand(t TouchStaged) Command { return Command{TouchStaged: &t} }

// DropStagedCommand is the removal of abandoned staged chunks.
func DropStagedCommand(d DropStaged) Command { return Command{DropStaged: &d} }

// Blob returns the committed record of id with chunk locations filled in,
// from the local replica. An unknown ID yields blob.ErrNotFound.
func (s *Store) Blob(id blob.ID) (*Blob, error) {
	var b Blob
	err := view(s.db, func(txn *tx) error {
		if err := getJSON(txn, blobKey(id), &b); err != nil {
			return err
		}
		return fillShards(txn, b.Chunks)
	})
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// Chunk returns the committed chunk id (referenced by a blob, or staged)
// with its shard locations from the local replica, or blob.ErrNotFound.
func (s *Store) Chunk(id blob.ID) (Chunk, error) {
	var cr chunkRecord
	err := view(s.db, func(txn *tx) error { return getJSON(txn, chunkKey(id), &cr) })
	return cr.chunk(id), err
}

// Chunks calls fn for every committed chunk, in ID order, from the local
// replica, stopping early if fn returns false.
func (s *Store) Chunks(fn func(Chunk, int, int) bool) error {
	return s.scanChunks(func(id blob.ID, cr chunkRecord) bool {
		return fn(cr.chunk(id), cr.K, cr.M)
	})
}

func (s *Store) scanChunks(fn func(blob.ID, chunkRecord) bool) error {
	return s.scan([]byte{prefixFSM, 'c'}, nil, func(k, v []byte) (bool, error) {
		var cr chunkRecord
		if err := json.Unmarshal(v, &cr); err != nil {
			return false, err
		}
		var id blob.ID
		copy(id[:], k[2:])
		return fn(id, cr), nil
	})
}

// Unclaimed returns those of ids that are staged chunks no blob references
// yet, from the local replica.
func (s *Store) Unclaimed(ids []blob.ID) ([]blob.ID, error) {
	var out []blob.ID
	err := view(s.db, func(txn *tx) error {
		for _, id := range ids {
			var cr chunkRecord
			switch err := getJSON(txn, chunkKey(id), &cr); {
			case errors.Is(err, blob.ErrNotFound):
			case err != nil:
				return err
			case cr.Refs == 0:
				out = append(out, id)
			}
		}
		return nil
	})
	return out, err
}

// AbandonedChunks returns the chunks that were staged before t and that no
// blob references, from the local replica.
func (s *Store) AbandonedChunks(t time.Time) ([]blob.ID, error) {
	var ids []blob.ID
	err := s.scanChunks(func(id blob.ID, cr chunkRecord) bool {
		if cr.Refs == 0 && cr.Staged < t.UnixNano() {
			ids = append(ids, id)
		}
		return true
	})
	return ids, err
}

// Stats counts the committed blobs and their logical bytes.
func (s *Store) Stats() (blobs int, bytes int64, err error) {
	err = s.scan([]byte{prefixFSM, 'b'}, nil, func(_, v []byte) (bool, error) {
		var b Blob
		if err := json.Unmarshal(v, &b); err != nil {
			return false, err
		}
		blobs++
		bytes += b.Size
		return true, nil
	})
	return
}

// Layout returns the local replica's cluster layout.
func (s *Store) Layout() (Layout, error) {
	l, gen, ok := s.fsm.layout.get()
	if ok {
		return l, nil
	}
	err := view(s.db, func(txn *tx) error { return getJSON(txn, keyLayout, &l) })
	if errors.Is(err, blob.ErrNotFound) {
		err = nil
	}
	if err == nil {
		s.fsm.layout.put(gen, l)
	}
	return l, err
}

// Server is a member of the raft configuration.
type Server struct {
	ID    blob.NodeID `json:"id"`
	Addr  string      `json:"addr"`
	Voter bool        `json:"voter"`
}

// Servers returns the current raft configuration.
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Server
	for _, sv := range f.Configuration().Servers {
		out = append(out, Server{ID: blob.NodeID(sv.ID), Addr: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
	}
	return out, nil
}

// MaxVoters bounds the voter set; more voters only slow commits down.
const MaxVoters = 5

// DesiredVoters picks up to MaxVoters voters among the layout's active
// members, round-robin over regions (sorted), so that no region gets a
// second voter while another has none. Inside a region current voters come
// first (no needless churn), then lower node IDs. A member not yet a voter
// is only eligible if it is alive: adding a dead voter can cost the quorum.
// With three or more regions, losing any one region leaves a majority.
func DesiredVoters(l Layout, current, alive map[blob.NodeID]bool) map[blob.NodeID]bool {
	byRegion := map[blob.Region][]blob.NodeID{}
	var regions []blob.Region
	for _, m := range l.Active() {
		if !current[m.ID] && !alive[m.ID] {
			continue
		}
		if _, ok := byRegion[m.Region]; !ok {
			regions = append(regions, m.Region)
		}
		byRegion[m.Region] = append(byRegion[m.Region], m.ID)
	}
	slices.Sort(regions)
	for _, r := range regions {
		slices.SortFunc(byRegion[r], func(a, b blob.NodeID) int {
			if current[a] != current[b] {
				if current[a] {
					return -1
				}
				return 1
			}
			return compareStrings(string(a), string(b))
		})
	}
	voters := map[blob.NodeID]bool{}
	for round := 0; len(voters) < MaxVoters; round++ {
		added := false
		for _, r := range regions {
			if round < len(byRegion[r]) && len(voters) < MaxVoters {
				voters[byRegion[r][round]] = true
				added = true
			}
		}
		if !added {
			break
		}
	}
	return voters
}

// Reconcile makes the raft configuration match the layout: every layout
// node is a member, voters are DesiredVoters, the rest are non-voters, and
// servers no longer in the layout are removed. alive says which nodes are
// up now. Only the leader may call it.
//
// NB: voters are demoted before others are promoted. Demoting a dead voter
// never costs the quorum; promoting first would briefly need a majority of
// a larger set that includes the dead.
func (s *Store) Reconcile(l Layout, alive map[blob.NodeID]bool) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	cur, err := s.Servers()
	if err != nil {
		return err
	}
	have := map[blob.NodeID]Server{}
	voters := map[blob.NodeID]bool{}
	for _, sv := range cur {
		have[sv.ID] = sv
		voters[sv.ID] = sv.Voter
	}
	want := DesiredVoters(l, voters, alive)
	const timeout = 5 * time.Second
	var errs []error
	for _, m := range l.Nodes {
		if sv, ok := have[m.ID]; ok && sv.Voter && !want[m.ID] {
			s.log.Info("raft: demoting voter", "node", m.ID)
			errs = append(errs, s.raft.DemoteVoter(raft.ServerID(m.ID), 0, timeout).Error())
		}
	}
	for _, m := range l.Nodes {
		sv, ok := have[m.ID]
		id, addr := raft.ServerID(m.ID), raft.ServerAddress(m.Raft)
		switch {
		case want[m.ID] && (!ok || !sv.Voter || sv.Addr != m.Raft):
			s.log.Info("raft: adding voter", "node", m.ID)
			errs = append(errs, s.raft.AddVoter(id, addr, 0, timeout).Error())
		case !want[m.ID] && (!ok || sv.Addr != m.Raft):
			s.log.Info("raft: adding non-voter", "node", m.ID)
			errs = append(errs, s.raft.AddNonvoter(id, addr, 0, timeout).Error())
		}
	}
	self := s.Leader()
	for _, sv := range cur {
		if _, ok := l.Member(sv.ID); !ok && sv.ID != self {
			s.log.Info("raft: removing server no longer in the layout", "node", sv.ID)
			errs = append(errs, s.raft.RemoveServer(raft.ServerID(sv.ID), 0, timeout).Error())
		}
	}
	return errors.Join(errs...)
}
