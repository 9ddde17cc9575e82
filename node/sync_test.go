package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/raftstore"
)

// TestReadIndexRoundsAreShared: concurrent callers share few requests, and
// every caller gets an index asked for after it arrived — the property
// that makes a shared index linearizable. Here the "index" a round returns
// is the number of callers that had arrived when it was asked for.
func TestReadIndexRoundsAreShared(t *testing.T) {
	var b readIndexRounds
	var arrived, fetches atomic.Uint64
	fetch := func() (uint64, error) {
		fetches.Add(1)
		idx := arrived.Load()
		time.Sleep(2 * time.Millisecond) // a round trip to the leader
		return idx, nil
	}
	const callers, rounds = 16, 20
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range rounds {
				me := arrived.Add(1)
				idx, err := b.wait(context.Background(), fetch)
				if err != nil {
					t.Error(err)
					return
				}
				if idx < me {
					t.Errorf("caller %d got index %d, asked for before it arrived", me, idx)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := fetches.Load(); n >= callers*rounds/2 {
		t.Fatalf("%d callers' waits made %d requests to the leader", callers*rounds, n)
	}
	t.Logf("%d waits, %d requests", callers*rounds, fetches.Load())
}

// TestReadIndexRoundErrors: a round that finds no leader is retried; one
// that fails otherwise fails its callers only; a caller that gives up
// does not end the round for the others.
func TestReadIndexRoundErrors(t *testing.T) {
	var b readIndexRounds
	errBroken := errors.New("broken")
	if _, err := b.wait(context.Background(), func() (uint64, error) { return 0, errBroken }); !errors.Is(err, errBroken) {
		t.Fatalf("failed round: got %v, want %v", err, errBroken)
	}
	tries := 0
	noLeaderOnce := func() (uint64, error) {
		if tries++; tries == 1 {
			return 0, fmt.Errorf("%w: no raft leader reachable", blob.ErrUnavailable)
		}
		return 7, nil
	}
	if idx, err := b.wait(context.Background(), noLeaderOnce); err != nil || idx != 7 || tries != 2 {
		t.Fatalf("after a round without a leader: got %d, %v in %d rounds; want 7 in 2", idx, err, tries)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	noLeader := func() (uint64, error) { return 0, raftstore.ErrNotLeader }
	if _, err := b.wait(ctx, noLeader); !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("no leader until the caller's deadline: got %v, want ErrUnavailable", err)
	}

	release := make(chan struct{})
	slow := func() (uint64, error) { <-release; return 9, nil }
	ctx, cancel = context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := b.wait(ctx, slow)
		gaveUp <- err
	}()
	stayed := make(chan uint64, 1)
	go func() {
		idx, _ := b.wait(context.Background(), slow)
		stayed <- idx
	}()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-gaveUp; !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("a caller that gave up: got %v, want ErrUnavailable", err)
	}
	close(release)
	if idx := <-stayed; idx != 9 {
		t.Fatalf("the caller that stayed got %d, want 9", idx)
	}
}
