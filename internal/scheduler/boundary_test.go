package scheduler

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestImports guards what the package doc promises: placement is a pure
// function. No store, clock, logging, goroutine or OS packages; only
// computation and the public api types.
func TestImports(t *testing.T) {
	allowed := []string{
		"cmp", "errors", "math", "math/bits", "slices", "strconv", "strings",
		"github.com/berth-project/berth/api",
		// Pure CPU-set arithmetic and allocation; its own doc and deps test
		// forbid I/O outside Discover, which the scheduler never calls.
		"github.com/berth-project/berth/internal/topology",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !slices.Contains(allowed, path) {
				t.Errorf("%s imports %q: the scheduler must stay a pure function (see the package doc)", name, path)
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no source files found")
	}
}
