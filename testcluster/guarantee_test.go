package testcluster

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atollstore/atoll/api"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTwoRegionsSaySo: 6+3 over two regions cannot survive losing one; the
// cluster must say so loudly rather than pretend.
func TestTwoRegionsSaySo(t *testing.T) {
	var logs syncBuffer
	c := start(t, Options{Regions: 2, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ci, err := c.Client().Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ci.ToleratesRegionLoss {
		t.Fatal("2 regions with 6+3 reported as tolerating a region loss")
	}
	if len(ci.Warnings) == 0 || !strings.Contains(strings.Join(ci.Warnings, "\n"), "needs 3") {
		t.Fatalf("warnings %q do not explain the missing region", ci.Warnings)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "does NOT tolerate the loss of a region") {
		if time.Now().After(deadline) {
			t.Fatal("no node logged that the layout does not tolerate a region loss")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWorkersReport: every node reports its background workers; the
// leader-only repair worker runs passes on the leader and stands by on the
// followers.
func TestWorkersReport(t *testing.T) {
	c := start(t, Options{Regions: 3, NodesPerRegion: 1})
	cl := c.Client()
	err := c.waitFor(context.Background(), "every worker to report", func() bool {
		ci, err := cl.Cluster(context.Background())
		if err != nil {
			return false
		}
		for _, n := range ci.Nodes {
			byName := map[string]api.WorkerStatus{}
			for _, w := range n.Workers {
				byName[w.Name] = w
			}
			if byName["control"].Passes == 0 || byName["reconnect"].Passes == 0 {
				return false
			}
			repair, ok := byName["repair"]
			if _, scrub := byName["scrub"]; !ok || !scrub {
				return false
			}
			if n.ID == ci.Leader && repair.Passes == 0 || n.ID != ci.Leader && repair.State != "standby" {
				return false
			}
		}
		return true
	})
	if err != nil {
		ci, _ := cl.Cluster(context.Background())
		t.Fatalf("%v: %+v", err, ci.Nodes)
	}
}
