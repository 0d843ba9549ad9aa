package testutil

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSkipIfShort runs this test binary again, with and without -short, and
// checks that SkipIfShort skips only under -short: a helper that skipped
// always would hide the whole etcd, Docker and e2e tiers from .ci/run.
func TestSkipIfShort(t *testing.T) {
	if os.Getenv("TESTUTIL_CHILD") == "1" {
		SkipIfShort(t, "child")
		t.Log("ran the body")
		return
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-test.short"}, "-short: skips the child tier"},
		{nil, "ran the body"},
	} {
		args := append([]string{"-test.run=^TestSkipIfShort$", "-test.v"}, tc.args...)
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "TESTUTIL_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: output lacks %q:\n%s", args, tc.want, out)
		}
	}
}

// TestImportsOnlyTheStandardLibrary keeps testutil light: every test may
// import it, so an etcd or Docker client import here would be linked into
// every test binary of the tree.
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %s: testutil may import only the standard library", name, path)
			}
		}
	}
}
