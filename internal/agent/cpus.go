package agent

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/topology"
)

// cpuState is what the agent knows of the node's CPUs: its topology, the
// reserved CPUs, and the shared pool that tasks without a CPU allocation
// run on. The pool is every online CPU that is neither reserved nor held by
// an exclusive task of this node; it changes as exclusive tasks start and
// end, and refreshShared moves running shared tasks along.
type cpuState struct {
	topo     *api.Topology // nil when discovery failed
	machine  *topology.Machine
	reserved topology.CPUSet

	// refreshMu serialises refreshShared, so that pool updates reach the
	// drivers in the order they were computed.
	refreshMu sync.Mutex
	// pool is the current shared pool; guarded by Agent.mu.
	pool topology.CPUSet
	// emptyWarned is set once an empty pool was logged; guarded by
	// Agent.mu.
	emptyWarned bool
}

// initCPUs discovers the topology and checks the reserved CPUs against it.
// A topology that cannot be read is logged and left out; reserved CPUs that
// the node lacks, or that cannot be checked, are a configuration error.
func (a *Agent) initCPUs() error {
	reserved, err := topology.Parse(a.cfg.ReservedCPUs)
	if err != nil {
		return fmt.Errorf("%w: reserved CPUs: %w", ErrConfig, err)
	}
	t, err := a.cfg.Topology()
	var m *topology.Machine
	if err == nil {
		m, err = topology.NewMachine(t)
	}
	if err != nil {
		a.log.Warn("cannot read the CPU topology; the node registers without one (no exclusive or per-unit tasks, shared tasks unpinned)", "err", err)
		if !reserved.IsEmpty() {
			return fmt.Errorf("%w: reserved CPUs %s cannot be checked without the node's CPU topology: %w", ErrConfig, reserved, err)
		}
		return nil
	}
	if err := m.CheckReserved(reserved); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if m.Online().Difference(reserved).IsEmpty() {
		return fmt.Errorf("%w: reserved CPUs %s leave no CPU for tasks (online: %s)", ErrConfig, reserved, m.Online())
	}
	a.cpus.topo, a.cpus.machine, a.cpus.reserved = &t, m, reserved
	a.cpus.pool = m.Shared(reserved, topology.CPUSet{})
	a.log.Info("CPU topology", "online", m.Online().String(), "reserved", reserved.String(),
		"cores", len(t.Cores), "numa_nodes", len(t.NUMANodes))
	return nil
}

// nodeCPUs is the node's CPU capacity: its online CPUs when the topology
// is known.
func (a *Agent) nodeCPUs() (float64, bool) {
	if a.cpus.machine == nil {
		return 0, false
	}
	return float64(a.cpus.machine.Online().Len()), true
}

// exclusiveLocked is the union of the CPUs held by this node's exclusive
// tasks that have not ended. a.mu is held.
func (a *Agent) exclusiveLocked() topology.CPUSet {
	var held topology.CPUSet
	for _, r := range a.runners {
		if cpus, ok := r.exclusiveCPUs(); ok {
			held = held.Union(cpus)
		}
	}
	return held
}

// poolLocked computes the shared pool. When exclusive and reserved CPUs
// leave none, shared tasks fall back to the reserved CPUs (or, without
// any, to all online CPUs) rather than to nothing: a cpuset cannot be
// empty. a.mu is held.
func (a *Agent) poolLocked() topology.CPUSet {
	m := a.cpus.machine
	pool := m.Shared(a.cpus.reserved, a.exclusiveLocked())
	if !pool.IsEmpty() {
		a.cpus.emptyWarned = false
		return pool
	}
	fallback := a.cpus.reserved
	if fallback.IsEmpty() {
		fallback = m.Online()
	}
	if !a.cpus.emptyWarned {
		a.cpus.emptyWarned = true
		a.log.Warn("exclusive tasks hold every CPU that is not reserved; shared tasks run on the fallback CPUs", "cpus", fallback.String())
	}
	return fallback
}

// pinning returns the CPUs and memory nodes to start a task with: its
// allocation, or the shared pool for a task without one (empty when the
// topology is unknown).
func (a *Agent) pinning(t api.Task) (cpus, mems string) {
	if t.Allocation != nil {
		return t.Allocation.CPUs, t.Allocation.MemNodes
	}
	if a.cpus.machine == nil {
		return "", ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cpus.pool.String(), ""
}

// refreshShared recomputes the shared pool and moves every running shared
// task that is not on it yet. It is called after each assignment set,
// when a task has started and when a task's runner ends.
func (a *Agent) refreshShared() {
	if a.cpus.machine == nil {
		return
	}
	a.cpus.refreshMu.Lock()
	defer a.cpus.refreshMu.Unlock()
	a.mu.Lock()
	pool := a.poolLocked()
	if !pool.Equal(a.cpus.pool) {
		a.log.Info("shared CPU pool changed", "from", a.cpus.pool.String(), "to", pool.String())
	}
	a.cpus.pool = pool
	rs := make([]*runner, 0, len(a.runners))
	for _, r := range a.runners {
		rs = append(rs, r)
	}
	a.mu.Unlock()
	for _, r := range rs {
		r.applyShared(pool.String())
	}
}

// exclusiveCPUs returns the CPUs an exclusive task holds while it has not
// ended.
func (r *runner) exclusiveCPUs() (topology.CPUSet, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.task.Allocation == nil || !r.task.Spec.Resources.Exclusive() || r.status.State.Terminal() {
		return topology.CPUSet{}, false
	}
	cpus, err := topology.Parse(r.task.Allocation.CPUs)
	if err != nil {
		return topology.CPUSet{}, false // never applied either
	}
	return cpus, true
}

// exclusiveHeld reports whether the runner's task is exclusive (whatever
// its state), with its CPUs.
func (r *runner) exclusiveHeld() (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.task.Allocation == nil || !r.task.Spec.Resources.Exclusive() {
		return "", false
	}
	return r.task.Allocation.CPUs, true
}

// applyShared moves a running shared task to pool, unless it is there
// already or its driver cannot move it.
func (r *runner) applyShared(pool string) {
	r.mu.Lock()
	h, applied, shared := r.handle, r.cpuSet, r.task.Allocation == nil
	ended := r.status.State.Terminal()
	r.mu.Unlock()
	if !shared || h == nil || ended || applied == pool {
		return
	}
	up, ok := h.(driver.CPUSetUpdater)
	if !ok {
		r.setCPUSet(pool) // nothing to do for this driver; do not ask again
		return
	}
	err := up.UpdateCPUSet(pool, "")
	switch {
	case err == nil:
		r.log.Info("moved to the shared CPU pool", "cpus", pool)
		r.setCPUSet(pool)
	case errors.Is(err, driver.ErrInvalid):
		r.log.Warn("cannot move the task to the shared CPU pool", "cpus", pool, "err", err)
		r.setCPUSet(pool) // it will not work next time either
	default:
		// Gone or failing for now: the next refresh tries again.
		r.log.Debug("moving the task to the shared CPU pool failed", "cpus", pool, "err", err)
	}
}

func (r *runner) setCPUSet(cpus string) {
	r.mu.Lock()
	r.cpuSet = cpus
	r.mu.Unlock()
}

// cpuCount is the number of CPUs of a list, or 0 if it is empty or does
// not parse.
func cpuCount(list string) int {
	set, err := topology.Parse(list)
	if err != nil {
		return 0
	}
	return set.Len()
}

// gomaxprocs sets GOMAXPROCS in env to the number of CPUs a pinned task
// runs on, unless the task's spec sets it.
func gomaxprocs(env map[string]string, spec api.TaskSpec, cpus string) {
	if _, set := spec.Env["GOMAXPROCS"]; set {
		return
	}
	if n := cpuCount(cpus); n > 0 {
		env["GOMAXPROCS"] = strconv.Itoa(n)
	}
}
