package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// Cluster is one manager and some agents, each on its own host of a
// Network.
type Cluster struct {
	t testing.TB
	// Net is the network the hosts are on.
	Net *Network
	// Manager is the `berth server` process.
	Manager *Process
	// Agents are the `berth agent` processes, in start order.
	Agents []*Process
	// Client is an admin client of the manager.
	Client *api.Client
	// HeartbeatTimeout is the node heartbeat timeout the manager was given,
	// or 0 when `berth server` has no --heartbeat-timeout flag (it then
	// uses its default).
	HeartbeatTimeout time.Duration
}

// Options shape a Cluster.
type Options struct {
	// Agents is the number of agents (and agent hosts).
	Agents int
	// HeartbeatTimeout is passed as --heartbeat-timeout when `berth
	// server` has that flag; 0 leaves the default.
	HeartbeatTimeout time.Duration
	// ServerArgs and AgentArgs are extra flags.
	ServerArgs, AgentArgs []string
}

var (
	flagsMu    sync.Mutex
	flagsCache = map[string]string{}
)

// HasFlag reports whether `berth SUB --help` lists --flag; sub may name a
// nested command ("node update").
func HasFlag(bin, sub, flag string) bool {
	key := bin + " " + sub
	flagsMu.Lock()
	defer flagsMu.Unlock()
	help, ok := flagsCache[key]
	if !ok {
		out, _ := exec.Command(bin, append(strings.Fields(sub), "--help")...).CombinedOutput()
		help = string(out)
		flagsCache[key] = help
	}
	return strings.Contains(help, "--"+flag+" ") || strings.Contains(help, "--"+flag+"=")
}

// NewCluster starts a network with one manager host and o.Agents agent
// hosts, the manager, and the agents, and waits until every agent's node is
// ready.
func NewCluster(t testing.TB, bin string, o Options) *Cluster {
	t.Helper()
	nw := NewNetwork(t, 1+o.Agents)
	hosts := nw.Hosts()
	c := &Cluster{t: t, Net: nw}
	args := append([]string(nil), o.ServerArgs...)
	if o.HeartbeatTimeout > 0 && HasFlag(bin, "server", "heartbeat-timeout") {
		args = append(args, "--heartbeat-timeout", o.HeartbeatTimeout.String())
		c.HeartbeatTimeout = o.HeartbeatTimeout
	}
	c.Manager = StartServer(t, bin, hosts[0], "", args...)
	cl, err := c.Manager.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.Client = cl
	for _, h := range hosts[1:] {
		c.Agents = append(c.Agents, StartAgent(t, bin, h, c.Manager, o.AgentArgs...))
	}
	c.WaitNodesReady(30*time.Second, c.Agents...)
	return c
}

// ctx returns a context for one API call.
func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// Nodes returns the nodes by host name.
func (c *Cluster) Nodes() (map[string]api.Node, error) {
	ctx, cancel := callCtx()
	defer cancel()
	nodes, err := c.Client.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]api.Node, len(nodes))
	for _, n := range nodes {
		out[n.Hostname] = n
	}
	return out, nil
}

// WaitNodesReady waits until the nodes of the given agents are registered
// and ready.
func (c *Cluster) WaitNodesReady(timeout time.Duration, agents ...*Process) {
	c.t.Helper()
	eventually(c.t, timeout, func() error {
		for _, a := range agents {
			if a.Exited() {
				c.t.Fatalf("agent on %s exited: %v\n%s", a.Host.Name, a.waitErr, a.LogTail(40))
			}
		}
		nodes, err := c.Nodes()
		if err != nil {
			return err
		}
		for _, a := range agents {
			n, ok := nodes[a.Host.Name]
			if !ok {
				return fmt.Errorf("node %s not registered", a.Host.Name)
			}
			if n.Status != api.NodeReady {
				return fmt.Errorf("node %s is %s", a.Host.Name, n.Status)
			}
		}
		return nil
	})
}

// NodeID returns the node id of an agent.
func (c *Cluster) NodeID(a *Process) string {
	c.t.Helper()
	nodes, err := c.Nodes()
	if err != nil {
		c.t.Fatal(err)
	}
	n, ok := nodes[a.Host.Name]
	if !ok {
		c.t.Fatalf("no node named %s", a.Host.Name)
	}
	return n.ID
}

// WhoamiSpec is a replicated service of Berth's whoami app with an HTTP
// health check, small resources and restart on any exit.
func WhoamiSpec(name string, replicas int) []byte {
	return fmt.Appendf(nil, `name: %s
replicas: %d
task:
  driver: process
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports:
    - name: http
  health:
    http: {port: http, path: /healthz}
    interval: 1s
  resources: {cpus: 0.05, memory: 32MiB}
restart: {condition: any, delay: 1s}
`, name, replicas)
}

// Deploy deploys a spec document (YAML).
func (c *Cluster) Deploy(name string, doc []byte) api.Service {
	c.t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	svc, _, err := c.Client.DeployService(ctx, name, doc, "application/yaml")
	if err != nil {
		c.t.Fatalf("deploying %s: %v", name, err)
	}
	return svc
}

// Tasks returns a service's live tasks (desired running or not yet ended).
func (c *Cluster) Tasks(name string) ([]api.Task, error) {
	ctx, cancel := callCtx()
	defer cancel()
	return c.Client.ServiceTasks(ctx, name, false)
}

// Running returns the tasks of name that run (observed and desired) on
// one of the given nodes (any node when none are given), by node id.
func Running(tasks []api.Task, nodes ...string) map[string][]api.Task {
	ok := map[string]bool{}
	for _, n := range nodes {
		ok[n] = true
	}
	out := map[string][]api.Task{}
	for _, t := range tasks {
		if t.Status.State == api.TaskRunning && t.DesiredState == api.TaskRunning && (len(nodes) == 0 || ok[t.NodeID]) {
			out[t.NodeID] = append(out[t.NodeID], t)
		}
	}
	return out
}

// Count is the number of tasks in a Running result.
func Count(byNode map[string][]api.Task) int {
	n := 0
	for _, ts := range byNode {
		n += len(ts)
	}
	return n
}

// WaitRunning waits until name has exactly n running tasks, in n distinct
// slots, all healthy, on the given nodes (any when none), and returns them.
func (c *Cluster) WaitRunning(name string, n int, timeout time.Duration, nodes ...string) []api.Task {
	c.t.Helper()
	var out []api.Task
	eventually(c.t, timeout, func() error {
		tasks, err := c.Tasks(name)
		if err != nil {
			return err
		}
		return checkRunning(tasks, n, &out, nodes...)
	})
	return out
}

// checkRunning checks that tasks hold exactly n healthy running tasks in
// distinct slots on the given nodes.
func checkRunning(tasks []api.Task, n int, out *[]api.Task, nodes ...string) error {
	running := Running(tasks, nodes...)
	slots := map[int]bool{}
	var list []api.Task
	for _, ts := range running {
		for _, t := range ts {
			if t.Status.Health != "" && t.Status.Health != api.HealthHealthy {
				return fmt.Errorf("task %s (slot %d) is %s", t.ID, t.Slot, t.Status.Health)
			}
			if slots[t.Slot] {
				return fmt.Errorf("slot %d runs twice: %s", t.Slot, Summary(tasks))
			}
			slots[t.Slot] = true
			list = append(list, t)
		}
	}
	if len(list) != n {
		return fmt.Errorf("%d tasks running (on the nodes wanted), want %d: %s", len(list), n, Summary(tasks))
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Slot < list[j].Slot })
	*out = list
	return nil
}

// Summary describes tasks briefly, for error messages.
func Summary(tasks []api.Task) string {
	parts := make([]string, len(tasks))
	for i, t := range tasks {
		node := t.NodeID
		if len(node) > 6 {
			node = node[:6]
		}
		parts[i] = fmt.Sprintf("%d@%s:%s/%s", t.Slot, node, t.Status.State, t.DesiredState)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
