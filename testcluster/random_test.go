package testcluster

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
)

// TestRandomFailuresUnderLoad runs writers and readers while nodes are
// killed and restarted at random — never more than one region's worth of
// nodes at a time, and only ever inside one region, which is what 6+3 over
// three regions promises to survive. Invariants: a read never returns wrong
// bytes, and at the end every acknowledged blob reads back byte-exact.
// Puts may fail while a node dies under them, and so may reads in flight
// (the gateway itself may die mid-stream, and a blob written during one
// outage can have more than m shards in another region until repair moves
// them back — issue 3); they are counted, not hidden.
func TestRandomFailuresUnderLoad(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := start(t, Options{})
	cl := client.New(c.URLs()...)
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

	// The chaos: pick a region, kill 1–3 of its nodes, restart them later.
	regions := c.Regions()
	for ctx.Err() == nil {
		region := regions[rng.IntN(len(regions))]
		var victims []blob.NodeID
		for _, m := range c.Members() {
			if m.Region == region && rng.IntN(2) == 0 {
				victims = append(victims, m.ID)
			}
		}
		for _, id := range victims {
			c.KillNode(id)
		}
		t.Logf("killed %v", victims)
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		for _, id := range victims {
			if err := c.RestartNode(id); err != nil {
				t.Fatal(err)
			}
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
	final := client.New(c.URLs()...)
	for _, id := range ids {
		got, err := getBytes(final, id)
		if err != nil || !bytes.Equal(got, acked[id]) {
			t.Fatalf("acknowledged blob %s: %d bytes, err %v (seed %d)", id, len(got), err, seed)
		}
	}
}
