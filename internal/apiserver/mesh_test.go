package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
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
	// Every service is listed, sorted by name: "plain" has no ports and no
	// tasks, and still gets DNS names.
	backends := func(e api.Endpoints) string {
		if len(e.Services) != 2 || e.Services[0].Service != "plain" || e.Services[1].Service != "web" {
			return "?"
		}
		s := ""
		for _, b := range e.Services[1].Backends {
			s += b.TaskID + "@" + b.Host + " "
		}
		return s
	}
	e := next(func(api.Endpoints) bool { return true })
	if len(e.Services) != 2 {
		t.Fatalf("first message: %+v", e)
	}
	if p := e.Services[0]; p.Service != "plain" || len(p.Ports) != 0 || p.Backends == nil || len(p.Backends) != 0 {
		t.Fatalf("first message, plain: %+v", p)
	}
	// web has all its task ports: the published one and the one only DNS
	// names.
	web := e.Services[1]
	if web.Service != "web" || web.LoadBalancing != api.LBLeastOutstanding || len(web.Ports) != 2 ||
		web.Ports[0].Name != "http" || web.Ports[0].Publish != 18080 || web.Ports[0].Mode != api.PublishIngress ||
		web.Ports[1].Name != "admin" || web.Ports[1].Publish != 0 || web.Ports[1].Protocol != "tcp" {
		t.Fatalf("first message, web: %+v", web)
	}
	// t2's node has no address, in a cluster that spans machines (n1's
	// address is not loopback): no gateway could reach t2.
	if got := backends(e); got != "t1@10.0.0.1 " {
		t.Fatalf("backends %q", got)
	}
	if b := web.Backends[0]; b.Ports["http"] != 31000 || b.Ports["admin"] != 31001 {
		t.Fatalf("ports %+v", b)
	}
	// t3 becomes healthy, t1 is told to shut down: both show within the
	// debounce, measured from the write.
	t3.Status.Health = api.HealthHealthy
	start := time.Now()
	if err := st.Tasks.Update(ctx, t3); err != nil {
		t.Fatal(err)
	}
	next(func(e api.Endpoints) bool { return backends(e) == "t1@10.0.0.1 t3@10.0.0.1 " })
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("a health change took %s to reach the stream", d)
	}
	t1.DesiredState = api.TaskShutdown
	if err := st.Tasks.Update(ctx, t1); err != nil {
		t.Fatal(err)
	}
	next(func(e api.Endpoints) bool { return backends(e) == "t3@10.0.0.1 " })
	// The node gets an address: t2 gets traffic.
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
	next(func(e api.Endpoints) bool { return len(e.Services) == 1 && e.Services[0].Service == "plain" })
}

// endpoints lists every service with all its task ports, whatever their
// mode, and the healthy running tasks only.
func TestEndpointsListEveryService(t *testing.T) {
	ports := []api.PortSpec{
		{Name: "http", Protocol: "tcp", Publish: 18080, Mode: api.PublishIngress},
		{Name: "direct", Protocol: "udp", Publish: 18081, Mode: api.PublishHost},
		{Name: "metrics", Protocol: "tcp"},
	}
	m := &meshState{
		services: map[string]api.Service{
			"web":    {Spec: api.ServiceSpec{Name: "web", LoadBalancing: api.LBRoundRobin, Task: api.TaskSpec{Ports: ports}}},
			"batch":  {Spec: api.ServiceSpec{Name: "batch", LoadBalancing: api.LBRoundRobin}},
			"routed": {Spec: api.ServiceSpec{Name: "routed", Routes: []api.RouteSpec{{Path: "/", Port: "http"}}}},
		},
		tasks: map[string]api.Task{
			"w1": {ID: "w1", ServiceName: "web", NodeID: "n1", DesiredState: api.TaskRunning,
				Ports: map[string]int{"http": 20001, "direct": 18081, "metrics": 20002}, Status: api.TaskStatus{State: api.TaskRunning, Health: api.HealthHealthy}},
			"w2": {ID: "w2", ServiceName: "web", NodeID: "n1", DesiredState: api.TaskRunning,
				Status: api.TaskStatus{State: api.TaskRunning, Health: api.HealthUnhealthy}},
			"b1": {ID: "b1", ServiceName: "batch", NodeID: "n2", DesiredState: api.TaskRunning,
				Status: api.TaskStatus{State: api.TaskRunning}},
		},
		nodes: map[string]api.Node{"n1": {ID: "n1", Address: "10.0.0.1"}},
	}
	e := m.endpoints(7)
	var names []string
	for _, s := range e.Services {
		names = append(names, s.Service)
	}
	if e.Revision != 7 || fmt.Sprint(names) != "[batch routed web]" {
		t.Fatalf("services %v (revision %d)", names, e.Revision)
	}
	batch, routed, web := e.Services[0], e.Services[1], e.Services[2]
	if len(batch.Ports) != 0 || len(batch.Backends) != 1 || batch.Backends[0].Host != "127.0.0.1" {
		t.Errorf("batch: %+v", batch)
	}
	if routed.Backends == nil || len(routed.Backends) != 0 || len(routed.Routes) != 1 {
		t.Errorf("routed: %+v", routed)
	}
	if !reflect.DeepEqual(web.Ports, ports) {
		t.Errorf("web ports %+v, want all of %+v", web.Ports, ports)
	}
	if len(web.Backends) != 1 || web.Backends[0].TaskID != "w1" || web.Backends[0].Host != "10.0.0.1" || web.Backends[0].Ports["metrics"] != 20002 {
		t.Errorf("web backends %+v", web.Backends)
	}
}

// On one machine (every node loopback or without an address, as `berth up`
// and local test clusters are) tasks are reached at 127.0.0.1; once the
// cluster spans machines, a node whose address is loopback, unspecified or
// missing gets no traffic: other gateways would dial their own loopback.
func TestEndpointsSkipNodesWithoutUsableAddress(t *testing.T) {
	task := func(id, node string) api.Task {
		return api.Task{ID: id, ServiceName: "web", NodeID: node, DesiredState: api.TaskRunning,
			Ports: map[string]int{"http": 20001}, Status: api.TaskStatus{State: api.TaskRunning}}
	}
	hosts := func(nodes ...api.Node) string {
		m := &meshState{services: map[string]api.Service{"web": {Spec: api.ServiceSpec{Name: "web"}}},
			tasks: map[string]api.Task{}, nodes: map[string]api.Node{}}
		for i, n := range nodes {
			m.nodes[n.ID] = n
			id := fmt.Sprintf("t%d", i)
			m.tasks[id] = task(id, n.ID)
		}
		var out []string
		for _, b := range m.endpoints(1).Services[0].Backends {
			out = append(out, b.TaskID+"@"+b.Host)
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		name  string
		nodes []api.Node
		want  string
	}{
		{"one machine", []api.Node{{ID: "a", Address: "127.0.0.1"}, {ID: "b"}}, "t0@127.0.0.1 t1@127.0.0.1"},
		{"many machines", []api.Node{{ID: "a", Address: "10.0.0.1"}, {ID: "b", Address: "127.0.0.1"}, {ID: "c"},
			{ID: "d", Address: "0.0.0.0"}, {ID: "e", Address: "node-e.example"}}, "t0@10.0.0.1 t4@node-e.example"},
		{"unspecified alone", []api.Node{{ID: "a", Address: "::"}}, ""},
	} {
		if got := hosts(c.nodes...); got != c.want {
			t.Errorf("%s: backends %q, want %q", c.name, got, c.want)
		}
	}
}
