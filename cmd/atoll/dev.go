package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/node"
	"github.com/atollstore/atoll/pki"
	"github.com/atollstore/atoll/testcluster"
)

func cmdDev(args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	regions := fs.Int("regions", 3, "regions")
	per := fs.Int("nodes", 3, "nodes per region")
	wan := fs.Duration("wan", 0, "emulate this round-trip time between regions (e.g. 80ms; 0.5 ms within one)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	opts := testcluster.Options{Regions: *regions, NodesPerRegion: *per}
	if *wan > 0 {
		opts.WAN = &testcluster.WAN{Between: node.Link{Delay: *wan / 2}, Within: node.Link{Delay: 250 * time.Microsecond}}
	}
	fmt.Fprintf(os.Stderr, "starting %d regions x %d nodes (%v between regions)...\n", *regions, *per, *wan)
	c, err := testcluster.Start(context.Background(), opts)
	if err != nil {
		return err
	}
	defer c.Close()
	// The cluster made its own CA; the CLI and S3 tools need its
	// certificate, and admin commands an operator's.
	certs, err := os.MkdirTemp("", "atoll-dev-certs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(certs)
	if err := c.WriteClientCerts(certs); err != nil {
		return err
	}
	urls := c.URLs()
	fmt.Println(urls[0])
	fmt.Fprintf(os.Stderr, "cluster ready; every node serves the API and S3 over TLS:\n")
	for _, m := range c.Members() {
		fmt.Fprintf(os.Stderr, "  %-12s %-9s %s  S3 %s\n", m.ID, m.Region, m.Node.URL(), m.S3)
	}
	fmt.Fprintf(os.Stderr, "try: export ATOLL_SERVER=%s ATOLL_CERTS_DIR=%s\n     atoll cluster\n     atoll key create   (then any S3 tool on %s, trusting %s)\n"+
		"     atoll put --encrypt FILE   (a share link; or the web page at %s/ in a browser that trusts that CA)\n(interrupt to stop; data is temporary)\n",
		urls[0], certs, c.S3URLs()[0], filepath.Join(certs, pki.CACert), urls[0])
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}

// cmdDemo tells the story Atoll exists for: a region is seized and no file
// is lost. It exits non-zero if any byte differs.
func cmdDemo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	ctx := context.Background()
	const chunk = 1 << 20
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	say("== Atoll demo: 3 regions x 3 nodes, 6+3 erasure coding, 1 MiB chunks")
	start := time.Now()
	c, err := testcluster.Start(ctx, testcluster.Options{ChunkSize: chunk})
	if err != nil {
		return err
	}
	defer c.Close()
	say("cluster formed in %v", time.Since(start).Round(time.Millisecond))
	cl := c.Client()
	ci, err := cl.Cluster(ctx)
	if err != nil {
		return err
	}
	printCluster(os.Stdout, ci)

	rng := rand.New(rand.NewPCG(1, 2))
	files := map[blob.ID][]byte{}
	var order []blob.ID
	store := func(name string, size int) error {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		t := time.Now()
		id, err := cl.Put(ctx, bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("put %s: %w", name, err)
		}
		files[id] = data
		order = append(order, id)
		say("  stored %-22s %9d bytes  %s  (%v)", name, size, id, time.Since(t).Round(time.Millisecond))
		return nil
	}
	say("\n== storing sample files")
	for _, f := range []struct {
		name string
		size int
	}{{"empty.txt", 0}, {"one-byte.bin", 1}, {"note.txt", 1000}, {"chunk-minus-1.bin", chunk - 1},
		{"exactly-a-chunk.bin", chunk}, {"chunk-plus-1.bin", chunk + 1}, {"photo.jpg", 3_456_789}, {"video.mp4", 20 << 20}} {
		if err := store(f.name, f.size); err != nil {
			return err
		}
	}

	leader, err := c.WaitLeader(ctx)
	if err != nil {
		return err
	}
	seized := leader.Region
	say("\n== seizing region %s (all 3 nodes, including the raft leader %s)", seized, leader.ID)
	if err := c.KillRegion(seized); err != nil {
		return err
	}
	if err := inspectSeized(c, seized, files, say); err != nil {
		return err
	}

	verify := func(stage string) error {
		for _, id := range order {
			t := time.Now()
			rc, err := cl.Get(ctx, id)
			if err != nil {
				return fmt.Errorf("%s: get %s: %w", stage, id, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return fmt.Errorf("%s: reading %s: %w", stage, id, err)
			}
			if !bytes.Equal(got, files[id]) {
				return fmt.Errorf("%s: blob %s came back different (%d bytes, want %d)", stage, id, len(got), len(files[id]))
			}
			say("  read back %s  %9d bytes  byte-exact  (%v)", id, len(got), time.Since(t).Round(time.Millisecond))
		}
		return nil
	}
	say("\n== reading every file back with region %s gone", seized)
	if err := verify("after seizure"); err != nil {
		return err
	}
	say("\n== writing new files while region %s is down", seized)
	for i, size := range []int{12345, 5 << 20} {
		if err := store(fmt.Sprintf("during-outage-%d.bin", i+1), size); err != nil {
			return err
		}
	}
	if err := verify("new files during outage"); err != nil {
		return err
	}
	if ci, err = cl.Cluster(ctx); err == nil {
		say("\n== cluster during the outage (new leader %s)", ci.Leader)
		printCluster(os.Stdout, ci)
	}

	say("\n== region %s comes back", seized)
	if err := c.RestartRegion(seized); err != nil {
		return err
	}
	var back []string
	for _, m := range c.Members() {
		if m.Region == seized {
			back = append(back, m.Node.URL())
		}
	}
	cl = c.Client(back...) // read through the returning region's nodes
	time.Sleep(2 * time.Second)
	if err := verify("after the region returned"); err != nil {
		return err
	}
	say("\n== done: %d files, every byte intact through a region loss (%v)", len(order), time.Since(start).Round(time.Millisecond))
	return nil
}

// inspectSeized reads the seized region's disks as whoever took them
// would: every file, offline, shards found by their headers wherever they
// lie (a file each, or records in a volume). It fails if they hold any
// sampled 32-byte window of a stored file, or k shards of any chunk.
func inspectSeized(c *testcluster.Cluster, seized blob.Region, files map[blob.ID][]byte, say func(string, ...any)) error {
	windows := map[string]bool{}
	for _, data := range files {
		for i := 0; i+32 <= len(data); i += 4096 {
			windows[string(data[i:i+32])] = true
		}
	}
	type slot struct {
		node  blob.NodeID
		chunk blob.ID
		index int
	}
	held := map[slot]bool{}
	perChunk := map[blob.ID]int{}
	shards, bytesHeld, k := 0, int64(0), 0
	for _, m := range c.Members() {
		if m.Region != seized {
			continue
		}
		err := filepath.WalkDir(filepath.Join(m.Dir, "shards"), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for i := 0; i+32 <= len(b); i++ {
				if windows[string(b[i:i+32])] {
					return fmt.Errorf("the seized disks hold plaintext: %s", path)
				}
			}
			erasure.ScanHeaders(b, func(_ int, h erasure.Header) {
				if s := (slot{m.ID, h.Chunk, h.Index}); !held[s] {
					held[s] = true
					shards, bytesHeld, k = shards+1, bytesHeld+int64(erasure.HeaderSize+h.ShardLen), h.K
					perChunk[h.Chunk]++
				}
			})
			return nil
		})
		if err != nil {
			return err
		}
	}
	most := 0
	for _, n := range perChunk {
		most = max(most, n)
	}
	if most >= k {
		return fmt.Errorf("the seized region holds %d shards of a chunk; %d decode it", most, k)
	}
	say("  the seized disks hold %d shards (%d MiB) of %d chunks, at most %d of any chunk (%d needed):", shards, bytesHeld>>20, len(perChunk), most, k)
	say("  dispersed, they are ciphertext under keys they do not contain: no byte of any file is on them")
	return nil
}
