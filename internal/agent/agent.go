// Package agent is Berth's node agent. One runs on every node: it registers
// the node with the manager, runs the tasks assigned to the node through
// drivers (one task runner per task), checks their health, reports their
// status and serves their logs over HTTPS.
//
// The agent talks to the manager only through the Manager interface. It must
// not import the store, the scheduler, the orchestrator or the API server:
// agents never read cluster state directly, and the agent never decides to
// restart a task itself — that is the orchestrator's job.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/gateway"
	"github.com/berth-project/berth/internal/topology"
)

// Manager is the agent's view of the cluster manager.
type Manager interface {
	// Register announces the node and returns the stored node (with its ID).
	Register(ctx context.Context, reg api.NodeRegistration) (api.Node, error)
	// Assignments streams the full set of tasks assigned to the node: each
	// value replaces the last. The channel closes when the stream breaks (the
	// agent reconnects with back-off) or ctx ends.
	Assignments(ctx context.Context, nodeID string) (<-chan api.Assignments, error)
	// Report sends a heartbeat and the tasks whose status changed since the
	// last successful report (at most maxReportBatch of them), and those
	// whose status in the assignment set differs from the agent's.
	Report(ctx context.Context, nodeID string, rep api.StatusReport) error
}

// Clock is the time source of the agent's logic: timestamps, restart delays
// (Task.NotBefore), health-check intervals and heartbeats.
type Clock interface {
	Now() time.Time
	// After sends the time on the returned channel once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Defaults of Config.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultLogListen         = "127.0.0.1:0"
	DefaultLogMaxBytes       = 64 << 20
	DefaultPortMin           = 20000
	DefaultPortMax           = 32767
)

// TaskPATH is the PATH every task gets (unless its spec sets PATH).
const TaskPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Errors of the agent.
var (
	// ErrConfig means the Config given to New is unusable.
	ErrConfig = errors.New("agent: invalid config")
	// ErrRunning is returned by a second call to Run.
	ErrRunning = errors.New("agent: already run")
)

// Config configures an Agent. Zero values take the documented defaults.
type Config struct {
	// DataDir holds the agent's state in DataDir/agent: the node id, the
	// saved state of every task, and task logs. Required.
	DataDir string
	// Hostname is the node's name (default os.Hostname()).
	Hostname string
	// Address is the address other nodes and the manager reach this node at.
	Address string
	// Labels are the node's labels, used by placement constraints.
	Labels map[string]string
	// Drivers run tasks, keyed by driver name; each key must equal the
	// driver's Name(). At least one is required.
	Drivers map[string]driver.Driver
	// DriverProbeInterval is how often drivers whose backend may be away
	// (the Docker Engine) are checked (default DefaultDriverProbeInterval).
	DriverProbeInterval time.Duration
	// PortRange is the first and last host port tasks may get (default
	// 20000–32767).
	PortRange [2]int
	// BerthBinary is the absolute path run when a task's command[0] is
	// "berth" (default os.Executable()).
	BerthBinary string
	// HeartbeatInterval is the longest time between two reports (default 1s).
	HeartbeatInterval time.Duration
	// LogListen is the address of the log server (default 127.0.0.1:0).
	LogListen string
	// LogMaxBytes caps the log files of one task (default 64 MiB).
	LogMaxBytes int64
	// Logger receives the agent's logs (default: discarded).
	Logger *slog.Logger
	// Clock is the time source (default: the system clock).
	Clock Clock
	// Topology returns the node's CPU topology (default: discovered from
	// /sys). New calls it once; an error is logged and the node registers
	// without a topology: it then gets no exclusive or per-unit tasks, and
	// shared tasks run unpinned.
	Topology func() (api.Topology, error)
	// ReservedCPUs is a CPU list ("0,1") kept for the system: no task is
	// pinned to it and it is not in the shared pool. It must name CPUs of
	// the topology.
	ReservedCPUs string
	// Mesh turns on the node's gateway (see mesh.go); nil means none. The
	// Manager must then be an EndpointsSource.
	Mesh *MeshConfig
	// DNS turns on the node's DNS server for service discovery (see
	// dns.go); nil means none.
	DNS *DNSConfig
	// MaxConcurrentStarts bounds how many tasks the node's drivers start
	// at once (default DefaultMaxConcurrentStarts()): a burst of new tasks
	// queues for a start slot instead of starting together and starving
	// each other (and their health checks) of CPU. A slot is held until
	// the driver started the task and, for a task with an HTTP or TCP
	// health check, until its port first answers (at most StartHold).
	MaxConcurrentStarts int
}

// StartHold is the longest a started task keeps its start slot while its
// program comes up (see Config.MaxConcurrentStarts).
const StartHold = 2 * time.Second

// DefaultMaxConcurrentStarts is the default of Config.MaxConcurrentStarts:
// four times the CPUs this process may use. On 2 CPUs, 100 replicas of an
// HTTP-checked task came up in 2.4–4.9 s with 8 slots, 3.2–10.3 s with 4
// (the machine busy with other work; ADR 0031).
func DefaultMaxConcurrentStarts() int { return 4 * runtime.GOMAXPROCS(0) }

// Agent runs the tasks the manager assigns to one node.
type Agent struct {
	cfg   Config
	m     Manager
	log   *slog.Logger
	clock Clock
	store *store
	rep   *reporter
	// starts holds one token per task being started (MaxConcurrentStarts).
	starts chan struct{}

	nodeID  atomic.Value // string
	started atomic.Bool

	// runWG counts the goroutines Run waits for: task runners and the
	// reporter.
	runWG sync.WaitGroup

	mu      sync.Mutex
	runners map[string]*runner
	ended   map[string]tombstone
	closing bool

	// root is set when the agent runs as root: its process tasks then run
	// as nobody unless their spec says otherwise (see taskUser).
	root bool
	// berth is the path tasks run for "berth": Config.BerthBinary, or a
	// link to it that nobody can run (see exposeBinary). Set before Run
	// starts any task.
	berth string

	// cpus is the node's CPU layout and shared pool (see cpus.go).
	cpus cpuState
	// drivers tracks which drivers are up (see drivers.go).
	drivers driverSet
	// acks is what the gateway applied of the routing state (drain.go).
	acks gatewayAcks

	// gw is the node's gateway while Run runs with a MeshConfig.
	gw atomic.Pointer[gateway.Gateway]
	// mesh is what the gateway's config is made of (see meshtls.go).
	mesh meshState
	// dns is the node's DNS server while Run runs with a DNSConfig.
	dns atomic.Pointer[nodeDNS]

	// Test hooks; nil in production.
	portFree     func(proto string, port int) error
	onTransition func(id string, from, to, desired api.TaskState)
	retryMin     time.Duration // first back-off step for manager calls
	endedMax     int           // how many tombstones to keep
	endedTTL     time.Duration // how long to keep a tombstone
	listenGrace  time.Duration // see DefaultListenGrace
	regLimiter   logLimiter
	assignLimit  logLimiter
}

// New checks cfg, fills in defaults and returns an agent ready to Run.
func New(cfg Config, m Manager) (*Agent, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: no manager", ErrConfig)
	}
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: DataDir is required", ErrConfig)
	}
	if len(cfg.Drivers) == 0 {
		return nil, fmt.Errorf("%w: no drivers", ErrConfig)
	}
	for name, d := range cfg.Drivers {
		if d == nil || d.Name() != name {
			return nil, fmt.Errorf("%w: driver key %q does not match the driver's name", ErrConfig, name)
		}
	}
	if cfg.PortRange == [2]int{} {
		cfg.PortRange = [2]int{DefaultPortMin, DefaultPortMax}
	}
	if lo, hi := cfg.PortRange[0], cfg.PortRange[1]; lo < 1 || hi > 65535 || lo > hi {
		return nil, fmt.Errorf("%w: port range %d-%d: want 1 <= first <= last <= 65535", ErrConfig, lo, hi)
	}
	if cfg.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("%w: no hostname: %w", ErrConfig, err)
		}
		cfg.Hostname = h
	}
	if cfg.BerthBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("%w: cannot find the berth binary: %w", ErrConfig, err)
		}
		cfg.BerthBinary = exe
	}
	if !filepath.IsAbs(cfg.BerthBinary) {
		return nil, fmt.Errorf("%w: BerthBinary %q is not an absolute path", ErrConfig, cfg.BerthBinary)
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.LogListen == "" {
		cfg.LogListen = DefaultLogListen
	}
	if cfg.MaxConcurrentStarts < 0 {
		return nil, fmt.Errorf("%w: MaxConcurrentStarts %d: want at least 1 (0: the default)", ErrConfig, cfg.MaxConcurrentStarts)
	}
	if cfg.MaxConcurrentStarts == 0 {
		cfg.MaxConcurrentStarts = DefaultMaxConcurrentStarts()
	}
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = DefaultLogMaxBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Topology == nil {
		cfg.Topology = func() (api.Topology, error) { return topology.Discover("/sys") }
	}
	a := &Agent{
		cfg:         cfg,
		m:           m,
		log:         cfg.Logger.WithGroup("agent"),
		clock:       cfg.Clock,
		store:       &store{dir: filepath.Join(cfg.DataDir, "agent")},
		runners:     map[string]*runner{},
		ended:       map[string]tombstone{},
		portFree:    portFree,
		retryMin:    100 * time.Millisecond,
		endedMax:    1000,
		endedTTL:    24 * time.Hour,
		listenGrace: DefaultListenGrace,
		starts:      make(chan struct{}, cfg.MaxConcurrentStarts),
		regLimiter:  logLimiter{every: 30 * time.Second},
		assignLimit: logLimiter{every: 30 * time.Second},
		root:        os.Geteuid() == 0,
		berth:       cfg.BerthBinary,
	}
	if err := a.initCPUs(); err != nil {
		return nil, err
	}
	a.nodeID.Store("")
	a.rep = newReporter(a)
	return a, nil
}

// NodeID returns the id the manager gave this node, or "" before the first
// registration.
func (a *Agent) NodeID() string { return a.nodeID.Load().(string) }

// Run starts the log server, re-attaches to the tasks an earlier run left
// running, registers the node and then follows the manager's assignments
// until ctx is done. It returns nil when ctx ends, and an error only when the
// agent cannot work at all (its directory or the log server). When Run
// returns, tasks keep running: the next run adopts them. Run may be called
// once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return ErrRunning
	}
	if err := a.store.init(); err != nil {
		return err
	}
	a.loadTombstones()
	if _, ok := a.cfg.Drivers[api.DriverProcess]; ok && a.root {
		bin, cleanup, err := exposeBinary(a.cfg.BerthBinary, a.log)
		if err != nil {
			a.log.Warn("tasks running as nobody may not be able to run berth", "err", err)
		}
		defer cleanup() // after every runner has ended (deferred below)
		a.berth = bin
	}

	ls, err := newLogServer(a)
	if err != nil {
		return err
	}
	defer ls.close()
	if err := a.startMesh(); err != nil {
		return err
	}
	defer a.stopMesh()
	if err := a.startDNS(); err != nil {
		return err
	}
	defer a.stopDNS()

	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		a.runWG.Wait()
	}()

	a.recoverTasks(ctx)

	a.probeDrivers(ctx)
	if err := a.register(ctx, ls); err != nil {
		return nil // ctx ended before the manager answered
	}
	a.removeStrays(ctx)
	a.runWG.Add(1)
	go func() {
		defer a.runWG.Done()
		a.watchDrivers(ctx, ls)
	}()

	a.runWG.Add(1)
	go func() {
		defer a.runWG.Done()
		a.rep.run(ctx)
	}()
	a.runWG.Add(1)
	go func() {
		defer a.runWG.Done()
		a.followEndpoints(ctx)
	}()
	a.runWG.Add(1)
	go func() {
		defer a.runWG.Done()
		a.watchDraining(ctx)
	}()

	a.followAssignments(ctx, ls)
	return nil
}

// followAssignments holds the assignment stream open, reconnecting with
// back-off, and reconciles on every message.
func (a *Agent) followAssignments(ctx context.Context, ls *logServer) {
	followStream(ctx, a, "assignment", &a.assignLimit,
		func(ctx context.Context) (<-chan api.Assignments, error) { return a.m.Assignments(ctx, a.NodeID()) },
		func(err error) bool {
			// The manager forgot this node: announce it again.
			return !api.IsNotFound(err) || a.register(ctx, ls) == nil
		},
		func(as api.Assignments) { a.reconcile(ctx, as) })
}

// reconcile brings the node in line with the full set of its assignments.
// New tasks start only after the shared pool has shrunk by their exclusive
// CPUs, so that a shared task never runs on a CPU an exclusive task starts
// on.
func (a *Agent) reconcile(ctx context.Context, as api.Assignments) {
	start := a.reconcileLocked(as)
	a.refreshShared()
	for _, r := range start {
		a.runWG.Add(1)
		go r.run(ctx)
	}
}

// reconcileLocked updates the runners from the assignment set and returns
// the new runners to start.
func (a *Agent) reconcileLocked(as api.Assignments) []*runner {
	nodeID := a.NodeID()
	a.mu.Lock()
	defer a.mu.Unlock()
	var start []*runner
	seen := make(map[string]bool, len(as.Tasks))
	for i := range as.Tasks {
		t := as.Tasks[i]
		if !validTaskID(t.ID) {
			a.log.Error("ignoring a task with an invalid id", "task", t.ID)
			continue
		}
		if t.NodeID != "" && nodeID != "" && t.NodeID != nodeID {
			a.log.Error("ignoring a task assigned to another node", "task", t.ID, "node", t.NodeID)
			continue
		}
		seen[t.ID] = true
		if r := a.runners[t.ID]; r != nil {
			r.setDesired(t.DesiredState, t.Revision)
			// The manager's record may lag what happened here (a report
			// lost to a restart of this agent or of the manager): send
			// what this agent knows again.
			st, _ := r.snapshot()
			a.rep.resync(t.ID, st, t.Status)
			continue
		}
		if _, ok := a.ended[t.ID]; ok || t.Status.State.Terminal() {
			continue
		}
		switch {
		case t.DesiredState == api.TaskRunning && t.Status.State.Before(api.TaskStarting):
			if a.closing {
				continue // the agent is shutting down: start nothing new
			}
			r := newRunner(a, copyTask(t))
			a.runners[t.ID] = r
			start = append(start, r)
		case t.DesiredState == api.TaskRunning:
			// The manager thinks it started here, but this agent has no
			// record of it: whatever ran is not ours to find any more.
			a.endUnknownLocked(t, api.TaskFailed, "", "the agent has no record of this task (its state was lost)")
		default:
			a.endUnknownLocked(t, api.TaskShutdown, "shut down before it started", "")
		}
	}
	for id, r := range a.runners {
		if !seen[id] {
			r.requestStop(stopForget)
		}
	}
	return start
}

// endUnknownLocked reports a terminal state for a task that runs nothing
// here. a.mu is held.
func (a *Agent) endUnknownLocked(t api.Task, state api.TaskState, msg, errText string) {
	r := newRunner(a, copyTask(t))
	r.markExited()
	a.runners[t.ID] = r
	st := r.status
	st.State, st.Message, st.Err = state, msg, errText
	st.FinishedAt = a.clock.Now()
	r.finish(st, false)
}

// recoverTasks re-attaches to the tasks saved by an earlier run.
func (a *Agent) recoverTasks(ctx context.Context) {
	recs, errs := a.store.loadTasks()
	for _, err := range errs {
		a.log.Error("skipping unreadable task state", "err", err)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Task.ID < recs[j].Task.ID })
	for _, rec := range recs {
		a.recoverTask(ctx, rec)
	}
}

func (a *Agent) recoverTask(ctx context.Context, rec taskRecord) {
	t := rec.Task
	r := newRunner(a, t)
	r.status = rec.Status
	log := a.log.With("task", t.ID)
	fail := func(errText string) {
		r.markExited()
		a.mu.Lock()
		a.runners[t.ID] = r
		a.mu.Unlock()
		st := r.status
		st.State, st.Err, st.Message = api.TaskFailed, errText, ""
		st.ExitCode = nil
		st.FinishedAt = a.clock.Now()
		r.finish(st, true)
	}
	switch {
	case rec.Status.State.Terminal():
		// It ended before the last run could report it: report it now.
		r.markExited()
		a.mu.Lock()
		a.runners[t.ID] = r
		a.mu.Unlock()
		a.rep.enqueue(t.ID, rec.Status)
		return
	case rec.Driver == nil:
		fail("the agent stopped while the task was starting")
		return
	}
	drv, ok := a.cfg.Drivers[rec.Driver.Driver]
	if !ok {
		fail(fmt.Sprintf("cannot recover the task: driver %q is not configured on this node", rec.Driver.Driver))
		return
	}
	h, err := drv.Recover(ctx, *rec.Driver)
	if errors.Is(err, driver.ErrGone) {
		log.Info("task ended while the agent was down")
		fail("task process ended while the agent was down")
		return
	}
	if err != nil {
		log.Error("cannot recover task", "err", err)
		fail(fmt.Sprintf("cannot recover the task: %v", err))
		return
	}
	log.Info("recovered task", "pid", rec.Driver.PID)
	r.handle = h
	r.drvName = drv.Name()
	a.mu.Lock()
	a.runners[t.ID] = r
	a.mu.Unlock()
	a.runWG.Add(1)
	go r.run(ctx)
}

// reported is called after the manager accepted a report: tasks whose
// terminal state it now knows are forgotten.
func (a *Agent) reported(updates []api.TaskStatusUpdate) {
	for _, u := range updates {
		if u.Status.State.Terminal() {
			a.finalize(u.ID)
		}
	}
}

// taskHandle returns the driver handle of a task running on this node, or
// nil.
func (a *Agent) taskHandle(id string) driver.Handle {
	a.mu.Lock()
	r := a.runners[id]
	a.mu.Unlock()
	if r == nil {
		return nil
	}
	st, h := r.snapshot()
	if st.State.Terminal() {
		return nil
	}
	return h
}

// finalize forgets a task that is over: its saved state goes, a tombstone
// keeps its logs findable.
func (a *Agent) finalize(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	drvName := ""
	if r := a.runners[id]; r != nil {
		if !r.exitedOrDefer() {
			return // its goroutine finalizes the task when it returns
		}
		drvName = r.drvName
		delete(a.runners, id)
	}
	a.rep.forget(id)
	if err := a.store.removeTask(id); err != nil {
		a.log.Error("cannot remove task state", "task", id, "err", err)
	}
	t := tombstone{Driver: drvName, Ended: a.clock.Now()}
	a.ended[id] = t
	if err := a.store.saveTombstone(id, t); err != nil {
		a.log.Error("cannot save tombstone", "task", id, "err", err)
	}
	a.pruneEndedLocked()
}

// forgotten drops a task that left the node's assignment set, after its
// runner stopped it. Nothing is reported: the task is no longer ours.
func (a *Agent) forgotten(r *runner) {
	a.rep.drop(r.id)
	a.mu.Lock()
	if a.runners[r.id] == r {
		delete(a.runners, r.id)
	}
	a.mu.Unlock()
	if err := a.store.removeTask(r.id); err != nil {
		a.log.Error("cannot remove task state", "task", r.id, "err", err)
	}
	a.mu.Lock()
	t := tombstone{Driver: r.drvName, Ended: a.clock.Now()}
	a.ended[r.id] = t
	a.pruneEndedLocked()
	a.mu.Unlock()
	if err := a.store.saveTombstone(r.id, t); err != nil {
		a.log.Error("cannot save tombstone", "task", r.id, "err", err)
	}
}

func (a *Agent) loadTombstones() {
	ts, err := a.store.loadTombstones()
	if err != nil {
		a.log.Error("cannot load tombstones", "err", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, t := range ts {
		a.ended[id] = t
	}
	a.pruneEndedLocked()
}

// pruneEndedLocked drops tombstones (and the logs they point at) that are too
// old or too many. a.mu is held.
func (a *Agent) pruneEndedLocked() {
	now := a.clock.Now()
	var ids []string
	for id, t := range a.ended {
		if now.Sub(t.Ended) > a.endedTTL {
			a.dropEndedLocked(id)
			continue
		}
		ids = append(ids, id)
	}
	if len(ids) <= a.endedMax {
		return
	}
	sort.Slice(ids, func(i, j int) bool { return a.ended[ids[i]].Ended.Before(a.ended[ids[j]].Ended) })
	for _, id := range ids[:len(ids)-a.endedMax] {
		a.dropEndedLocked(id)
	}
}

func (a *Agent) dropEndedLocked(id string) {
	delete(a.ended, id)
	_ = a.store.removeTombstone(id)
	a.store.removeTaskLogs(id)
}

// taskDriver returns the name of the driver that runs or ran a task.
func (a *Agent) taskDriver(id string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r := a.runners[id]; r != nil {
		return r.drvName, true
	}
	if t, ok := a.ended[id]; ok {
		return t.Driver, true
	}
	return "", false
}

// taskEnded reports whether a task is over on this node (terminal or
// tombstoned).
func (a *Agent) taskEnded(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r := a.runners[id]; r != nil {
		st, _ := r.snapshot()
		return st.State.Terminal()
	}
	_, ok := a.ended[id]
	return ok
}

// Shutdown stops every task on the node gracefully (each with its stop grace
// period), reports them shut down and returns when all are stopped and
// reported, or when ctx ends. It is meant for the end of `berth up`; an agent
// that merely restarts should only end Run. After Shutdown no new task is
// started.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	a.closing = true
	rs := make([]*runner, 0, len(a.runners))
	for _, r := range a.runners {
		rs = append(rs, r)
	}
	a.mu.Unlock()

	for _, r := range rs {
		r.requestStop(stopAgent)
	}
	var errs []error
	for _, r := range rs {
		select {
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("agent: shutdown: %w", ctx.Err())
		}
		// A runner that ended with Run (detached) left its task running.
		if err := r.stopDetached(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if a.NodeID() != "" {
		if err := a.rep.flushAll(ctx); err != nil {
			errs = append(errs, fmt.Errorf("agent: shutdown: report: %w", err))
		}
	}
	return errors.Join(errs...)
}

// copyTask returns a deep copy of t, so that later changes to the assignment
// set (or to defaults filled in here) never alias.
func copyTask(t api.Task) api.Task {
	c := t
	c.Spec.Command = append([]string(nil), t.Spec.Command...)
	c.Spec.Ports = append([]api.PortSpec(nil), t.Spec.Ports...)
	if t.Spec.Env != nil {
		c.Spec.Env = make(map[string]string, len(t.Spec.Env))
		for k, v := range t.Spec.Env {
			c.Spec.Env[k] = v
		}
	}
	if t.Spec.Health != nil {
		h := *t.Spec.Health
		if h.HTTP != nil {
			x := *h.HTTP
			h.HTTP = &x
		}
		if h.TCP != nil {
			x := *h.TCP
			h.TCP = &x
		}
		h.Exec = append([]string(nil), h.Exec...)
		c.Spec.Health = &h
	}
	if t.Ports != nil {
		c.Ports = make(map[string]int, len(t.Ports))
		for k, v := range t.Ports {
			c.Ports[k] = v
		}
	}
	c.Placement.Constraints = append([]string(nil), t.Placement.Constraints...)
	if t.Allocation != nil {
		al := *t.Allocation
		c.Allocation = &al
	}
	return c
}
