package main

// The daemon commands — up, server, agent — wire the internal packages
// together. They are the only commands that import internal/.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent"
	"github.com/berth-project/berth/internal/datadir"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/driver/docker"
	"github.com/berth-project/berth/internal/driver/process"
	"github.com/berth-project/berth/internal/manager"
	"github.com/berth-project/berth/internal/nodemonitor"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// managerFlags are the flags of commands that run a manager.
type managerFlags struct {
	listen    string
	etcd      []string
	advertise []string
	history   int
	// heartbeatTimeout is how long a node may miss heartbeats before it is
	// down.
	heartbeatTimeout time.Duration
}

// check refuses nonsensical manager flags.
func (f *managerFlags) check() error {
	if f.history < 2 {
		return usageErrorf("--version-history %d: keep at least 2 versions (the current one and one to roll back to)", f.history)
	}
	if f.heartbeatTimeout < minHeartbeatTimeout {
		return usageErrorf("--heartbeat-timeout %s: at least %s (two of the agents' one-second heartbeats), or nodes flap between ready and down", f.heartbeatTimeout, minHeartbeatTimeout)
	}
	return nil
}

func (f *managerFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.listen, "listen", manager.DefaultListen, "address of the HTTPS API (host:port; port 0 picks a free one)")
	cmd.Flags().StringSliceVar(&f.etcd, "etcd-endpoints", nil, "use this external etcd cluster instead of the embedded one (comma-separated URLs)")
	cmd.Flags().StringSliceVar(&f.advertise, "advertise", nil, "extra host names or addresses for the API certificate")
	cmd.Flags().IntVar(&f.history, "version-history", api.DefaultVersionHistory, "how many versions of each service to keep for history and rollback (at least 2)")
	cmd.Flags().DurationVar(&f.heartbeatTimeout, "heartbeat-timeout", nodemonitor.DefaultDownAfter, "how long a node may miss heartbeats before it is down and its tasks are replaced elsewhere (agents beat every second; at least 2s)")
}

// minHeartbeatTimeout is the shortest --heartbeat-timeout: two heartbeat
// intervals of an agent.
const minHeartbeatTimeout = 2 * agent.DefaultHeartbeatInterval

// agentFlags are the flags of commands that run an agent.
type agentFlags struct {
	hostname     string
	address      string
	labels       []string
	portRange    string
	cgroupParent string
	logListen    string
	reservedCPUs string
	dockerHost   string
	meshBind     string
	meshHTTP     string
	meshHTTPS    string
	dns          string
	taskDNS      string
	dnsBridge    string
	maxStarts    int
}

// Default ports of the mesh entrypoints, on the --mesh-bind host.
const (
	defaultMeshHTTP  = "7480"
	defaultMeshHTTPS = "7481"
)

func (f *agentFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.hostname, "hostname", "", "the node's name (default: the machine's host name)")
	cmd.Flags().StringVar(&f.address, "address", "", "the address other machines reach this node at")
	cmd.Flags().StringArrayVar(&f.labels, "label", nil, "a node label KEY=VALUE (repeatable)")
	cmd.Flags().StringVar(&f.portRange, "port-range", "20000-32767", "host ports tasks get their ports from (FIRST-LAST)")
	cmd.Flags().StringVar(&f.cgroupParent, "cgroup-parent", "berth", "cgroup under which each task gets its own")
	cmd.Flags().StringVar(&f.logListen, "log-listen", "127.0.0.1:0", "address of the agent's log server")
	cmd.Flags().StringVar(&f.dockerHost, "docker-host", "", "Docker Engine address for the docker driver (default: DOCKER_HOST or the default socket); the driver is offered while the engine answers, checked every 10s")
	cmd.Flags().StringVar(&f.meshBind, "mesh-bind", agent.DefaultMeshBind, `host the routing mesh's published ports listen on (0.0.0.0: every interface; "off": no mesh on this node)`)
	cmd.Flags().StringVar(&f.meshHTTP, "mesh-http", defaultMeshHTTP, `the mesh's HTTP entrypoint for service routes: HOST:PORT, or a PORT on the --mesh-bind host (default 127.0.0.1:7480; "off": none)`)
	cmd.Flags().StringVar(&f.meshHTTPS, "mesh-https", defaultMeshHTTPS, `the mesh's HTTPS entrypoint for service routes: HOST:PORT, or a PORT on the --mesh-bind host (default 127.0.0.1:7481; "off": none)`)
	cmd.Flags().StringVar(&f.dns, "dns", agent.DefaultDNSAddr, `host:port where the agent answers DNS for <service>.berth ("off": no DNS on this node)`)
	cmd.Flags().StringVar(&f.taskDNS, "task-dns", agent.DefaultTaskDNSAddr, `IP:53 where the agent also answers DNS for process tasks, which get it in their own /etc/resolv.conf (as root; "off": process tasks keep the host's resolver)`)
	cmd.Flags().StringVar(&f.dnsBridge, "dns-bridge", "", `IP on the container bridge where the agent also answers DNS (port 53) for container tasks (default: the gateway of the Docker engine's "bridge" network; "off": containers keep the engine's resolver)`)
	cmd.Flags().IntVar(&f.maxStarts, "max-concurrent-starts", 0, "how many tasks this node starts at once; the rest wait for a slot (0: four times the CPUs)")
	cmd.Flags().StringVar(&f.reservedCPUs, "reserved-cpus", "", "CPUs kept for the system, such as 0 or 0-1,8: no task is pinned to them (must exist on this machine)")
}

func (f *agentFlags) config(dataDir string, log *slog.Logger) (agent.Config, error) {
	if !api.ValidNodeAddress(f.address) {
		return agent.Config{}, usageErrorf("--address %q: want an IP address or host name, without a port", f.address)
	}
	if f.hostname != "" && !api.ValidHostname(f.hostname) {
		return agent.Config{}, usageErrorf("--hostname %q: want 1 to 253 letters, digits, '.', '-' and '_', starting and ending with a letter or digit", f.hostname)
	}
	cfg := agent.Config{DataDir: dataDir, Hostname: f.hostname, Address: f.address, LogListen: f.logListen, Logger: log,
		ReservedCPUs: f.reservedCPUs, MaxConcurrentStarts: f.maxStarts}
	if f.maxStarts < 0 {
		return cfg, usageErrorf("--max-concurrent-starts %d: want at least 1 (0: four times the CPUs)", f.maxStarts)
	}
	if f.meshBind != "off" {
		httpAddr, err := meshEntrypoint("--mesh-http", f.meshHTTP, f.meshBind)
		if err != nil {
			return cfg, err
		}
		httpsAddr, err := meshEntrypoint("--mesh-https", f.meshHTTPS, f.meshBind)
		if err != nil {
			return cfg, err
		}
		cfg.Mesh = &agent.MeshConfig{BindAddr: f.meshBind, HTTPAddr: httpAddr, HTTPSAddr: httpsAddr}
	}
	if f.dns != agent.DNSOff {
		cfg.DNS = &agent.DNSConfig{Addr: f.dns, TaskAddr: f.taskDNS, BridgeAddr: f.dnsBridge}
	}
	if len(f.labels) > 0 {
		cfg.Labels = map[string]string{}
	}
	for _, l := range f.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return cfg, usageErrorf("--label %q: want KEY=VALUE", l)
		}
		cfg.Labels[k] = v
	}
	lo, hi, ok := strings.Cut(f.portRange, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return cfg, usageErrorf("--port-range %q: want FIRST-LAST within 1-65535", f.portRange)
	}
	cfg.PortRange = [2]int{a, b}
	// Without root, cgroups cannot be made: run tasks without limits (with a
	// warning) rather than refuse them.
	pc := process.Config{CgroupParent: f.cgroupParent, Logger: log, BestEffortLimits: os.Geteuid() != 0}
	// Process tasks get the agent's DNS as their resolver through a mount
	// namespace, which takes root.
	pc.TaskResolvers = os.Geteuid() == 0 && f.taskDNS != agent.DNSOff
	drv, err := process.New(pc)
	if err != nil {
		return cfg, err
	}
	cfg.Drivers = map[string]driver.Driver{drv.Name(): drv}
	if dd := dockerDriver(f.dockerHost, publishIP(f.address), log); dd != nil {
		cfg.Drivers[dd.Name()] = dd
	}
	return cfg, nil
}

// publishIP is where the docker driver publishes task ports: the node's
// address when it is an IP other machines can reach, for other nodes'
// gateways dial it there; else the driver's default (loopback).
func publishIP(address string) string {
	ip := net.ParseIP(address)
	if ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
		return ""
	}
	return ip.String()
}

// meshEntrypoint resolves the value of a mesh entrypoint flag: "off" (or
// empty) is none, a bare port is that port on the bind host, anything else
// must be HOST:PORT.
func meshEntrypoint(flag, v, bind string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "off" {
		return "", nil
	}
	if bind == "" {
		bind = agent.DefaultMeshBind
	}
	if p, err := strconv.Atoi(v); err == nil {
		if p < 0 || p > 65535 {
			return "", usageErrorf("%s %q: port must be between 0 and 65535", flag, v)
		}
		return net.JoinHostPort(bind, v), nil
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", usageErrorf("%s %q: want HOST:PORT, a port number, or off", flag, v)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", usageErrorf("%s %q: port must be a number between 0 and 65535", flag, v)
	}
	return v, nil
}

// dockerDriver returns the docker driver, or nil if no client can be made.
// The agent offers it only while a Docker Engine answers at host (or
// DOCKER_HOST, or the default socket) and checks again every few seconds, so
// an engine that starts after Berth is used without a restart.
func dockerDriver(host, publishIP string, log *slog.Logger) *docker.Driver {
	d, err := docker.New(docker.Config{Host: host, PublishIP: publishIP, Logger: log})
	if err != nil {
		log.Warn("the docker driver is off", "err", err)
		return nil
	}
	return d
}

func newLogger(cmd *cobra.Command, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: l})), nil
}

func newUpCmd() *cobra.Command {
	var mf managerFlags
	var af agentFlags
	var logLevel string
	cmd := &cobra.Command{
		Use:   "up [FILE...]",
		Short: "Run a manager and an agent in one process, and deploy FILEs",
		Long: `Run Berth on this machine: a manager (API, embedded etcd, controllers) and an
agent in one process, in the foreground. Each FILE is deployed once Berth is up.
Stop with Ctrl-C or SIGTERM: tasks are stopped gracefully. After a crash, start
it again on the same data directory: running tasks are adopted, not restarted.`,
		RunE: func(cmd *cobra.Command, files []string) error {
			log, err := newLogger(cmd, logLevel)
			if err != nil {
				return err
			}
			dataDir := dataDirOf(cmd)
			docs, err := readSpecDocs(cmd.InOrStdin(), files)
			if err != nil {
				return err
			}
			unlock, err := lockDataDir(dataDir, datadir.Manager, datadir.Agent)
			if err != nil {
				return err
			}
			defer unlock()
			acfg, err := af.config(dataDir, log)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := mf.check(); err != nil {
				return err
			}
			m, err := manager.Start(ctx, manager.Config{DataDir: dataDir, Listen: mf.listen, EtcdEndpoints: mf.etcd,
				AdvertiseHosts: mf.advertise, VersionHistory: mf.history, HeartbeatTimeout: mf.heartbeatTimeout, Version: version, Logger: log})
			if err != nil {
				return err
			}
			client, err := api.NewClient(api.ClientConfig{Addr: m.Addr(), Token: m.Token(), CACertPEM: m.CAPEM()})
			if err != nil {
				m.Close(context.Background())
				return err
			}
			a, err := agent.New(acfg, agent.APIManager{C: client})
			if err != nil {
				m.Close(context.Background())
				return err
			}
			actx, stopAgent := context.WithCancel(context.WithoutCancel(ctx))
			agentDone := make(chan error, 1)
			go func() { agentDone <- a.Run(actx) }()

			for _, d := range docs {
				svc, created, err := client.DeployService(ctx, d.name, d.data, d.contentType)
				if err != nil {
					log.Error("deploy failed", "file", d.source, "err", err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", deployMessage(svc, created))
			}
			var names []string
			for _, d := range docs {
				names = append(names, d.name)
			}
			fmt.Fprint(cmd.OutOrStdout(), upMessage(m.Addr(), dataDir, defaultDataDir(noDataDirEnv(envOf(cmd).getenv), envOf(cmd).euid), berthCommand(), names))

			agentEnded := false
			var agentErr error
			select {
			case <-ctx.Done():
			case agentErr = <-agentDone:
				agentEnded = true
				log.Error("agent stopped; stopping Berth", "err", agentErr)
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "stopping tasks…")
			sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := a.Shutdown(sctx); err != nil {
				log.Warn("agent shutdown", "err", err)
			}
			stopAgent()
			if !agentEnded {
				<-agentDone
			}
			if err := m.Close(sctx); err != nil {
				return err
			}
			if agentErr != nil {
				return fmt.Errorf("agent: %w", agentErr)
			}
			return nil
		},
	}
	mf.add(cmd)
	af.add(cmd)
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// lockDataDir takes the data directory's locks of roles before anything
// else starts: a second manager or agent on one directory fails at once
// with the holder's pid, where it used to wait forever on etcd's database.
func lockDataDir(dir string, roles ...datadir.Role) (release func(), err error) {
	var held []*datadir.Lock
	release = func() {
		for _, l := range held {
			_ = l.Release()
		}
	}
	for _, r := range roles {
		l, err := datadir.Take(dir, r)
		if err != nil {
			release()
			return nil, err
		}
		held = append(held, l)
	}
	return release, nil
}

// upMessage is what `up` prints once it is up: where it is, and the one
// command to type next, as it works in another terminal: with the data
// directory when it is not the one that terminal finds by default, and with
// the way this binary was started.
func upMessage(addr, dataDir, defaultDir, berth string, services []string) string {
	next := berth + " service ls"
	if len(services) > 0 {
		next = berth + " service ps " + services[0]
	}
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	if filepath.Clean(dataDir) != filepath.Clean(defaultDir) {
		next = envDataDir + "=" + shellQuote(dataDir) + " " + next
	}
	return fmt.Sprintf("Berth is up. API %s, data in %s.\nIn another terminal:\n  %s\nCtrl-C stops Berth and its tasks.\n", addr, dataDir, next)
}

// noDataDirEnv hides BERTH_DATA_DIR: another terminal may not have it.
func noDataDirEnv(getenv func(string) string) func(string) string {
	return func(k string) string {
		if k == envDataDir {
			return ""
		}
		return getenv(k)
	}
}

// berthCommand is how a user runs this binary again: "berth" when that is
// what PATH finds, "go run ./cmd/berth" under go run (a binary in Go's
// build cache), else the binary's path.
func berthCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "berth"
	}
	if strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return "go run ./cmd/berth"
	}
	if onPath, err := exec.LookPath("berth"); err == nil {
		if a, err := filepath.EvalSymlinks(onPath); err == nil {
			if b, err := filepath.EvalSymlinks(exe); err == nil && a == b {
				return "berth"
			}
		}
	}
	return shellQuote(exe)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:@%,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func deployMessage(svc api.Service, created bool) string {
	if created {
		return fmt.Sprintf("service %s created (version %d)", svc.Spec.Name, svc.Version)
	}
	return fmt.Sprintf("service %s deployed (version %d)", svc.Spec.Name, svc.Version)
}

func newServerCmd() *cobra.Command {
	var mf managerFlags
	var logLevel, joinURL string
	var peerPort int
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a manager: the API, the store and the controllers",
		Long: `Run a manager: the API, the store (an embedded etcd member, or --etcd-endpoints)
and, on the elected leader, the controllers.

The first manager of a cluster needs no flags but --listen. Every other manager
joins it once, at its first start, with the manager join token that
` + "`berth join-token manager`" + ` prints on a manager:

  berth server --listen 10.0.0.2:7443 --join https://10.0.0.1:7443 --token BERTH-1-...

Its embedded etcd becomes a member of the cluster (peers talk on
--etcd-peer-port, 7444 by default, of the advertised address). Later starts need
no --join. Run 3 or 5 managers: a cluster keeps working while a majority runs.
See docs/operations.md for adding, removing and replacing managers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd, logLevel)
			if err != nil {
				return err
			}
			if err := mf.check(); err != nil {
				return err
			}
			if peerPort < 0 || peerPort > 65535 {
				return usageErrorf("--etcd-peer-port %d: want a port between 1 and 65535", peerPort)
			}
			unlock, err := lockDataDir(dataDirOf(cmd), datadir.Manager)
			if err != nil {
				return err
			}
			defer unlock()
			cfg := manager.Config{DataDir: dataDirOf(cmd), Listen: mf.listen,
				EtcdEndpoints: mf.etcd, AdvertiseHosts: mf.advertise, VersionHistory: mf.history, HeartbeatTimeout: mf.heartbeatTimeout, Version: version, Logger: log,
				EtcdPeerPort: peerPort}
			if joinURL != "" {
				tok := envOf(cmd).flags.token
				if tok == "" {
					tok = os.Getenv("BERTH_JOIN_TOKEN")
				}
				if tok == "" {
					return usageErrorf("--join needs the manager join token: --token TOKEN or BERTH_JOIN_TOKEN (print it with `berth join-token manager` on a manager)")
				}
				if !strings.HasPrefix(joinURL, "https://") {
					joinURL = "https://" + joinURL
				}
				cfg.Join = &manager.JoinConfig{URL: joinURL, Token: tok}
			}
			m, err := manager.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Berth manager is up. API %s\n", m.Addr())
			select {
			case <-cmd.Context().Done():
			case <-m.Done(): // removed from the cluster: nothing left to serve
			}
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := m.Close(sctx); err != nil && m.Err() == nil {
				return err
			}
			return m.Err()
		},
	}
	mf.add(cmd)
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&joinURL, "join", "", "at the first start, join the cluster of the manager at this API URL (with --token: the manager join token)")
	cmd.Flags().IntVar(&peerPort, "etcd-peer-port", 0, "port of the embedded etcd member's peer listener on the advertised address (default 7444 for a non-loopback address; on loopback, unless --join or this flag is given, the single-machine default: a port of its own, not joinable)")
	return cmd
}

func newAgentCmd() *cobra.Command {
	var af agentFlags
	var logLevel string
	var stopTasks bool
	var join string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an agent that runs the tasks a manager assigns to this node",
		Long: `Run an agent. When the agent stops, its tasks keep running and are adopted at
its next start, unless --stop-tasks is given.

Joined mode (other machines): the first start joins the cluster,

    berth agent --join https://MANAGER:7443 --token TOKEN

with the worker token from 'berth join-token worker' (or $BERTH_JOIN_TOKEN).
The agent checks that the manager presents the CA the token pins, gets a node
certificate, and keeps it, the CA and the managers' addresses in the data
directory; later starts need no flags. It then speaks mutual TLS only, renews
its certificate before it expires, and fails over to another manager when
its own goes away. The admin token is never needed on a worker.

Local mode (the manager's own machine): without --join and without a joined
identity in the data directory, the agent finds its manager like the client
commands do (--addr, --token, --ca, BERTH_ADDR, BERTH_TOKEN, BERTH_CA, or the
data directory's files) and authenticates with the admin token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd, logLevel)
			if err != nil {
				return err
			}
			e := envOf(cmd)
			dataDir := dataDirOf(cmd)
			unlock, err := lockDataDir(dataDir, datadir.Agent)
			if err != nil {
				return err
			}
			defer unlock()
			if af.address == "" {
				af.address = detectNodeAddress(e, join, dataDir, log)
			}
			acfg, err := af.config(dataDir, log)
			if err != nil {
				return err
			}
			m, id, err := agentManager(cmd, e, join, dataDir, acfg, log)
			if err != nil {
				return err
			}
			a, err := agent.New(acfg, m)
			if err != nil {
				return err
			}
			if id != nil {
				rctx, stopRenewal := context.WithCancel(cmd.Context())
				defer stopRenewal()
				go id.RunRenewal(rctx, m.C, nil)
			}
			err = a.Run(cmd.Context())
			if stopTasks {
				sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				if serr := a.Shutdown(sctx); err == nil {
					err = serr
				}
			}
			return err
		},
	}
	af.add(cmd)
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().BoolVar(&stopTasks, "stop-tasks", false, "stop every task when the agent stops")
	cmd.Flags().StringVar(&join, "join", "", "join the cluster through this manager (https://host:port) with the worker token in --token or $BERTH_JOIN_TOKEN (first start only)")
	return cmd
}

// detectNodeAddress is the address of an agent started without --address:
// the source address of its route to its manager (the --join URL, the
// joined identity's first manager, or the client configuration's address),
// so that the printed join command gives a node other nodes can reach. ""
// when it cannot tell (the manager then takes the address the agent's
// connection comes from).
func detectNodeAddress(e *env, join, dataDir string, log *slog.Logger) string {
	var managerURL string
	switch {
	case agent.HasIdentity(dataDir):
		if id, err := agent.LoadIdentity(dataDir, log); err == nil && len(id.Managers()) > 0 {
			managerURL = id.Managers()[0]
		}
	case join != "":
		managerURL = join
	default:
		if cfg, err := e.clientConfig(); err == nil {
			managerURL, _, _ = strings.Cut(cfg.Addr, ",")
		}
	}
	if managerURL == "" {
		return ""
	}
	addr, err := agent.DetectAddress(strings.TrimSpace(managerURL))
	if err != nil {
		log.Warn("cannot tell this node's address; give --address", "err", err)
		return ""
	}
	log.Info("this node's address, as it reaches its manager (override with --address)", "address", addr, "manager", managerURL)
	return addr
}

// envJoinToken is the environment variable that holds a join token for
// `berth agent --join` (safer than --token: flags show in ps).
const envJoinToken = "BERTH_JOIN_TOKEN"

// agentManager returns how the agent reaches its managers: with a joined
// identity (joining first with --join), or in local mode with the admin
// token. The identity is nil in local mode.
func agentManager(cmd *cobra.Command, e *env, join, dataDir string, acfg agent.Config, log *slog.Logger) (agent.APIManager, *agent.Identity, error) {
	var id *agent.Identity
	var err error
	switch {
	case join != "" && agent.HasIdentity(dataDir):
		id, err = agent.LoadIdentity(dataDir, log)
		if err == nil {
			log.Info("this node has already joined; --join and the token are ignored", "node", id.NodeID())
		}
	case join != "":
		tok := e.flags.token
		if tok == "" {
			tok = e.getenv(envJoinToken)
		}
		if tok == "" {
			return agent.APIManager{}, nil, usageErrorf("--join needs the worker join token: --token TOKEN or $%s (see 'berth join-token worker' on a manager)", envJoinToken)
		}
		jctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
		defer cancel()
		id, err = agent.Join(jctx, agent.JoinConfig{DataDir: dataDir, URL: join, Token: tok, Hostname: acfg.Hostname,
			Address: acfg.Address, Labels: acfg.Labels, Logger: log})
	case agent.HasIdentity(dataDir):
		id, err = agent.LoadIdentity(dataDir, log)
	default:
		client, err := e.apiClient()
		if err != nil {
			return agent.APIManager{}, nil, err
		}
		return agent.APIManager{C: client}, nil, nil
	}
	if err != nil {
		return agent.APIManager{}, nil, err
	}
	var extra []string
	if join != "" {
		extra = append(extra, join)
	}
	client, err := id.Client(log, extra...)
	if err != nil {
		return agent.APIManager{}, nil, err
	}
	return agent.APIManager{C: client, Identity: id}, id, nil
}
