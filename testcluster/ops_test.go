package testcluster

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/atollstore/atoll/blob"
)

// scrape reads a node's /metrics (as the operator) and parses it.
func scrape(t *testing.T, c *Cluster, m *Member) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := tryScrape(c, m)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// tryScrape is scrape for conditions polled while the cluster changes
// (m may be nil: no leader at the moment).
func tryScrape(c *Cluster, m *Member) (map[string]*dto.MetricFamily, error) {
	if m == nil || m.Node == nil {
		return nil, errors.New("no such node running")
	}
	resp, err := c.HTTPClient().Get(m.Node.URL() + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New("/metrics: " + resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// value is the sum of a family's samples whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	sum, found := 0.0, false
	for _, m := range f.Metric {
		match := true
		for k, v := range want {
			has := false
			for _, l := range m.Label {
				has = has || (l.GetName() == k && l.GetValue() == v)
			}
			match = match && has
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, found
}

// TestMetricsThroughARegionLoss scrapes the leader while a region dies
// and is repaired: degraded chunks rise, then fall to 0; requests, shard
// transfers per peer and raft state are there; health follows quorum.
func TestMetricsThroughARegionLoss(t *testing.T) {
	c := start(t, Options{DeadAfter: time.Second})
	ctx := context.Background()
	cl := c.Client()
	putAll(t, cl, corpus(101, 10))
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The client put through one node (its first address).
	gw := scrape(t, c, c.Members()[0])
	if v, _ := value(gw, "atoll_http_requests_total", map[string]string{"api": "native", "op": "POST /v1/blobs", "code": "201"}); v != 10 {
		t.Errorf("the gateway counted %v puts, want 10", v)
	}
	if v, _ := value(gw, "atoll_raft_apply_duration_seconds", nil); v < 10 {
		t.Errorf("the gateway timed %v commits, want at least 10", v)
	}
	fams := scrape(t, c, leader)
	for _, check := range []struct {
		name   string
		labels map[string]string
	}{
		{"atoll_http_request_duration_seconds", map[string]string{"api": "native"}},
		{"atoll_raft_leader", nil},
		{"atoll_gossip_members", map[string]string{"state": "alive"}},
		{"atoll_disk_used_bytes", nil},
		{"atoll_disk_free_bytes", nil},
	} {
		if v, ok := value(fams, check.name, check.labels); !ok || v <= 0 {
			t.Errorf("%s%v = %v (present %v)", check.name, check.labels, v, ok)
		}
	}
	if _, ok := fams["atoll_shard_requests_total"]; !ok {
		// the leader may not have been a gateway: any node that was has them
		var found bool
		for _, m := range c.Members() {
			_, found = scrape(t, c, m)["atoll_shard_requests_total"]
			if found {
				break
			}
		}
		if !found {
			t.Error("no node reports shard transfers")
		}
	}
	if v, _ := value(fams, "atoll_degraded_chunks", nil); v != 0 {
		t.Fatalf("degraded chunks before the loss: %v", v)
	}

	victim := otherRegion(c, leader.Region)
	c.KillRegion(victim)
	peak := 0.0
	if err := c.waitFor(ctx, "degraded chunks reported", func() bool {
		fams, err := tryScrape(c, c.Leader())
		peak, _ = value(fams, "atoll_degraded_chunks", nil)
		return err == nil && peak > 0
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.waitFor(ctx, "degraded chunks back to 0 after repair", func() bool {
		fams, err := tryScrape(c, c.Leader())
		v, _ := value(fams, "atoll_degraded_chunks", nil)
		dead, _ := value(fams, "atoll_gossip_members", map[string]string{"state": "dead"})
		return err == nil && v == 0 && dead == 3
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("degraded chunks: %v at the loss, 0 after repair", peak)

	// Health: ready while a quorum stands; not once a second region goes.
	get := func(m *Member, path string) int {
		resp, err := c.HTTPClient().Get(m.Node.URL() + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if leader, err = c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	var survivor *Member
	for _, m := range c.Members() {
		if m.Node != nil && m.Region != victim && m.Region != leader.Region {
			survivor = m
		}
	}
	if got := get(survivor, "/health/ready"); got != 200 {
		t.Fatalf("ready with a quorum: %d", got)
	}
	c.KillRegion(leader.Region)
	if err := c.waitFor(ctx, "not ready without a quorum", func() bool { return get(survivor, "/health/ready") == 503 }); err != nil {
		t.Fatal(err)
	}
	if got := get(survivor, "/health/live"); got != 200 {
		t.Errorf("live without a quorum: %d", got)
	}
}

// TestSnapshotRestoresLostMetadata: every node loses its metadata (raft
// directory) but keeps its shard disk; a fresh cluster restored from the
// last snapshot serves every blob byte-exact and takes new writes.
func TestSnapshotRestoresLostMetadata(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 1, K: 2, M: 1})
	ctx := context.Background()
	cl := c.Client()
	blobs := corpus(111, 8)
	ids := putAll(t, cl, blobs)
	var snap bytes.Buffer
	if err := cl.SaveSnapshot(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Members() {
		c.KillNode(m.ID)
		if err := os.RemoveAll(filepath.Join(m.Dir, "raft")); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.Members() {
		if err := c.RestartNode(m.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitFormed(ctx); err != nil {
		t.Fatal(err)
	}
	cl = c.Client()
	if _, err := getBytes(cl, ids[0]); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a fresh cluster knows a blob before the restore: %v", err)
	}
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	follower := c.Members()[0]
	if follower.ID == leader.ID {
		follower = c.Members()[1]
	}
	// Through a follower: it streams the snapshot on to the leader.
	if err := c.Client(follower.Node.URL()).RestoreSnapshot(ctx, bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		mustRead(t, cl, id, blobs[i])
	}
	more := corpus(112, 3)
	for i, id := range putAll(t, cl, more) {
		mustRead(t, cl, id, more[i])
	}
	t.Logf("snapshot of %d blobs: %d bytes", len(ids), snap.Len())
}
