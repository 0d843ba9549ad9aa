package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPublishedPortAcrossHostsAsPrinted joins two workers with exactly the
// command `berth join-token worker` prints (plus only what two workers on one
// test machine need apart: a data directory, a host name and a cgroup
// parent), pins a whoami replica to one, and reaches its published port
// through the other's gateway: the workers found their own addresses, the
// gateway listens beyond loopback, and whoami answers other machines.
func TestPublishedPortAcrossHostsAsPrinted(t *testing.T) {
	RequireAvailable(t)
	c := NewCluster(t, berthBin, Options{})
	out := c.cli(t, "join-token", "worker")
	var printed []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "berth" && f[1] == "agent" {
			printed = f[1:]
		}
	}
	if printed == nil {
		t.Fatalf("join-token worker printed no agent command:\n%s", out)
	}
	for range 2 {
		h := c.Net.AddHost()
		p := &Process{t: t, Host: h, DataDir: t.TempDir(), bin: berthBin, CgroupParent: "berth-cluster-" + randomHex(5)}
		p.Args = append(append([]string{"--data-dir", p.DataDir}, printed...),
			"--hostname", h.Name, "--cgroup-parent", p.CgroupParent, "--stop-tasks", "--log-level", "debug")
		t.Cleanup(p.cleanup)
		p.start()
		c.Agents = append(c.Agents, p)
	}
	c.WaitNodesReady(60*time.Second, c.Agents...)
	nodes, err := c.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Agents {
		if n := nodes[a.Host.Name]; n.Address != a.Host.IP || n.AddressIssue != "" {
			t.Fatalf("node %s: address %q (%s), want %s, found by the agent", a.Host.Name, n.Address, n.AddressIssue, a.Host.IP)
		}
	}
	runsOn, via := c.Agents[0], c.Agents[1]
	c.Deploy("across", fmt.Appendf(nil, `name: across
replicas: 1
task:
  driver: process
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports:
    - {name: http, publish: 18080}
  health:
    http: {port: http, path: /healthz}
    interval: 1s
placement:
  constraints: ["node.hostname == %s"]
`, runsOn.Host.Name))
	c.WaitRunning("across", 1, 60*time.Second, c.NodeID(runsOn))
	hc := &http.Client{Timeout: 3 * time.Second}
	url := "http://" + via.Host.IP + ":18080/"
	eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "across.1") {
			return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
		}
		return nil
	})
}

// TestUnbindablePublishedPortFailsDeployWait: a published port something
// else holds on a node cannot be opened by that node's gateway. The service
// says so (mesh_errors, a warning in `service ls` and `service ps`) and
// `deploy --wait` fails instead of reporting success.
func TestUnbindablePublishedPortFailsDeployWait(t *testing.T) {
	RequireAvailable(t)
	c := NewCluster(t, berthBin, Options{Agents: 1})
	h := c.Agents[0].Host
	var ln net.Listener
	if err := h.InNetns(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:18555") // the agent's --mesh-bind is loopback
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	spec := filepath.Join(t.TempDir(), "held.yaml")
	if err := os.WriteFile(spec, []byte(`name: held
replicas: 1
task:
  driver: process
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports:
    - {name: http, publish: 18555}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := c.cliResult(t, 2*time.Minute, "deploy", "--wait", "-f", spec)
	if err == nil || !strings.Contains(stderr, "refused") || !strings.Contains(stderr, h.Name) {
		t.Fatalf("deploy --wait: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	ctx, cancel := callCtx()
	defer cancel()
	svc, err := c.Client.GetService(ctx, "held")
	if err != nil || len(svc.MeshErrors) != 1 || svc.MeshErrors[0].Node != h.Name {
		t.Fatalf("service: %+v %v", svc.MeshErrors, err)
	}
	for _, args := range [][]string{{"service", "ls"}, {"service", "ps", "held"}} {
		_, stderr, err := c.cliResult(t, 30*time.Second, args...)
		if err != nil || !strings.Contains(stderr, "warning: service held gets no traffic through node "+h.Name) {
			t.Errorf("berth %s: %v, stderr %q", strings.Join(args, " "), err, stderr)
		}
	}
}

// cliResult runs the berth CLI against the cluster's manager and returns
// its stdout, stderr and exit error.
func (c *Cluster) cliResult(t *testing.T, timeout time.Duration, args ...string) (string, string, error) {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(c.Manager.DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"--addr", c.Manager.ManagerURL(), "--ca", filepath.Join(c.Manager.DataDir, "ca.pem")}, args...)
	cmd := exec.CommandContext(ctx, berthBin, full...)
	cmd.Env = append(cleanEnv(), "BERTH_TOKEN="+strings.TrimSpace(string(token)))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	return stdout.String(), stderr.String(), err
}
