package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
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
