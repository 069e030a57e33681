package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// layers ranks hcpsnap's packages as shared/STYLE.md draws them: command
// line, workflows, engine, adapters, plain data. An import may run across or
// down, never up.
var layers = map[string]int{
	".":                      5,
	"internal/command":       5,
	"drill":                  4,
	"steps":                  4,
	"restore":                4,
	"schedule":               4,
	"prune":                  4,
	"management":             4,
	"pullnode":               4,
	"runbook":                3,
	"s3":                     2,
	"internal/kube":          2,
	"internal/kube/kubetest": 2,
	"internal/dryrun":        2,
	"internal/etcdsnap":      2,
	"internal/etcdclient":    2,
	"checkpoint":             1,
	"manifest":               1,
	"deploy":                 1,
	"retention":              1,
	"internal/exitcode":      1,
	"internal/version":       1,
	"internal/fsutil":        1,
	"internal/logging":       1,
	"internal/shell":         1,
}

const module = "github.com/hcpsnap/hcpsnap"

// TestNoImportRunsUp parses every non-test Go file of the ranked packages
// and fails on an import of a higher layer, or on a package left unranked.
func TestNoImportRunsUp(t *testing.T) {
	fset := token.NewFileSet()
	for dir, rank := range layers {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			file, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range file.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if !strings.HasPrefix(path, module+"/") {
					continue
				}
				target := strings.TrimPrefix(path, module+"/")
				r, ok := layers[target]
				switch {
				case !ok:
					t.Errorf("%s imports %s, which has no layer here: rank it", f, target)
				case r > rank:
					t.Errorf("%s (layer %d) imports %s (layer %d): an import runs up", f, rank, target, r)
				}
			}
		}
	}
	// Every package outside e2e and deps is ranked.
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (p == ".cache" || p == "e2e" || p == "deps" || p == "bench" || p == "hack" || strings.HasPrefix(d.Name(), ".") && p != ".") {
			return filepath.SkipDir
		}
		if d.IsDir() {
			if m, _ := filepath.Glob(filepath.Join(p, "*.go")); len(m) > 0 {
				if _, ok := layers[filepath.ToSlash(p)]; !ok {
					t.Errorf("package %s has no layer in layers_test.go", p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
