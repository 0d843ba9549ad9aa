package process

import (
	"github.com/berth-project/berth/internal/cgroups"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/topology"
	"golang.org/x/sys/unix"
)

// taskLimits returns the limits a task's spec gives its cgroups, and
// whether any of them limits the task. allowed is the set of CPUs a task
// forked by the agent may run on without any limit (the agent's own
// affinity). A CPU set that covers all of them limits nothing: it is what
// the agent hands every task without a CPU allocation when no CPU is
// reserved or held by an exclusive task (the node's whole shared pool), and
// a task without cgroups runs on those same CPUs. Such a task must start
// where cgroups are unavailable, where a real limit (CPUs, memory, memory
// nodes, or a CPU set narrower than the machine) is refused. An empty
// allowed set (unknown) makes every CPU set a limit.
func taskLimits(spec driver.StartSpec, allowed topology.CPUSet) (lim cgroups.Limits, limited bool) {
	lim = cgroups.Limits{CPUs: spec.CPUs, MemoryBytes: spec.MemoryBytes, CPUSet: spec.CPUSet, MemNodes: spec.MemNodes}
	if lim.CPUs != 0 || lim.MemoryBytes != 0 || lim.MemNodes != "" {
		return lim, true
	}
	return lim, lim.CPUSet != "" && !wholeMachine(lim.CPUSet, allowed)
}

// wholeMachine reports whether the CPU list cpus holds every CPU of allowed
// (a non-empty set). A list that does not parse is not the whole machine.
func wholeMachine(cpus string, allowed topology.CPUSet) bool {
	set, err := topology.Parse(cpus)
	return err == nil && !allowed.IsEmpty() && allowed.IsSubsetOf(set)
}

// agentCPUs returns the CPUs the calling thread may run on, which a task
// forked from it inherits; empty if they cannot be read.
func agentCPUs() topology.CPUSet {
	var mask unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mask); err != nil {
		return topology.CPUSet{}
	}
	var ids []int
	for i := 0; i < len(mask)*64; i++ {
		if mask.IsSet(i) {
			ids = append(ids, i)
		}
	}
	return topology.NewCPUSet(ids...)
}
