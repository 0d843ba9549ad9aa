package apiserver

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

func twoCoreTopology() *api.Topology {
	return &api.Topology{
		Online:    "0-3",
		Sockets:   []api.CPUSocket{{ID: 0, CPUs: "0-3"}},
		NUMANodes: []api.NUMANode{{ID: 0, CPUs: "0-3", Memory: 2 << 30}},
		L3Groups:  []api.CacheGroup{{ID: 0, Level: 3, CPUs: "0-3"}},
		Cores:     []api.CPUCore{{ID: 0, CPUs: "0-1"}, {ID: 1, CPUs: "2-3"}},
	}
}

func (f *fixture) register(reg api.NodeRegistration) (int, []byte) {
	f.t.Helper()
	b, _ := json.Marshal(reg)
	resp, body := f.do("POST", "/api/v1/nodes/register", "application/json", testToken, b)
	return resp.StatusCode, body
}

func TestRegistrationChecksTopology(t *testing.T) {
	f := newFixture(t)
	base := api.NodeRegistration{Hostname: "h1", Drivers: []string{"process"}, Resources: api.NodeResources{CPUs: 4}}
	for _, c := range []struct {
		mut   func(*api.NodeRegistration)
		field string
	}{
		{func(r *api.NodeRegistration) { r.Topology = &api.Topology{Online: "0-3"} }, "topology"},
		{func(r *api.NodeRegistration) { r.Topology, r.ReservedCPUs = twoCoreTopology(), "7" }, "reserved_cpus"},
		{func(r *api.NodeRegistration) { r.Topology, r.ReservedCPUs = twoCoreTopology(), "0-" }, "reserved_cpus"},
		{func(r *api.NodeRegistration) { r.ReservedCPUs = "0" }, "reserved_cpus"},
	} {
		reg := base
		c.mut(&reg)
		before := f.snapshot()
		code, body := f.register(reg)
		var e api.Error
		_ = json.Unmarshal(body, &e)
		if code != 400 || e.Field != c.field {
			t.Errorf("%+v: %d %s, want 400 on %s", reg, code, body, c.field)
		}
		if f.snapshot() != before {
			t.Errorf("%+v: a rejected registration changed the store", reg)
		}
	}
	reg := base
	reg.Topology, reg.ReservedCPUs = twoCoreTopology(), "0"
	code, body := f.register(reg)
	var n api.Node
	if err := json.Unmarshal(body, &n); code != 200 || err != nil || n.Topology == nil || n.ReservedCPUs != "0" {
		t.Fatalf("register: %d %s", code, body)
	}
}

func TestNodeTopologyDrawsHolders(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	reg := api.NodeRegistration{Hostname: "h1", Drivers: []string{"process"}, Resources: api.NodeResources{CPUs: 4},
		Topology: twoCoreTopology(), ReservedCPUs: "0"}
	code, body := f.register(reg)
	var n api.Node
	if err := json.Unmarshal(body, &n); code != 200 || err != nil {
		t.Fatalf("register: %d %s", code, body)
	}
	for _, tk := range []api.Task{
		{ID: "a", ServiceName: "db", Slot: 1, NodeID: n.ID, Status: api.TaskStatus{State: api.TaskRunning},
			Spec:       api.TaskSpec{Resources: api.Resources{CPUs: 2, CPUPolicy: api.CPUPolicyExclusive}},
			Allocation: &api.CPUAllocation{CPUs: "2-3", MemNodes: "0"}},
		{ID: "b", ServiceName: "web", Slot: 1, NodeID: n.ID, Status: api.TaskStatus{State: api.TaskRunning}},
		{ID: "c", ServiceName: "web", Slot: 2, NodeID: n.ID, Status: api.TaskStatus{State: api.TaskStarting}},
		{ID: "d", ServiceName: "old", Slot: 1, NodeID: n.ID, Status: api.TaskStatus{State: api.TaskComplete},
			Allocation: &api.CPUAllocation{CPUs: "1"}},
		{ID: "e", ServiceName: "pu", Slot: 2, NodeID: n.ID, Unit: "core:1", Status: api.TaskStatus{State: api.TaskRunning},
			Allocation: &api.CPUAllocation{CPUs: "2-3", MemNodes: "0"}},
	} {
		tk := tk
		if err := f.st.Tasks.Create(ctx, &tk); err != nil {
			t.Fatal(err)
		}
	}
	for _, ref := range []string{n.ID, "h1"} {
		resp, body := f.do("GET", "/api/v1/nodes/"+ref+"/topology", "", testToken, nil)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("GET topology: %d %s", resp.StatusCode, body)
		}
		text := string(body)
		for _, want := range []string{
			"node h1 (" + n.ID + ")",
			"1 socket, 1 NUMA node, 1 L3 group, 2 cores, 4 CPUs online (0-3)",
			"cpu 0 reserved",
			"cpu 1 -",
			"cpu 2 db.1+pu.2",
			"cpu 3 db.1+pu.2",
			"shared pool: cpus 1, 2 shared tasks",
		} {
			if !strings.Contains(strings.Join(strings.Fields(text), " "), want) {
				t.Errorf("topology of %s lacks %q:\n%s", ref, want, text)
			}
		}
	}
	// A node without a topology: 404 that says why.
	code, body = f.register(api.NodeRegistration{Hostname: "h2", Drivers: []string{"process"}})
	if code != 200 {
		t.Fatalf("register h2: %d %s", code, body)
	}
	resp, body := f.do("GET", "/api/v1/nodes/h2/topology", "", testToken, nil)
	if resp.StatusCode != 404 || !strings.Contains(string(body), "no CPU topology") {
		t.Fatalf("node without topology: %d %s", resp.StatusCode, body)
	}
}
