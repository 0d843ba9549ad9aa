package gateway

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies guards the gateway's boundary: it is fed backends by the
// agent and must not reach into cluster state or the control plane. The
// HTTP/1 parsers (http1) stand alone: they import nothing of Berth.
func TestDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not in PATH; cannot list dependencies")
	}
	const http1 = "github.com/berth-project/berth/internal/gateway/http1"
	for _, pkg := range []string{"github.com/berth-project/berth/internal/gateway", "github.com/berth-project/berth/internal/gateway/dns", http1} {
		out, err := exec.Command(gobin, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if pkg == http1 && dep != http1 && strings.HasPrefix(dep, "github.com/berth-project/berth/") {
				t.Errorf("%s depends on %s", pkg, dep)
			}
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
