package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/atollstore/atoll/"

// allowed lists, for each package, the project packages it may import.
// The order is the layering: blob < erasure, placement < storage <
// raftstore < node < testcluster < cmd, with api and client on the side.
// Packages named *test are test helpers: only tests import them.
var allowed = map[string][]string{
	"blob":                {},
	"e2e":                 {},
	"erasure":             {"blob"},
	"placement":           {"blob"},
	"api":                 {"blob"},
	"pki":                 {"blob", "internal/atomicfile"},
	"internal/atomicfile": {},
	"storage":             {"blob", "erasure"},
	"internal/ctxio":      {},
	"storage/disk":        {"blob", "storage", "internal/ctxio"},
	"storage/mem":         {"blob", "storage"},
	"storage/faulty":      {"blob", "storage"},
	"storage/remote":      {"blob", "erasure", "storage"},
	"storage/storagetest": {"blob", "erasure", "storage"},
	"raftstore":           {"blob", "placement"},
	"client":              {"blob", "api", "e2e", "pki", "internal/ctxio"},
	"node":                {"blob", "e2e", "erasure", "placement", "raftstore", "api", "pki", "storage", "storage/disk", "storage/remote", "internal/atomicfile"},
	"s3":                  {"blob", "api", "node", "raftstore"},
	"testcluster":         {"blob", "api", "client", "erasure", "node", "pki", "s3", "storage", "storage/faulty"},
	"cmd/atoll":           {"blob", "api", "client", "e2e", "erasure", "node", "pki", "s3", "testcluster", "internal/atomicfile"},
	"cmd/s3bench":         {},
	"internal/archtest":   {},
	"deploy":              {},
}

// owners lists the only project packages that may import each library.
var owners = map[string][]string{
	"github.com/hashicorp/raft":             {"raftstore"},
	"github.com/dgraph-io/badger/v4":        {"raftstore"},
	"github.com/google/btree":               {"raftstore"},
	"github.com/hashicorp/memberlist":       {"node"},
	"github.com/klauspost/reedsolomon":      {"erasure"},
	"github.com/PlakarKorp/go-cdc-chunkers": {"client"},
	"github.com/aws/aws-sdk-go-v2":          {"s3", "cmd/s3bench"},
	"github.com/prometheus/client_golang":   {"node"},
}

type pkg struct {
	ImportPath string
	Imports    []string
	Doc        string
	Name       string
}

func list(t *testing.T) []pkg {
	out, err := exec.Command("go", "list", "-json", mod+"...").Output()
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestLayering(t *testing.T) {
	for _, p := range list(t) {
		name := strings.TrimPrefix(p.ImportPath, mod)
		ok, known := allowed[name]
		if !known {
			t.Errorf("package %s is not in the layering table: add it to allowed (and to ARCHITECTURE.md)", name)
			continue
		}
		for _, imp := range p.Imports {
			if dep, isOurs := strings.CutPrefix(imp, mod); isOurs && !slices.Contains(ok, dep) {
				t.Errorf("%s imports %s, which the layering forbids", name, dep)
			}
			for lib, who := range owners {
				if strings.HasPrefix(imp, lib) && !slices.Contains(who, name) {
					t.Errorf("%s imports %s; only %v may", name, imp, who)
				}
			}
		}
		// NB: hashicorp/raft v1.8.0 itself imports "testing" (its exported
		// helpers in testing.go), so binaries link it anyway; we can only
		// keep our own production code from importing it.
		for _, imp := range p.Imports {
			if dep, isOurs := strings.CutPrefix(imp, mod); isOurs && strings.HasSuffix(dep, "test") {
				t.Errorf("%s imports the test helper %s in production code", name, dep)
			}
		}
		if slices.Contains(p.Imports, "testing") && !strings.HasSuffix(name, "test") {
			t.Errorf("%s imports the testing package in production code", name)
		}
		if p.Doc == "" {
			t.Errorf("package %s has no package doc comment", name)
		}
	}
}
