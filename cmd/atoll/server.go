package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/node"
	"github.com/atollstore/atoll/pki"
	"github.com/atollstore/atoll/s3"
)

func cmdServer(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	def := node.DefaultConfig() // the one source of defaults
	cfg := def
	var region, zone, id, join, level, masterKeyFile, s3Domain string
	var s3Port int
	var certsDir, metricsTokenFile string
	var insecure bool
	fs.StringVar(&cfg.Dir, "data", "", "data directory (required)")
	fs.StringVar(&region, "region", "", "region (jurisdiction) of this node (required)")
	fs.StringVar(&cfg.Bind, "bind", "", "IP address to listen on (required)")
	fs.StringVar(&zone, "zone", string(def.Zone), "zone (failure domain) inside the region")
	fs.StringVar(&join, "join", "", "comma-separated IPs (or IP:port) of other nodes' gossip")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", def.BootstrapExpect, "form the cluster once this many nodes have joined")
	fs.StringVar(&id, "id", "", "node ID (default: the one its certificate names; with --insecure, generated once and kept in the data directory)")
	fs.IntVar(&cfg.APIPort, "api-port", def.APIPort, "HTTP API port")
	fs.IntVar(&cfg.GossipPort, "gossip-port", def.GossipPort, "gossip port")
	fs.IntVar(&cfg.RaftPort, "raft-port", def.RaftPort, "raft port")
	fs.IntVar(&cfg.K, "k", def.K, "data shards per chunk (cluster-wide)")
	fs.IntVar(&cfg.M, "m", def.M, "parity shards per chunk (cluster-wide)")
	fs.IntVar(&cfg.SmallMax, "small-max", def.SmallMax, "chunks of at most this many bytes use the small code; negative: none (cluster-wide)")
	fs.IntVar(&cfg.SmallK, "small-k", def.SmallK, "data shards per small chunk (cluster-wide)")
	fs.IntVar(&cfg.SmallM, "small-m", def.SmallM, "parity shards per small chunk (cluster-wide)")
	fs.IntVar(&cfg.ChunkSize, "chunk-size", def.ChunkSize, "chunk size in bytes")
	fs.Int64Var(&cfg.MaxBlobSize, "max-blob-size", def.MaxBlobSize, "largest accepted upload in bytes")
	fs.Float64Var(&cfg.Weight, "capacity", def.Weight, "relative capacity weight of this node")
	fs.DurationVar(&cfg.DeadAfter, "dead-after", def.DeadAfter, "declare a node dead (and rebuild its shards elsewhere) after it has been gone this long")
	fs.IntVar(&cfg.RepairBandwidth, "repair-bandwidth", def.RepairBandwidth, "bytes per second repair and rebalancing may write")
	fs.IntVar(&cfg.RepairParallel, "repair-parallel", def.RepairParallel, "chunks repaired at once")
	fs.DurationVar(&cfg.ScrubInterval, "scrub-interval", def.ScrubInterval, "pause between passes that re-verify this node's shards")
	fs.IntVar(&cfg.ScrubBandwidth, "scrub-bandwidth", def.ScrubBandwidth, "bytes per second the scrubber may read")
	fs.DurationVar(&cfg.OrphanGrace, "orphan-grace", def.OrphanGrace, "keep unreferenced shards this long before reclaiming them (longer than any upload)")
	fs.IntVar(&s3Port, "s3-port", s3.DefaultPort, "S3-compatible API port (0: no S3 endpoint)")
	fs.StringVar(&s3Domain, "s3-domain", "", "serve virtual-hosted–style S3 requests to BUCKET.DOMAIN (path-style always works)")
	fs.StringVar(&masterKeyFile, "s3-master-key-file", "", "file holding the 32-byte master key (64 hex digits) that seals S3 secrets; the same on every node")
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&certsDir, "certs-dir", "", "directory with ca.crt, node.crt, node.key and gossip.key (atoll cert create-node); reloaded on SIGHUP")
	fs.StringVar(&metricsTokenFile, "metrics-token-file", "", "file holding a bearer token that may read /metrics without a certificate")
	configFile := fs.String("config", "", "TOML file of settings named like these flags (s3-port = 8900); flags, then $ATOLL_<FLAG> variables, then the file")
	fs.BoolVar(&insecure, "insecure", false, "run without TLS or authentication, every port open to anyone who can reach it (a single trusted machine only)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	if err := applyConfig(fs, *configFile); err != nil {
		return err
	}
	if cfg.Dir == "" || region == "" || cfg.Bind == "" {
		return usagef("--data, --region and --bind are required")
	}
	if (certsDir == "") == !insecure {
		return usagef("give --certs-dir (made by: atoll cert create-node), or --insecure to run without TLS")
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return usagef("--log-level: %v", err)
	}
	cfg.Region, cfg.Zone, cfg.ID = blob.Region(region), blob.Zone(zone), blob.NodeID(id)
	if join != "" {
		cfg.Join = strings.Split(join, ",")
	}
	if metricsTokenFile != "" {
		b, err := os.ReadFile(metricsTokenFile)
		if err != nil {
			return err
		}
		if cfg.MetricsToken = strings.TrimSpace(string(b)); len(cfg.MetricsToken) < 16 {
			return usagef("--metrics-token-file: a token of at least 16 characters, please")
		}
	}
	if masterKeyFile != "" {
		if cfg.MasterKey, err = readMasterKey(masterKeyFile); err != nil {
			return err
		}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	cfg.LogOutput = os.Stderr
	if certsDir != "" {
		if cfg.Creds, err = pki.LoadNode(certsDir); err != nil {
			return err
		}
	} else {
		cfg.Logger.Warn("running with --insecure: no TLS, no authentication")
	}
	n, err := node.Start(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "atoll server %s listening on %s\n", n.ID(), n.URL())
	var s3srv *http.Server
	if s3Port != 0 {
		if cfg.MasterKey == nil {
			cfg.Logger.Warn("no --s3-master-key-file: S3 access keys cannot be created or used; only public buckets can be read")
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Bind, strconv.Itoa(s3Port)))
		if err != nil {
			n.Close()
			return fmt.Errorf("S3 listen: %w", err)
		}
		s3h := s3.New(n, cfg.Logger)
		s3h.Domain = s3Domain
		s3srv = node.NewHTTPServer(n.Instrument("s3", s3h), cfg.Timings.ClientIdle, cfg.Logger)
		scheme := "http"
		if cfg.Creds != nil {
			ln, scheme = tls.NewListener(ln, cfg.Creds.ServerTLS(pki.AnyPeer)), "https"
		}
		go s3srv.Serve(ln)
		fmt.Fprintf(os.Stderr, "S3 endpoint on %s://%s\n", scheme, ln.Addr())
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	for s := range sig {
		if s != syscall.SIGHUP {
			break
		}
		if err := n.Reload(); err != nil {
			cfg.Logger.Error("reloading credentials failed; the old ones stay in force", "err", err)
		}
	}
	fmt.Fprintln(os.Stderr, "shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s3srv != nil {
		s3srv.Shutdown(ctx)
	}
	return n.Shutdown(ctx)
}

// readMasterKey reads 32 bytes written as 64 hex digits.
func readMasterKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("%s: want 64 hex digits (make one with: openssl rand -hex 32)", path)
	}
	return key, nil
}
