package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/atollstore/atoll/internal/atomicfile"
)

// cmdSnapshot saves the cluster's metadata to a file, or restores it
// (disaster recovery: every region's metadata lost, shard disks kept).
func cmdSnapshot(args []string) error {
	if len(args) == 0 || (args[0] != "save" && args[0] != "restore") {
		return usagef("want: atoll snapshot save|restore [--server URL] FILE")
	}
	fs := flag.NewFlagSet("snapshot "+args[0], flag.ContinueOnError)
	cn := connFlags(fs)
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one FILE")
	}
	cl, err := cn.open()
	if err != nil {
		return err
	}
	ctx := context.Background()
	if args[0] == "restore" {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		if err := cl.RestoreSnapshot(ctx, f); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "metadata restored from %s on every node\n", pos[0])
		return nil
	}
	// Written beside the target and renamed once complete and synced: an
	// interrupted save never leaves a truncated backup under the name.
	return atomicfile.Write(pos[0], 0o600, func(w io.Writer) error { return cl.SaveSnapshot(ctx, w) })
}
