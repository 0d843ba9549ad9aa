// Package driver defines how the agent runs a task: the Driver interface every
// driver implements, its optional extras, and (in drivertest) the conformance
// suite every implementation passes. It knows nothing of the store, the
// scheduler or the API server.
package driver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"time"
)

// Errors drivers return. Wrap them with %w and detail.
var (
	// ErrGone means a task's process or container no longer exists.
	ErrGone = errors.New("driver: task is gone")
	// ErrInvalid means the StartSpec cannot be run as given (a fatal error:
	// retrying will not help).
	ErrInvalid = errors.New("driver: invalid task")
)

// StartSpec is everything a driver needs to start one task. The agent has
// already expanded variables and resolved the program.
type StartSpec struct {
	// TaskID identifies the task; drivers use it to name cgroups, log files
	// and containers.
	TaskID      string
	ServiceName string
	Slot        int
	// Command is argv; Command[0] is an absolute path for the process driver.
	Command []string
	// Image is the container image (container drivers).
	Image string
	// Env is the full environment as KEY=VALUE.
	Env []string
	// User is "name", "uid" or "uid:gid"; empty runs as the agent's user.
	User    string
	Workdir string
	// CPUs limits CPU time (CFS quota); 0 means no limit.
	CPUs float64
	// MemoryBytes limits memory; 0 means no limit.
	MemoryBytes int64
	// CPUSet and MemNodes pin the task ("0-3,8"); empty means unpinned.
	CPUSet   string
	MemNodes string
	// LogDir is a directory the driver may write the task's logs into.
	LogDir string
	// LogMaxBytes caps the log files' total size.
	LogMaxBytes int64
	// NodeID is the node the task runs on; container drivers label their
	// containers with it so an agent finds its own (and only its own).
	NodeID string
	// Ports are the task's named ports with the host ports allocated to
	// them. A process binds them itself; a container driver publishes them.
	Ports []Port
	// Container holds what only container drivers read.
	Container ContainerOptions
	// DNS is the resolver a task is given (the node agent's DNS server, for
	// service discovery). The zero value keeps the default: the engine's
	// for a container, the host's for a process. The process driver gives
	// it to a task as its own /etc/resolv.conf when it can (see
	// process.Config.TaskResolvers) and ignores it otherwise.
	DNS Resolver
}

// Resolver is the DNS configuration of a container.
type Resolver struct {
	// Servers are IP addresses of name servers, asked on port 53.
	Servers []string
	// Search are the search domains ("berth", so that a bare service name
	// resolves).
	Search []string
}

// Port is a named port of a task and the host port allocated to it.
type Port struct {
	Name     string
	Protocol string // "tcp" or "udp"
	HostPort int
}

// ContainerOptions are the settings of a container task. The zero value is
// the hardened default: read-only root filesystem, no capabilities, never
// root unless the spec gives a user.
type ContainerOptions struct {
	// Pull is "if-not-present" (also for ""), "always" or "never".
	Pull string
	// WritableRootfs relaxes the read-only root filesystem.
	WritableRootfs bool
	// Tmpfs are paths that get an empty, writable tmpfs.
	Tmpfs []string
	// CapAdd are capabilities kept (all others are dropped).
	CapAdd []string
	// RunAsRoot lets an image whose user is root run as root when no User is
	// given (otherwise it runs as nobody, 65534:65534).
	RunAsRoot bool
	// Mounts are host paths bind-mounted into the container. The spec has
	// no volumes yet, so the agent sets none; the conformance suite does.
	Mounts []Mount
}

// Mount is a bind mount of a host path into a container.
type Mount struct {
	Source, Target string
	ReadOnly       bool
}

// State is a task's handle in a form that survives an agent restart. The agent
// saves it to disk after Start and gives it back to Recover.
type State struct {
	Driver string `json:"driver"`
	TaskID string `json:"task_id"`
	PID    int    `json:"pid,omitempty"`
	// StartTime is the process start time in clock ticks since boot
	// (/proc/PID/stat field 22), so a recycled pid is never mistaken for the
	// task.
	StartTime   uint64          `json:"start_time,omitempty"`
	ContainerID string          `json:"container_id,omitempty"`
	Extra       json.RawMessage `json:"extra,omitempty"`
}

// Exit is how a task ended.
type Exit struct {
	// Code is the exit code, or -1 when it is unknown (a recovered process
	// that is not our child) or the task was killed by a signal.
	Code int
	// Signal is the signal that ended the task, or 0.
	Signal int
	// OOMKilled is true when the memory limit killed the task.
	OOMKilled bool
	// Err is set when the driver lost track of the task.
	Err error
}

// Driver starts and recovers tasks.
type Driver interface {
	// Name returns the driver's name as used in specs ("process").
	Name() string

	// Start starts the task and returns once it is running (or failed to
	// start). It must not block on the task's lifetime. An error wrapping
	// ErrInvalid is fatal; any other error may be retried.
	Start(ctx context.Context, spec StartSpec) (Handle, error)

	// Recover re-attaches to a task started by an earlier run of the agent,
	// from the State it saved. It returns an error wrapping ErrGone if the
	// task no longer runs (or its pid was reused); the driver then also
	// removes what it left behind (cgroups, containers).
	Recover(ctx context.Context, st State) (Handle, error)
}

// Handle is a running task.
type Handle interface {
	// State returns what to save to recover this task later.
	State() State

	// Wait blocks until the task ends or ctx is done, and returns how it
	// ended. It may be called more than once and from several goroutines.
	Wait(ctx context.Context) (Exit, error)

	// Stop asks the task to stop (SIGTERM to its whole process group),
	// waits up to grace, then kills it (SIGKILL), waits for it to end and
	// releases its resources (cgroups, containers). Stop on a task that has
	// already ended only releases resources. It is safe to call twice.
	Stop(ctx context.Context, grace time.Duration) error
}

// Logger is an optional extra of a Driver: reading a task's output.
type Logger interface {
	// Logs returns the task's stdout and stderr, interleaved as written, from
	// the last tail lines (all when tail < 0). With follow it stays open and
	// streams new output until ctx is done.
	Logs(ctx context.Context, taskID string, tail int, follow bool) (io.ReadCloser, error)
}

// LogOptions selects what TimedLogs returns.
type LogOptions struct {
	// Tail is the number of lines from the end (all when < 0), counted
	// after Since.
	Tail int
	// Since, when not zero, leaves out lines written before it.
	Since time.Time
	// Follow keeps the stream open for new lines until the context ends.
	Follow bool
	// Timestamps starts every line with its time in logstamp.Layout and a
	// space.
	Timestamps bool
}

// TimedLogger is an optional extra of a Driver: reading a task's output with
// the time each line was written (ADR 0034).
type TimedLogger interface {
	// TimedLogs returns the task's lines in the order written, as Logs does,
	// cut and stamped as opts says. Lines whose time is not known exactly
	// get the nearest later time known (at worst the log file's
	// modification time), never an earlier one.
	TimedLogs(ctx context.Context, taskID string, opts LogOptions) (io.ReadCloser, error)
}

// Stats is a sample of a task's resource use.
type Stats struct {
	Time time.Time `json:"time"`
	// CPUNanos is the CPU time used since start.
	CPUNanos uint64 `json:"cpu_nanos"`
	// MemoryBytes is the memory in use now.
	MemoryBytes uint64 `json:"memory_bytes"`
	// Pids is the number of processes or threads.
	Pids uint64 `json:"pids"`
	// Network and block I/O byte counters since start, where the driver
	// can measure them (the docker driver; zero otherwise).
	NetRxBytes    uint64 `json:"net_rx_bytes,omitempty"`
	NetTxBytes    uint64 `json:"net_tx_bytes,omitempty"`
	BlkReadBytes  uint64 `json:"blk_read_bytes,omitempty"`
	BlkWriteBytes uint64 `json:"blk_write_bytes,omitempty"`
}

// StrayRemover is an optional extra of a Driver that leaves things behind
// that outlive the agent (containers): the agent calls it once after it
// recovered its tasks and registered, to remove what no task owns.
type StrayRemover interface {
	// RemoveStrays removes the containers of node nodeID whose task id is
	// not in keep, and returns the task ids it removed.
	RemoveStrays(ctx context.Context, nodeID string, keep map[string]bool) ([]string, error)
}

// Statser is an optional extra of a Handle: resource usage.
type Statser interface {
	Stats(ctx context.Context) (Stats, error)
}

// CPUSetUpdater is an optional extra of a Handle: changing the CPUs a
// running task may use, without restarting it. The agent uses it to keep
// tasks on the node's shared pool as exclusive CPUs are taken and freed.
type CPUSetUpdater interface {
	// UpdateCPUSet pins the running task to cpus (and to the memory nodes
	// mems, unless mems is empty: then they stay as they are), in the
	// kernel's list format. An error wrapping ErrInvalid means this task
	// cannot be re-pinned at all (it was started without a CPU set, or
	// the host lacks the means); other errors may be retried.
	UpdateCPUSet(cpus, mems string) error
}

// Execer is an optional extra of a Handle whose task runs in its own
// filesystem (a container): running a command inside the task, as the
// agent's exec health checks do. A Handle without it runs exec checks on the
// host, as the task itself runs.
type Execer interface {
	// Exec runs argv (with env added to the task's environment) inside the
	// task as the task's user and waits for it, or for ctx, whichever ends
	// first. It returns the command's exit code and the last bytes of its
	// combined output; err is for a command that could not be run or
	// waited for at all.
	Exec(ctx context.Context, argv, env []string) (exitCode int, output string, err error)
}
