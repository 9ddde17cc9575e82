package node

import (
	"crypto/subtle"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/pki"
)

// Metrics (GET /metrics, Prometheus text format; operator or node
// certificates, or the metrics token). Each node has its own registry, so several nodes can run
// in one process (testcluster). Names follow Prometheus conventions:
//
//	atoll_http_requests_total{api,op,code}          native API and S3 requests
//	atoll_http_request_duration_seconds{api,op}     their latency
//	atoll_http_request_bytes_total{api}, atoll_http_response_bytes_total{api}
//	atoll_shard_requests_total{op,peer,result}      shard reads and writes, per peer
//	atoll_shard_request_duration_seconds{op,peer}   their latency (a slow link shows)
//	atoll_raft_leader, atoll_raft_term, atoll_raft_commit_index,
//	atoll_raft_applied_index, atoll_raft_last_contact_seconds
//	atoll_raft_apply_duration_seconds                a metadata commit, from this node (via the leader)
//	atoll_gossip_members{state}                     alive, suspect, dead
//	atoll_node_last_seen_seconds{peer}              since gossip last saw a gone peer
//	atoll_degraded_chunks                           chunks with a shard on a dead or gone node
//	atoll_repair_running, atoll_repair_chunks_total, atoll_repair_chunks_done, atoll_repair_bytes_total
//	atoll_scrub_repaired_shards_total, atoll_scrub_reclaimed_shards_total
//	atoll_disk_used_bytes, atoll_disk_free_bytes
type metrics struct {
	reg               *prometheus.Registry
	requests          *prometheus.CounterVec
	latency           *prometheus.HistogramVec
	bytesIn, bytesOut *prometheus.CounterVec
	shards            *prometheus.CounterVec
	shardLatency      *prometheus.HistogramVec
	applyLatency      prometheus.Histogram
}

func newMetrics(n *Node) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "atoll_http_requests_total", Help: "Requests served, by API (native, s3), operation and status code."},
			[]string{"api", "op", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "atoll_http_request_duration_seconds", Help: "Time to serve a request, by API and operation.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}, []string{"api", "op"}),
		bytesIn:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "atoll_http_request_bytes_total", Help: "Request body bytes read, by API."}, []string{"api"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "atoll_http_response_bytes_total", Help: "Response bytes written, by API."}, []string{"api"}),
		shards: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "atoll_shard_requests_total", Help: "Shard reads and writes to other nodes, by peer and result (ok, error)."},
			[]string{"op", "peer", "result"}),
		shardLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "atoll_shard_request_duration_seconds", Help: "Time of a shard read or write, by peer.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}, []string{"op", "peer"}),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "atoll_raft_apply_duration_seconds", Help: "Time to commit a metadata command from this node, through the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	bool01 := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	m.reg.MustRegister(m.requests, m.latency, m.bytesIn, m.bytesOut, m.shards, m.shardLatency, m.applyLatency,
		gauge("atoll_raft_leader", "1 if this node is the raft leader.", func() float64 { return bool01(n.meta.State().Leader) }),
		gauge("atoll_raft_term", "Current raft term.", func() float64 { return float64(n.meta.State().Term) }),
		gauge("atoll_raft_commit_index", "Raft commit index.", func() float64 { return float64(n.meta.State().CommitIndex) }),
		gauge("atoll_raft_applied_index", "Raft index applied to this replica.", func() float64 { return float64(n.meta.State().Applied) }),
		gauge("atoll_raft_last_contact_seconds", "Since this follower last heard from the leader (0 on the leader).", func() float64 { return n.meta.State().LastContact.Seconds() }),
		gauge("atoll_degraded_chunks", "Chunks with a shard on a node that is dead or not active.", func() float64 {
			l, err := n.meta.Layout()
			if err != nil {
				return 0
			}
			return float64(n.degradedChunks(l))
		}),
		gauge("atoll_repair_running", "1 while the leader's reconciler is moving or rebuilding shards.", func() float64 { return bool01(n.repair.get().Running) }),
		gauge("atoll_repair_chunks_total", "Chunks the current (or last) repair pass planned.", func() float64 { return float64(n.repair.get().Total) }),
		gauge("atoll_repair_chunks_done", "Chunks the current (or last) repair pass finished.", func() float64 { return float64(n.repair.get().Done) }),
		gauge("atoll_repair_bytes_total", "Shard bytes written by the current (or last) repair pass.", func() float64 { return float64(n.repair.get().Bytes) }),
		counter("atoll_scrub_repaired_shards_total", "Shards this node's scrubber found bad and rebuilt.", func() float64 { return float64(n.scrubRepairs.Load()) }),
		counter("atoll_scrub_reclaimed_shards_total", "Unreferenced shards this node's scrubber deleted.", func() float64 { return float64(n.scrubReclaimed.Load()) }),
		gauge("atoll_disk_used_bytes", "Bytes of shard files on this node.", func() float64 { return float64(n.shards.Used()) }),
		gauge("atoll_disk_free_bytes", "Bytes free on the file system of this node's data directory.", func() float64 {
			var st syscall.Statfs_t
			if syscall.Statfs(n.cfg.Dir, &st) != nil {
				return 0
			}
			return float64(st.Bavail) * float64(st.Bsize)
		}),
		&gossipCollector{n: n},
	)
	return m
}

// gossipCollector reports members by state and how long gone ones have
// been gone, as this node sees them.
type gossipCollector struct{ n *Node }

var (
	membersDesc  = prometheus.NewDesc("atoll_gossip_members", "Layout members by gossip state, as this node sees them.", []string{"state"}, nil)
	lastSeenDesc = prometheus.NewDesc("atoll_node_last_seen_seconds", "Seconds since gossip last saw a member that is not alive (0: alive).", []string{"peer"}, nil)
)

func (g *gossipCollector) Describe(ch chan<- *prometheus.Desc) { ch <- membersDesc; ch <- lastSeenDesc }

func (g *gossipCollector) Collect(ch chan<- prometheus.Metric) {
	l, err := g.n.meta.Layout()
	if err != nil {
		return
	}
	count := map[string]int{api.StateAlive: 0, api.StateSuspect: 0, api.StateDead: 0}
	for _, m := range l.Nodes {
		st := g.n.gossip.state(m.ID)
		if m.ID == g.n.cfg.ID {
			st = api.StateAlive
		}
		count[st]++
		gone := 0.0
		if st == api.StateDead {
			gone = time.Since(g.n.gossip.goneSince(m.ID, g.n.started)).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(lastSeenDesc, prometheus.GaugeValue, gone, string(m.ID))
	}
	for st, c := range count {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(c), st)
	}
}

// shardDone records one shard transfer with peer.
func (m *metrics) shardDone(op string, peer blob.NodeID, start time.Time, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.shards.WithLabelValues(op, string(peer), result).Inc()
	m.shardLatency.WithLabelValues(op, string(peer)).Observe(time.Since(start).Seconds())
}

// Instrument counts and times the requests h serves as api ("native",
// "s3"), by operation: the route pattern for the native API, the method
// for S3.
func (n *Node) Instrument(apiName string, h http.Handler) http.Handler {
	m := n.metrics
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body := &countingBody{ReadCloser: r.Body}
		r.Body = body
		cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(cw, r)
		op := r.Method
		if apiName == "native" {
			op = r.Pattern // NB: set by the mux on this same request
			if op == "" {
				op = "unknown"
			}
		}
		m.requests.WithLabelValues(apiName, op, strconv.Itoa(cw.status)).Inc()
		m.latency.WithLabelValues(apiName, op).Observe(time.Since(start).Seconds())
		m.bytesIn.WithLabelValues(apiName).Add(float64(body.n))
		m.bytesOut.WithLabelValues(apiName).Add(float64(cw.n))
	})
}

// metricsAuth lets a scrape through with the metrics token, or else with
// an operator or node certificate.
func (n *Node) metricsAuth(h http.Handler) http.Handler {
	certs := n.only(h, pki.RoleClient, pki.RoleNode)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if ok && n.cfg.MetricsToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(n.cfg.MetricsToken)) == 1 {
			h.ServeHTTP(w, r)
			return
		}
		certs.ServeHTTP(w, r)
	})
}

func (n *Node) handleMetrics() http.Handler {
	return promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{})
}

type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.n += int64(k)
	return k, err
}

type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *countingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	k, err := w.ResponseWriter.Write(p)
	w.n += int64(k)
	return k, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
