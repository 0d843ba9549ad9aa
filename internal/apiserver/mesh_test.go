package apiserver

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func TestDeployRejectsMeshClashes(t *testing.T) {
	f := newFixture(t)
	put := func(name, doc string) (int, api.Error) {
		t.Helper()
		resp, body := f.do("PUT", "/api/v1/services/"+name, "application/yaml", testToken, []byte(doc))
		var e api.Error
		if resp.StatusCode >= 300 {
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%s: %d %s", name, resp.StatusCode, body)
			}
		}
		return resp.StatusCode, e
	}
	web := "task:\n  command: [x]\n  ports: [{name: http, publish: 18080}, {name: q, protocol: udp, publish: 18053}]\nroutes: [{host: shop.test, path: /orders, port: http}]\n"
	if code, e := put("web", web); code != 201 {
		t.Fatalf("web: %d %+v", code, e)
	}
	// Redeploying the same service with the same ports is no clash.
	if code, e := put("web", web); code != 200 {
		t.Fatalf("web again: %d %+v", code, e)
	}
	for _, c := range []struct {
		doc   string
		field string
	}{
		{"task:\n  command: [x]\n  ports: [{name: a}, {name: b, publish: 18080}]\n", "task.ports[1].publish"},
		{"task:\n  command: [x]\n  ports: [{name: a}]\nroutes: [{port: a, path: /x}, {host: SHOP.test, path: /orders/, port: a}]\n", "routes[1]"},
	} {
		code, e := put("other", c.doc)
		if code != 409 || e.Field != c.field || e.Code != api.CodeConflict {
			t.Errorf("%q: %d %+v, want 409 on %s", c.doc, code, e, c.field)
		}
		if _, err := f.st.Services.Get(context.Background(), "other"); err == nil {
			t.Errorf("%q: the clashing service was stored", c.doc)
		}
	}
	// The same number over another protocol, and another path, are fine.
	ok := "task:\n  command: [x]\n  ports: [{name: a, protocol: udp, publish: 18080}, {name: b}]\nroutes: [{host: shop.test, path: /cart, port: b}]\n"
	if code, e := put("other", ok); code != 201 {
		t.Fatalf("other: %d %+v", code, e)
	}
	// Invalid mesh fields get a 400 naming the field.
	if code, e := put("bad", "task:\n  command: [x]\n  ports: [{name: a, publish: 99999}]\n"); code != 400 || e.Field != "task.ports[0].publish" {
		t.Fatalf("bad: %d %+v", code, e)
	}
}

func TestBackendTask(t *testing.T) {
	for _, c := range []struct {
		state   api.TaskState
		desired api.TaskState
		health  string
		want    bool
	}{
		{api.TaskRunning, api.TaskRunning, api.HealthHealthy, true},
		{api.TaskRunning, api.TaskRunning, api.HealthNone, true},
		{api.TaskRunning, api.TaskRunning, "", true},
		{api.TaskRunning, api.TaskRunning, api.HealthStarting, false},
		{api.TaskRunning, api.TaskRunning, api.HealthUnhealthy, false},
		{api.TaskRunning, api.TaskShutdown, api.HealthHealthy, false},
		{api.TaskStarting, api.TaskRunning, api.HealthNone, false},
		{api.TaskFailed, api.TaskRunning, api.HealthNone, false},
	} {
		tk := api.Task{DesiredState: c.desired, Status: api.TaskStatus{State: c.state, Health: c.health}}
		if got := backendTask(&tk); got != c.want {
			t.Errorf("%s/%s/%q: %v", c.state, c.desired, c.health, got)
		}
	}
}

func TestEndpointsStream(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st := f.st
	for _, n := range []api.Node{{ID: "n1", Hostname: "a", Address: "10.0.0.1"}, {ID: "n2", Hostname: "b"}} {
		if err := st.Nodes.Create(ctx, &n); err != nil {
			t.Fatal(err)
		}
	}
	if resp, body := f.do("PUT", "/api/v1/services/web", "application/yaml", testToken,
		[]byte("task:\n  command: [x]\n  ports: [{name: http, publish: 18080}, {name: admin}]\nload_balancing: least-outstanding\n")); resp.StatusCode != 201 {
		t.Fatalf("deploy: %d %s", resp.StatusCode, body)
	}
	if resp, body := f.do("PUT", "/api/v1/services/plain", "application/yaml", testToken, []byte("task: {command: [x]}\n")); resp.StatusCode != 201 {
		t.Fatalf("deploy: %d %s", resp.StatusCode, body)
	}
	running := func(id, node string, health string) *api.Task {
		return &api.Task{ID: id, ServiceName: "web", NodeID: node, DesiredState: api.TaskRunning,
			Ports:  map[string]int{"http": 31000, "admin": 31001},
			Status: api.TaskStatus{State: api.TaskRunning, Health: health}}
	}
	t1, t2, t3 := running("t1", "n1", api.HealthHealthy), running("t2", "n2", api.HealthNone), running("t3", "n1", api.HealthStarting)
	for _, tk := range []*api.Task{t1, t2, t3} {
		if err := st.Tasks.Create(ctx, tk); err != nil {
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
		var last api.Endpoints
		for {
			select {
			case e, ok := <-ch:
				if !ok {
					t.Fatal("stream closed")
				}
				if want(e) {
					return e
				}
				last = e
			case <-ctx.Done():
				t.Fatalf("no wanted message; last %+v", last)
			}
		}
	}
	backends := func(e api.Endpoints) string {
		if len(e.Services) != 1 {
			return "?"
		}
		s := ""
		for _, b := range e.Services[0].Backends {
			s += b.TaskID + "@" + b.Host + " "
		}
		return s
	}
	e := next(func(api.Endpoints) bool { return true })
	if len(e.Services) != 1 || e.Services[0].Service != "web" || e.Services[0].LoadBalancing != api.LBLeastOutstanding ||
		len(e.Services[0].Ports) != 1 || e.Services[0].Ports[0].Publish != 18080 {
		t.Fatalf("first message: %+v", e)
	}
	if got := backends(e); got != "t1@10.0.0.1 t2@127.0.0.1 " {
		t.Fatalf("backends %q", got)
	}
	if e.Services[0].Backends[0].Ports["http"] != 31000 {
		t.Fatalf("ports %+v", e.Services[0].Backends[0])
	}
	// t3 becomes healthy, t1 is told to shut down: both show within the
	// debounce, measured from the write.
	t3.Status.Health = api.HealthHealthy
	start := time.Now()
	if err := st.Tasks.Update(ctx, t3); err != nil {
		t.Fatal(err)
	}
	next(func(e api.Endpoints) bool { return backends(e) == "t1@10.0.0.1 t2@127.0.0.1 t3@10.0.0.1 " })
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("a health change took %s to reach the stream", d)
	}
	t1.DesiredState = api.TaskShutdown
	if err := st.Tasks.Update(ctx, t1); err != nil {
		t.Fatal(err)
	}
	next(func(e api.Endpoints) bool { return backends(e) == "t2@127.0.0.1 t3@10.0.0.1 " })
	// The node gets an address.
	n2, _ := st.Nodes.Get(ctx, "n2")
	n2.Address = "10.0.0.2"
	if err := st.Nodes.Update(ctx, &n2); err != nil {
		t.Fatal(err)
	}
	next(func(e api.Endpoints) bool { return backends(e) == "t2@10.0.0.2 t3@10.0.0.1 " })
	// The service is removed.
	if resp, _ := f.do("DELETE", "/api/v1/services/web", "", testToken, nil); resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	next(func(e api.Endpoints) bool { return len(e.Services) == 0 })
}
