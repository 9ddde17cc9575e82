package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/pki"
)

const certUsage = `want one of:
  atoll cert create-ca     --certs-dir DIR [--rotate]
  atoll cert create-node   --certs-dir DIR --region R --id ID --ip IP[,IP...] [--dns NAME,...] [--out DIR]
  atoll cert create-client --certs-dir DIR [--out DIR] NAME`

// cmdCert manages the cluster's certificates, like `cockroach cert`: the
// CA lives in --certs-dir on the operator's machine; node and client
// certificates are written next to it (or to --out) and copied, with
// ca.crt (and gossip.key for nodes), to where they are used.
func cmdCert(args []string) error {
	if len(args) == 0 {
		return usagef(certUsage)
	}
	fs := flag.NewFlagSet("cert "+args[0], flag.ContinueOnError)
	dir := fs.String("certs-dir", os.Getenv("ATOLL_CERTS_DIR"), "the CA's directory (default $ATOLL_CERTS_DIR)")
	out := fs.String("out", "", "write the certificate here instead of --certs-dir (with ca.crt and, for a node, gossip.key)")
	valid := fs.Duration("valid", pki.LeafValidity, "validity of the certificate")
	var rotate *bool
	var region, id, ips, dns *string
	switch args[0] {
	case "create-ca":
		rotate = fs.Bool("rotate", false, "replace the CA: the new one signs from now on, both are trusted until you drop the old from ca.crt; a new gossip key becomes primary")
	case "create-node":
		region = fs.String("region", "", "the node's region (required)")
		id = fs.String("id", "", "the node's ID (required)")
		ips = fs.String("ip", "", "comma-separated IPs the node listens on (its --bind)")
		dns = fs.String("dns", "", "comma-separated host names of the node")
	case "create-client":
	default:
		return usagef(certUsage)
	}
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--certs-dir is required")
	}
	if args[0] == "create-ca" {
		if len(pos) != 0 {
			return usagef("create-ca takes no arguments")
		}
		if err := pki.CreateCA(*dir, *rotate); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "CA written to %s (keep %s on this machine only)\n", *dir, pki.CAKey)
		return nil
	}
	ca, err := pki.LoadCA(*dir)
	if err != nil {
		return err
	}
	dest := *dir
	if *out != "" {
		dest = *out
		if err := os.MkdirAll(dest, 0o700); err != nil {
			return err
		}
		shared := []string{pki.CACert}
		if args[0] == "create-node" {
			shared = append(shared, pki.GossipKey)
		}
		for _, f := range shared {
			b, err := os.ReadFile(filepath.Join(*dir, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dest, f), b, 0o600); err != nil {
				return err
			}
		}
	}
	if args[0] == "create-client" {
		if len(pos) != 1 {
			return usagef("create-client wants exactly one NAME")
		}
		if err := ca.WriteClient(dest, pos[0], *valid); err != nil {
			return err
		}
		crt, _ := pki.ClientFiles(pos[0])
		fmt.Fprintf(os.Stderr, "client certificate %s written\n", filepath.Join(dest, crt))
		return nil
	}
	if len(pos) != 0 || *region == "" || *id == "" || (*ips == "" && *dns == "") {
		return usagef("create-node wants --region, --id and --ip (or --dns), and no arguments")
	}
	var addrs []net.IP
	for _, s := range split(*ips) {
		ip := net.ParseIP(s)
		if ip == nil {
			return usagef("--ip: %q is not an IP address", s)
		}
		addrs = append(addrs, ip)
	}
	if err := ca.WriteNode(dest, pki.Node(blob.NodeID(*id), blob.Region(*region)), addrs, split(*dns), *valid); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "node certificate for %s (%s) written to %s\n", *id, *region, dest)
	return nil
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
