package topology

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies guards the package's boundary: it is pure code that the
// scheduler and the agent both use, so of Berth's packages it may import
// only api, and nothing of etcd.
func TestDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not in PATH; cannot list dependencies")
	}
	const self = "github.com/berth-project/berth/internal/topology"
	out, err := exec.Command(gobin, "list", "-deps", self).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == self || dep == "github.com/berth-project/berth/api":
		case strings.HasPrefix(dep, "github.com/berth-project/berth"), strings.HasPrefix(dep, "go.etcd.io/"):
			t.Errorf("internal/topology depends on %s", dep)
		}
	}
}
