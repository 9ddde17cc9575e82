package archtest

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/atollstore/atoll/blob"
	"github.com/atollstore/atoll/client"
	"github.com/atollstore/atoll/e2e"
	"github.com/atollstore/atoll/erasure"
	"github.com/atollstore/atoll/node"
	"github.com/atollstore/atoll/raftstore"
	"github.com/atollstore/atoll/storage/faulty"
)

// sentinels are the exported sentinel errors of the production packages,
// by name. TestSentinelsCrossTheWire fails when the source declares one
// that is not listed here, so none can be forgotten.
var sentinels = map[string]error{
	"blob.ErrNotFound":            blob.ErrNotFound,
	"blob.ErrInvalidID":           blob.ErrInvalidID,
	"blob.ErrCorrupt":             blob.ErrCorrupt,
	"blob.ErrTooLarge":            blob.ErrTooLarge,
	"blob.ErrUnavailable":         blob.ErrUnavailable,
	"blob.ErrNoSpace":             blob.ErrNoSpace,
	"blob.ErrBadDigest":           blob.ErrBadDigest,
	"blob.ErrExists":              blob.ErrExists,
	"blob.ErrNotEmpty":            blob.ErrNotEmpty,
	"blob.ErrForbidden":           blob.ErrForbidden,
	"blob.ErrBadRequest":          blob.ErrBadRequest,
	"blob.ErrMissingChunks":       blob.ErrMissingChunks,
	"raftstore.ErrNotLeader":      raftstore.ErrNotLeader,
	"raftstore.ErrStale":          raftstore.ErrStale,
	"raftstore.ErrChunkGone":      raftstore.ErrChunkGone,
	"raftstore.ErrNoSuchBucket":   raftstore.ErrNoSuchBucket,
	"raftstore.ErrNoSuchKey":      raftstore.ErrNoSuchKey,
	"raftstore.ErrBucketExists":   raftstore.ErrBucketExists,
	"raftstore.ErrBucketNotEmpty": raftstore.ErrBucketNotEmpty,
	"raftstore.ErrNoSuchUpload":   raftstore.ErrNoSuchUpload,
	"node.ErrNoMasterKey":         node.ErrNoMasterKey,
	"faulty.ErrNoSpace":           faulty.ErrNoSpace, // an injected full disk: blob.ErrNoSpace
	// Never cross HTTP as themselves, so they need no code:
	"faulty.ErrIO":            faulty.ErrIO,            // an injected EIO, "internal" like a real one
	"client.ErrNoNodes":       client.ErrNoNodes,       // the client's own verdict
	"erasure.ErrTooFewShards": erasure.ErrTooFewShards, // node turns it into ErrUnavailable first
	"e2e.ErrTampered":         e2e.ErrTampered,         // found by the client, which alone holds keys
}

var local = []string{"client.ErrNoNodes", "erasure.ErrTooFewShards", "faulty.ErrIO", "faulty.ErrNoSpace", "e2e.ErrTampered"}

// declaredSentinels parses the production sources for exported
// package-level vars named Err*.
func declaredSentinels(t *testing.T) []string {
	var names []string
	for _, p := range list(t) {
		name := strings.TrimPrefix(p.ImportPath, mod)
		if strings.HasPrefix(name, "cmd/") || strings.HasPrefix(name, "internal/") || strings.HasSuffix(name, "test") {
			continue
		}
		files, _ := filepath.Glob(filepath.Join("..", "..", name, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range af.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.VAR {
					continue
				}
				for _, spec := range gd.Specs {
					for _, id := range spec.(*ast.ValueSpec).Names {
						if id.IsExported() && strings.HasPrefix(id.Name, "Err") {
							names = append(names, af.Name.Name+"."+id.Name)
						}
					}
				}
			}
		}
	}
	return names
}

// TestSentinelsCrossTheWire: every exported sentinel that can cross HTTP
// has a wire code, and after a round trip through blob.WriteError and
// blob.ReadError it is still errors.Is its sentinel (and its parents).
func TestSentinelsCrossTheWire(t *testing.T) {
	declared := declaredSentinels(t)
	for _, name := range declared {
		if _, ok := sentinels[name]; !ok {
			t.Errorf("%s is not in the sentinels table: give it a wire code with blob.NewError (or list it as local) and add it", name)
		}
	}
	for name := range sentinels {
		if !slices.Contains(declared, name) {
			t.Errorf("%s is listed but not declared", name)
		}
	}
	codes := map[string]string{}
	for name, err := range sentinels {
		code, status := blob.Code(err)
		if slices.Contains(local, name) {
			continue
		}
		if code == "internal" {
			t.Errorf("%s has no wire code", name)
			continue
		}
		if other, dup := codes[code]; dup {
			t.Errorf("%s and %s share the wire code %q", name, other, code)
		}
		codes[code] = name
		rec := httptest.NewRecorder()
		blob.WriteError(rec, fmt.Errorf("some context: %w", err))
		resp := rec.Result()
		got := blob.ReadError(resp)
		if resp.StatusCode != status || !errors.Is(got, err) {
			t.Errorf("%s: after the wire: status %d (want %d), errors.Is = false (%v)", name, resp.StatusCode, status, got)
		}
		for parent := errors.Unwrap(err); parent != nil; parent = errors.Unwrap(parent) {
			if !errors.Is(got, parent) {
				t.Errorf("%s: after the wire it no longer matches its parent %v", name, parent)
			}
		}
	}
	if len(blob.Codes()) != len(sentinels)-len(local) {
		t.Errorf("blob knows %d coded errors, the table %d", len(blob.Codes()), len(sentinels)-len(local))
	}
}
