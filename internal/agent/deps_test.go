package agent

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies guards the agent's boundary: agents never read cluster
// state, so the agent must not import the store (nor etcd), the scheduler,
// the orchestrator or the API server.
func TestDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not in PATH; cannot list dependencies")
	}
	out, err := exec.Command(gobin, "list", "-deps", "github.com/berth-project/berth/internal/agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/berth-project/berth/internal/store",
			"github.com/berth-project/berth/internal/scheduler",
			"github.com/berth-project/berth/internal/orchestrator",
			"github.com/berth-project/berth/internal/apiserver",
			"go.etcd.io/",
		} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("internal/agent depends on %s", dep)
			}
		}
	}
}
