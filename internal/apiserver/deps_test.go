package apiserver

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies guards the API server's boundary: it is the control
// plane and must not import the data plane — the gateway (whose CA it once
// imported for; the gateway CA now lives in internal/pki), the agent, the
// drivers or cgroups — so that a change there cannot break or bloat it.
func TestDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not in PATH; cannot list dependencies")
	}
	const pkg = "github.com/berth-project/berth/internal/apiserver"
	out, err := exec.Command(gobin, "list", "-deps", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/berth-project/berth/internal/gateway",
			"github.com/berth-project/berth/internal/agent",
			"github.com/berth-project/berth/internal/driver",
			"github.com/berth-project/berth/internal/cgroups",
		} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}
