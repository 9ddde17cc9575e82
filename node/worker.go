package node

import (
	"context"
	"sync"
	"time"

	"github.com/atollstore/atoll/api"
)

// A worker is one of the node's background loops — control, reconnect,
// repair, scrub: it runs its pass every period until the node stops
// (the node's root context ends), and keeps a status that `atoll cluster
// --json` reports. A leader-only worker stands by on followers, and its
// pass is cancelled as soon as this node stops leading.
type worker struct {
	name       string
	every      time.Duration
	leaderOnly bool
	pass       func(ctx context.Context) error

	mu     sync.Mutex
	status api.WorkerStatus
}

// leaderCheck is how often a leader-only pass checks it still leads.
const leaderCheck = 200 * time.Millisecond

// startWorker runs w in a goroutine the node owns.
func (n *Node) startWorker(w *worker) {
	w.status.Name = w.name
	n.workers = append(n.workers, w)
	n.wg.Go(func() {
		t := time.NewTimer(w.every)
		defer t.Stop()
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-t.C:
			}
			if w.leaderOnly && !n.meta.IsLeader() {
				w.set(func(s *api.WorkerStatus) { s.State = "standby" })
			} else {
				n.runPass(w)
			}
			t.Reset(w.every)
		}
	})
}

func (n *Node) runPass(w *worker) {
	ctx, cancel := context.WithCancel(n.ctx)
	defer cancel()
	if w.leaderOnly {
		go func() { // stop the pass when leadership is lost
			t := time.NewTicker(leaderCheck)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if !n.meta.IsLeader() {
						cancel()
						return
					}
				}
			}
		}()
	}
	start := time.Now()
	w.set(func(s *api.WorkerStatus) { s.State, s.LastStart = "running", start.UTC() })
	err := w.pass(ctx)
	w.set(func(s *api.WorkerStatus) {
		s.State = "idle"
		s.Passes++
		s.LastSeconds = time.Since(start).Seconds()
		s.LastError = ""
		if err != nil && ctx.Err() == nil {
			s.Errors++
			s.LastError = err.Error()
			n.log.Warn(w.name+" pass failed", "err", err)
		}
	})
}

func (w *worker) set(fn func(*api.WorkerStatus)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fn(&w.status)
}

// workerStatus returns the status of every worker of this node.
func (n *Node) workerStatus() []api.WorkerStatus {
	out := make([]api.WorkerStatus, len(n.workers))
	for i, w := range n.workers {
		w.mu.Lock()
		out[i] = w.status
		w.mu.Unlock()
	}
	return out
}
