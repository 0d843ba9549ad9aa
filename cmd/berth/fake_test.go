package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// testNow is the clock of every CLI test.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const goodToken = "tok-good"

// fakeCluster is an httptest TLS server that fakes the Berth API in
// memory, plus a data directory that points at it.
type fakeCluster struct {
	srv     *httptest.Server
	dataDir string
	token   string // the only token accepted

	mu         sync.Mutex
	services   map[string]api.Service
	tasks      []api.Task
	nodes      []api.Node
	logs       string
	follow     bool // keep a followed log stream open until the client goes
	statsCalls int
	requests   []string
}

func newFakeCluster(t *testing.T) *fakeCluster {
	t.Helper()
	f := &fakeCluster{token: goodToken, services: map[string]api.Service{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/info", func(w http.ResponseWriter, r *http.Request) {
		fakeWriteJSON(w, 200, api.Info{Version: "test", Leader: true})
	})
	mux.HandleFunc("GET /api/v1/services", f.listServices)
	mux.HandleFunc("GET /api/v1/services/{name}", f.getService)
	mux.HandleFunc("PUT /api/v1/services/{name}", f.putService)
	mux.HandleFunc("POST /api/v1/services/{name}/scale", f.scaleService)
	mux.HandleFunc("DELETE /api/v1/services/{name}", f.deleteService)
	mux.HandleFunc("GET /api/v1/services/{name}/tasks", f.serviceTasks)
	mux.HandleFunc("GET /api/v1/services/{name}/logs", f.serviceLogs)
	mux.HandleFunc("GET /api/v1/services/{name}/stats", f.serviceStats)
	mux.HandleFunc("GET /api/v1/tasks", f.listTasks)
	mux.HandleFunc("GET /api/v1/nodes", f.listNodes)
	mux.HandleFunc("GET /api/v1/nodes/{id}", f.getNode)
	mux.HandleFunc("GET /api/v1/nodes/{id}/topology", f.nodeTopology)
	mux.HandleFunc("PATCH /api/v1/nodes/{id}", f.updateNode)
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		token := f.token
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+token {
			fakeWriteJSON(w, 401, api.Error{Code: api.CodeUnauthorized, Message: "missing or wrong bearer token"})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)

	f.dataDir = t.TempDir()
	writeTestFile(t, filepath.Join(f.dataDir, addrFile), f.srv.URL+"\n", 0o644)
	writeTestFile(t, filepath.Join(f.dataDir, tokenFile), f.token+"\n", 0o600)
	writeTestFile(t, filepath.Join(f.dataDir, caFile), string(f.caPEM()), 0o644)
	return f
}

func (f *fakeCluster) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
}

func writeTestFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func fakeWriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fakeWriteError(w http.ResponseWriter, err error) {
	var ae *api.Error
	if errors.As(err, &ae) {
		fakeWriteJSON(w, ae.Status, ae)
		return
	}
	var fe *api.FieldError
	if errors.As(err, &fe) {
		fakeWriteJSON(w, 400, api.Error{Code: api.CodeInvalid, Message: fe.Message, Field: fe.Field})
		return
	}
	fakeWriteJSON(w, 500, api.Error{Code: api.CodeInternal, Message: err.Error()})
}

func fakeNotFound(kind, name string) error {
	return &api.Error{Code: api.CodeNotFound, Status: 404, Message: fmt.Sprintf("%s %q not found", kind, name)}
}

func (f *fakeCluster) listServices(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []api.Service{}
	for _, s := range f.services {
		out = append(out, s)
	}
	fakeWriteJSON(w, 200, out)
}

func (f *fakeCluster) getService(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[r.PathValue("name")]
	if !ok {
		fakeWriteError(w, fakeNotFound("service", r.PathValue("name")))
		return
	}
	fakeWriteJSON(w, 200, s)
}

func (f *fakeCluster) putService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	switch r.Header.Get("Content-Type") {
	case "application/json", "application/yaml":
	default:
		fakeWriteError(w, &api.Error{Code: api.CodeUnsupported, Status: 415, Message: "bad content type"})
		return
	}
	body, _ := io.ReadAll(r.Body)
	spec, err := api.ParseServiceSpec(body)
	if err != nil {
		fakeWriteError(w, err)
		return
	}
	if spec.Name != name {
		fakeWriteError(w, api.Invalid("name", "%q does not match the URL", spec.Name))
		return
	}
	spec.Normalize()
	if err := spec.Validate(); err != nil {
		fakeWriteError(w, err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.services[name]
	if !ok {
		s := api.Service{ID: "svc-" + name, Spec: spec, Version: 1, CreatedAt: testNow, UpdatedAt: testNow}
		f.services[name] = s
		fakeWriteJSON(w, 201, s)
		return
	}
	a, _ := json.Marshal(old.Spec)
	b, _ := json.Marshal(spec)
	if !bytes.Equal(a, b) {
		old.Spec = spec
		old.Version++
		old.UpdatedAt = testNow
		f.services[name] = old
	}
	fakeWriteJSON(w, 200, old)
}

func (f *fakeCluster) scaleService(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Replicas *int `json:"replicas"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Replicas == nil {
		fakeWriteError(w, api.Invalid("replicas", "is required"))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[r.PathValue("name")]
	if !ok {
		fakeWriteError(w, fakeNotFound("service", r.PathValue("name")))
		return
	}
	n := *req.Replicas
	s.Spec.Replicas = &n
	s.Version++
	f.services[s.Spec.Name] = s
	fakeWriteJSON(w, 200, s)
}

func (f *fakeCluster) deleteService(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.services[r.PathValue("name")]; !ok {
		fakeWriteError(w, fakeNotFound("service", r.PathValue("name")))
		return
	}
	delete(f.services, r.PathValue("name"))
	w.WriteHeader(204)
}

// fakeCurrent is the API's default task filter.
func fakeCurrent(t api.Task) bool {
	return t.DesiredState == api.TaskRunning || !t.Status.State.Terminal()
}

func (f *fakeCluster) serviceTasks(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := r.PathValue("name")
	if _, ok := f.services[name]; !ok {
		fakeWriteError(w, fakeNotFound("service", name))
		return
	}
	all := r.URL.Query().Get("all") == "true"
	out := []api.Task{}
	for _, t := range f.tasks {
		if t.ServiceName == name && (all || fakeCurrent(t)) {
			out = append(out, t)
		}
	}
	fakeWriteJSON(w, 200, out)
}

func (f *fakeCluster) listTasks(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := r.URL.Query()
	out := []api.Task{}
	for _, t := range f.tasks {
		if (q.Get("all") == "true" || fakeCurrent(t)) &&
			(q.Get("service") == "" || q.Get("service") == t.ServiceName) && (q.Get("node") == "" || q.Get("node") == t.NodeID) {
			out = append(out, t)
		}
	}
	fakeWriteJSON(w, 200, out)
}

func (f *fakeCluster) serviceLogs(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	logs, follow := f.logs, f.follow
	_, ok := f.services[r.PathValue("name")]
	f.mu.Unlock()
	if !ok {
		fakeWriteError(w, fakeNotFound("service", r.PathValue("name")))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, logs)
	w.(http.Flusher).Flush()
	if follow && r.URL.Query().Get("follow") == "true" {
		<-r.Context().Done()
	}
}

// serviceStats answers a sample per running task of the service: each call
// is 100ms later than the one before, in which each task used 50ms of CPU
// (50%).
func (f *fakeCluster) serviceStats(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statsCalls++
	out := []api.TaskStats{}
	for _, t := range f.tasks {
		if t.ServiceName != r.PathValue("name") || t.Status.State != api.TaskRunning {
			continue
		}
		n := uint64(f.statsCalls)
		out = append(out, api.TaskStats{TaskID: t.ID, Service: t.ServiceName, Slot: t.Slot, NodeID: t.NodeID,
			Stats: &api.ResourceStats{Time: testNow.Add(time.Duration(n) * 100 * time.Millisecond), CPUNanos: n * 50e6, MemoryBytes: 10 << 20, Pids: 3}})
	}
	fakeWriteJSON(w, 200, out)
}

func (f *fakeCluster) listNodes(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fakeWriteJSON(w, 200, append([]api.Node{}, f.nodes...))
}

func (f *fakeCluster) getNode(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := r.PathValue("id")
	for _, n := range f.nodes {
		if n.ID == id || n.Hostname == id {
			fakeWriteJSON(w, 200, n)
			return
		}
	}
	fakeWriteError(w, fakeNotFound("node", id))
}

func (f *fakeCluster) updateNode(w http.ResponseWriter, r *http.Request) {
	var u api.NodeUpdate
	if err := json.NewDecoder(r.Body).Decode(&u); err != nil {
		fakeWriteError(w, api.Invalid("", "bad body"))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, n := range f.nodes {
		if n.ID == r.PathValue("id") || n.Hostname == r.PathValue("id") {
			if u.Availability != "" {
				f.nodes[i].Availability = u.Availability
			}
			fakeWriteJSON(w, 200, f.nodes[i])
			return
		}
	}
	fakeWriteError(w, fakeNotFound("node", r.PathValue("id")))
}

func (f *fakeCluster) nodeTopology(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := r.PathValue("id")
	for _, n := range f.nodes {
		if n.ID == id || n.Hostname == id {
			if n.Topology == nil {
				fakeWriteError(w, &api.Error{Code: api.CodeNotFound, Status: 404, Message: "node " + n.Hostname + " reported no CPU topology"})
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "node %s\ncpus %s\n", n.Hostname, n.Topology.Online)
			return
		}
	}
	fakeWriteError(w, fakeNotFound("node", id))
}

// seed fills the cluster with two services, their tasks and two nodes.
func (f *fakeCluster) seed() {
	f.mu.Lock()
	defer f.mu.Unlock()
	two, one0 := 2, 1
	f.services["hello"] = api.Service{
		ID: "svc-hello", Version: 3,
		Spec:      api.ServiceSpec{Name: "hello", Mode: api.ModeReplicated, Replicas: &two, Task: api.TaskSpec{Command: []string{"berth", "whoami"}}},
		CreatedAt: testNow.Add(-24 * time.Hour), UpdatedAt: testNow.Add(-5 * time.Minute),
	}
	f.services["web"] = api.Service{
		ID: "svc-web", Version: 1,
		Spec:      api.ServiceSpec{Name: "web", Mode: api.ModeGlobal, Task: api.TaskSpec{Command: []string{"web"}}},
		CreatedAt: testNow.Add(-2 * time.Hour), UpdatedAt: testNow.Add(-2 * time.Hour),
	}
	f.services["db"] = api.Service{
		ID: "svc-db", Version: 2,
		Spec: api.ServiceSpec{Name: "db", Mode: api.ModeReplicated, Replicas: &one0,
			Task: api.TaskSpec{Command: []string{"db"}, Ports: []api.PortSpec{{Name: "pg", Publish: 15432}, {Name: "stats", Protocol: "udp", Publish: 8125, Mode: "host"}}}},
		CreatedAt: testNow.Add(-time.Hour), UpdatedAt: testNow.Add(-time.Hour),
	}
	one := 1
	f.tasks = []api.Task{
		{
			ID: "e1b2c3d4e5f6a7b8c9d0", ServiceName: "db", Slot: 1, SpecVersion: 2, DesiredState: api.TaskRunning,
			Status:    api.TaskStatus{State: api.TaskPending, Message: "no node can take it: 2 nodes have too little memory free"},
			CreatedAt: testNow.Add(-time.Hour),
		},
		{
			ID: "a1b2c3d4e5f6a7b8c9d0", ServiceName: "hello", Slot: 1, SpecVersion: 3, NodeID: "node-alpha-0001",
			Ports: map[string]int{"http": 20001, "admin": 20002}, DesiredState: api.TaskRunning,
			Status:    api.TaskStatus{State: api.TaskRunning, Health: api.HealthHealthy, PID: 4242},
			CreatedAt: testNow.Add(-4 * time.Minute),
		},
		{
			ID: "b1b2c3d4e5f6a7b8c9d0", ServiceName: "hello", Slot: 2, SpecVersion: 3, NodeID: "node-beta-00002",
			DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskStarting, Health: api.HealthStarting},
			CreatedAt: testNow.Add(-3 * time.Minute),
		},
		{
			ID: "c1b2c3d4e5f6a7b8c9d0", ServiceName: "hello", Slot: 1, SpecVersion: 2, NodeID: "node-alpha-0001",
			DesiredState: api.TaskShutdown,
			Status:       api.TaskStatus{State: api.TaskFailed, Err: "exit status 1\nwith a second line", ExitCode: &one},
			CreatedAt:    testNow.Add(-10 * time.Minute),
		},
		{
			ID: "d1b2c3d4e5f6a7b8c9d0", ServiceName: "web", Slot: 0, SpecVersion: 1, NodeID: "node-alpha-0001",
			DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskRunning, PID: 99},
			Allocation: &api.CPUAllocation{CPUs: "1", MemNodes: "0"},
			CreatedAt:  testNow.Add(-time.Hour),
		},
	}
	f.nodes = []api.Node{
		{ID: "node-beta-00002", Hostname: "beta", Status: api.NodeDown, Availability: api.AvailabilityDrain,
			Resources: api.NodeResources{CPUs: 0.5, Memory: 512 << 20}, Address: "10.0.0.2"},
		{ID: "node-alpha-0001", Hostname: "alpha", Status: api.NodeReady, Availability: api.AvailabilityActive,
			Resources: api.NodeResources{CPUs: 2, Memory: 3<<30 + 512<<20}, Address: "10.0.0.1",
			Topology: &api.Topology{Online: "0-1"}},
	}
	f.logs = "hello.1 | line one\nhello.2 | line two\n"
}

// cliResult is what one CLI run produced.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cliRun runs the CLI in-process with the given environment variables.
func cliRun(ctx context.Context, vars map[string]string, stdin string, args ...string) cliResult {
	var out, errb bytes.Buffer
	e := &env{
		stdin:  bytes.NewBufferString(stdin),
		stdout: &out,
		stderr: &errb,
		getenv: func(k string) string { return vars[k] },
		euid:   1000,
		now:    func() time.Time { return testNow },
	}
	code := run(ctx, args, e)
	return cliResult{out.String(), errb.String(), code}
}

// run runs the CLI against f through its data directory.
func (f *fakeCluster) run(args ...string) cliResult {
	return cliRun(context.Background(), map[string]string{envDataDir: f.dataDir}, "", args...)
}

// otherCA returns a PEM CA certificate that did not sign the test server's.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
