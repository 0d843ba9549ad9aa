package cluster

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent"
)

// Cluster is one or more managers and some agents, each on its own host of
// a Network.
type Cluster struct {
	t testing.TB
	// Net is the network the hosts are on.
	Net *Network
	// Manager is the first `berth server` process (the one the others
	// joined).
	Manager *Process
	// Managers are every `berth server` process, the first one first.
	Managers []*Process
	// Agents are the `berth agent` processes, in start order.
	Agents []*Process
	// Client is an admin client of the managers: it sends to the first
	// manager and fails over to the others when it cannot reach it.
	Client *api.Client
	// HeartbeatTimeout is the node heartbeat timeout the managers were
	// given, or 0 when `berth server` has no --heartbeat-timeout flag (it
	// then uses its default).
	HeartbeatTimeout time.Duration
	// Tokens are the cluster's join tokens (zero with AdminAgents and one
	// manager).
	Tokens api.JoinTokens
}

// Options shape a Cluster.
type Options struct {
	// Managers is the number of managers (and manager hosts); 0 means 1.
	// The first runs `berth server --listen`, the others join it with the
	// manager token.
	Managers int
	// Agents is the number of agents (and agent hosts).
	Agents int
	// AdminAgents makes the agents connect the old way, with the first
	// manager's admin token and CA file, instead of joining with the worker
	// token.
	AdminAgents bool
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

// NewCluster starts a network with o.Managers manager hosts and o.Agents
// agent hosts, the managers (the first, then the others joining it with the
// manager token), and the agents (joining the first manager with the worker
// token, unless o.AdminAgents), and waits until every manager is ready with
// one leader and every agent's node is ready.
func NewCluster(t testing.TB, bin string, o Options) *Cluster {
	t.Helper()
	nm := max(o.Managers, 1)
	nw := NewNetwork(t, nm+o.Agents)
	hosts := nw.Hosts()
	c := &Cluster{t: t, Net: nw}
	args := append([]string(nil), o.ServerArgs...)
	if o.HeartbeatTimeout > 0 && HasFlag(bin, "server", "heartbeat-timeout") {
		args = append(args, "--heartbeat-timeout", o.HeartbeatTimeout.String())
		c.HeartbeatTimeout = o.HeartbeatTimeout
	}
	if nm > 1 {
		args = append(args, "--etcd-peer-port", EtcdPeerPort)
	}
	c.Manager = StartServer(t, bin, hosts[0], "", args...)
	c.Managers = []*Process{c.Manager}
	cl, err := c.Manager.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.Client = cl
	if nm > 1 || !o.AdminAgents {
		ctx, cancel := callCtx()
		c.Tokens, err = cl.JoinTokens(ctx)
		cancel()
		if err != nil {
			t.Fatalf("join tokens: %v", err)
		}
	}
	for _, h := range hosts[1:nm] {
		extra := append([]string(nil), o.ServerArgs...)
		if c.HeartbeatTimeout > 0 {
			extra = append(extra, "--heartbeat-timeout", c.HeartbeatTimeout.String())
		}
		c.Managers = append(c.Managers, StartJoinedServer(t, bin, h, c.Manager.ManagerURL(), c.Tokens.Manager, extra...))
	}
	if nm > 1 {
		var urls []string
		for _, m := range c.Managers[1:] {
			urls = append(urls, m.ManagerURL())
		}
		if err := cl.SetAddrs(append([]string{c.Manager.ManagerURL()}, urls...)); err != nil {
			t.Fatal(err)
		}
		c.WaitManagers(60*time.Second, c.Managers...)
	}
	for _, h := range hosts[nm:] {
		if o.AdminAgents {
			c.Agents = append(c.Agents, StartAgent(t, bin, h, c.Manager, o.AgentArgs...))
		} else {
			c.Agents = append(c.Agents, StartJoinedAgent(t, bin, h, c.Manager.ManagerURL(), c.Tokens.Worker, o.AgentArgs...))
		}
	}
	c.WaitNodesReady(60*time.Second, c.Agents...)
	if !o.AdminAgents {
		// Joined for real: a node identity on disk, no admin credentials.
		for _, a := range c.Agents {
			if !agent.HasIdentity(a.DataDir) {
				t.Fatalf("the agent on %s is ready but has no joined identity in %s", a.Host.Name, a.DataDir)
			}
		}
	}
	return c
}

// ManagerClient returns an admin client of manager m alone (no failover).
func (c *Cluster) ManagerClient(m *Process) *api.Client {
	c.t.Helper()
	cl, err := m.Client()
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// Leader asks the managers that run (in order) which one leads and
// returns it; it fails when none answers or the answer names no manager
// of this cluster.
func (c *Cluster) Leader() (*Process, error) {
	var errs []error
	for _, m := range c.Managers {
		if m.Exited() {
			continue
		}
		cl, err := m.Client()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ctx, cancel := callCtx()
		list, err := cl.ClusterManagers(ctx)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, x := range list {
			if !x.Leader || x.Status != api.ManagerReady {
				continue
			}
			for _, p := range c.Managers {
				if x.APIURL == p.ManagerURL() && !p.Exited() {
					return p, nil
				}
			}
			return nil, fmt.Errorf("the leader %s (%s) is not a running manager of this cluster", x.ID, x.APIURL)
		}
		return nil, fmt.Errorf("%s lists no leader: %+v", m.Host.Name, list)
	}
	return nil, fmt.Errorf("no leader: %w", errors.Join(errs...))
}

// WaitManagers waits until each of the given managers answers and lists
// exactly the given managers as ready, one of them the leader.
func (c *Cluster) WaitManagers(timeout time.Duration, ms ...*Process) {
	c.t.Helper()
	eventually(c.t, timeout, func() error {
		for _, m := range ms {
			if m.Exited() {
				c.t.Fatalf("manager on %s exited: %v\n%s", m.Host.Name, m.waitErr, m.LogTail(40))
			}
			cl, err := m.Client()
			if err != nil {
				return err
			}
			ctx, cancel := callCtx()
			list, err := cl.ClusterManagers(ctx)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", m.Host.Name, err)
			}
			ready, leaders := 0, 0
			for _, x := range list {
				if x.Status == api.ManagerReady {
					ready++
				}
				if x.Leader {
					leaders++
				}
			}
			if ready != len(ms) || leaders != 1 {
				return fmt.Errorf("%s lists %d ready, %d leaders, want %d and 1: %+v", m.Host.Name, ready, leaders, len(ms), list)
			}
		}
		return nil
	})
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
