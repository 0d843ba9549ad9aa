// Package process is the default driver: it runs a task as a plain host
// process, in its own process group and its own cgroups, with its output in
// a size-capped log file. It implements driver.Driver, driver.Logger and,
// on handles, driver.Statser.
//
// It must not depend on the agent's lifetime: a task keeps running, and
// keeps logging, when the agent dies, and a new agent takes it over with
// Recover. It signals only processes it started (checked by pid and start
// time) and the processes in its tasks' cgroups.
//
// # Choices
//
// Logs: the task's stdout and stderr are the log file itself, opened with
// O_APPEND, rather than a pipe read by the agent. A pipe would give the task
// SIGPIPE or EPIPE once the agent died (and would block the task once its
// 64 KiB buffer filled behind a stalled reader); a file outlives the agent,
// and the task's writes go to the page cache, blocking only as any program's
// writes do under kernel dirty-page throttling. The cap is enforced by the
// driver every LogCheckInterval, also for recovered tasks: when <task>.log
// passes half of LogMaxBytes it is copied to <task>.log.1 and truncated in
// place (the task's descriptor stays valid, and O_APPEND makes its next
// write land at the new end). The total stays within LogMaxBytes plus what
// the task writes in one interval (a log that overshot the whole cap keeps
// only its newest half). Bytes the task writes between the end of the copy
// and the truncate, one system call apart, are lost.
//
// Cgroups before exec: on cgroup v2 the child is cloned straight into its
// group (clone3 CLONE_INTO_CGROUP). On cgroup v1 there is no such flag and a
// process joins each hierarchy separately, so the child is started under
// ptrace: the kernel stops it right after execve, before the program runs a
// single instruction; the driver writes its pid into every cgroup, then
// detaches. (An agent running as root keeps set-uid and file capabilities
// working under ptrace.) If cgroups are unavailable the task runs without
// them, which is logged once; a task that asks for limits then fails to
// start with ErrInvalid. A CPU set that covers every CPU the agent may run
// on is not a limit (see taskLimits): it is the shared pool of a node that
// reserves nothing, and such a task starts without cgroups.
//
// Exit: a child's code and signal come from wait4; a recovered task is not
// the agent's child, so its code is unknown (-1). OOMKilled is set when the
// kernel's OOM killer killed any process in the task's memory cgroup.
//
// Without cgroups Stop reaches the task's process group only: children that
// called setsid escape it.
package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-project/berth/internal/cgroups"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/procfs"
)

// Name is the driver's name in specs.
const Name = "process"

// Defaults for Config.
const (
	DefaultCgroupParent     = "berth"
	DefaultLogMaxBytes      = 10 << 20
	DefaultLogCheckInterval = time.Second
	DefaultPollInterval     = 150 * time.Millisecond
	DefaultStampInterval    = 100 * time.Millisecond
)

// Config configures a Driver. The zero value is usable.
type Config struct {
	// CgroupParent is the group, under each hierarchy's root, that task
	// groups are made in: <mount>/<CgroupParent>/<taskID>. Default "berth".
	CgroupParent string
	// Logger receives the driver's own messages. Default: discarded.
	Logger *slog.Logger
	// LogMaxBytes caps a task's log files when its spec does not. Default
	// 10 MiB.
	LogMaxBytes int64
	// LogCheckInterval is how often log sizes are checked. Default 1s.
	LogCheckInterval time.Duration
	// StampInterval is how often a task's log is sampled into its time
	// index (ADR 0034): the precision of its lines' times. Default 100ms.
	StampInterval time.Duration
	// PollInterval is how often a recovered task (not the agent's child) is
	// checked for exit. Default 150ms.
	PollInterval time.Duration
	// Cgroups is the cgroup hierarchy to use. Nil discovers it from
	// /proc/self/mountinfo.
	Cgroups *cgroups.Hierarchy
	// NoCgroups runs tasks without cgroups even where they are available.
	NoCgroups bool
	// BestEffortLimits runs a task that asks for limits without them when
	// cgroups are unavailable (a warning is logged once), instead of
	// refusing it. Berth sets it when it does not run as root, so that a
	// user's first try works; as root, limits are always enforced.
	BestEffortLimits bool
	// Now returns the time stamped on stats. Default time.Now.
	Now func() time.Time
	// TaskResolvers gives a task with a resolver (StartSpec.DNS) its own
	// read-only /etc/resolv.conf naming it, through a mount namespace the
	// task is forked into (resolvns.go). Needs root; a namespace that
	// cannot be made is logged once and the task keeps the host's
	// resolver. Off: StartSpec.DNS is ignored.
	TaskResolvers bool
}

// Driver runs tasks as host processes. It is safe for concurrent use.
type Driver struct {
	cfg      Config
	log      *slog.Logger
	cg       *cgroups.Hierarchy // nil: no cgroups
	warnOnce sync.Once

	resolvers    resolverThreads // by resolv.conf, with TaskResolvers
	resolverWarn sync.Once

	mu        sync.Mutex
	tasks     map[string]*handle   // live or ended handles by task id
	starting  map[string]bool      // task ids in Start
	logs      map[string]logFile   // log files of tasks this driver has seen
	logStates map[string]*logState // by log path
}

// New returns a process driver.
func New(cfg Config) (*Driver, error) {
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = DefaultCgroupParent
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LogMaxBytes == 0 {
		cfg.LogMaxBytes = DefaultLogMaxBytes
	}
	if cfg.LogMaxBytes < 0 {
		return nil, fmt.Errorf("process: LogMaxBytes %d is negative", cfg.LogMaxBytes)
	}
	if cfg.LogCheckInterval <= 0 {
		cfg.LogCheckInterval = DefaultLogCheckInterval
	}
	if cfg.StampInterval <= 0 {
		cfg.StampInterval = DefaultStampInterval
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := validName(cfg.CgroupParent, true); err != nil {
		return nil, fmt.Errorf("process: CgroupParent: %w", err)
	}
	d := &Driver{
		cfg:       cfg,
		log:       cfg.Logger.WithGroup("process"),
		tasks:     map[string]*handle{},
		starting:  map[string]bool{},
		logs:      map[string]logFile{},
		logStates: map[string]*logState{},
	}
	switch {
	case cfg.NoCgroups:
		d.noCgroups(errors.New("disabled by configuration"))
	case cfg.Cgroups != nil:
		d.cg = cfg.Cgroups
	default:
		h, err := cgroups.Discover()
		if err != nil {
			d.noCgroups(err)
		} else {
			d.cg = h
		}
	}
	return d, nil
}

// noCgroups records, once, that tasks run without cgroups.
func (d *Driver) noCgroups(why error) {
	d.warnOnce.Do(func() {
		d.log.Warn("cgroups unavailable: tasks run without resource limits or usage stats, and Stop only reaches their process group", "reason", why)
	})
}

// Cgroups returns the hierarchy the driver puts tasks in, or nil when it
// runs them without cgroups.
func (d *Driver) Cgroups() *cgroups.Hierarchy { return d.cg }

// spawn starts the task's process: from its resolver's namespace thread
// when it has one (TaskResolvers), else from any thread.
func (d *Driver) spawn(spec driver.StartSpec, cred *syscall.Credential, out *os.File, cg *cgroups.Cgroup) (int, error) {
	if !d.cfg.TaskResolvers || len(spec.DNS.Servers) == 0 {
		return spawn(spec, cred, out, cg)
	}
	t, err := d.resolvers.get(spec.DNS)
	if err != nil {
		d.resolverWarn.Do(func() {
			d.log.Warn("tasks keep the host's resolver: cannot give them their own", "err", err)
		})
		return spawn(spec, cred, out, cg)
	}
	var pid int
	t.do(func() { pid, err = spawn(spec, cred, out, cg) })
	return pid, err
}

// Name returns "process".
func (d *Driver) Name() string { return Name }

// extra is what State.Extra holds for this driver.
type extra struct {
	// Cgroup is the task's group name ("" if it has none).
	Cgroup string `json:"cgroup,omitempty"`
	// Log is the task's log file ("" if its output is discarded).
	Log string `json:"log,omitempty"`
	// LogMaxBytes is the cap on the log files.
	LogMaxBytes int64 `json:"log_max_bytes,omitempty"`
}

// validName accepts a task id or cgroup parent usable in paths.
func validName(s string, slashes bool) error {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "\x00\n") {
		return fmt.Errorf("%q is not a usable name", s)
	}
	if !slashes && strings.Contains(s, "/") {
		return fmt.Errorf("%q contains a slash", s)
	}
	for _, part := range strings.Split(s, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("%q is not a clean relative path", s)
		}
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", driver.ErrInvalid, fmt.Sprintf(format, args...))
}

// Start starts the task. It returns once the program runs inside its
// cgroups. Errors wrapping driver.ErrInvalid (bad spec, missing program or
// workdir, unknown user, limits asked where cgroups are unavailable) are
// fatal.
func (d *Driver) Start(ctx context.Context, spec driver.StartSpec) (driver.Handle, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validName(spec.TaskID, false); err != nil {
		return nil, invalid("task id: %v", err)
	}
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return nil, invalid("task %s: no command", spec.TaskID)
	}
	if !filepath.IsAbs(spec.Command[0]) {
		return nil, invalid("task %s: command %q is not an absolute path", spec.TaskID, spec.Command[0])
	}
	if spec.CPUs < 0 || spec.MemoryBytes < 0 || spec.LogMaxBytes < 0 {
		return nil, invalid("task %s: negative CPUs, memory or log size", spec.TaskID)
	}
	cred, err := credential(spec.User)
	if err != nil {
		return nil, fmt.Errorf("%w: task %s: %w", driver.ErrInvalid, spec.TaskID, err)
	}

	d.mu.Lock()
	if h := d.tasks[spec.TaskID]; (h != nil && !h.isReleased()) || d.starting[spec.TaskID] {
		d.mu.Unlock()
		return nil, invalid("task %s is already running", spec.TaskID)
	}
	d.starting[spec.TaskID] = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.starting, spec.TaskID)
		d.mu.Unlock()
	}()

	// Output goes straight to the log file (see the package comment).
	lf := logFile{max: spec.LogMaxBytes}
	if lf.max == 0 {
		lf.max = d.cfg.LogMaxBytes
	}
	var out *os.File
	if spec.LogDir != "" {
		if err := os.MkdirAll(spec.LogDir, 0o755); err != nil {
			return nil, fmt.Errorf("process: task %s: log dir: %w", spec.TaskID, err)
		}
		lf.path = filepath.Join(spec.LogDir, spec.TaskID+".log")
		out, err = os.OpenFile(lf.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	} else {
		out, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("process: task %s: %w", spec.TaskID, err)
	}
	defer out.Close()

	lim, limited := taskLimits(spec, agentCPUs())
	var cg *cgroups.Cgroup
	if d.cg != nil {
		cg, err = d.cg.Create(d.cfg.CgroupParent+"/"+spec.TaskID, lim)
		if errors.Is(err, cgroups.ErrUnavailable) && !limited && lim.CPUSet != "" {
			// The whole machine's CPU set asked for a cpuset controller
			// that is missing: the task still gets its group, for
			// stats and for Stop, without one.
			lim.CPUSet = ""
			cg, err = d.cg.Create(d.cfg.CgroupParent+"/"+spec.TaskID, lim)
		}
		switch {
		case err == nil:
		case errors.Is(err, cgroups.ErrUnavailable) && (!limited || d.cfg.BestEffortLimits):
			d.noCgroups(err)
		case errors.Is(err, cgroups.ErrUnavailable):
			return nil, fmt.Errorf("%w: task %s asks for limits (%+v) but they cannot be applied here: %w", driver.ErrInvalid, spec.TaskID, lim, err)
		default:
			return nil, fmt.Errorf("process: task %s: %w", spec.TaskID, err)
		}
	} else if limited && !d.cfg.BestEffortLimits {
		return nil, invalid("task %s asks for limits (%+v) but cgroups are unavailable here", spec.TaskID, lim)
	}

	pid, err := d.spawn(spec, cred, out, cg)
	if err != nil {
		if cg != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = cg.Kill(rctx)
			_ = cg.Remove(rctx)
			cancel()
		}
		return nil, err
	}
	// The child is not reaped yet, so its stat is still there.
	start, err := procfs.StartTime(pid)
	if err != nil {
		d.log.Warn("reading start time of a new task", "task", spec.TaskID, "pid", pid, "err", err)
	}
	ex := extra{Log: lf.path, LogMaxBytes: lf.max}
	if cg != nil {
		ex.Cgroup = cg.Name()
	}
	h := d.newHandle(spec.TaskID, pid, start, ex, cg, true)
	d.log.Info("task started", "task", spec.TaskID, "pid", pid, "cgroup", ex.Cgroup)
	return h, nil
}

// Recover re-attaches to a task from the State an earlier agent saved. If
// the process is gone, is a zombie or its pid now names another process
// (different start time), it kills whatever is left in the task's cgroups,
// removes them and returns an error wrapping driver.ErrGone.
func (d *Driver) Recover(ctx context.Context, st driver.State) (driver.Handle, error) {
	if st.Driver != Name {
		return nil, invalid("state is for driver %q, not %q", st.Driver, Name)
	}
	if err := validName(st.TaskID, false); err != nil {
		return nil, invalid("task id: %v", err)
	}
	d.mu.Lock()
	if h := d.tasks[st.TaskID]; h != nil && h.st.PID == st.PID && h.st.StartTime == st.StartTime && !h.isReleased() {
		d.mu.Unlock()
		return h, nil // already attached
	}
	d.mu.Unlock()
	var ex extra
	if len(st.Extra) > 0 {
		if err := json.Unmarshal(st.Extra, &ex); err != nil {
			return nil, invalid("task %s: state extra: %v", st.TaskID, err)
		}
	}
	var cg *cgroups.Cgroup
	if ex.Cgroup != "" && d.cg != nil {
		var err error
		cg, err = d.cg.Open(ex.Cgroup)
		if err != nil && !errors.Is(err, cgroups.ErrNotFound) {
			return nil, fmt.Errorf("process: task %s: %w", st.TaskID, err)
		}
	}
	alive := false
	if st.PID > 0 {
		var err error
		if alive, err = procfs.Alive(st.PID, st.StartTime); err != nil {
			return nil, fmt.Errorf("process: task %s: %w", st.TaskID, err)
		}
	}
	if !alive {
		if cg != nil {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := cg.Kill(cctx); err != nil {
				return nil, fmt.Errorf("process: task %s is gone but its cgroup is not empty: %w", st.TaskID, err)
			}
			if err := cg.Remove(cctx); err != nil {
				return nil, fmt.Errorf("process: task %s is gone but its cgroup remains: %w", st.TaskID, err)
			}
		}
		if ex.Log != "" {
			d.mu.Lock()
			d.logs[st.TaskID] = logFile{path: ex.Log, max: ex.LogMaxBytes}
			d.mu.Unlock()
		}
		return nil, fmt.Errorf("%w: task %s (pid %d started at tick %d) is not running", driver.ErrGone, st.TaskID, st.PID, st.StartTime)
	}
	h := d.newHandle(st.TaskID, st.PID, st.StartTime, ex, cg, false)
	d.log.Info("task recovered", "task", st.TaskID, "pid", st.PID, "cgroup", ex.Cgroup)
	return h, nil
}

// Logs returns the output of a task this driver started or recovered. See
// driver.Logger.
func (d *Driver) Logs(ctx context.Context, taskID string, tail int, follow bool) (io.ReadCloser, error) {
	d.mu.Lock()
	lf, ok := d.logs[taskID]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: no logs known for task %s", driver.ErrGone, taskID)
	}
	if lf.path == "" {
		return emptyReader(), nil
	}
	return openLogs(ctx, lf.path, d.logState(lf.path), tail, follow, d.cfg.PollInterval)
}

// newHandle registers and starts watching a task.
func (d *Driver) newHandle(taskID string, pid int, start uint64, ex extra, cg *cgroups.Cgroup, child bool) *handle {
	raw, _ := json.Marshal(ex)
	h := &handle{
		d:          d,
		log:        d.log.With("task", taskID, "pid", pid),
		st:         driver.State{Driver: Name, TaskID: taskID, PID: pid, StartTime: start, Extra: raw},
		cg:         cg,
		logf:       logFile{path: ex.Log, max: ex.LogMaxBytes},
		child:      child,
		done:       make(chan struct{}),
		releasedCh: make(chan struct{}),
	}
	d.mu.Lock()
	d.tasks[taskID] = h
	if ex.Log != "" {
		d.logs[taskID] = h.logf
	}
	d.mu.Unlock()
	if child {
		go h.reap()
	} else {
		go h.poll()
	}
	if h.logf.path != "" {
		h.capDone = make(chan struct{})
		go h.capLogs()
	}
	return h
}

var (
	_ driver.Driver  = (*Driver)(nil)
	_ driver.Logger  = (*Driver)(nil)
	_ driver.Handle  = (*handle)(nil)
	_ driver.Statser = (*handle)(nil)

	_ driver.CPUSetUpdater = (*handle)(nil)
)
