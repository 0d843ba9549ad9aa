package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent/agenttest"
	"github.com/berth-project/berth/internal/gateway"
)

// meshManager is the fake manager plus an endpoints stream the test feeds.
type meshManager struct {
	*agenttest.Manager

	mu sync.Mutex
	ch chan api.Endpoints
}

func (m *meshManager) Endpoints(ctx context.Context) (<-chan api.Endpoints, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ch == nil {
		m.ch = make(chan api.Endpoints, 16)
	}
	return m.ch, nil
}

func (m *meshManager) send(e api.Endpoints) {
	m.mu.Lock()
	if m.ch == nil {
		m.ch = make(chan api.Endpoints, 16)
	}
	ch := m.ch
	m.mu.Unlock()
	ch <- e
}

func TestMeshConfigTranslation(t *testing.T) {
	got := meshConfig([]api.ServiceEndpoints{{
		Service:       "web",
		LoadBalancing: api.LBLeastOutstanding,
		Ports: []api.PortSpec{
			{Name: "http", Protocol: "tcp", Publish: 18080, Mode: api.PublishIngress},
			{Name: "dns", Protocol: "udp", Publish: 18053, Mode: api.PublishIngress},
		},
		Routes: []api.RouteSpec{{Host: "shop.test", Path: "/orders", Port: "http", StripPrefix: true,
			Timeout: api.Duration(time.Second), HTTPSRedirect: true, HSTS: true}},
		Backends: []api.EndpointBackend{
			{TaskID: "t1", Host: "10.0.0.1", Ports: map[string]int{"http": 20001, "dns": 20002}},
			{TaskID: "t2", Host: "::1", Ports: map[string]int{"http": 20003}},
		},
	}})
	want := gateway.Config{
		Published: []gateway.Published{
			{Service: "web", Port: 18080, Protocol: "tcp", Policy: gateway.PolicyLeastOutstanding,
				Backends: []gateway.Backend{{ID: "t1", Addr: "10.0.0.1:20001"}, {ID: "t2", Addr: "[::1]:20003"}}},
			{Service: "web", Port: 18053, Protocol: "udp", Policy: gateway.PolicyLeastOutstanding,
				Backends: []gateway.Backend{{ID: "t1", Addr: "10.0.0.1:20002"}}},
		},
		Routes: []gateway.Route{{Service: "web", Host: "shop.test", Path: "/orders", StripPrefix: true,
			Timeout: time.Second, RedirectHTTPS: true, HSTS: true, Policy: gateway.PolicyLeastOutstanding,
			Backends: []gateway.Backend{{ID: "t1", Addr: "10.0.0.1:20001"}, {ID: "t2", Addr: "[::1]:20003"}}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

// pickPort returns a TCP port that was free a moment ago.
func pickPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func webEndpoints(publish int, backends ...api.EndpointBackend) api.Endpoints {
	return api.Endpoints{Services: []api.ServiceEndpoints{{
		Service: "web", LoadBalancing: api.LBRoundRobin,
		Ports:    []api.PortSpec{{Name: "http", Protocol: "tcp", Publish: publish, Mode: api.PublishIngress}},
		Backends: backends,
	}}}
}

// The agent's gateway follows the endpoints stream, and a task told to shut
// down is drained: its slow request completes before the task is signalled.
func TestMeshRoutesAndDrainsBeforeStop(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "hello from t1")
	}))
	defer backend.Close()
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock() // before Close, which waits for the handler
	bport := backend.Listener.Addr().(*net.TCPAddr).Port

	h := newHarness(t)
	mm := &meshManager{Manager: h.m}
	h.cfg.Mesh = &MeshConfig{}
	a, err := New(h.cfg, mm)
	if err != nil {
		t.Fatal(err)
	}
	a.retryMin = 5 * time.Millisecond
	a.portFree = func(string, int) error { return nil } // the "task" is the test's server
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	task := newTask("t1")
	task.Spec.Ports = []api.PortSpec{{Name: "http", Protocol: "tcp"}}
	task.Ports = map[string]int{"http": bport}
	h.m.Assign(task)
	h.waitStatus("t1", api.TaskRunning)

	publish := pickPort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", publish)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (string, error) {
		resp, err := client.Get(url + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		return string(b), err
	}

	// No backends yet: the port is published but has nowhere to go.
	mm.send(webEndpoints(publish))
	eventually(t, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(publish))
		if err == nil {
			c.Close()
		}
		return err == nil
	},
		"published port %d opened", publish)
	if body, err := get(""); err == nil {
		t.Fatalf("a service without backends answered %q", body)
	}
	// A backend appears: traffic reaches it within 200ms.
	sent := time.Now()
	mm.send(webEndpoints(publish, api.EndpointBackend{TaskID: "t1", NodeID: "node-1", Host: "127.0.0.1", Ports: map[string]int{"http": bport}}))
	eventually(t, func() bool { b, err := get(""); return err == nil && b == "hello from t1" }, "t1 reachable through the mesh")
	if d := time.Since(sent); d > 200*time.Millisecond {
		t.Errorf("a new backend took %s to get traffic", d)
	}

	// A slow request is in flight when the task is told to shut down.
	slow := make(chan error, 1)
	go func() {
		body, err := get("slow")
		if err == nil && body != "hello from t1" {
			err = fmt.Errorf("body %q", body)
		}
		slow <- err
	}()
	<-started
	eventually(t, func() bool { return a.gw.Load().InFlight("t1") == 1 }, "the slow request counted in flight")
	h.m.Assign(shutdown(task))
	// The task is drained, not stopped, while its request runs.
	eventually(t, func() bool {
		_, err := get("")
		return err != nil
	}, "t1 drained: no new requests reach it")
	time.Sleep(50 * time.Millisecond) // give a wrong implementation the chance to stop it
	if n, _ := h.d.Task("t1").Stops(); n != 0 {
		t.Fatalf("task stopped with a request in flight")
	}
	unblock()
	if err := <-slow; err != nil {
		t.Fatalf("the in-flight request failed: %v", err)
	}
	h.waitStatus("t1", api.TaskShutdown)
	if n, _ := h.d.Task("t1").Stops(); n != 1 {
		t.Fatalf("stops %d, want 1", n)
	}
}

func TestMeshNeedsAnEndpointsSource(t *testing.T) {
	h := newHarness(t)
	h.cfg.Mesh = &MeshConfig{}
	a, err := New(h.cfg, h.m)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); err == nil {
		t.Fatal("Run with a mesh but no endpoints stream succeeded")
	}
}
