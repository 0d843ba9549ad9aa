package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/berth-project/berth/api"
)

// registerAs registers j over mTLS with its own certificate.
func (f *tlsFixture) registerAs(j *joined, reg api.NodeRegistration) (int, []byte) {
	f.t.Helper()
	reg.NodeID = j.id
	if reg.Drivers == nil {
		reg.Drivers = []string{"process"}
	}
	return f.do(f.client(&j.cert), "POST", "/api/v1/nodes/register", "", reg)
}

func (f *tlsFixture) nodes() []api.Node {
	f.t.Helper()
	code, b := f.do(f.client(nil), "GET", "/api/v1/nodes", testToken, nil)
	if code != 200 {
		f.t.Fatalf("node ls: %d %s", code, b)
	}
	var out []api.Node
	if err := json.Unmarshal(b, &out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func wantAPIError(t *testing.T, what string, code int, b []byte, wantCode int, field, msg string) {
	t.Helper()
	var e api.Error
	_ = json.Unmarshal(b, &e)
	if code != wantCode || e.Field != field || !strings.Contains(e.Message, msg) {
		t.Errorf("%s: %d %s; want %d at %q saying %q", what, code, b, wantCode, field, msg)
	}
}

// A worker's certificate proves which node speaks, not which name it may
// take: a second node registering (or joining) with a hostname another node
// holds is refused, and the holder stays the one node of that name.
func TestHostnameBelongsToOneNode(t *testing.T) {
	f := newTLSFixture(t, nil)
	a, b := f.mustJoin("node-a"), f.mustJoin("node-b")
	if code, body := f.registerAs(a, api.NodeRegistration{Hostname: "node-a", Address: "10.0.0.1"}); code != 200 {
		t.Fatalf("register a: %d %s", code, body)
	}
	if code, body := f.registerAs(b, api.NodeRegistration{Hostname: "node-b", Address: "10.0.0.2"}); code != 200 {
		t.Fatalf("register b: %d %s", code, body)
	}
	before := f.snapshot()
	// b poses as a (also in another case).
	for _, h := range []string{"node-a", "NODE-A"} {
		code, body := f.registerAs(b, api.NodeRegistration{Hostname: h, Address: "10.0.0.2"})
		wantAPIError(t, "b registers as "+h, code, body, 409, "hostname", "belongs to node "+a.id)
	}
	// A new machine cannot join under a taken name either.
	code, body, _ := f.join(f.tokens().Worker, "node-a", nil)
	wantAPIError(t, "join as node-a", code, body, 409, "hostname", "berth node rm "+a.id)
	if after := f.snapshot(); after != before {
		t.Errorf("a refused claim changed the store:\n%s\nwant\n%s", after, before)
	}
	var named []string
	for _, n := range f.nodes() {
		if n.Hostname == "node-a" {
			named = append(named, n.ID)
		}
	}
	if len(named) != 1 || named[0] != a.id {
		t.Fatalf("nodes named node-a: %v, want only %s", named, a.id)
	}
	// node update NAME still finds one node.
	if code, body := f.do(f.client(nil), "PATCH", "/api/v1/nodes/node-a", testToken, api.NodeUpdate{Availability: api.AvailabilityPause}); code != 200 {
		t.Fatalf("node update node-a: %d %s", code, body)
	}
	// a registers again as itself: its name is its own.
	if code, body := f.registerAs(a, api.NodeRegistration{Hostname: "node-a", Address: "10.0.0.1"}); code != 200 {
		t.Fatalf("a registers again: %d %s", code, body)
	}
	// Once an admin removes a, its name is free.
	if code, body := f.do(f.client(nil), "DELETE", "/api/v1/nodes/"+a.id+"?force=true", testToken, nil); code != 204 {
		t.Fatalf("node rm a: %d %s", code, body)
	}
	if code, body := f.registerAs(b, api.NodeRegistration{Hostname: "node-a", Address: "10.0.0.2"}); code != 200 {
		t.Fatalf("b takes the freed name: %d %s", code, body)
	}
}

// What a node claims about itself must be within the bounds of a real
// machine and well-formed; a refused registration changes nothing.
func TestRegistrationClaimsOutOfBounds(t *testing.T) {
	f := newTLSFixture(t, nil)
	j := f.mustJoin("node-x")
	good := api.NodeRegistration{Hostname: "node-x", Address: "10.0.0.9",
		Resources: api.NodeResources{CPUs: 8, Memory: 16 << 30}}
	if code, body := f.registerAs(j, good); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	topo := &api.Topology{Online: "0-1", Sockets: []api.CPUSocket{{ID: 0, CPUs: "0-1"}},
		NUMANodes: []api.NUMANode{{ID: 0, CPUs: "0-1", Memory: 1 << 30}},
		L3Groups:  []api.CacheGroup{{ID: 0, Level: 3, CPUs: "0-1"}},
		Cores:     []api.CPUCore{{ID: 0, Socket: 0, CPUs: "0"}, {ID: 1, Socket: 0, CPUs: "1"}}}
	before := f.snapshot()
	for _, c := range []struct {
		name  string
		tweak func(*api.NodeRegistration)
		field string
	}{
		{"4096 CPUs", func(r *api.NodeRegistration) { r.Resources.CPUs = 4096 }, "resources.cpus"},
		{"negative CPUs", func(r *api.NodeRegistration) { r.Resources.CPUs = -1 }, "resources.cpus"},
		{"1 PiB", func(r *api.NodeRegistration) { r.Resources.Memory = 1 << 50 }, "resources.memory"},
		{"negative memory", func(r *api.NodeRegistration) { r.Resources.Memory = -1 }, "resources.memory"},
		{"more CPUs than the topology", func(r *api.NodeRegistration) { r.Resources.CPUs = 4; r.Topology = topo }, "resources.cpus"},
		{"port range", func(r *api.NodeRegistration) { r.PortRange = [2]int{0, 70000} }, "port_range"},
		{"hostname with a space", func(r *api.NodeRegistration) { r.Hostname = "node x" }, "hostname"},
		{"hostname too long", func(r *api.NodeRegistration) { r.Hostname = strings.Repeat("a", 254) }, "hostname"},
		{"address with a port", func(r *api.NodeRegistration) { r.Address = "10.0.0.9:80" }, "address"},
		{"driver name", func(r *api.NodeRegistration) { r.Drivers = []string{"process", "../x"} }, "drivers[1]"},
		{"driver twice", func(r *api.NodeRegistration) { r.Drivers = []string{"process", "process"} }, "drivers[1]"},
		{"label key", func(r *api.NodeRegistration) { r.Labels = map[string]string{"-bad": "x"} }, "labels.-bad"},
		{"label value", func(r *api.NodeRegistration) { r.Labels = map[string]string{"k": strings.Repeat("v", 1025)} }, "labels.k"},
	} {
		reg := good
		c.tweak(&reg)
		code, body := f.registerAs(j, reg)
		wantAPIError(t, c.name, code, body, 400, c.field, "")
	}
	if after := f.snapshot(); after != before {
		t.Errorf("a refused registration changed the store")
	}
	n, err := f.st.Nodes.Get(context.Background(), j.id)
	if err != nil || n.Resources.CPUs != 8 || n.Resources.Memory != 16<<30 {
		t.Fatalf("stored node %+v %v", n.Resources, err)
	}
}

// node ls flags a node whose address other machines cannot reach, once the
// cluster spans machines; a node that names no address is taken at the
// address its connection comes from.
func TestNodeListFlagsUnusableAddresses(t *testing.T) {
	f := newTLSFixture(t, nil)
	a, b := f.mustJoin("node-a"), f.mustJoin("node-b")
	if code, body := f.registerAs(a, api.NodeRegistration{Hostname: "node-a", Address: "127.0.0.2"}); code != 200 {
		t.Fatalf("register a: %d %s", code, body)
	}
	if code, body := f.registerAs(b, api.NodeRegistration{Hostname: "node-b"}); code != 200 {
		t.Fatalf("register b: %d %s", code, body)
	}
	issues := func() map[string]string {
		out := map[string]string{}
		for _, n := range f.nodes() {
			out[n.Hostname] = n.Address + "/" + n.AddressIssue
		}
		return out
	}
	// One machine so far: b's loopback address (from its connection) is fine.
	if got := issues()["node-b"]; got != "127.0.0.1/" {
		t.Fatalf("node-b alone: %q", got)
	}
	if code, body := f.registerAs(a, api.NodeRegistration{Hostname: "node-a", Address: "10.0.0.1"}); code != 200 {
		t.Fatalf("register a: %d %s", code, body)
	}
	got := issues()
	if got["node-a"] != "10.0.0.1/" || got["node-b"] != "127.0.0.1/"+api.AddressLoopback {
		t.Fatalf("node ls: %v", got)
	}
	code, body := f.do(f.client(nil), "GET", "/api/v1/nodes/node-b", testToken, nil)
	var n api.Node
	if code != 200 || json.Unmarshal(body, &n) != nil || n.AddressIssue != api.AddressLoopback {
		t.Fatalf("node inspect node-b: %d %s", code, body)
	}
}

// Concurrent registrations of distinct hostnames all succeed (claims do not
// fail each other's guard); of one hostname, exactly one wins.
func TestConcurrentHostnameClaims(t *testing.T) {
	f := newFixture(t)
	const n = 16
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = f.register(api.NodeRegistration{Hostname: fmt.Sprintf("sim-%02d", i), Drivers: []string{"process"}})
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("sim-%02d: %d", i, c)
		}
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = f.register(api.NodeRegistration{Hostname: "same", Drivers: []string{"process"}})
		}()
	}
	wg.Wait()
	won := 0
	for _, c := range codes {
		switch c {
		case 200:
			won++
		case 409:
		default:
			t.Errorf("a registration of a contested name: %d", c)
		}
	}
	nodes, _, err := f.st.Nodes.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	same := 0
	for _, nd := range nodes {
		if nd.Hostname == "same" {
			same++
		}
	}
	if won != 1 || same != 1 {
		t.Fatalf("%d registrations won the name, %d nodes hold it; want 1 and 1", won, same)
	}
}
