package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
)

func cmdPut(args []string) error {
	fs := flag.NewFlagSet("put", flag.ContinueOnError)
	server := serverFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one FILE (or - for stdin)")
	}
	var in io.Reader = os.Stdin
	if pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	id, err := newClient(*server).Put(context.Background(), in)
	if err != nil {
		return err
	}
	fmt.Println(id)
	return nil
}

func cmdGet(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	server := serverFlag(fs)
	out := fs.String("o", "", "write to this file instead of stdout")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	rc, err := newClient(*server).Get(context.Background(), id)
	if err != nil {
		return err
	}
	defer rc.Close()
	if *out == "" {
		_, err = io.Copy(os.Stdout, rc)
		return err
	}
	// Write beside the target and rename on success, so FILE is never a
	// truncated copy.
	tmp, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, rc); err != nil {
		tmp.Close()
		return fmt.Errorf("download cut short: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), *out)
}

func cmdStat(args []string) error {
	fs := flag.NewFlagSet("stat", flag.ContinueOnError)
	server := serverFlag(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	st, err := newClient(*server).Stat(context.Background(), id)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(st)
	}
	healthy, total := 0, 0
	for _, c := range st.Chunks {
		for _, s := range c.Shards {
			total++
			if s.Healthy {
				healthy++
			}
		}
	}
	fmt.Printf("id:     %s\nsize:   %d bytes\ncoding: %d+%d\nchunks: %d\nshards: %d of %d healthy\n", st.ID, st.Size, st.K, st.M, len(st.Chunks), healthy, total)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHUNK\tSHARD\tNODE\tREGION\tSTATE")
	for i, c := range st.Chunks {
		for _, s := range c.Shards {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", i, s.Index, s.Node, s.Region, s.State)
		}
	}
	return tw.Flush()
}

func cmdRm(args []string) error {
	fs := flag.NewFlagSet("rm", flag.ContinueOnError)
	server := serverFlag(fs)
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	return newClient(*server).Delete(context.Background(), id)
}

func cmdCluster(args []string) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	server := serverFlag(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected arguments %q", pos)
	}
	ci, err := newClient(*server).Cluster(context.Background())
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(ci)
	}
	printCluster(os.Stdout, ci)
	return nil
}

func printCluster(w io.Writer, ci *api.ClusterInfo) {
	guarantee := "tolerates the loss of 1 region"
	if !ci.ToleratesRegionLoss {
		guarantee = "does NOT tolerate the loss of a region"
	}
	fmt.Fprintf(w, "coding:  %d+%d (chunks of %d bytes)\nregions: %s\nleader:  %s\nblobs:   %d (%d bytes stored, %d bytes on disk)\nguarantee: %s\ndegraded chunks: %d\n",
		ci.K, ci.M, ci.ChunkSize, joinRegions(ci), ci.Leader, ci.Blobs, ci.StoredBytes, ci.UsedBytes, guarantee, ci.DegradedChunks)
	if r := ci.Repair; r.Running {
		fmt.Fprintf(w, "repair:  %d/%d chunks, %.1f MB/s, ETA %.0fs\n", r.Done, r.Total, r.BytesPerSecond/1e6, r.ETASeconds)
	} else {
		fmt.Fprintln(w, "repair:  idle")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREGION\tZONE\tSTATE\tPLACEMENT\tVOTER\tUSED\tADDR")
	for _, n := range ci.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%d\t%s\n", n.ID, n.Region, n.Zone, n.State, n.Placement, n.Voter, n.UsedBytes, n.Addr)
	}
	tw.Flush()
	for _, warn := range ci.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

func joinRegions(ci *api.ClusterInfo) string {
	var rs []string
	for _, r := range ci.Regions {
		rs = append(rs, string(r))
	}
	return strings.Join(rs, ", ")
}

func cmdNode(args []string) error {
	if len(args) == 0 || (args[0] != "drain" && args[0] != "remove") {
		return usagef("want: atoll node drain|remove [--server URL] ID")
	}
	fs := flag.NewFlagSet("node "+args[0], flag.ContinueOnError)
	server := serverFlag(fs)
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one node ID")
	}
	cl, id := newClient(*server), blob.NodeID(pos[0])
	if args[0] == "drain" {
		if err := cl.DrainNode(context.Background(), id); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "node %s is draining; follow with: atoll cluster\n", id)
		return nil
	}
	return cl.RemoveNode(context.Background(), id)
}
