package gateway

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies guards the gateway's boundary: it is fed backends by the
// agent and must not reach into cluster state or the control plane.
func TestDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not in PATH; cannot list dependencies")
	}
	for _, pkg := range []string{"github.com/berth-project/berth/internal/gateway", "github.com/berth-project/berth/internal/gateway/dns"} {
		out, err := exec.Command(gobin, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, banned := range []string{
				"github.com/berth-project/berth/internal/store",
				"github.com/berth-project/berth/internal/scheduler",
				"github.com/berth-project/berth/internal/orchestrator",
				"github.com/berth-project/berth/internal/apiserver",
				"github.com/berth-project/berth/internal/agent",
				"go.etcd.io/",
			} {
				if strings.HasPrefix(dep, banned) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
