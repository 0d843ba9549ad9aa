package topology

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/berth-project/berth/api"
)

// ErrInvalidTopology is wrapped by the errors of NewMachine (and so of every
// function that takes an api.Topology) when the topology's lists do not parse
// or its units do not partition the online CPUs.
var ErrInvalidTopology = errors.New("topology: invalid topology")

// ErrUnknownUnit is wrapped by the error of Units for a kind it does not
// know; the message names the valid kinds.
var ErrUnknownUnit = errors.New("topology: unknown unit")

// unitKinds are the valid unit kinds, smallest first.
var unitKinds = []string{api.UnitCore, api.UnitL3, api.UnitNUMA, api.UnitSocket}

// Machine is a validated api.Topology with its CPU lists parsed, ready for
// many calls of Allocate, Units, Shared and Render. Build it once per
// topology with NewMachine; it is read-only and safe for concurrent use.
type Machine struct {
	topo    api.Topology
	online  CPUSet
	offline CPUSet
	sockets []group
	numa    []group
	l3      []group
	// cores are sorted by their lowest CPU.
	cores []core
	// domains are the distinct non-empty intersections of an L3 group or
	// none, a NUMA node or none, and a socket or none: the places Allocate
	// tries to fit a request into.
	domains []domain
}

// group is a socket, NUMA node or L3 group.
type group struct {
	id   int
	cpus CPUSet
	// level and memory are set for L3 groups and NUMA nodes respectively.
	level  int
	memory api.ByteSize
}

type core struct {
	id   int
	cpus []int // ascending
	set  CPUSet
	// socket, numa and l3 index Machine.sockets, .numa and .l3.
	socket, numa, l3 int
}

type domain struct {
	cores []int // indexes of Machine.cores, ascending
	// oneNUMA is set when all the domain's cores are in one NUMA node.
	oneNUMA bool
}

// NewMachine validates t and prepares it for allocation. The error wraps
// ErrInvalidTopology and says which list or unit is wrong.
func NewMachine(t api.Topology) (*Machine, error) {
	m := &Machine{topo: t}
	var err error
	if m.online, err = Parse(t.Online); err != nil {
		return nil, invalidf("online: %v", err)
	}
	if m.online.IsEmpty() {
		return nil, invalidf("no online CPUs")
	}
	if m.offline, err = Parse(t.Offline); err != nil {
		return nil, invalidf("offline: %v", err)
	}
	if both := m.online.Intersect(m.offline); !both.IsEmpty() {
		return nil, invalidf("CPUs %s are both online and offline", both)
	}
	type kind struct {
		name     string
		dst      *[]group
		n        int
		get      func(i int) group
		allowCPU bool // whether a unit may have no CPUs
		cpus     func(i int) string
	}
	kinds := []kind{
		{"socket", &m.sockets, len(t.Sockets), func(i int) group { return group{id: t.Sockets[i].ID} }, false,
			func(i int) string { return t.Sockets[i].CPUs }},
		{"numa", &m.numa, len(t.NUMANodes), func(i int) group {
			return group{id: t.NUMANodes[i].ID, memory: t.NUMANodes[i].Memory}
		}, true, func(i int) string { return t.NUMANodes[i].CPUs }},
		{"l3", &m.l3, len(t.L3Groups), func(i int) group {
			return group{id: t.L3Groups[i].ID, level: t.L3Groups[i].Level}
		}, false, func(i int) string { return t.L3Groups[i].CPUs }},
	}
	for _, k := range kinds {
		seen := map[int]bool{}
		var all CPUSet
		for i := range k.n {
			g := k.get(i)
			if g.id < 0 || g.id > MaxCPUID || seen[g.id] {
				return nil, invalidf("%s %d: id is out of range 0-%d or repeated", k.name, g.id, MaxCPUID)
			}
			seen[g.id] = true
			if g.cpus, err = Parse(k.cpus(i)); err != nil {
				return nil, invalidf("%s %d: %v", k.name, g.id, err)
			}
			if err := checkPart(k.name, g.id, g.cpus, all, m.online, k.allowCPU); err != nil {
				return nil, err
			}
			all = all.Union(g.cpus)
			*k.dst = append(*k.dst, g)
		}
		if missing := m.online.Difference(all); !missing.IsEmpty() {
			return nil, invalidf("online CPUs %s are in no %s", missing, k.name)
		}
		slices.SortFunc(*k.dst, func(a, b group) int { return a.id - b.id })
	}
	if err := m.buildCores(); err != nil {
		return nil, err
	}
	m.buildDomains()
	return m, nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidTopology, fmt.Sprintf(format, args...))
}

// checkPart checks that a unit's CPUs are online and overlap no earlier
// unit of its kind.
func checkPart(kind string, id int, cpus, before, online CPUSet, allowEmpty bool) error {
	if cpus.IsEmpty() && !allowEmpty {
		return invalidf("%s %d has no CPUs", kind, id)
	}
	if extra := cpus.Difference(online); !extra.IsEmpty() {
		return invalidf("%s %d: CPUs %s are not online", kind, id, extra)
	}
	if both := cpus.Intersect(before); !both.IsEmpty() {
		return invalidf("%s %d: CPUs %s are also in another %s", kind, id, both, kind)
	}
	return nil
}

func indexOf(gs []group, id int) int {
	i, ok := slices.BinarySearchFunc(gs, id, func(g group, id int) int { return g.id - id })
	if !ok {
		return -1
	}
	return i
}

func (m *Machine) buildCores() error {
	seen := map[int]bool{}
	var all CPUSet
	for _, c := range m.topo.Cores {
		if c.ID < 0 || seen[c.ID] {
			return invalidf("core %d: id is negative or repeated", c.ID)
		}
		seen[c.ID] = true
		set, err := Parse(c.CPUs)
		if err != nil {
			return invalidf("core %d: %v", c.ID, err)
		}
		if err := checkPart("core", c.ID, set, all, m.online, false); err != nil {
			return err
		}
		all = all.Union(set)
		k := core{id: c.ID, cpus: set.List(), set: set,
			socket: indexOf(m.sockets, c.Socket), numa: indexOf(m.numa, c.NUMA), l3: indexOf(m.l3, c.L3)}
		for _, ref := range []struct {
			kind string
			id   int
			idx  int
			gs   []group
		}{{"socket", c.Socket, k.socket, m.sockets}, {"numa", c.NUMA, k.numa, m.numa}, {"l3", c.L3, k.l3, m.l3}} {
			if ref.idx < 0 {
				return invalidf("core %d: %s %d does not exist", c.ID, ref.kind, ref.id)
			}
			if !set.IsSubsetOf(ref.gs[ref.idx].cpus) {
				return invalidf("core %d: CPUs %s are not all in %s %d", c.ID, set, ref.kind, ref.id)
			}
		}
		m.cores = append(m.cores, k)
	}
	if missing := m.online.Difference(all); !missing.IsEmpty() {
		return invalidf("online CPUs %s are in no core", missing)
	}
	slices.SortFunc(m.cores, func(a, b core) int { return a.cpus[0] - b.cpus[0] })
	return nil
}

func (m *Machine) buildDomains() {
	seen := map[string]bool{}
	for s := -1; s < len(m.sockets); s++ {
		for n := -1; n < len(m.numa); n++ {
			for l := -1; l < len(m.l3); l++ {
				var d domain
				for i, c := range m.cores {
					if (s < 0 || c.socket == s) && (n < 0 || c.numa == n) && (l < 0 || c.l3 == l) {
						d.cores = append(d.cores, i)
					}
				}
				if len(d.cores) == 0 {
					continue
				}
				key := fmt.Sprint(d.cores)
				if seen[key] {
					continue
				}
				seen[key] = true
				d.oneNUMA = true
				for _, i := range d.cores {
					if m.cores[i].numa != m.cores[d.cores[0]].numa {
						d.oneNUMA = false
					}
				}
				m.domains = append(m.domains, d)
			}
		}
	}
}

// Online returns the online CPUs.
func (m *Machine) Online() CPUSet { return m.online }

// Offline returns the offline CPUs.
func (m *Machine) Offline() CPUSet { return m.offline }

// ThreadsPerCore returns the largest number of online threads of any core.
func (m *Machine) ThreadsPerCore() int {
	n := 0
	for _, c := range m.cores {
		n = max(n, len(c.cpus))
	}
	return n
}

// Unit is one hardware unit of a node — a core, L3 group, NUMA node or
// socket — as a per-unit service sees it: one replica is pinned to each.
type Unit struct {
	// ID is the unit's kind and id, such as "core:3" or "numa:1".
	ID string
	// CPUs are the unit's online CPUs.
	CPUs CPUSet
	// MemNodes is the NUMA node the unit lies in, when it lies in exactly
	// one; empty for a unit that spans NUMA nodes.
	MemNodes CPUSet
}

// Allocation returns u as a task's CPU allocation.
func (u Unit) Allocation() api.CPUAllocation {
	return api.CPUAllocation{CPUs: u.CPUs.String(), MemNodes: u.MemNodes.String()}
}

// Units returns the units of kind (core, l3, numa or socket) of t, in order
// of their ids. A NUMA node without CPUs is not a unit. An unknown kind is an
// error wrapping ErrUnknownUnit.
func Units(t api.Topology, kind string) ([]Unit, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	m, err := NewMachine(t)
	if err != nil {
		return nil, err
	}
	return m.Units(kind)
}

func checkKind(kind string) error {
	if !slices.Contains(unitKinds, kind) {
		return fmt.Errorf("%w %q: want one of %s", ErrUnknownUnit, clip(kind), strings.Join(unitKinds, ", "))
	}
	return nil
}

// Units is the function Units on m's topology.
func (m *Machine) Units(kind string) ([]Unit, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	var out []Unit
	add := func(id int, cpus CPUSet) {
		if cpus.IsEmpty() {
			return
		}
		out = append(out, Unit{ID: fmt.Sprintf("%s:%d", kind, id), CPUs: cpus, MemNodes: m.memNodeOf(cpus)})
	}
	switch kind {
	case api.UnitCore:
		byID := slices.Clone(m.cores)
		slices.SortFunc(byID, func(a, b core) int { return a.id - b.id })
		for _, c := range byID {
			add(c.id, c.set)
		}
	case api.UnitL3:
		for _, g := range m.l3 {
			add(g.id, g.cpus)
		}
	case api.UnitNUMA:
		for _, g := range m.numa {
			add(g.id, g.cpus)
		}
	case api.UnitSocket:
		for _, g := range m.sockets {
			add(g.id, g.cpus)
		}
	}
	return out, nil
}

// memNodeOf returns the one NUMA node that holds all of cpus, or the empty
// set when they span nodes.
func (m *Machine) memNodeOf(cpus CPUSet) CPUSet {
	for _, g := range m.numa {
		if cpus.IsSubsetOf(g.cpus) {
			return NewCPUSet(g.id)
		}
	}
	return CPUSet{}
}

// memNodes returns the NUMA nodes that hold any of cpus.
func (m *Machine) memNodes(cpus CPUSet) CPUSet {
	var ids []int
	for _, g := range m.numa {
		if g.cpus.Overlaps(cpus) {
			ids = append(ids, g.id)
		}
	}
	return NewCPUSet(ids...)
}

// Shared returns the CPUs that tasks without exclusive CPUs share: the online
// CPUs that are neither reserved for the system nor held exclusively.
func (m *Machine) Shared(reserved, exclusive CPUSet) CPUSet {
	return m.online.Difference(reserved).Difference(exclusive)
}

// Shared returns the shared pool of t: online CPUs minus reserved and
// exclusive ones. It fails only when t is invalid.
func Shared(t api.Topology, reserved, exclusive CPUSet) (CPUSet, error) {
	m, err := NewMachine(t)
	if err != nil {
		return CPUSet{}, err
	}
	return m.Shared(reserved, exclusive), nil
}
