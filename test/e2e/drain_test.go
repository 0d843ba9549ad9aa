package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// TestDrainAcrossNodes runs two nodes on this host: `berth up` (node 1,
// gateway on 127.0.0.1) and a second `berth agent` (node 2, gateway on
// 127.0.0.2). The service's only task runs on node 1 and does not shut
// down gracefully (whoami --shutdown-timeout 0 cuts requests off on
// SIGTERM). A long request enters through node 2's gateway; the service is
// scaled to 0 meanwhile: node 1's agent must wait until node 2's gateway let
// go of the task before it signals it, so the request completes.
func TestDrainAcrossNodes(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	suffix := randomHex(3)
	n1, n2 := "drain1-"+suffix, "drain2-"+suffix
	port := meshPort(t)
	b := startBerthFlags(t, []string{"--hostname", n1, "--port-range", "20000-24999"})

	// Node 2: an agent of the same manager with its own data dir, ports,
	// cgroups and gateway address.
	dir := t.TempDir()
	logPath := filepath.Join(dir, "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := os.ReadFile(filepath.Join(b.dataDir, "api.addr"))
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(b.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(berthBin, "agent", "--data-dir", filepath.Join(dir, "data"),
		"--addr", strings.TrimSpace(string(addr)), "--token", strings.TrimSpace(string(token)),
		"--ca", filepath.Join(b.dataDir, "ca.pem"),
		"--hostname", n2, "--port-range", "25000-29999", "--cgroup-parent", b.cgParent+"-n2",
		"--log-listen", "127.0.0.1:0", "--mesh-bind", "127.0.0.2", "--mesh-http", "off", "--mesh-https", "off",
		"--dns", "off", "--stop-tasks")
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	agentDone := make(chan error, 1)
	go func() { agentDone <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // the agent we started, by its pid
		select {
		case <-agentDone:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-agentDone
		}
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("node 2 agent log:\n%s", out)
		}
	})
	eventually(t, 30*time.Second, func() error {
		nodes, err := b.client.ListNodes(context.Background())
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes {
			if (n.Hostname == n1 || n.Hostname == n2) && n.Status == api.NodeReady {
				ready++
			}
		}
		if ready != 2 {
			return fmt.Errorf("%d of 2 nodes ready: %+v", ready, nodes)
		}
		return nil
	})

	spec := filepath.Join(dir, "web.yaml")
	doc := fmt.Sprintf(`name: drainweb
task:
  command: [berth, whoami, --listen-addr, 127.0.0.1, --port, "${PORT_HTTP}", --shutdown-timeout, "0"]
  ports: [{name: http, publish: %d}]
  health: {http: {port: http, path: /healthz}, interval: 200ms}
  stop_grace_period: 60s
placement:
  constraints: ["node.hostname == %s"]
`, port, n1)
	if err := os.WriteFile(spec, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	b.mustCLI("deploy", "-f", spec)
	remote := "http://127.0.0.2:" + strconv.Itoa(port)
	// No keep-alive: published ports are proxied per connection, so an idle
	// pooled connection would count as in flight (until the grace period
	// ends) and hide whether the drain waits for the request itself.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (int, string, error) {
		resp, err := client.Get(remote + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	eventually(t, 60*time.Second, func() error {
		if code, body, err := get("/"); err != nil || code != 200 {
			return fmt.Errorf("node 2's gateway: %d %q %v", code, body, err)
		}
		return nil
	})

	type result struct {
		code int
		body string
		err  error
	}
	long := make(chan result, 1)
	go func() {
		code, body, err := get("/sleep?ms=3000")
		long <- result{code, body, err}
	}()
	eventually(t, 10*time.Second, func() error {
		if _, body, err := get("/inflight"); err != nil || strings.TrimSpace(body) != "1" {
			return fmt.Errorf("the long request has not reached the task: %q %v", body, err)
		}
		return nil
	})
	start := time.Now()
	b.mustCLI("service", "scale", "drainweb=0")
	r := <-long
	if r.err != nil || r.code != 200 {
		t.Fatalf("the request in flight through node 2's gateway failed when its task was stopped: %d %q %v", r.code, r.body, r.err)
	}
	// And the task stopped once the request was done, well before its 60s
	// grace period: the drain waits for the request, not for the clock.
	eventually(t, 30*time.Second, func() error {
		views, err := b.psAPI("drainweb", false)
		if err != nil {
			return err
		}
		if len(views) != 0 {
			return fmt.Errorf("still %d live tasks: %s", len(views), summary(views))
		}
		return nil
	})
	t.Logf("the task stopped %.2fs after the scale to 0 (the request took 3s)", time.Since(start).Seconds())
}
