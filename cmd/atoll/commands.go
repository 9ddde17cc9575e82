package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/atollstore/atoll/api"
	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/dustin/go-humanize"
	"github.com/zeebo/blake3"
)

func cmdPut(args []string) error {
	fs := flag.NewFlagSet("put", flag.ContinueOnError)
	cn := connFlags(fs)
	quiet := fs.Bool("quiet", false, "no progress bar")
	encrypt := fs.Bool("encrypt", false, "encrypt FILE here and print a share link (https://NODE/f/ID#KEY)")
	name := fs.String("name", "", "with --encrypt: the file name the link shows (default: FILE's)")
	expires := fs.Duration("expires", 0, "with --encrypt: the link expires after this long (default: never)")
	domainKey := fs.String("domain-key", os.Getenv("ATOLL_DOMAIN_KEY_FILE"), "with --encrypt: your key domain's key file (default $ATOLL_DOMAIN_KEY_FILE, else atoll/domain.key in your configuration directory; made if missing)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one FILE (or - for stdin)")
	}
	if *encrypt && pos[0] == "-" {
		return usagef("--encrypt needs a regular FILE")
	}
	ctx := context.Background()
	cl, err := cn.open()
	if err != nil {
		return err
	}
	if pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if *encrypt {
			if !st.Mode().IsRegular() {
				return usagef("--encrypt needs a regular FILE")
			}
			return shareFile(ctx, cl, f, st.Size(), cmp.Or(*name, filepath.Base(pos[0])), *expires, *domainKey, *quiet)
		}
		if st.Mode().IsRegular() {
			return uploadFile(ctx, cl, f, st.Size(), *quiet)
		}
		return streamPut(ctx, cl, f, *quiet) // a pipe or a device
	}
	return streamPut(ctx, cl, os.Stdin, *quiet)
}

// uploadFile sends a regular file by content-defined chunks, only those
// the cluster lacks.
func uploadFile(ctx context.Context, cl *client.Client, f *os.File, size int64, quiet bool) error {
	bar := newProgress(size, "put", quiet)
	res, err := cl.Upload(ctx, f, size, &client.UploadOptions{Progress: func(p client.UploadProgress) {
		bar.set(p.Sent + p.Skipped)
		if p.Skipped > 0 {
			bar.describe(fmt.Sprintf("put (%s already stored)", humanize.IBytes(uint64(p.Skipped))))
		}
	}})
	bar.finish()
	if err != nil {
		return err
	}
	fmt.Println(res.ID)
	return nil
}

// streamPut sends a stream of unknown size in one request; the cluster
// chunks it and stores only the chunks it did not hold.
func streamPut(ctx context.Context, cl *client.Client, r io.Reader, quiet bool) error {
	bar := newProgress(-1, "put", quiet)
	id, err := cl.Put(ctx, io.TeeReader(r, bar))
	bar.finish()
	if err != nil {
		return err
	}
	fmt.Println(id)
	return nil
}

func cmdGet(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	cn := connFlags(fs)
	out := fs.String("o", "", "write to this file instead of stdout")
	cont := fs.Bool("continue", false, "resume a partial -o FILE from where it stopped")
	quiet := fs.Bool("quiet", false, "no progress bar")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 1 && strings.Contains(pos[0], "://") {
		if *cont {
			return usagef("--continue is for blob IDs, not links")
		}
		return getLink(context.Background(), cn, pos[0], *out, *quiet)
	}
	id, err := idArg(pos)
	if err != nil {
		return err
	}
	if *cont && *out == "" {
		return usagef("--continue needs -o FILE")
	}
	ctx := context.Background()
	cl, err := cn.open()
	if err != nil {
		return err
	}
	size, err := cl.Size(ctx, id)
	if err != nil {
		return err
	}
	// Every download is verified end to end: a blob's ID is the BLAKE3
	// hash of its bytes.
	sum := blake3.New()
	var dst io.Writer = os.Stdout
	var have int64
	if *out != "" {
		mode := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
		if *cont {
			mode = os.O_CREATE | os.O_RDWR
		}
		f, err := os.OpenFile(*out, mode, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if *cont {
			if have, err = io.Copy(sum, f); err != nil { // hash what is already there
				return err
			}
			if have > size {
				return fmt.Errorf("%s has %d bytes but blob %s has %d: it is not a partial download of this blob", *out, have, id, size)
			}
		}
		dst = f
	}
	bar := newProgress(size, "get", *quiet)
	bar.set(have)
	if have < size {
		rc, err := cl.GetRange(ctx, id, have, -1)
		if err != nil {
			return err
		}
		defer rc.Close()
		if _, err := io.Copy(io.MultiWriter(dst, sum, bar), rc); err != nil {
			if *out != "" {
				return fmt.Errorf("download cut short (resume with --continue): %w", err)
			}
			return fmt.Errorf("download cut short: %w", err)
		}
	}
	bar.finish()
	if f, ok := dst.(*os.File); ok && *out != "" {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if got := blob.ID(sum.Sum(nil)); got != id {
		return fmt.Errorf("verification failed: the %d bytes received hash to %s, not %s; delete the output and download again", size, got, id)
	}
	return nil
}

func cmdStat(args []string) error {
	fs := flag.NewFlagSet("stat", flag.ContinueOnError)
	cn := connFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	cl, err := cn.open()
	if err != nil {
		return err
	}
	st, err := cl.Stat(context.Background(), id)
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
	cn := connFlags(fs)
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	cl, err := cn.open()
	if err != nil {
		return err
	}
	return cl.Delete(context.Background(), id)
}

func cmdCluster(args []string) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	cn := connFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected arguments %q", pos)
	}
	cl, err := cn.open()
	if err != nil {
		return err
	}
	ci, err := cl.Cluster(context.Background())
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
	if len(args) == 0 || (args[0] != "drain" && args[0] != "remove" && args[0] != "revoke") {
		return usagef("want: atoll node drain|remove|revoke [--server URL] ID")
	}
	fs := flag.NewFlagSet("node "+args[0], flag.ContinueOnError)
	cn := connFlags(fs)
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one node ID")
	}
	cl, err := cn.open()
	if err != nil {
		return err
	}
	ctx, id := context.Background(), blob.NodeID(pos[0])
	switch args[0] {
	case "drain":
		if err := cl.DrainNode(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "node %s is draining; follow with: atoll cluster\n", id)
		return nil
	case "revoke":
		if err := cl.RevokeNode(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "node %s is revoked: every node refuses its certificate; its shards are being rebuilt elsewhere\n", id)
		return nil
	}
	return cl.RemoveNode(ctx, id)
}

func cmdKey(args []string) error {
	if len(args) == 0 || (args[0] != "create" && args[0] != "list" && args[0] != "delete") {
		return usagef("want: atoll key create|list|delete [--server URL] ...")
	}
	fs := flag.NewFlagSet("key "+args[0], flag.ContinueOnError)
	cn := connFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var scopes, buckets, tenant *string
	if args[0] == "create" {
		scopes = fs.String("scopes", "", "comma-separated: read, write, delete (default: all)")
		buckets = fs.String("buckets", "", "comma-separated S3 buckets the key is limited to (default: every bucket, and the native API)")
		tenant = fs.String("tenant", "", "the tenant whose blobs the key reaches; keys of one tenant share them (default: the key is its own tenant)")
	}
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	ctx := context.Background()
	cl, err := cn.open()
	if err != nil {
		return err
	}
	switch args[0] {
	case "create":
		if len(pos) != 0 {
			return usagef("key create takes no arguments")
		}
		k, err := cl.CreateAccessKey(ctx, api.KeyRequest{Scopes: split(*scopes), Buckets: split(*buckets), Tenant: *tenant})
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(os.Stdout).Encode(map[string]string{"access_key": k.AccessKey, "secret_key": k.SecretKey})
		}
		fmt.Printf("access key: %s\nsecret key: %s\n", k.AccessKey, k.SecretKey)
		fmt.Fprintln(os.Stderr, "(the secret is shown only now)")
		return nil
	case "list":
		if len(pos) != 0 {
			return usagef("key list takes no arguments")
		}
		ks, err := cl.AccessKeys(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(os.Stdout).Encode(ks)
		}
		for _, k := range ks {
			scopes, buckets := "all", "all"
			if len(k.Scopes) > 0 {
				scopes = strings.Join(k.Scopes, ",")
			}
			if len(k.Buckets) > 0 {
				buckets = strings.Join(k.Buckets, ",")
			}
			fmt.Printf("%s  created %s  tenant %s  scopes %s  buckets %s\n", k.AccessKey, k.Created.Format(time.RFC3339), k.TenantName(), scopes, buckets)
		}
		return nil
	default:
		if len(pos) != 1 {
			return usagef("want exactly one access key")
		}
		return cl.DeleteAccessKey(ctx, pos[0])
	}
}
