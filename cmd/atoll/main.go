// Command atoll is the Atoll server and command-line client.
//
//	atoll server --data DIR --region NAME --bind IP --certs-dir DIR [--zone NAME] [--join IP,...] [--bootstrap-expect N]
//	atoll cert create-ca|create-node|create-client ...
//	atoll put  [--server URL] FILE|-
//	atoll get  [--server URL] ID [-o FILE]
//	atoll put --encrypt FILE; atoll get LINK; atoll link rm LINK
//	atoll stat [--server URL] [--json] ID
//	atoll rm   [--server URL] ID
//	atoll cluster [--server URL] [--json]
//	atoll key create|list|delete [--server URL] [--json]
//	atoll dev
//	atoll demo
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/pki"
)

const usage = `atoll — a geo-redundant blob store

usage:
  atoll server --data DIR --region NAME --bind IP --certs-dir DIR [--zone NAME] [--join IP,...] [--bootstrap-expect N]
  atoll cert create-ca|create-node|create-client ...   the cluster's CA and certificates
  atoll put  [--server URL] [--quiet] FILE|-        store a file, print its ID
  atoll get  [--server URL] [--quiet] ID [-o FILE [--continue]]
                                          fetch a blob to FILE or stdout, verified against its ID;
                                          --continue resumes a partial FILE
  atoll put --encrypt [--name NAME] [--expires 24h] FILE
                                          encrypt FILE here, store it, print a share link
                                          (https://NODE/f/ID#KEY: the key never reaches the cluster)
  atoll get LINK [-o FILE|-]              download a share link, decrypt and verify it here
  atoll link rm LINK|ID                   revoke a share link (its owner or an operator)
  atoll stat [--server URL] [--json] ID   size, chunks, and the health of every shard
  atoll rm   [--server URL] ID            delete a blob
  atoll cluster [--server URL] [--json]   regions, nodes, raft leader and voters, guarantees, repair
  atoll node drain  [--server URL] ID     move every shard off a node (it keeps serving meanwhile)
  atoll node remove [--server URL] ID     remove a drained node from the cluster
  atoll node revoke [--server URL] ID     remove a seized or compromised node now; its certificate is refused
  atoll key create [--server URL] [--json] [--scopes read,write,delete] [--buckets B,...] [--tenant NAME]
                                          make an access key for S3 and the API (the secret is shown once)
  atoll key list   [--server URL] [--json]  list access keys, their scopes and buckets
  atoll key delete [--server URL] KEY       revoke an access key
  atoll snapshot save|restore FILE        back up the cluster's metadata, or restore it
  atoll version                           this binary's version and the data formats it reads
  atoll dev [--wan 80ms]                  run a 3-region x 3-node cluster in this process
                                          (--wan: that round-trip time between its regions)
  atoll demo                              show a region being lost without losing data

--server defaults to $ATOLL_SERVER, else https://127.0.0.1:8700; --certs-dir
($ATOLL_CERTS_DIR) holds the cluster's ca.crt and an operator's client
certificate (--client NAME, $ATOLL_CLIENT), which may do anything; without
one, data commands use the access key in $ATOLL_ACCESS_KEY and
$ATOLL_SECRET_KEY (atoll key create --scopes read,write,delete).
Run "atoll COMMAND -h" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"server": cmdServer, "put": cmdPut, "get": cmdGet, "stat": cmdStat, "rm": cmdRm,
		"cluster": cmdCluster, "node": cmdNode, "key": cmdKey, "cert": cmdCert, "dev": cmdDev, "demo": cmdDemo, "version": cmdVersion, "snapshot": cmdSnapshot, "link": cmdLink,
	}
	name, args := os.Args[1], os.Args[2:]
	if name == "-h" || name == "--help" || name == "help" {
		fmt.Print(usage)
		return
	}
	cmd, ok := cmds[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "atoll: unknown command %q\n\n%s", name, usage)
		os.Exit(2)
	}
	if err := cmd(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "atoll %s: %v\n", name, err)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "atoll %s: %s\n", name, describe(err))
		os.Exit(1)
	}
}

type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// describe turns an error into one line a person can act on.
func describe(err error) string {
	switch {
	case errors.Is(err, client.ErrNoNodes):
		return "server unreachable: " + err.Error()
	case errors.Is(err, blob.ErrNotFound):
		return "not found: " + err.Error()
	}
	return err.Error()
}

// parse parses flags that may come before or after positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "-" || !strings.HasPrefix(args[0], "-") {
			pos = append(pos, args[0])
			args = args[1:]
			continue
		}
	}
}

// conn is how a command reaches the cluster: --server, and the
// credentials in --certs-dir (the CA bundle, and the --client
// certificate an operator's commands need).
type conn struct{ server, certsDir, client *string }

func connFlags(fs *flag.FlagSet) conn {
	certs := os.Getenv("ATOLL_CERTS_DIR")
	server := os.Getenv("ATOLL_SERVER")
	if server == "" {
		server = "https://127.0.0.1:8700"
	}
	return conn{
		server:   fs.String("server", server, "server URL (several may be given, comma-separated)"),
		certsDir: fs.String("certs-dir", certs, "directory holding ca.crt and client certificates (default $ATOLL_CERTS_DIR)"),
		client:   fs.String("client", os.Getenv("ATOLL_CLIENT"), "client certificate name in --certs-dir (default $ATOLL_CLIENT, else the only client.*.crt there)"),
	}
}

// open returns a client: with TLS when there is a certs directory (the
// server is then checked against its CA), plaintext otherwise.
func (c conn) open() (*client.Client, error) {
	addrs := strings.Split(*c.server, ",")
	if *c.certsDir == "" {
		for _, a := range addrs {
			if strings.HasPrefix(a, "https://") {
				return nil, usagef("%s is served over TLS: give --certs-dir (or $ATOLL_CERTS_DIR) with the cluster's ca.crt", a)
			}
		}
		return client.New(addrs...), nil
	}
	name := *c.client
	if name == "" {
		found, _ := filepath.Glob(filepath.Join(*c.certsDir, "client.*.crt"))
		if len(found) == 1 {
			name = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(found[0]), "client."), ".crt")
		}
	}
	creds, err := pki.LoadClient(*c.certsDir, name)
	if err != nil {
		return nil, err
	}
	cl := client.NewTLS(creds, addrs...)
	if ak, sk := os.Getenv("ATOLL_ACCESS_KEY"), os.Getenv("ATOLL_SECRET_KEY"); ak != "" {
		cl = cl.WithAccessKey(ak, sk)
	}
	return cl, nil
}

// oneID parses flags and exactly one blob ID.
func oneID(fs *flag.FlagSet, args []string) (blob.ID, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return blob.ID{}, err
	}
	return idArg(pos)
}

// idArg is the blob ID that must be the only positional argument.
func idArg(pos []string) (blob.ID, error) {
	if len(pos) != 1 {
		return blob.ID{}, usagef("want exactly one ID")
	}
	id, err := blob.ParseID(pos[0])
	if err != nil {
		return id, usagef("%v", err)
	}
	return id, nil
}
