package apiserver

import (
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

// A deploy that publishes a port Berth itself listens on, or routes a host
// the gateway refuses, is a 400 naming the field, and nothing is stored:
// before, it was accepted and every gateway only logged an ERROR.
func TestDeployRefusesBerthPortsAndBadRouteHosts(t *testing.T) {
	f := newFixture(t)
	code, body := f.register(api.NodeRegistration{Hostname: "h1", Drivers: []string{"process"},
		ReservedPorts: []api.ReservedPort{{Port: 8480, Protocol: "tcp", Use: "the gateway's HTTP entrypoint (--mesh-http)"},
			{Port: 5353, Protocol: "udp", Use: "the agent's DNS (--dns)"}}})
	if code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	base := "task:\n  command: [x]\n  ports:\n"
	for _, c := range []struct{ name, doc, field, msg string }{
		{"the default API port", base + "    - {name: http, publish: 7443}\n", "task.ports[0].publish", "manager's API"},
		{"the default HTTP entrypoint", base + "    - {name: http}\n    - {name: b, publish: 7480}\n", "task.ports[1].publish", "HTTP entrypoint"},
		{"a node's moved entrypoint", base + "    - {name: http, publish: 8480}\n", "task.ports[0].publish", "node h1"},
		{"a node's moved DNS, host mode", base + "    - {name: dns, protocol: udp, publish: 5353, mode: host}\n", "task.ports[0].publish", "node h1"},
		{"a wildcard the gateway refuses", base + "    - {name: http}\nroutes: [{port: http, host: '*.test'}]\n", "routes[0].host", "two labels"},
	} {
		before := f.snapshot()
		code, e := f.call("PUT", "/api/v1/services/web", "application/yaml", c.doc, nil)
		if code != 400 || e.Field != c.field || !strings.Contains(e.Message, c.msg) {
			t.Errorf("%s: %d %+v, want 400 at %s saying %q", c.name, code, e, c.field, c.msg)
		}
		if f.snapshot() != before {
			t.Errorf("%s: a refused deploy changed the store", c.name)
		}
	}
	// The same number over the other protocol is another port.
	if code, e := f.call("PUT", "/api/v1/services/web", "application/yaml", base+"    - {name: http, publish: 5353}\n", nil); code != 201 {
		t.Fatalf("tcp 5353: %d %+v", code, e)
	}
}
