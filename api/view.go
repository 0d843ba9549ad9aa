package api

import "time"

// TaskView is a task flattened into one row: what `berth service ps -o json`
// prints, one object per task. Its fields are stable for scripts.
type TaskView struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	// Slot is the replica number, or 0 for a global service's task.
	Slot int `json:"slot"`
	// Node is the id of the node the task is placed on; empty while pending.
	Node         string    `json:"node"`
	State        TaskState `json:"state"`
	DesiredState TaskState `json:"desired_state"`
	// Health is healthy, unhealthy, starting or none.
	Health string `json:"health"`
	// Ports maps port names to host ports; empty, never null.
	Ports map[string]int `json:"ports"`
	// PID is the task's process id, 0 when it has none.
	PID int `json:"pid"`
	// ExitCode is null until the task has exited.
	ExitCode    *int      `json:"exit_code"`
	Message     string    `json:"message"`
	Error       string    `json:"error"`
	CreatedAt   time.Time `json:"created_at"`
	SpecVersion uint64    `json:"spec_version"`
	// Unit is the per-unit task's hardware unit ("core:3"), else "".
	Unit string `json:"unit"`
	// CPUs is the CPU list the task is pinned to (its unit's or its
	// exclusive CPUs), or "" for a task on the node's shared pool.
	CPUs string `json:"cpus"`
	// MemNodes lists the NUMA nodes the task allocates memory from when it
	// is pinned to them, else "".
	MemNodes string `json:"mem_nodes"`
}

// NewTaskView flattens t. A task without a health value gets "none", and so
// does an ended task that was last seen healthy or starting: an ended task
// serves nothing (one that failed its check stays "unhealthy", which says why
// it ended).
func NewTaskView(t Task) TaskView {
	health := t.Status.Health
	if health == "" || (t.Status.State.Terminal() && health != HealthUnhealthy) {
		health = HealthNone
	}
	ports := make(map[string]int, len(t.Ports))
	for k, v := range t.Ports {
		ports[k] = v
	}
	var exit *int
	if t.Status.ExitCode != nil {
		c := *t.Status.ExitCode
		exit = &c
	}
	var cpus, mems string
	if t.Allocation != nil {
		cpus, mems = t.Allocation.CPUs, t.Allocation.MemNodes
	}
	return TaskView{
		ID:           t.ID,
		Service:      t.ServiceName,
		Slot:         t.Slot,
		Node:         t.NodeID,
		State:        t.Status.State,
		DesiredState: t.DesiredState,
		Health:       health,
		Ports:        ports,
		Unit:         t.Unit,
		CPUs:         cpus,
		MemNodes:     mems,
		PID:          t.Status.PID,
		ExitCode:     exit,
		Message:      t.Status.Message,
		Error:        t.Status.Err,
		CreatedAt:    t.CreatedAt,
		SpecVersion:  t.SpecVersion,
	}
}
