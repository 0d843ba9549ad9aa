package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// meshWho is the part of whoami's answer the test needs.
type meshWho struct {
	PID int `json:"pid"`
}

// meshPort returns a TCP port that was free a moment ago, from 61000-64999:
// above the kernel's ephemeral range (where outgoing connections take their
// ports) and above the range Berth gives tasks, so that neither the tests
// running beside this one nor their tasks take it meanwhile.
func meshPort(t *testing.T) int {
	t.Helper()
	for range 200 {
		p := 61000 + rand.IntN(4000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port in 61000-64999")
	return 0
}

// TestMeshPublishedPort runs three whoami replicas behind a published port:
// requests reach all three; a killed replica is taken out without failed
// requests; a long request to a replica being scaled away completes.
func TestMeshPublishedPort(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	port := meshPort(t)
	dir := t.TempDir()
	spec := filepath.Join(dir, "web.yaml")
	doc := fmt.Sprintf(`name: web
replicas: 3
task:
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports:
    - {name: http, publish: %d}
  health:
    http: {port: http, path: /healthz}
    interval: 1s
  resources: {cpus: 0.1, memory: 64MiB}
  stop_grace_period: 5s
restart: {condition: any, delay: 1s}
`, port)
	if err := os.WriteFile(spec, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	b := startBerth(t, spec)
	tasks, _ := b.waitConverged("web", 3, deployTimeout)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// A published port balances connections, not requests: one connection per
	// request spreads them.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (meshWho, error) {
		var who meshWho
		resp, err := client.Get(base + path)
		if err != nil {
			return who, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return who, err
		}
		if resp.StatusCode != 200 {
			return who, fmt.Errorf("%s: status %d: %s", path, resp.StatusCode, body)
		}
		if path == "/" {
			err = json.Unmarshal(body, &who)
		}
		return who, err
	}

	// Requests through the published port reach all three replicas.
	eventually(t, 10*time.Second, func() error {
		seen := map[int]bool{}
		for range 30 {
			who, err := get("/")
			if err != nil {
				return err
			}
			seen[who.PID] = true
		}
		for _, tk := range tasks[1:] {
			if !seen[tk.PID] {
				return fmt.Errorf("replica pid %d got no request (saw %v)", tk.PID, seen)
			}
		}
		return nil
	})

	// Kill one replica: once it is out of the mesh, 200 requests all succeed.
	b.killTask(tasks[2].PID)
	eventually(t, 10*time.Second, func() error {
		for range 20 {
			who, err := get("/")
			if err != nil {
				return err
			}
			if who.PID == tasks[2].PID {
				return fmt.Errorf("killed replica answered")
			}
		}
		return nil
	})
	failures := 0
	var firstErr error
	for range 200 {
		if _, err := get("/"); err != nil {
			failures++
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if failures > 0 {
		t.Errorf("%d of 200 requests failed after the killed replica was ejected; first: %v", failures, firstErr)
	}

	// Scale down with long requests in flight: each completes (draining).
	// whoami also finishes in-flight requests after SIGTERM, so this checks
	// what a user sees; that the agent signals only after the gateway
	// drained the task is proven by internal/agent's
	// TestMeshRoutesAndDrainsBeforeStop, whose fake task dies at once.
	tasks, _ = b.waitConverged("web", 3, deployTimeout)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			_, err := get("/sleep?ms=1500")
			errs <- err
		})
	}
	time.Sleep(300 * time.Millisecond) // let the requests reach the replicas before the scale
	b.mustCLI("service", "scale", "web=1")
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a request in flight during scale-down failed: %v", err)
		}
	}
	b.waitConverged("web", 1, deployTimeout)
	if _, err := get("/"); err != nil {
		t.Errorf("after scale-down: %v", err)
	}
}

// TestMeshHTTPRoutes routes two services by host and path through one HTTP
// entrypoint, and answers an unknown host with a 404.
func TestMeshHTTPRoutes(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	entry := meshPort(t)
	dir := t.TempDir()
	var files []string
	for _, svc := range []struct{ name, routes string }{
		{"shop", "[{host: shop.example.test, path: /orders, port: http, strip_prefix: true}]"},
		{"site", "[{host: shop.example.test, port: http}, {host: '*.other.test', port: http}]"},
	} {
		f := filepath.Join(dir, svc.name+".yaml")
		doc := fmt.Sprintf(`name: %s
replicas: 1
task:
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports: [{name: http}]
  health:
    http: {port: http, path: /healthz}
    interval: 1s
  resources: {cpus: 0.1, memory: 64MiB}
routes: %s
`, svc.name, svc.routes)
		if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	b := startBerthFlags(t, []string{"--mesh-http", fmt.Sprintf("127.0.0.1:%d", entry)}, files...)
	shop, _ := b.waitConverged("shop", 1, deployTimeout)
	site, _ := b.waitConverged("site", 1, deployTimeout)
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(host, path string) (int, meshWho, error) {
		var who meshWho
		req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", entry, path), nil)
		if err != nil {
			return 0, who, err
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return 0, who, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == 200 && path != "/healthz" && path != "/orders/healthz" {
			err = json.Unmarshal(body, &who)
		}
		return resp.StatusCode, who, err
	}
	for _, c := range []struct {
		host, path string
		code, pid  int
	}{
		{"shop.example.test", "/orders/", 200, shop[1].PID}, // stripped to "/"
		{"shop.example.test", "/", 200, site[1].PID},
		{"SHOP.example.test", "/", 200, site[1].PID},
		{"a.other.test", "/", 200, site[1].PID},
		{"shop.example.test", "/orders/healthz", 200, 0},
		{"unknown.test", "/", 404, 0},
		{"a.b.other.test", "/", 404, 0},
	} {
		eventually(t, 10*time.Second, func() error {
			code, who, err := get(c.host, c.path)
			if err != nil {
				return err
			}
			if code != c.code || (c.pid != 0 && who.PID != c.pid) {
				return fmt.Errorf("%s%s: %d from pid %d, want %d from pid %d", c.host, c.path, code, who.PID, c.code, c.pid)
			}
			return nil
		})
	}
}
