// Package api holds Berth's public types — service specs, tasks, nodes — and
// the Go client for the HTTP API. The CLI, the agents and the tests use it;
// it must not import anything under internal/.
package api

import (
	"fmt"
	"time"
)

// Service modes.
const (
	ModeReplicated = "replicated"
	ModeGlobal     = "global"
	// ModePerUnit runs one task on each hardware unit (ServiceSpec.Unit) of
	// every eligible node, pinned to the unit's CPUs.
	ModePerUnit = "per-unit"
)

// Drivers.
const (
	DriverProcess = "process"
	DriverDocker  = "docker"
)

// Restart conditions.
const (
	RestartAny       = "any"
	RestartOnFailure = "on-failure"
	RestartNone      = "none"
)

// ServiceSpec is what a user declares: the desired state of one service. It
// is the document `berth deploy -f` reads, in YAML or JSON.
type ServiceSpec struct {
	// Name is the service's name, a DNS label (RFC 1123): lower-case letters,
	// digits and '-', at most 63 characters, starting with a letter.
	Name string `json:"name"`
	// Labels are free-form key/value metadata.
	Labels map[string]string `json:"labels,omitempty"`
	// Mode is "replicated" (default: Replicas tasks), "global" (one task on
	// every eligible node) or "per-unit" (one task on every Unit of every
	// eligible node that reports its topology, pinned to the unit's CPUs).
	Mode string `json:"mode,omitempty"`
	// Replicas is the number of tasks in replicated mode (default 1). In
	// per-unit mode it is optional: without it every unit gets a task; with
	// it, that many units do, spread round robin over the nodes.
	Replicas *int `json:"replicas,omitempty"`
	// Unit is the kind of hardware unit a per-unit service runs one task on:
	// "core", "l3", "numa" or "socket". Only for mode per-unit.
	Unit string `json:"unit,omitempty"`
	// Task is the template every task of the service runs.
	Task TaskSpec `json:"task"`
	// Restart says what happens when a task ends.
	Restart RestartPolicy `json:"restart,omitempty"`
	// Placement restricts the nodes the tasks may run on.
	Placement Placement `json:"placement,omitempty"`
	// Routes are HTTP routes to the service on every node's gateway.
	Routes []RouteSpec `json:"routes,omitempty"`
	// LoadBalancing is how the gateway picks a task: "round-robin"
	// (default) or "least-outstanding".
	LoadBalancing string `json:"load_balancing,omitempty"`
	// Update says how tasks move to a new version of the spec.
	Update *UpdatePolicy `json:"update,omitempty"`
	// Rollback says how tasks move back to the previous version.
	Rollback *UpdatePolicy `json:"rollback,omitempty"`
	// Rebalance, when false, keeps the orchestrator from moving running
	// tasks to spread them again after nodes join or return (default true;
	// only for mode replicated). `berth service rebalance` still moves
	// them, once. See docs/concepts.md, "Rebalancing".
	Rebalance *bool `json:"rebalance,omitempty"`
}

// RebalanceEnabled reports whether the orchestrator rebalances the
// service's tasks by itself: a replicated service that did not opt out.
func (s *ServiceSpec) RebalanceEnabled() bool {
	return (s.Mode == ModeReplicated || s.Mode == "") && (s.Rebalance == nil || *s.Rebalance)
}

// TaskSpec is the template of one task: what to run and how.
type TaskSpec struct {
	// Driver runs the task: "process" (default) or "docker".
	Driver string `json:"driver,omitempty"`
	// Command is the program and its arguments. A first word "berth" means
	// this Berth binary. ${PORT_<NAME>}, ${PORT} and ${VAR} for keys of Env
	// are expanded.
	Command []string `json:"command,omitempty"`
	// Image is the container image (docker driver only).
	Image string `json:"image,omitempty"`
	// Env is extra environment for the task.
	Env map[string]string `json:"env,omitempty"`
	// User is the user (name or uid[:gid]) the task runs as. Without it a
	// process task runs as nobody (65534:65534) when Berth runs as root
	// (unless RunAsRoot), and as Berth's own user otherwise; a container
	// runs as its image's user (nobody instead of root, unless RunAsRoot).
	User string `json:"user,omitempty"`
	// Workdir is the task's working directory.
	Workdir string `json:"workdir,omitempty"`
	// Ports are named ports; each gets a free host port.
	Ports []PortSpec `json:"ports,omitempty"`
	// Health is the task's health check; without it a running task is
	// healthy.
	Health *HealthCheck `json:"health,omitempty"`
	// Resources are the CPU and memory the task reserves and is limited to.
	Resources Resources `json:"resources,omitempty"`
	// StopGracePeriod is how long a task has between SIGTERM and SIGKILL.
	// Default 10s.
	StopGracePeriod Duration `json:"stop_grace_period,omitempty"`
	// ForceUpdate is a counter that `berth service restart` raises: a
	// change of it is a change of the task template, so the service's
	// tasks are replaced by a rolling update although nothing else changed.
	// A deploy that leaves it out (0) keeps the stored value.
	ForceUpdate uint64 `json:"force_update,omitempty"`

	// The fields below are for driver docker only, but for RunAsRoot.
	// Containers are hardened by default; each field that relaxes the
	// hardening says so.

	// Pull says when the image is pulled: "if-not-present" (default),
	// "always" or "never".
	Pull string `json:"pull,omitempty"`
	// ReadOnly makes the container's root filesystem read-only. Default
	// true; false is a relaxation.
	ReadOnly *bool `json:"read_only,omitempty"`
	// Tmpfs are absolute paths that get an empty, writable tmpfs (such as
	// /tmp), for programs that need to write under a read-only root.
	Tmpfs []string `json:"tmpfs,omitempty"`
	// CapAdd are the Linux capabilities the container keeps (such as
	// NET_BIND_SERVICE); all others are dropped. A relaxation.
	CapAdd []string `json:"cap_add,omitempty"`
	// RunAsRoot lets a task run as root when no User is given: a process
	// task under a Berth that runs as root, or a container whose image runs
	// as root. Without it such a task runs as nobody (65534:65534). A
	// relaxation, for both drivers.
	RunAsRoot bool `json:"run_as_root,omitempty"`
}

// PortSpec names a port of a task.
type PortSpec struct {
	// Name is a DNS label, unique in the task. It becomes PORT_<NAME>.
	Name string `json:"name"`
	// Protocol is "tcp" (default) or "udp".
	Protocol string `json:"protocol,omitempty"`
	// Publish is the port every node's gateway listens on for this port
	// (1-65535), balancing across the service's healthy tasks. 0: none.
	Publish int `json:"publish,omitempty"`
	// Mode is how Publish is served: "ingress" (default with Publish: the
	// routing mesh on every node) or "host" (the task binds Publish itself
	// on its own node, without the mesh).
	Mode string `json:"mode,omitempty"`
}

// HealthCheck is a task's health check. Exactly one of HTTP, TCP and Exec is
// set.
type HealthCheck struct {
	// HTTP checks that GET path on the named port answers 2xx or 3xx.
	HTTP *HTTPCheck `json:"http,omitempty"`
	// TCP checks that the named port accepts a connection.
	TCP *TCPCheck `json:"tcp,omitempty"`
	// Exec runs a command; exit code 0 is healthy.
	Exec []string `json:"exec,omitempty"`
	// Interval between checks. Default 5s.
	Interval Duration `json:"interval,omitempty"`
	// Timeout of one check. Default: the interval, at most 10s.
	Timeout Duration `json:"timeout,omitempty"`
	// Retries is how many consecutive failures make a task unhealthy.
	// Default 3.
	Retries int `json:"retries,omitempty"`
	// StartPeriod is a grace period after start in which failures do not
	// count.
	StartPeriod Duration `json:"start_period,omitempty"`
}

// HTTPCheck is an HTTP health check.
type HTTPCheck struct {
	// Port is the name of one of the task's ports.
	Port string `json:"port"`
	// Path is the request path. Default "/".
	Path string `json:"path,omitempty"`
}

// TCPCheck is a TCP health check.
type TCPCheck struct {
	// Port is the name of one of the task's ports.
	Port string `json:"port"`
}

// Resources are what a task reserves on its node and is limited to.
type Resources struct {
	// CPUs is the number of CPUs (fractions allowed). 0 means no limit and
	// no reservation.
	CPUs float64 `json:"cpus,omitempty"`
	// Memory is the memory limit. 0 means no limit and no reservation.
	Memory ByteSize `json:"memory,omitempty"`
	// CPUPolicy is "shared" (default: the task runs on the node's shared
	// pool of CPUs, or its unit's in per-unit mode) or "exclusive" (the
	// task gets CPUs whole CPUs of its own, which no other task runs on;
	// CPUs must then be a whole number).
	CPUPolicy string `json:"cpu_policy,omitempty"`
	// Topology says how exclusive CPUs are chosen: "prefer" (default: SMT
	// siblings, one L3 group, one NUMA node when possible) or
	// "require-single-numa" (never across NUMA nodes; the task stays pending
	// instead).
	Topology string `json:"topology,omitempty"`
}

// RestartPolicy says whether and how a task that ended is replaced.
type RestartPolicy struct {
	// Condition is "any" (default), "on-failure" or "none".
	Condition string `json:"condition,omitempty"`
	// Delay is the wait before the first restart; it doubles with each
	// consecutive failure up to MaxDelay. Default 1s.
	Delay Duration `json:"delay,omitempty"`
	// MaxDelay caps the back-off. Default 30s.
	MaxDelay Duration `json:"max_delay,omitempty"`
	// MaxAttempts is how many consecutive restarts a slot gets before it is
	// left down. 0 means no limit.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Window is how long a task must run for the count of consecutive
	// restarts (and the back-off) to start again. Default 10s.
	Window Duration `json:"window,omitempty"`
}

// Placement restricts where tasks run.
type Placement struct {
	// Constraints are expressions such as "node.labels.zone == a" or
	// "node.hostname != db1"; all must hold.
	Constraints []string `json:"constraints,omitempty"`
	// Preferences order the eligible nodes: the first preference counts
	// most. Only for mode replicated.
	Preferences []PlacementPreference `json:"preferences,omitempty"`
	// MaxReplicasPerNode caps the tasks of the service on one node, counting
	// those still stopping there (0: no cap). Only for mode replicated; a task that finds every
	// eligible node at the cap stays pending and says so.
	MaxReplicasPerNode int `json:"max_replicas_per_node,omitempty"`
}

// PlacementPreference is one placement preference.
type PlacementPreference struct {
	// Spread is a node label, written "node.labels.<key>": the service's
	// tasks are spread evenly over the label's values, and the nodes
	// without the label form one more group of their own (as Docker Swarm
	// does). Within a group the usual spread over nodes applies.
	Spread string `json:"spread"`
}

// Service is a stored service: its spec and what Berth keeps about it.
type Service struct {
	// ID is the service's id, fixed at creation.
	ID string `json:"id"`
	// Spec is the current spec, with every default filled in.
	Spec ServiceSpec `json:"spec"`
	// Version increases with every change of the spec.
	Version uint64 `json:"version"`
	// CreatedAt is when the service was created.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is when its spec last changed.
	UpdatedAt time.Time `json:"updated_at"`
	// PreviousSpec is the spec of the version the latest update started
	// from: the target of an automatic rollback. Nil before the first update.
	PreviousSpec *ServiceSpec `json:"previous_spec,omitempty"`
	// UpdateStatus is the state of the latest update or rollback; nil
	// before the first.
	UpdateStatus *UpdateStatus `json:"update_status,omitempty"`
	// Pending, set by the orchestrator, counts the replicas that wait for a
	// node when more wait than are stored as tasks: a service keeps at most
	// a bounded number of pending tasks and creates the others as earlier
	// ones are placed. Nil when every waiting replica is a stored task (list
	// its tasks to see them).
	Pending *PendingReplicas `json:"pending,omitempty"`
	// MeshErrors are the ready nodes whose gateway refused the service (a
	// published port it cannot open there): the service gets no traffic
	// through them. Computed when the service is read, never stored.
	MeshErrors []MeshError `json:"mesh_errors,omitempty"`
	// RebalanceStatus is the state of the rebalances asked for with POST
	// /services/{name}/rebalance; nil before the first.
	RebalanceStatus *RebalanceStatus `json:"rebalance_status,omitempty"`
	// Revision is the store's modification revision of this object, used for
	// compare-and-swap. Set by the store on read; ignored on write.
	Revision int64 `json:"revision,omitempty"`
}

// PendingReplicas is how many of a service's replicas wait for a node, and
// why. Count includes the Stored pending tasks; the others are not created
// yet.
type PendingReplicas struct {
	// Count is every replica of the service that waits for a node.
	Count int `json:"count"`
	// Stored is how many of them are stored as pending tasks.
	Stored int `json:"stored"`
	// Reason is why they wait: the scheduler's message on a stored
	// pending task.
	Reason string `json:"reason"`
}

// String is the one-line summary "N pending: reason".
func (p PendingReplicas) String() string {
	return fmt.Sprintf("%d pending: %s", p.Count, p.Reason)
}

// RebalanceStatus tracks the rebalances asked for through the API. The API
// counts a request up in Requested; the orchestrator sets Done to it once
// the service's tasks are spread as evenly as the eligible nodes allow, or
// once a move made for it could not be placed or failed (Message says
// why).
type RebalanceStatus struct {
	// Requested is the number of the latest request.
	Requested uint64 `json:"requested"`
	// Done is the number of the latest request the orchestrator finished.
	Done uint64 `json:"done"`
	// RequestedAt is when the latest request was made (API server clock).
	RequestedAt time.Time `json:"requested_at,omitzero"`
	// CompletedAt is when Done was last set (orchestrator clock).
	CompletedAt time.Time `json:"completed_at,omitzero"`
	// Message says how the latest finished request ended.
	Message string `json:"message,omitempty"`
}

// Pending reports whether a request waits for the orchestrator.
func (s *RebalanceStatus) Pending() bool { return s != nil && s.Done < s.Requested }

// TaskMove marks a task that replaces a running task of its slot to spread
// its service more evenly (a rebalance). The replaced task serves until
// this one does. The scheduler places the task only on a node that holds
// fewer than Below live tasks of the service, so that every move makes the
// spread strictly better and moves can never go round in circles.
type TaskMove struct {
	// From is the node of the task being replaced.
	From string `json:"from"`
	// Below bounds the tasks of the service on the target node (see above).
	Below int `json:"below"`
	// Request is the RebalanceStatus.Requested the move was made for; 0
	// for a move the orchestrator made by itself.
	Request uint64 `json:"request,omitempty"`
}

// TaskState is a step of the one-way task lifecycle.
type TaskState string

// Task states, in lifecycle order. A task only moves forward.
const (
	TaskPending  TaskState = "pending"
	TaskAssigned TaskState = "assigned"
	TaskStarting TaskState = "starting"
	TaskRunning  TaskState = "running"
	TaskComplete TaskState = "complete"
	TaskFailed   TaskState = "failed"
	TaskShutdown TaskState = "shutdown"
	// TaskRejected means the node could not start the task at all.
	TaskRejected TaskState = "rejected"
	// TaskLost means the task's node went away.
	TaskLost TaskState = "lost"
)

var stateOrder = map[TaskState]int{
	TaskPending: 0, TaskAssigned: 1, TaskStarting: 2, TaskRunning: 3,
	TaskComplete: 4, TaskFailed: 4, TaskShutdown: 4, TaskRejected: 4, TaskLost: 4,
}

// Terminal reports whether s is an end state.
func (s TaskState) Terminal() bool { return stateOrder[s] >= 4 }

// Before reports whether s comes strictly before t in the lifecycle.
func (s TaskState) Before(t TaskState) bool { return stateOrder[s] < stateOrder[t] }

// Valid reports whether s is a known state.
func (s TaskState) Valid() bool { _, ok := stateOrder[s]; return ok }

// Health values.
const (
	HealthNone      = "none"
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Task is one run of one slot of a service on one node. A replacement is
// always a new task.
type Task struct {
	// ID is the task's id.
	ID string `json:"id"`
	// ServiceID is the id of the task's service.
	ServiceID string `json:"service_id"`
	// ServiceName is the name of the task's service.
	ServiceName string `json:"service"`
	// Slot is the replica number (replicated mode, from 1), 0 (global mode,
	// where the node identifies the task) or, in per-unit mode, the unit's
	// number on its node plus one (core:3 is slot 4).
	Slot int `json:"slot"`
	// SpecVersion is the service version whose task template the task runs.
	SpecVersion uint64 `json:"spec_version"`
	// Spec is the task template of the service version this task runs.
	Spec TaskSpec `json:"spec"`
	// Placement is copied from the service so the scheduler needs only the
	// task.
	Placement Placement `json:"placement,omitempty"`
	// NodeID is the node the scheduler placed the task on; empty while pending.
	NodeID string `json:"node,omitempty"`
	// Ports maps port names to the host ports allocated by the scheduler.
	Ports map[string]int `json:"ports,omitempty"`
	// Unit is the hardware unit of the node a per-unit task runs on, such
	// as "core:3"; set with NodeID by the orchestrator.
	Unit string `json:"unit,omitempty"`
	// Allocation is the CPU set and memory nodes the scheduler pinned the
	// task to: its unit's (per-unit mode) or its exclusive CPUs. Nil for a
	// shared task, which runs on the node's shared pool.
	Allocation *CPUAllocation `json:"allocation,omitempty"`
	// DesiredState is what the task should become: running or shutdown.
	DesiredState TaskState `json:"desired_state"`
	// Status is what is observed about the task.
	Status TaskStatus `json:"status"`
	// Attempt counts consecutive restarts of this slot before this task.
	Attempt int `json:"attempt,omitempty"`
	// CreatedAt is when the orchestrator created the task.
	CreatedAt time.Time `json:"created_at"`
	// NotBefore delays the start of a restarted task (restart delay).
	NotBefore time.Time `json:"not_before,omitempty"`
	// Revision is the store's modification revision; set on read.
	Revision int64 `json:"revision,omitempty"`
	// Move is set on a task created by a rebalance.
	Move *TaskMove `json:"move,omitempty"`
}

// TaskStatus is what is observed about a task.
type TaskStatus struct {
	// State is the observed state: pending, assigned, starting, running,
	// complete, failed, shutdown, rejected or lost.
	State TaskState `json:"state"`
	// Message says what the task is doing or waits for (for a pending
	// task, why the scheduler cannot place it).
	Message string `json:"message,omitempty"`
	// Err is why the task failed or was rejected.
	Err string `json:"error,omitempty"`
	// ExitCode is the exit status of the task's process once it exited.
	ExitCode *int `json:"exit_code,omitempty"`
	// Health is starting, healthy, unhealthy or none (no health check).
	Health string `json:"health,omitempty"`
	// PID is the process id of the task's main process on its node.
	PID int `json:"pid,omitempty"`
	// ContainerID is the driver's handle for container drivers.
	ContainerID string `json:"container_id,omitempty"`
	// StartedAt is when the task started running.
	StartedAt time.Time `json:"started_at,omitempty"`
	// FinishedAt is when the task ended.
	FinishedAt time.Time `json:"finished_at,omitempty"`
	// HealthySince is when the task last started serving, by the agent's
	// clock: when its health turned healthy, or when it started running
	// without a health check. It is zero while the task has not served.
	// It stays set once the task turns unhealthy or ends, so that how long
	// the task served before it failed can be told (until Timestamp or
	// FinishedAt); a task that turns healthy again starts it anew. Agents
	// older than the field leave it zero.
	HealthySince time.Time `json:"healthy_since,omitzero"`
	// Timestamp is when this status was observed (by the agent) or set.
	Timestamp time.Time `json:"timestamp"`
}

// Node availability and status.
const (
	AvailabilityActive = "active"
	AvailabilityPause  = "pause"
	AvailabilityDrain  = "drain"

	NodeReady = "ready"
	NodeDown  = "down"
)

// Node is a machine that runs an agent.
type Node struct {
	// ID is the node's id, given at its first registration.
	ID string `json:"id"`
	// Hostname is the node's name, unique in the cluster: the first node to
	// register a hostname holds it until an admin removes that node.
	Hostname string `json:"hostname"`
	// Address is where other nodes reach this node's tasks: the agent's
	// --address, else the address it reaches its manager from.
	Address string `json:"address,omitempty"`
	// AddressIssue says why other nodes' gateways cannot reach this node's
	// tasks at Address ("missing", "unspecified" or "loopback"; empty when
	// they can): the routing mesh sends them nothing. It is computed when
	// the node is read, never stored.
	AddressIssue string `json:"address_issue,omitempty"`
	// Labels are the node's labels, which placement constraints and
	// preferences look at: its agent's labels (AgentLabels) without those
	// an admin removed (RemovedLabels), then the labels an admin set
	// (AdminLabels), which win.
	Labels map[string]string `json:"labels,omitempty"`
	// AgentLabels are the labels the agent registered with (berth agent
	// --label); every registration replaces them.
	AgentLabels map[string]string `json:"agent_labels,omitempty"`
	// AdminLabels are the labels set with berth node update --label-add;
	// a registration keeps them.
	AdminLabels map[string]string `json:"admin_labels,omitempty"`
	// RemovedLabels are agent label keys an admin removed with berth node
	// update --label-rm; a registration keeps them removed.
	RemovedLabels []string `json:"removed_labels,omitempty"`
	// Role is worker or manager: what the node's certificate allows.
	Role string `json:"role,omitempty"`
	// Resources are the CPUs and memory the node offers to tasks.
	Resources NodeResources `json:"resources"`
	// Drivers are the task drivers available on the node.
	Drivers []string `json:"drivers,omitempty"`
	// Availability is active, pause or drain (set with berth node update).
	Availability string `json:"availability"`
	// Status is ready, or down once the node missed its heartbeats.
	Status string `json:"status"`
	// PortRange is the first and last host port the scheduler may allocate
	// on this node.
	PortRange [2]int `json:"port_range"`
	// AgentURL is where the node's agent serves task logs.
	AgentURL string `json:"agent_url,omitempty"`
	// Topology is the node's CPU and memory layout, as its agent discovered
	// it; nil when the agent could not read it.
	Topology *Topology `json:"topology,omitempty"`
	// ReservedCPUs lists the CPUs kept for the system (the agent's
	// --reserved-cpus): no task is pinned to them.
	ReservedCPUs string `json:"reserved_cpus,omitempty"`
	// ReservedPorts are the ports the node's agent listens on itself: no
	// service may publish them.
	ReservedPorts []ReservedPort `json:"reserved_ports,omitempty"`
	// LastHeartbeat is when the manager last heard from the node's agent.
	LastHeartbeat time.Time `json:"last_heartbeat"`
	// Gateway is what the node's gateway last acknowledged of the routing
	// state; nil on a node without a gateway.
	Gateway *GatewayAck `json:"gateway,omitempty"`
	// CreatedAt is when the node first registered.
	CreatedAt time.Time `json:"created_at"`
	// Revision is the store's modification revision; set on read.
	Revision int64 `json:"revision,omitempty"`
}

// NodeResources are a node's total capacity. CPUs counts the online CPUs
// the agent may use.
type NodeResources struct {
	// CPUs is the number of CPUs (fractions allowed).
	CPUs float64 `json:"cpus"`
	// Memory is the memory for tasks.
	Memory ByteSize `json:"memory"`
}

// NodeUpdate is the body of PATCH /api/v1/nodes/{id}: what an admin
// changes on a node. Empty fields change nothing.
type NodeUpdate struct {
	// Availability is "active", "pause" (no new tasks; running ones stay)
	// or "drain" (no new tasks; running ones move to other nodes).
	Availability string `json:"availability,omitempty"`
	// LabelsAdd sets these labels, replacing any value they had.
	LabelsAdd map[string]string `json:"labels_add,omitempty"`
	// LabelsRm removes these label keys, whether an admin or the agent set
	// them.
	LabelsRm []string `json:"labels_rm,omitempty"`
}
