package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const testToken = "berth_test_token_0123456789abcdef"

type fixture struct {
	t   *testing.T
	st  *store.Store
	srv *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewServer(New(Config{Store: st, Token: testToken, Version: "test"}).Handler())
	t.Cleanup(srv.Close)
	return &fixture{t: t, st: st, srv: srv}
}

func (f *fixture) do(method, path, ctype, token string, body []byte) (*http.Response, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// snapshot is everything stored, to prove a rejected request changed nothing.
func (f *fixture) snapshot() string {
	resp, err := f.st.Client().Get(context.Background(), f.st.Prefix(), clientv3WithPrefix())
	if err != nil {
		f.t.Fatal(err)
	}
	var b strings.Builder
	for _, kv := range resp.Kvs {
		b.WriteString(string(kv.Key) + "=" + string(kv.Value) + "\n")
	}
	return b.String()
}

const goodSpec = `name: hello
replicas: 3
task:
  driver: process
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports:
    - name: http
  health:
    http: {port: http, path: /healthz}
    interval: 1s
  resources: {cpus: 0.25, memory: 64MiB}
restart: {condition: any, delay: 1s}
`

func TestDeployIsIdempotentAndVersioned(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do("PUT", "/api/v1/services/hello", "application/yaml", testToken, []byte(goodSpec))
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	var svc api.Service
	if err := json.Unmarshal(body, &svc); err != nil || svc.Version != 1 || svc.Spec.ReplicaCount() != 3 {
		t.Fatalf("created %+v %v", svc, err)
	}
	before := f.snapshot()
	resp, body = f.do("PUT", "/api/v1/services/hello", "application/yaml", testToken, []byte(goodSpec))
	if resp.StatusCode != 200 || f.snapshot() != before {
		t.Fatalf("redeploy of the same spec changed state: %d %s", resp.StatusCode, body)
	}
	resp, body = f.do("PUT", "/api/v1/services/hello", "application/yaml", testToken, []byte(strings.Replace(goodSpec, "replicas: 3", "replicas: 4", 1)))
	_ = json.Unmarshal(body, &svc)
	if resp.StatusCode != 200 || svc.Version != 2 || svc.Spec.ReplicaCount() != 4 {
		t.Fatalf("update: %d %+v", resp.StatusCode, svc)
	}
	resp, body = f.do("POST", "/api/v1/services/hello/scale", "application/json", testToken, []byte(`{"replicas":0}`))
	_ = json.Unmarshal(body, &svc)
	if resp.StatusCode != 200 || svc.Version != 3 || svc.Spec.ReplicaCount() != 0 {
		t.Fatalf("scale: %d %s", resp.StatusCode, body)
	}
	// JSON works as well as YAML.
	resp, body = f.do("PUT", "/api/v1/services/other", "application/json", testToken, []byte(`{"name":"other","task":{"command":["/bin/true"]}}`))
	if resp.StatusCode != 201 {
		t.Fatalf("json create: %d %s", resp.StatusCode, body)
	}
	resp, _ = f.do("DELETE", "/api/v1/services/other", "", testToken, nil)
	if resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	resp, _ = f.do("GET", "/api/v1/services/other", "", testToken, nil)
	if resp.StatusCode != 404 {
		t.Fatalf("get after delete: %d", resp.StatusCode)
	}
}

func TestBadInputIsRejectedWithFieldAndChangesNothing(t *testing.T) {
	f := newFixture(t)
	if resp, body := f.do("PUT", "/api/v1/services/hello", "application/yaml", testToken, []byte(goodSpec)); resp.StatusCode != 201 {
		t.Fatalf("seed: %d %s", resp.StatusCode, body)
	}
	spec := func(old, new string) []byte { return []byte(strings.Replace(goodSpec, old, new, 1)) }
	huge := bytes.Repeat([]byte("x"), 10<<20)
	cases := []struct {
		name         string
		method, path string
		ctype, token string
		body         []byte
		status       int
		field        string
	}{
		{"missing token", "PUT", "/api/v1/services/hello", "application/yaml", "", spec("replicas: 3", "replicas: 5"), 401, ""},
		{"wrong token", "PUT", "/api/v1/services/hello", "application/yaml", "berth_wrong", spec("replicas: 3", "replicas: 5"), 401, ""},
		{"wrong token on read", "GET", "/api/v1/services", "", "nope", nil, 401, ""},
		{"negative replicas", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("replicas: 3", "replicas: -1"), 400, "replicas"},
		{"replicas as word", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("replicas: 3", "replicas: three"), 400, "replicas"},
		{"replicas fraction", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("replicas: 3", "replicas: 2.5"), 400, "replicas"},
		{"replicas over limit", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("replicas: 3", "replicas: 1000001"), 400, "replicas"},
		{"unknown top field", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("replicas: 3", "replica: 3"), 400, "replica"},
		{"unknown nested field", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("  driver: process", "  driver: process\n  comand: [x]"), 400, "task.comand"},
		{"unknown driver", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("driver: process", "driver: lxc"), 400, "task.driver"},
		{"port name clash", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("    - name: http", "    - name: http\n    - name: http"), 400, "task.ports[1].name"},
		{"port name upper case", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("    - name: http", "    - name: HTTP"), 400, "task.ports[0].name"},
		{"port protocol", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("    - name: http", "    - name: http\n      protocol: sctp"), 400, "task.ports[0].protocol"},
		{"health on unknown port", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("{port: http, path", "{port: web, path"), 400, "task.health.http.port"},
		{"health path relative", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("path: /healthz", "path: healthz"), 400, "task.health.http.path"},
		{"two health checks", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("    interval: 1s", "    interval: 1s\n    tcp: {port: http}"), 400, "task.health"},
		{"interval not a duration", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("interval: 1s", "interval: fast"), 400, "task.health.interval"},
		{"interval too short", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("interval: 1s", "interval: 10ms"), 400, "task.health.interval"},
		{"negative cpus", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("cpus: 0.25", "cpus: -1"), 400, "task.resources.cpus"},
		{"bad memory unit", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("memory: 64MiB", "memory: 64 potatoes"), 400, "task.resources.memory"},
		{"memory too small", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("memory: 64MiB", "memory: 1KiB"), 400, "task.resources.memory"},
		{"constraint without operator", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "placement: {constraints: [\"node.labels.zone = a\"]}\nrestart:"), 400, "placement.constraints[0]"},
		{"constraint unknown key", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "placement: {constraints: [\"host == a\"]}\nrestart:"), 400, "placement.constraints[0]"},
		{"invalid name", "PUT", "/api/v1/services/Hello_World", "application/yaml", testToken, spec("name: hello", "name: Hello_World"), 400, "name"},
		{"name mismatch", "PUT", "/api/v1/services/other", "application/yaml", testToken, []byte(goodSpec), 400, "name"},
		{"name too long", "PUT", "/api/v1/services/" + strings.Repeat("a", 64), "application/yaml", testToken, spec("name: hello", "name: "+strings.Repeat("a", 64)), 400, "name"},
		{"10 MB body", "PUT", "/api/v1/services/hello", "application/yaml", testToken, huge, 413, ""},
		{"invalid yaml", "PUT", "/api/v1/services/hello", "application/yaml", testToken, []byte("name: [unclosed"), 400, ""},
		{"empty body", "PUT", "/api/v1/services/hello", "application/yaml", testToken, nil, 400, ""},
		{"json list body", "PUT", "/api/v1/services/hello", "application/json", testToken, []byte(`[1,2]`), 400, ""},
		{"missing command", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec(`  command: [berth, whoami, --port, "${PORT_HTTP}"]`, ""), 400, "task.command"},
		{"command not a list", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec(`command: [berth, whoami, --port, "${PORT_HTTP}"]`, "command: berth whoami"), 400, "task.command"},
		{"restart condition", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("condition: any", "condition: sometimes"), 400, "restart.condition"},
		{"negative max attempts", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("condition: any", "condition: any, max_attempts: -1"), 400, "restart.max_attempts"},
		{"negative duration", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("delay: 1s", "delay: -1s"), 400, "restart.delay"},
		{"unknown mode", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("replicas: 3", "replicas: 3\nmode: daemon"), 400, "mode"},
		{"global with replicas", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("replicas: 3", "replicas: 3\nmode: global"), 400, "replicas"},
		{"bad env name", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("  driver: process", "  driver: process\n  env: {1ABC: x}"), 400, "task.env.1ABC"},
		{"env clashes with port", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("  driver: process", "  driver: process\n  env: {PORT_HTTP: \"80\"}"), 400, "task.env.PORT_HTTP"},
		{"relative workdir", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("  driver: process", "  driver: process\n  workdir: tmp"), 400, "task.workdir"},
		{"stop grace period over 1h", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("  driver: process", "  driver: process\n  stop_grace_period: 2562047h"), 400, "task.stop_grace_period"},
		{"bad user", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("  driver: process", "  driver: process\n  user: \"root;rm\""), 400, "task.user"},
		{"unsupported content type", "PUT", "/api/v1/services/hello", "text/html", testToken, []byte(goodSpec), 415, ""},
		{"scale negative", "POST", "/api/v1/services/hello/scale", "application/json", testToken, []byte(`{"replicas":-2}`), 400, "replicas"},
		{"scale not a number", "POST", "/api/v1/services/hello/scale", "application/json", testToken, []byte(`{"replicas":"x"}`), 400, "replicas"},
		{"scale missing", "POST", "/api/v1/services/hello/scale", "application/json", testToken, []byte(`{}`), 400, "replicas"},
		{"scale unknown service", "POST", "/api/v1/services/nope/scale", "application/json", testToken, []byte(`{"replicas":1}`), 404, ""},
		{"delete unknown service", "DELETE", "/api/v1/services/nope", "", testToken, nil, 404, ""},
		{"register without hostname", "POST", "/api/v1/nodes/register", "application/json", testToken, []byte(`{"drivers":["process"]}`), 400, "hostname"},
		{"register bad port range", "POST", "/api/v1/nodes/register", "application/json", testToken, []byte(`{"hostname":"a","drivers":["process"],"port_range":[9000,80]}`), 400, "port_range"},
		{"status unknown state", "POST", "/api/v1/nodes/x/status", "application/json", testToken, []byte(`{"tasks":[{"id":"t","status":{"state":"exploded"}}]}`), 400, "tasks[0].status.state"},
		{"status unknown node", "POST", "/api/v1/nodes/x/status", "application/json", testToken, []byte(`{}`), 404, ""},
		{"tasks bad all", "GET", "/api/v1/services/hello/tasks?all=maybe", "", testToken, nil, 400, "all"},
		{"update negative parallelism", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "update: {parallelism: -1}\nrestart:"), 400, "update.parallelism"},
		{"update negative delay", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "update: {delay: -1s}\nrestart:"), 400, "update.delay"},
		{"update failure ratio over 1", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "update: {max_failure_ratio: 1.5}\nrestart:"), 400, "update.max_failure_ratio"},
		{"rollback failure ratio negative", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "rollback: {max_failure_ratio: -0.1}\nrestart:"), 400, "rollback.max_failure_ratio"},
		{"update unknown order", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "update: {order: random}\nrestart:"), 400, "update.order"},
		{"update unknown failure action", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "update: {failure_action: panic}\nrestart:"), 400, "update.failure_action"},
		{"rollback that rolls back", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "rollback: {failure_action: rollback}\nrestart:"), 400, "rollback.failure_action"},
		{"negative canary", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "update: {canary: -1}\nrestart:"), 400, "update.canary"},
		{"auto promote without canary", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "update: {auto_promote: true}\nrestart:"), 400, "update.auto_promote"},
		{"update parallelism as word", "PUT", "/api/v1/services/hello", "application/yaml", testToken, spec("restart:", "update: {parallelism: all}\nrestart:"), 400, "update.parallelism"},
		{"rollback without previous version", "POST", "/api/v1/services/hello/rollback", "", testToken, nil, 409, ""},
		{"rollback to unknown version", "POST", "/api/v1/services/hello/rollback", "application/json", testToken, []byte(`{"to":7}`), 404, "to"},
		{"rollback bad body", "POST", "/api/v1/services/hello/rollback", "application/json", testToken, []byte(`{"to":"last"}`), 400, "to"},
		{"rollback unknown service", "POST", "/api/v1/services/nope/rollback", "", testToken, nil, 404, ""},
		{"promote without canaries", "POST", "/api/v1/services/hello/promote", "", testToken, nil, 409, ""},
		{"resume without pause", "POST", "/api/v1/services/hello/resume", "", testToken, nil, 409, ""},
		{"versions of unknown service", "GET", "/api/v1/services/nope/versions", "", testToken, nil, 404, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := f.snapshot()
			resp, body := f.do(c.method, c.path, c.ctype, c.token, c.body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			var e api.Error
			if err := json.Unmarshal(body, &e); err != nil || e.Code == "" || e.Message == "" {
				t.Fatalf("error body is not {code,message,field}: %s", body)
			}
			if e.Field != c.field {
				t.Fatalf("field %q, want %q (message %q)", e.Field, c.field, e.Message)
			}
			if after := f.snapshot(); after != before {
				t.Fatalf("rejected request changed the store")
			}
		})
	}
}

func TestOpenAPIAndDocsArePublicAndComplete(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do("GET", "/api/v1/openapi.json", "", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("openapi: %d", resp.StatusCode)
	}
	var doc struct {
		OpenAPI    string                    `json:"openapi"`
		Paths      map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("not an OpenAPI 3 document: %v", err)
	}
	for _, op := range operations {
		if doc.Paths[op.Path][strings.ToLower(op.Method)] == nil {
			t.Errorf("operation %s %s missing", op.Method, op.Path)
		}
	}
	// And every API route the server registers is in the document.
	srv := New(Config{Store: f.st, Token: testToken})
	srv.Handler()
	if len(srv.patterns) < 30 {
		t.Fatalf("the server recorded only %d routes", len(srv.patterns))
	}
	for _, p := range srv.patterns {
		method, path, _ := strings.Cut(p, " ")
		if !strings.HasPrefix(path, "/api/v1/") || path == "/api/v1/openapi.json" {
			continue
		}
		if doc.Paths[path][strings.ToLower(method)] == nil {
			t.Errorf("route %s is not in the OpenAPI document", p)
		}
	}
	spec := doc.Components.Schemas["TaskSpec"]["properties"].(map[string]any)
	for _, field := range []string{"driver", "command", "env", "ports", "health", "resources", "user", "workdir"} {
		if spec[field] == nil {
			t.Errorf("TaskSpec.%s missing from the schema", field)
		}
	}
	resp, body = f.do("GET", "/docs", "", "", nil)
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("/api/v1/services/{name}")) || !bytes.Contains(body, []byte("HealthCheck")) {
		t.Fatalf("docs page: %d", resp.StatusCode)
	}
}

func TestAgentProtocol(t *testing.T) {
	f := newFixture(t)
	reg := `{"hostname":"h1","drivers":["process"],"resources":{"cpus":2,"memory":"1GiB"}}`
	resp, body := f.do("POST", "/api/v1/nodes/register", "application/json", testToken, []byte(reg))
	if resp.StatusCode != 200 {
		t.Fatalf("register: %d %s", resp.StatusCode, body)
	}
	var node api.Node
	_ = json.Unmarshal(body, &node)
	if node.ID == "" || node.Status != api.NodeReady || node.PortRange != DefaultPortRange {
		t.Fatalf("node %+v", node)
	}
	// Registering again with the id keeps the node.
	resp, body = f.do("POST", "/api/v1/nodes/register", "application/json", testToken, []byte(`{"node_id":"`+node.ID+`","hostname":"h1b","drivers":["process"]}`))
	var again api.Node
	_ = json.Unmarshal(body, &again)
	if resp.StatusCode != 200 || again.ID != node.ID || again.Hostname != "h1b" {
		t.Fatalf("re-register: %d %+v", resp.StatusCode, again)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/api/v1/nodes/"+node.ID+"/assignments", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	dec := json.NewDecoder(stream.Body)
	var set api.Assignments
	if err := dec.Decode(&set); err != nil || len(set.Tasks) != 0 {
		t.Fatalf("first set: %+v %v", set, err)
	}
	// A task placed on the node shows up in the stream.
	tk := api.Task{ID: "task1", NodeID: node.ID, DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskAssigned}}
	other := api.Task{ID: "task2", NodeID: "someone-else", DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskAssigned}}
	if err := f.st.Tasks.Create(ctx, &other); err != nil {
		t.Fatal(err)
	}
	if err := f.st.Tasks.Create(ctx, &tk); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&set); err != nil || len(set.Tasks) != 1 || set.Tasks[0].ID != "task1" {
		t.Fatalf("second set: %+v %v", set, err)
	}
	// Status moves forward only, and only from the owning node.
	report := func(nodeID string, state api.TaskState) int {
		b, _ := json.Marshal(api.StatusReport{Tasks: []api.TaskStatusUpdate{{ID: "task1", Status: api.TaskStatus{State: state, PID: 42}}}})
		resp, _ := f.do("POST", "/api/v1/nodes/"+nodeID+"/status", "application/json", testToken, b)
		return resp.StatusCode
	}
	if c := report(node.ID, api.TaskRunning); c != 204 {
		t.Fatalf("report: %d", c)
	}
	if c := report(node.ID, api.TaskStarting); c != 204 {
		t.Fatalf("report: %d", c)
	}
	got, _ := f.st.Tasks.Get(ctx, "task1")
	if got.Status.State != api.TaskRunning || got.Status.PID != 42 {
		t.Fatalf("status went backwards or was lost: %+v", got.Status)
	}
	if err := f.st.Nodes.Create(ctx, &api.Node{ID: "intruder"}); err != nil {
		t.Fatal(err)
	}
	report("intruder", api.TaskFailed)
	got, _ = f.st.Tasks.Get(ctx, "task1")
	if got.Status.State != api.TaskRunning {
		t.Fatalf("another node changed the task: %+v", got.Status)
	}
	if c := report(node.ID, api.TaskComplete); c != 204 {
		t.Fatalf("report: %d", c)
	}
	// A terminal task leaves the node's set. Earlier changes may have sent
	// sets of their own first; the stream must reach the empty set.
	timer := time.AfterFunc(10*time.Second, cancel)
	defer timer.Stop()
	for {
		if err := dec.Decode(&set); err != nil {
			t.Fatalf("stream ended before the completed task left the set: %v", err)
		}
		if len(set.Tasks) == 0 {
			break
		}
		if st := set.Tasks[0].Status.State; st != api.TaskAssigned && st != api.TaskRunning {
			t.Fatalf("unexpected state in set: %s", st)
		}
	}
}

func clientv3WithPrefix() clientv3.OpOption { return clientv3.WithPrefix() }
