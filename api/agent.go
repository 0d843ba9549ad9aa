package api

import "time"

// NodeRegistration is what an agent sends when it starts: who it is and what
// it offers. The manager answers with the stored Node.
type NodeRegistration struct {
	// NodeID is the id the agent was given before and kept on disk; empty on
	// first start.
	NodeID string `json:"node_id,omitempty"`
	// Hostname is the node's name, unique in the cluster.
	Hostname string `json:"hostname"`
	// Address is where other nodes reach this one (its gateways dial tasks there).
	Address string `json:"address,omitempty"`
	// Labels are the agent's --label flags, for placement constraints.
	Labels map[string]string `json:"labels,omitempty"`
	// Resources are the CPUs and memory the node offers to tasks.
	Resources NodeResources `json:"resources"`
	// Drivers are the task drivers available on the node (process, docker).
	Drivers []string `json:"drivers,omitempty"`
	// PortRange is the first and last host port tasks on this node may get.
	PortRange [2]int `json:"port_range"`
	// Topology is the node's CPU layout; nil when the agent could not read
	// it.
	Topology *Topology `json:"topology,omitempty"`
	// ReservedCPUs lists CPUs kept for the system, in the kernel's list
	// format; they must exist in Topology.
	ReservedCPUs string `json:"reserved_cpus,omitempty"`
	// AgentURL is where the agent serves task logs (https://host:port).
	AgentURL string `json:"agent_url,omitempty"`
	// AgentCertSHA256 is the hex SHA-256 of the agent's self-signed TLS
	// certificate (DER), pinned by the manager when it calls AgentURL.
	AgentCertSHA256 string `json:"agent_cert_sha256,omitempty"`
	// AgentSecret is the bearer secret the manager presents to AgentURL.
	AgentSecret string `json:"agent_secret,omitempty"`
	// ReservedPorts are the ports the agent itself listens on (its
	// gateway's entrypoints, DNS and log server): no service may publish
	// them.
	ReservedPorts []ReservedPort `json:"reserved_ports,omitempty"`
}

// Assignments is the full set of tasks assigned to one node, as streamed to
// its agent: a new message replaces the previous one.
type Assignments struct {
	// Revision is the store revision the set was read at.
	Revision int64 `json:"revision"`
	// Tasks are every task assigned to the node that it should run or stop.
	Tasks []Task `json:"tasks"`
}

// TaskStatusUpdate is one task's observed status, reported by its agent.
type TaskStatusUpdate struct {
	// ID is the task's id.
	ID string `json:"id"`
	// Status is the task's new observed status.
	Status TaskStatus `json:"status"`
}

// StatusReport is an agent's heartbeat with the tasks whose status changed.
type StatusReport struct {
	// Tasks are the status changes of the node's tasks since the last report (all of them after a reconnect).
	Tasks []TaskStatusUpdate `json:"tasks,omitempty"`
	// Gateway is what the node's gateway has applied of the routing state;
	// nil on a node without a gateway.
	Gateway *GatewayAck `json:"gateway,omitempty"`
}

// GatewayAck is what a node's gateway has applied of the endpoints stream,
// so that an agent stopping a task can wait until no gateway sends it
// anything (see DrainStatus).
type GatewayAck struct {
	// Revision is the Revision of the last endpoints message applied.
	Revision int64 `json:"revision"`
	// Draining are tasks this gateway no longer routes to that still have
	// requests, connections or sessions in flight through it.
	Draining []string `json:"draining,omitempty"`
	// Refused are the services the gateway could not take in that routing
	// state (a published port it cannot open): they get no traffic on this
	// node.
	Refused []GatewayRefusal `json:"refused,omitempty"`
}

// GatewayRefusal is a service a node's gateway refused, and why.
type GatewayRefusal struct {
	// Service is the name of the refused service.
	Service string `json:"service"`
	// Error is why the gateway refused it.
	Error string `json:"error"`
}

// MeshError is a node whose gateway refused a service (Service.MeshErrors).
type MeshError struct {
	// Node is the node's hostname.
	Node string `json:"node"`
	// Error is why that node's gateway refused the service.
	Error string `json:"error"`
}

// DrainStatus answers GET /agent/drained/{task}: whether every gateway of
// the cluster has stopped sending the task new traffic (applied a routing
// state at or after the revision asked about) and has nothing in flight to
// it.
type DrainStatus struct {
	// Drained reports whether every gateway has stopped sending the task new traffic.
	Drained bool `json:"drained"`
	// Waiting are the nodes whose gateways have not yet.
	Waiting []string `json:"waiting,omitempty"`
}

// ResourceStats is a sample of a task's resource use, as its driver
// measures it.
type ResourceStats struct {
	// Time is when the sample was taken, by the agent's clock.
	Time time.Time `json:"time"`
	// CPUNanos is the CPU time used since the task started.
	CPUNanos uint64 `json:"cpu_nanos"`
	// MemoryBytes is the memory in use now.
	MemoryBytes uint64 `json:"memory_bytes"`
	// Pids is the number of processes (or threads) of the task.
	Pids uint64 `json:"pids"`
	// Network and block I/O byte counters since start, where the driver
	// measures them (the docker driver).
	NetRxBytes    uint64 `json:"net_rx_bytes,omitempty"`
	NetTxBytes    uint64 `json:"net_tx_bytes,omitempty"`
	BlkReadBytes  uint64 `json:"blk_read_bytes,omitempty"`
	BlkWriteBytes uint64 `json:"blk_write_bytes,omitempty"`
}

// TaskStats is one task's resource use, as GET /services/{name}/stats
// answers it. Error says why a task has no sample.
type TaskStats struct {
	// TaskID is the id of the task measured.
	TaskID string `json:"task_id"`
	// Service is the name of the task's service.
	Service string `json:"service"`
	// Slot is the task's slot (see Task.Slot).
	Slot int `json:"slot"`
	// NodeID is the node the task runs on.
	NodeID string `json:"node"`
	// Stats is the sample; nil when the agent could not be asked (see Error).
	Stats *ResourceStats `json:"stats,omitempty"`
	// Error says why there is no sample.
	Error string `json:"error,omitempty"`
}
