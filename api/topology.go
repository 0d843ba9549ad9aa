package api

// Units a per-unit service can be spread over, from the smallest to the
// largest. Each names a kind of hardware unit of a node's Topology.
const (
	UnitCore   = "core"
	UnitL3     = "l3"
	UnitNUMA   = "numa"
	UnitSocket = "socket"
)

// UnitKinds lists the valid values of ServiceSpec.Unit, smallest first.
var UnitKinds = []string{UnitCore, UnitL3, UnitNUMA, UnitSocket}

// CPU policies (Resources.CPUPolicy).
const (
	// CPUPolicyShared runs a task on the CPUs no exclusive task holds.
	CPUPolicyShared = "shared"
	// CPUPolicyExclusive gives a task whole CPUs of its own.
	CPUPolicyExclusive = "exclusive"
)

// Exclusive reports whether r asks for exclusive CPUs.
func (r Resources) Exclusive() bool { return r.CPUPolicy == CPUPolicyExclusive }

// Topology policies for exclusive CPUs. Both prefer SMT siblings of one core,
// whole cores, one L3 group, one NUMA node and one socket, in that order;
// TopologyRequireSingleNUMA also refuses an allocation that spans NUMA nodes.
const (
	TopologyPrefer            = "prefer"
	TopologyRequireSingleNUMA = "require-single-numa"
)

// Topology is the CPU and memory layout of a node, discovered by its agent
// from sysfs. Every CPU list is in the kernel's list format ("0-15,32-47") and
// names online CPUs only; offline CPUs appear in Offline and nowhere else.
// Sockets, NUMA nodes, L3 groups and cores each partition the online CPUs.
type Topology struct {
	// Online lists the CPUs the kernel schedules on.
	Online string `json:"online"`
	// Offline lists CPUs that exist but are switched off.
	Offline string `json:"offline,omitempty"`
	// Sockets are the physical packages, by id.
	Sockets []CPUSocket `json:"sockets"`
	// NUMANodes are the memory nodes, by id. A node may have memory and no
	// CPUs.
	NUMANodes []NUMANode `json:"numa_nodes"`
	// L3Groups are the groups of CPUs that share a last-level cache (L3 on
	// most x86 machines; one group per CCX on AMD EPYC).
	L3Groups []CacheGroup `json:"l3_groups"`
	// Cores are the physical cores, in order of their lowest CPU.
	Cores []CPUCore `json:"cores"`
}

// CPUSocket is one physical package.
type CPUSocket struct {
	// ID is the kernel's physical package id.
	ID int `json:"id"`
	// CPUs lists the socket's online CPUs.
	CPUs string `json:"cpus"`
}

// NUMANode is one memory node.
type NUMANode struct {
	// ID is the kernel's node number.
	ID int `json:"id"`
	// CPUs lists the node's online CPUs; empty for a memory-only node.
	CPUs string `json:"cpus"`
	// Memory is the node's total memory; 0 when the kernel does not say.
	Memory ByteSize `json:"memory"`
}

// CacheGroup is a set of CPUs that share one last-level cache.
type CacheGroup struct {
	// ID numbers the groups in order of their lowest CPU, from 0.
	ID int `json:"id"`
	// Level is the cache level (3 for an L3); 0 when the kernel gave no cache
	// information and the group is a whole socket.
	Level int `json:"level"`
	// CPUs lists the group's online CPUs.
	CPUs string `json:"cpus"`
}

// CPUCore is one physical core and its online hardware threads.
type CPUCore struct {
	// ID numbers the cores in order of their lowest CPU, from 0. It is unique
	// on the node, unlike the kernel's core_id, which repeats per socket.
	ID int `json:"id"`
	// Socket is the id of the core's CPUSocket.
	Socket int `json:"socket"`
	// NUMA is the id of the core's NUMANode.
	NUMA int `json:"numa"`
	// L3 is the id of the core's CacheGroup.
	L3 int `json:"l3"`
	// CPUs lists the core's online hardware threads (SMT siblings).
	CPUs string `json:"cpus"`
}

// CPUAllocation is the set of CPUs a task is pinned to and the memory nodes
// it may allocate from. The agent writes them to cpuset.cpus and cpuset.mems.
type CPUAllocation struct {
	// CPUs lists the task's CPUs, such as "4-5,68-69".
	CPUs string `json:"cpus"`
	// MemNodes lists the NUMA nodes of those CPUs, such as "0".
	MemNodes string `json:"mem_nodes,omitempty"`
}
