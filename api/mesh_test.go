package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const meshSpec = `name: web
task:
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports:
    - {name: http, publish: 18080}
    - {name: dns, protocol: udp, publish: 18053}
    - {name: admin}
routes:
  - {host: shop.example.test, path: /orders/, port: http, strip_prefix: true, timeout: 5s, https_redirect: true, hsts: true}
  - {port: http}
load_balancing: least-outstanding
`

func parseMesh(t *testing.T, doc string) ServiceSpec {
	t.Helper()
	s, err := ParseServiceSpec([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	s.Normalize()
	return s
}

func TestMeshSpecParsesAndDefaults(t *testing.T) {
	s := parseMesh(t, meshSpec)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	p := s.Task.Ports
	if p[0].Publish != 18080 || p[0].Mode != PublishIngress || p[1].Mode != PublishIngress || p[2].Mode != "" {
		t.Fatalf("ports %+v", p)
	}
	r := s.Routes
	if len(r) != 2 || r[0].Host != "shop.example.test" || !r[0].StripPrefix || r[0].Timeout.D().Seconds() != 5 ||
		!r[0].HTTPSRedirect || !r[0].HSTS || r[1].Path != "/" {
		t.Fatalf("routes %+v", r)
	}
	if s.LoadBalancing != LBLeastOutstanding {
		t.Fatalf("load_balancing %q", s.LoadBalancing)
	}
	again := s
	again.Normalize()
	if !equalJSON(t, s, again) {
		t.Fatal("Normalize is not idempotent")
	}
	if d := parseMesh(t, "name: a\ntask: {command: [x]}\n"); d.LoadBalancing != LBRoundRobin {
		t.Fatalf("default load_balancing %q", d.LoadBalancing)
	}
}

func TestMeshValidationNamesTheField(t *testing.T) {
	base := "name: web\ntask:\n  command: [x]\n  ports:\n    - {name: http}\n    - {name: q, protocol: udp}\n"
	for _, c := range []struct{ extra, field string }{
		{"routes: [{port: http, path: orders}]", "routes[0].path"},
		{"routes: [{port: http, path: /a/../b}]", "routes[0].path"},
		{"routes: [{port: nope}]", "routes[0].port"},
		{"routes: [{port: q}]", "routes[0].port"},
		{"routes: [{path: /x}]", "routes[0].port"},
		{"routes: [{port: http, host: 'a..b'}]", "routes[0].host"},
		{"routes: [{port: http, host: '*.*.b'}]", "routes[0].host"},
		{"routes: [{port: http, host: 'a b'}]", "routes[0].host"},
		// The gateway refuses a wildcard of a top-level domain: so does
		// the API (issue 12).
		{"routes: [{port: http, host: '*.test'}]", "routes[0].host"},
		{"routes: [{port: http, host: '-a.test'}]", "routes[0].host"},
		{"routes: [{port: http, host: A.test, path: /x}, {port: http, host: a.test, path: /x/}]", "routes[1]"},
		{"load_balancing: random", "load_balancing"},
	} {
		s := parseMesh(t, base+c.extra+"\n")
		err := s.Validate()
		if got := FieldOf(err); got != c.field {
			t.Errorf("%s: field %q, want %q (%v)", c.extra, got, c.field, err)
		}
	}
	for _, c := range []struct{ ports, field string }{
		{"[{name: http, publish: 70000}]", "task.ports[0].publish"},
		{"[{name: http, publish: -1}]", "task.ports[0].publish"},
		{"[{name: http, publish: 80, mode: Host}]", "task.ports[0].mode"},
		{"[{name: http, mode: host}]", "task.ports[0].mode"},
		{"[{name: a, publish: 80, mode: host}, {name: b, publish: 80}]", "task.ports[1].publish"},
		{"[{name: a, publish: 0, mode: host}]", "task.ports[0].mode"},
		{"[{name: http, publish: 80, mode: mesh}]", "task.ports[0].mode"},
		{"[{name: http, mode: ingress}]", "task.ports[0].mode"},
		{"[{name: a, publish: 80}, {name: b, publish: 80}]", "task.ports[1].publish"},
		// Berth's own ports (issue 12): the gateway could not open them.
		{"[{name: http, publish: 7443}]", "task.ports[0].publish"},
		{"[{name: http, publish: 7480}]", "task.ports[0].publish"},
		{"[{name: http, publish: 7481, mode: host}]", "task.ports[0].publish"},
		{"[{name: dns, protocol: udp, publish: 7453}]", "task.ports[0].publish"},
	} {
		s := parseMesh(t, "name: web\ntask:\n  command: [x]\n  ports: "+c.ports+"\n")
		err := s.Validate()
		if got := FieldOf(err); got != c.field {
			t.Errorf("%s: field %q, want %q (%v)", c.ports, got, c.field, err)
		}
	}
	// The same number over tcp and udp is two different ports.
	s := parseMesh(t, "name: web\ntask:\n  command: [x]\n  ports: [{name: a, publish: 53}, {name: b, protocol: udp, publish: 53}]\n")
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	var ve ValidationErrors
	s = parseMesh(t, base+"routes: [{port: http, host: '*.ok.test'}, {port: http, host: 'Shop.Test', path: /a}]\n")
	if err := s.Validate(); errors.As(err, &ve) {
		t.Fatal(err)
	}
}

func TestHostModePortsValidate(t *testing.T) {
	s := parseMesh(t, `name: dns
task:
  command: [x]
  ports:
    - {name: dns, protocol: udp, publish: 53, mode: host}
    - {name: dns-tcp, publish: 53, mode: host}
    - {name: http, publish: 18080}
    - {name: admin}
routes: [{port: dns-tcp}]
`)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	p := s.Task.Ports
	if p[0].Mode != PublishHost || p[1].Mode != PublishHost || p[2].Mode != PublishIngress || p[3].Mode != "" {
		t.Fatalf("modes %+v", p)
	}
	again := s
	again.Normalize()
	if !equalJSON(t, s, again) {
		t.Fatal("Normalize changed a host-mode spec")
	}
	// The message names both modes.
	bad := parseMesh(t, "name: web\ntask:\n  command: [x]\n  ports: [{name: a, publish: 80, mode: mesh}]\n")
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "use ingress or host") {
		t.Fatalf("unknown mode: %v", err)
	}
}

func TestRouteKey(t *testing.T) {
	if RouteKey(RouteSpec{Host: "A.test", Path: "/x/"}) != RouteKey(RouteSpec{Host: "a.test", Path: "/x"}) {
		t.Fatal("case and trailing slash should not matter")
	}
	if RouteKey(RouteSpec{Path: "/"}) == RouteKey(RouteSpec{Path: "/x"}) || !strings.HasSuffix(RouteKey(RouteSpec{Path: "/"}), " /") {
		t.Fatal("different paths must differ")
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}
