package main

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestClientCommandsUseOnlyThePublicAPI guards a boundary: the client
// commands are clients of the public API (package api) and never reach into
// internal packages. Only the daemon commands (daemon.go) and whoami.go wire
// internal packages.
func TestClientCommandsUseOnlyThePublicAPI(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"daemon.go": true, "whoami.go": true}
	fset := token.NewFileSet()
	for _, f := range files {
		if allowed[f] || strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.Contains(p, "/internal/") {
				t.Errorf("%s imports %s: client commands must use only the api package", f, p)
			}
		}
	}
}
