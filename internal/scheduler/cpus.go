package scheduler

import (
	"errors"
	"strconv"
	"strings"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/topology"
)

// CPU sets. Only tasks that need one — exclusive CPUs or a per-unit pin —
// touch this file: an ordinary task never parses a topology, so the fast
// path stays as it was.
//
// On each node Berth tracks two sets: taken, the CPUs any placed task is
// pinned to (its unit's or its exclusive CPUs), and excl, the CPUs held by
// exclusive tasks. An exclusive task needs CPUs that are in neither and not
// reserved; a per-unit task that is not exclusive may share its unit with
// other pinned or shared tasks, but never with an exclusive one.

// nodeTopo is what placement knows about one node's CPUs during a call.
type nodeTopo struct {
	// m is the node's machine, nil when the node has no usable topology;
	// bad then says why, as a verb phrase after the node ("has no CPU
	// topology").
	m        *topology.Machine
	bad      string
	reserved topology.CPUSet
	taken    topology.CPUSet
	excl     topology.CPUSet
	// numa are the CPUs of each NUMA node, for explanations; built on first
	// use.
	numa []topology.CPUSet

	// How many CPUs are free for exclusive use, in all and in the NUMA
	// node with the most free, valid while the node's version is freeVer.
	freeSet  bool
	freeVer  uint32
	free     int
	numaFree int

	// The last exclusive allocation tried on the node, valid while the
	// node's version and the demand are the same.
	cacheSet bool
	cacheVer uint32
	cacheD   *demand
	alloc    topology.Allocation
	allocErr error
}

// machineEntry is a Machine built once per distinct topology in a call.
type machineEntry struct {
	m   *topology.Machine
	err error
}

// needsCPUSet reports whether a pending task needs CPU-set placement.
func needsCPUSet(t *api.Task) bool {
	return t.Unit != "" || t.Spec.Resources.Exclusive()
}

// exclusiveCPUs is the number of whole CPUs an exclusive task asks for: its
// CPU count rounded up, at least 1 (validation makes it whole already).
func exclusiveCPUs(r api.Resources) int {
	n := int(milliCPUs(r.CPUs)+999) / 1000
	return max(n, 1)
}

// topoOf returns node n's CPU state, building it on first use.
func (s *scheduler) topoOf(n int32) *nodeTopo {
	if s.topo == nil {
		s.topo = make([]*nodeTopo, len(s.nodes))
	}
	nt := s.topo[n]
	if nt == nil {
		nt = &nodeTopo{}
		s.topo[n] = nt
	}
	if nt.m != nil || nt.bad != "" {
		return nt
	}
	node := s.api[n]
	if node.Topology == nil {
		nt.bad = "has no CPU topology"
		return nt
	}
	if s.machines == nil {
		s.machines = map[string]machineEntry{}
	}
	key := topoKey(node.Topology)
	e, ok := s.machines[key]
	if !ok {
		e.m, e.err = topology.NewMachine(*node.Topology)
		s.machines[key] = e
	}
	if e.err != nil {
		nt.bad = "has an invalid CPU topology"
		return nt
	}
	reserved, err := topology.Parse(node.ReservedCPUs)
	if err == nil {
		err = e.m.CheckReserved(reserved)
	}
	if err != nil {
		nt.bad = "has invalid reserved CPUs " + strconv.Quote(node.ReservedCPUs)
		return nt
	}
	nt.m, nt.reserved = e.m, reserved
	return nt
}

// topoKey is a text form of t that equal topologies share.
func topoKey(t *api.Topology) string {
	var b strings.Builder
	b.WriteString(t.Online)
	b.WriteByte('|')
	b.WriteString(t.Offline)
	for _, x := range t.Sockets {
		b.WriteString("|s")
		b.WriteString(strconv.Itoa(x.ID))
		b.WriteByte(':')
		b.WriteString(x.CPUs)
	}
	for _, x := range t.NUMANodes {
		b.WriteString("|n")
		b.WriteString(strconv.Itoa(x.ID))
		b.WriteByte(':')
		b.WriteString(x.CPUs)
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(int64(x.Memory), 10))
	}
	for _, x := range t.L3Groups {
		b.WriteString("|l")
		b.WriteString(strconv.Itoa(x.ID))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(x.Level))
		b.WriteByte(':')
		b.WriteString(x.CPUs)
	}
	for _, x := range t.Cores {
		b.WriteString("|c")
		for _, v := range []int{x.ID, x.Socket, x.NUMA, x.L3} {
			b.WriteString(strconv.Itoa(v))
			b.WriteByte(':')
		}
		b.WriteString(x.CPUs)
	}
	return b.String()
}

// hold records a snapshot task's allocation on its node. An allocation that
// does not parse holds nothing (it cannot have been applied either).
func (s *scheduler) hold(n int32, t *api.Task) {
	cpus, err := topology.Parse(t.Allocation.CPUs)
	if err != nil || cpus.IsEmpty() {
		return
	}
	nt := s.topoOf(n)
	nt.taken = nt.taken.Union(cpus)
	if t.Spec.Resources.Exclusive() {
		nt.excl = nt.excl.Union(cpus)
	}
}

// allocate chooses exclusive CPUs on node n for demand d, or says why it
// cannot. The result is cached until the node takes another task.
func (s *scheduler) allocate(n int32, d *demand) (topology.Allocation, error) {
	nt := s.topoOf(n)
	if nt.m == nil {
		return topology.Allocation{}, errNoTopology
	}
	ver := s.nodes[n].ver
	if nt.cacheSet && nt.cacheVer == ver && nt.cacheD == d {
		return nt.alloc, nt.allocErr
	}
	nt.alloc, nt.allocErr = nt.m.Allocate(nt.reserved, nt.taken, topology.Request{CPUs: d.excl, Policy: d.policy})
	nt.cacheSet, nt.cacheVer, nt.cacheD = true, ver, d
	return nt.alloc, nt.allocErr
}

// errNoTopology is allocate's error on a node without a usable topology;
// the node's nodeTopo.bad says more.
var errNoTopology = errors.New("scheduler: no usable CPU topology")

// lacksExclusive reports whether node n cannot give demand d its exclusive
// CPUs now. It counts instead of allocating: Machine.Allocate succeeds
// exactly when enough CPUs are free (under require-single-numa: in one NUMA
// node), and counting is what keeps a scan over many nodes cheap.
func (s *scheduler) lacksExclusive(d *demand, n int32) bool {
	if d.excl == 0 {
		return false
	}
	return s.topoOf(n).m == nil || s.freeExclusive(n, d) < d.excl
}

// freeExclusive returns how many CPUs of node n an exclusive demand could
// use: all free ones, or the most free in one NUMA node under
// require-single-numa.
func (s *scheduler) freeExclusive(n int32, d *demand) int {
	nt := s.topoOf(n)
	if nt.m == nil {
		return 0
	}
	if ver := s.nodes[n].ver; !nt.freeSet || nt.freeVer != ver {
		free := nt.m.Online().Difference(nt.reserved).Difference(nt.taken)
		if nt.numa == nil {
			for _, g := range s.api[n].Topology.NUMANodes {
				cpus, _ := topology.Parse(g.CPUs) // valid: NewMachine checked it
				nt.numa = append(nt.numa, cpus)
			}
		}
		most := 0
		for _, cpus := range nt.numa {
			most = max(most, cpus.Intersect(free).Len())
		}
		nt.freeSet, nt.freeVer, nt.free, nt.numaFree = true, ver, free.Len(), most
	}
	if d.policy == api.TopologyRequireSingleNUMA {
		return nt.numaFree
	}
	return nt.free
}

// exclusiveWhat names what an exclusive demand lacks, for reasons.
func exclusiveWhat(d *demand) string {
	if d.policy == api.TopologyRequireSingleNUMA {
		return "exclusive CPUs in one NUMA node"
	}
	return "exclusive CPUs"
}

// pinnedExclusiveReason says why pinned node n cannot give d its CPUs, or
// "" if it can.
func (s *scheduler) pinnedExclusiveReason(d *demand, n int32) string {
	if nt := s.topoOf(n); nt.m == nil {
		return nt.bad
	}
	if _, err := s.allocate(n, d); err == nil {
		return ""
	} else if !s.lacksExclusive(d, n) {
		return "cannot allocate exclusive CPUs: " + err.Error() // an invalid request
	}
	return "lacks " + exclusiveWhat(d) + " (want " + strconv.Itoa(d.excl) + ", free " + strconv.Itoa(s.freeExclusive(n, d)) + ")"
}

// unitAllocation returns the CPUs a per-unit task on node n runs on: the
// unit's CPUs that are not reserved, and its memory node. It returns a
// reason instead when the node has no such unit or the unit's CPUs are
// held by others (by an exclusive task; by any pinned task when d is
// exclusive itself).
func (s *scheduler) unitAllocation(n int32, unit string, d *demand) (topology.Allocation, string) {
	nt := s.topoOf(n)
	if nt.m == nil {
		return topology.Allocation{}, nt.bad
	}
	kind, _, _ := strings.Cut(unit, ":")
	units, err := nt.m.Units(kind)
	if err != nil {
		return topology.Allocation{}, "has no unit " + unit + ": " + err.Error()
	}
	for _, u := range units {
		if u.ID != unit {
			continue
		}
		cpus := u.CPUs.Difference(nt.reserved)
		if cpus.IsEmpty() {
			return topology.Allocation{}, "reserves all CPUs of unit " + unit + " (" + u.CPUs.String() + ")"
		}
		held, by := nt.excl, "exclusively by another task"
		if d.exclusive {
			held, by = nt.taken, "by other pinned tasks"
		}
		if both := cpus.Intersect(held); !both.IsEmpty() {
			return topology.Allocation{}, "has CPUs " + both.String() + " of unit " + unit + " held " + by
		}
		return topology.Allocation{CPUs: cpus, MemNodes: u.MemNodes}, ""
	}
	return topology.Allocation{}, "has no unit " + unit
}

// takeCPUs records a placed task's allocation on node n.
func (s *scheduler) takeCPUs(n int32, a topology.Allocation, exclusive bool) {
	nt := s.topoOf(n)
	nt.taken = nt.taken.Union(a.CPUs)
	if exclusive {
		nt.excl = nt.excl.Union(a.CPUs)
	}
}

// apiAllocation converts an allocation for an Assignment.
func apiAllocation(a topology.Allocation) *api.CPUAllocation {
	out := a.API()
	return &out
}
