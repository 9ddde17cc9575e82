package testcluster

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/storage/faulty"
)

var seedFlag = flag.Uint64("seed", 0, "replay TestRandomFailuresUnderLoad's failure schedule from this seed (or set ATOLL_SEED)")

// chaosSeed is -seed, else $ATOLL_SEED, else a fresh one; the test logs it.
func chaosSeed(t *testing.T) uint64 {
	if *seedFlag != 0 {
		return *seedFlag
	}
	if s := os.Getenv("ATOLL_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ATOLL_SEED=%q: %v", s, err)
		}
		return seed
	}
	return uint64(time.Now().UnixNano())
}

// TestRandomFailuresUnderLoad runs writers and readers while, at random,
// nodes are killed and restarted and disks fail (reads EIO, writes find
// the disk full, reads return rotten bytes, or the disk slows down) —
// never more than one region's worth of nodes at a time, and only ever
// inside one region, which is what 6+3 over three regions promises to
// survive. The schedule (which region, which nodes, which fault, how long)
// comes from a logged seed; -seed N or ATOLL_SEED=N replays it (the
// interleaving with the load is up to the scheduler). Invariants: a read never returns wrong
// bytes, and at the end every acknowledged blob reads back byte-exact.
// Puts may fail while a node dies under them, and so may reads in flight
// (the gateway itself may die mid-stream, and a blob written during one
// outage can have more than m shards in another region until repair moves
// them back — issue 3); they are counted, not hidden.
func TestRandomFailuresUnderLoad(t *testing.T) {
	seed := chaosSeed(t)
	t.Logf("seed %d (replay: go test ./testcluster -run TestRandomFailuresUnderLoad -seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := start(t, Options{})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()

	var mu sync.Mutex
	acked := map[blob.ID][]byte{}
	var ids []blob.ID
	failedPuts, failedReads, badReads := 0, 0, 0
	var wg sync.WaitGroup
	for w := range 3 {
		r := rand.New(rand.NewPCG(seed, uint64(w)+10))
		wg.Go(func() {
			for ctx.Err() == nil {
				data := randBytes(r, r.IntN(5*chunk))
				id, err := cl.Put(ctx, bytes.NewReader(data))
				mu.Lock()
				if err != nil {
					failedPuts++
				} else {
					acked[id] = data
					ids = append(ids, id)
				}
				mu.Unlock()
			}
		})
	}
	wg.Go(func() { // reader: any acknowledged blob, any time
		r := rand.New(rand.NewPCG(seed, 99))
		for ctx.Err() == nil {
			mu.Lock()
			if len(ids) == 0 {
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
				continue
			}
			id := ids[r.IntN(len(ids))]
			want := acked[id]
			mu.Unlock()
			got, err := getBytes(cl, id)
			mu.Lock()
			if err != nil {
				failedReads++
			} else if !bytes.Equal(got, want) {
				badReads++
			}
			mu.Unlock()
		}
	})

	// The chaos: pick a region; kill some of its nodes and give others a
	// failing disk; later restart them and heal the disks.
	faults := []struct {
		name  string
		fault []faulty.Fault
	}{
		{"eio+full", []faulty.Fault{{Ops: faulty.Fetch, Err: faulty.ErrIO}, {Ops: faulty.Receive, Err: faulty.ErrNoSpace}}},
		{"rot-on-read", []faulty.Fault{{Ops: faulty.Fetch, FlipBit: true}}},
		{"slow", []faulty.Fault{{Ops: faulty.Any, Delay: 150 * time.Millisecond}}},
	}
	regions := c.Regions()
	for ctx.Err() == nil {
		region := regions[rng.IntN(len(regions))]
		var victims []blob.NodeID
		var sick []*Member
		var plan []string
		for _, m := range c.Members() {
			if m.Region != region {
				continue
			}
			switch rng.IntN(4) {
			case 0, 1:
				victims = append(victims, m.ID)
				plan = append(plan, fmt.Sprintf("kill %s", m.ID))
			case 2:
				f := faults[rng.IntN(len(faults))]
				for _, ft := range f.fault {
					m.Disk.Inject(ft)
				}
				sick = append(sick, m)
				plan = append(plan, fmt.Sprintf("%s disk %s", m.ID, f.name))
			}
		}
		for _, id := range victims {
			c.KillNode(id)
		}
		t.Logf("%v", plan)
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		for _, id := range victims {
			if err := c.RestartNode(id); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range sick {
			m.Disk.Clear()
		}
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
	}
	wg.Wait()

	if badReads > 0 {
		t.Fatalf("%d reads returned wrong bytes", badReads)
	}
	t.Logf("%d blobs acknowledged; during the failures %d puts and %d reads failed", len(ids), failedPuts, failedReads)
	if len(ids) < 20 {
		t.Fatalf("only %d puts succeeded in 25 s: the cluster was unavailable far more than one region's loss explains", len(ids))
	}
	waitAlive(t, c)
	final := c.Client()
	for _, id := range ids {
		got, err := getBytes(final, id)
		if err != nil || !bytes.Equal(got, acked[id]) {
			t.Fatalf("acknowledged blob %s: %d bytes, err %v (seed %d)", id, len(got), err, seed)
		}
	}
}
