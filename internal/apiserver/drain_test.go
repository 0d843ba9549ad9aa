package apiserver

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// TestDrainProtocol walks the protocol an agent follows before it stops a
// task: the task's desired shutdown moves the endpoints stream on (a message
// without the task, or a revision-only one when the routing state does not
// change); gateways acknowledge through their status reports; the drained
// endpoint says when every ready gateway has done so and has nothing in
// flight to the task.
func TestDrainProtocol(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st := f.st
	for _, n := range []api.Node{{ID: "n1", Status: api.NodeReady}, {ID: "n2", Status: api.NodeReady}, {ID: "n3", Status: api.NodeDown}} {
		if err := st.Nodes.Create(ctx, &n); err != nil {
			t.Fatal(err)
		}
	}
	if resp, body := f.do("PUT", "/api/v1/services/web", "application/yaml", testToken,
		[]byte("task:\n  command: [x]\n  ports: [{name: http, publish: 18080}]\n")); resp.StatusCode != 201 {
		t.Fatalf("deploy: %d %s", resp.StatusCode, body)
	}
	tk := &api.Task{ID: "t1", ServiceName: "web", NodeID: "n1", DesiredState: api.TaskRunning,
		Ports: map[string]int{"http": 31000}, Status: api.TaskStatus{State: api.TaskRunning}}
	idle := &api.Task{ID: "t2", ServiceName: "web", NodeID: "n2", DesiredState: api.TaskRunning,
		Ports: map[string]int{"http": 31001}, Status: api.TaskStatus{State: api.TaskStarting}}
	for _, x := range []*api.Task{tk, idle} {
		if err := st.Tasks.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	c, err := api.NewClient(api.ClientConfig{Addr: f.srv.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.WatchEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func(want func(api.Endpoints) bool) api.Endpoints {
		t.Helper()
		for {
			select {
			case e, ok := <-ch:
				if !ok {
					t.Fatal("stream closed")
				}
				if want(e) {
					return e
				}
			case <-ctx.Done():
				t.Fatal("no wanted endpoints message")
			}
		}
	}
	hasBackend := func(e api.Endpoints, id string) bool {
		for _, se := range e.Services {
			if slices.ContainsFunc(se.Backends, func(b api.EndpointBackend) bool { return b.TaskID == id }) {
				return true
			}
		}
		return false
	}
	next(func(e api.Endpoints) bool { return !e.Unchanged && hasBackend(e, "t1") })

	// The orchestrator asks t1 to stop: the next routing state lacks it.
	tk.DesiredState = api.TaskShutdown
	if err := st.Tasks.Update(ctx, tk); err != nil {
		t.Fatal(err)
	}
	shutdownRev := tk.Revision
	e := next(func(e api.Endpoints) bool { return !e.Unchanged && !hasBackend(e, "t1") })
	if e.Revision < shutdownRev {
		t.Fatalf("the message without t1 has revision %d, before the shutdown's %d", e.Revision, shutdownRev)
	}

	drained := func() api.DrainStatus {
		t.Helper()
		ds, err := c.Drained(ctx, "t1", shutdownRev)
		if err != nil {
			t.Fatal(err)
		}
		return ds
	}
	// No gateway acknowledged anything yet: nodes without a gateway record
	// (never reported one) do not hold the drain up, so it is drained.
	if ds := drained(); !ds.Drained {
		t.Fatalf("no node has a gateway: %+v, want drained", ds)
	}
	report := func(node string, ack *api.GatewayAck) {
		t.Helper()
		b, _ := json.Marshal(api.StatusReport{Gateway: ack})
		if resp, body := f.do("POST", "/api/v1/nodes/"+node+"/status", "application/json", testToken, b); resp.StatusCode != 204 {
			t.Fatalf("report %s: %d %s", node, resp.StatusCode, body)
		}
	}
	report("n1", &api.GatewayAck{Revision: e.Revision})
	report("n2", &api.GatewayAck{Revision: shutdownRev - 1})
	if ds := drained(); ds.Drained || !slices.Equal(ds.Waiting, []string{"n2"}) {
		t.Fatalf("n2 is behind: %+v, want waiting for n2", ds)
	}
	report("n2", &api.GatewayAck{Revision: e.Revision, Draining: []string{"t1"}})
	if ds := drained(); ds.Drained || !slices.Equal(ds.Waiting, []string{"n2"}) {
		t.Fatalf("n2 has t1 in flight: %+v, want waiting for n2", ds)
	}
	report("n2", &api.GatewayAck{Revision: e.Revision})
	if ds := drained(); !ds.Drained {
		t.Fatalf("every gateway let go: %+v, want drained", ds)
	}
	// A down node's stale acknowledgement does not count.
	n3, _ := st.Nodes.Get(ctx, "n3")
	n3.Gateway = &api.GatewayAck{Revision: 1}
	if err := st.Nodes.Update(ctx, &n3); err != nil {
		t.Fatal(err)
	}
	if ds := drained(); !ds.Drained {
		t.Fatalf("a down node holds the drain up: %+v", ds)
	}
	// A report without a gateway clears the node's record.
	report("n2", nil)
	if n, _ := st.Nodes.Get(ctx, "n2"); n.Gateway != nil {
		t.Errorf("n2 reported no gateway but its record keeps %+v", n.Gateway)
	}

	// A task change that leaves the routing state alone (t2 is not serving
	// yet) still moves the revision on, in a revision-only message.
	idle.Status.Message = "pulling"
	if err := st.Tasks.Update(ctx, idle); err != nil {
		t.Fatal(err)
	}
	e = next(func(e api.Endpoints) bool { return e.Revision >= idle.Revision })
	if !e.Unchanged || len(e.Services) != 0 {
		t.Errorf("message after a change outside the routing state: %+v, want a revision-only one", e)
	}
	// Bad input.
	if resp, _ := f.do("GET", "/api/v1/agent/drained/t1?revision=x", "", testToken, nil); resp.StatusCode != 400 {
		t.Errorf("bad revision: %d, want 400", resp.StatusCode)
	}
}
