package topology

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/berth-project/berth/api"
)

// Allocation errors. Each is wrapped with the numbers that explain it, for
// the reason of a pending task.
var (
	// ErrInvalidRequest is a request for fewer than one CPU or with an
	// unknown policy.
	ErrInvalidRequest = errors.New("topology: invalid CPU request")
	// ErrNotEnoughCPUs means fewer CPUs are free than requested.
	ErrNotEnoughCPUs = errors.New("topology: not enough free CPUs")
	// ErrNoSingleNUMA means that under policy require-single-numa no NUMA
	// node has enough free CPUs.
	ErrNoSingleNUMA = errors.New("topology: no single NUMA node has enough free CPUs")
	// ErrUnknownCPUs means reserved CPUs that the node does not have.
	ErrUnknownCPUs = errors.New("topology: CPUs do not exist on this node")
)

// Request asks for whole CPUs of one's own.
type Request struct {
	// CPUs is the number of CPUs, at least 1.
	CPUs int
	// Policy is "" or api.TopologyPrefer (prefer alignment) or
	// api.TopologyRequireSingleNUMA (refuse CPUs from several NUMA nodes).
	Policy string
}

// Allocation is the result of Allocate.
type Allocation struct {
	// CPUs are the chosen CPUs.
	CPUs CPUSet
	// MemNodes are the NUMA nodes of those CPUs.
	MemNodes CPUSet
}

// API returns a as the api type stored with a task.
func (a Allocation) API() api.CPUAllocation {
	return api.CPUAllocation{CPUs: a.CPUs.String(), MemNodes: a.MemNodes.String()}
}

// Allocate chooses req.CPUs whole CPUs of t from the free ones: online, not
// reserved and not taken. It is a pure function of its arguments. See
// Machine.Allocate for the preferences; build a Machine once to allocate
// many times on one topology.
func Allocate(t api.Topology, reserved, taken CPUSet, req Request) (Allocation, error) {
	m, err := NewMachine(t)
	if err != nil {
		return Allocation{}, err
	}
	return m.Allocate(reserved, taken, req)
}

// CheckReserved returns an error wrapping ErrUnknownCPUs when reserved names
// CPUs the machine does not have (online or offline).
func (m *Machine) CheckReserved(reserved CPUSet) error {
	if extra := reserved.Difference(m.online).Difference(m.offline); !extra.IsEmpty() {
		return fmt.Errorf("%w: reserved CPUs %s (the node has %s)", ErrUnknownCPUs, extra,
			m.online.Union(m.offline))
	}
	return nil
}

// score ranks a candidate allocation: lower is better, field by field, in
// order of importance.
type score struct {
	// notOneCore is 0 when all CPUs are SMT siblings of one core.
	notOneCore int
	// partial counts the cores the allocation uses but does not own whole
	// (the task shares them with others): whole cores before split cores.
	partial int
	// notL3, notNUMA and notSocket are 0 when the CPUs lie in one L3
	// group, NUMA node and socket.
	notL3, notNUMA, notSocket int
	// touched counts the cores used; fewer is better among equals (a
	// 2-thread core beats two 1-thread cores whose siblings are offline).
	touched int
	// frag counts the cores left with free CPUs after taking some of them:
	// taking the last free thread of a core beats breaking a free core.
	frag int
}

func (s score) compare(o score) int {
	return cmp.Or(
		cmp.Compare(s.notOneCore, o.notOneCore),
		cmp.Compare(s.partial, o.partial),
		cmp.Compare(s.notL3, o.notL3),
		cmp.Compare(s.notNUMA, o.notNUMA),
		cmp.Compare(s.notSocket, o.notSocket),
		cmp.Compare(s.touched, o.touched),
		cmp.Compare(s.frag, o.frag),
	)
}

// take is a number of free CPUs taken from one core, lowest first.
type take struct{ core, n int }

type candidate struct {
	takes []take
	score score
	cpus  []int // ascending; the last tie-breaker
}

// Allocate chooses req.CPUs whole CPUs from the free ones: online, not
// reserved and not taken (taken CPUs that are not online are ignored). Among
// the possible choices it prefers, in order:
//
//  1. CPUs that are SMT siblings of one core (possible when the request is
//     no larger than a core);
//  2. whole cores over cores shared with other holders;
//  3. one L3 group; 4. one NUMA node; 5. one socket;
//  6. fewer cores; 7. taking the last free threads of cores already in use
//     over breaking up free cores;
//
// and among equal choices the lowest CPU ids, so the result is
// deterministic. The search is greedy within each single core and each
// intersection of an L3 group, a NUMA node and a socket; tests check it
// against an exhaustive search on small machines with up to two threads per
// core. With more threads per core the greedy packing may touch one core
// more than needed.
//
// Errors wrap ErrInvalidRequest, ErrUnknownCPUs (reserved CPUs the machine
// does not have), ErrNotEnoughCPUs (saying how many are free) or, under
// api.TopologyRequireSingleNUMA, ErrNoSingleNUMA (saying how many the
// emptiest NUMA node has free).
func (m *Machine) Allocate(reserved, taken CPUSet, req Request) (Allocation, error) {
	if req.CPUs < 1 {
		return Allocation{}, fmt.Errorf("%w: want at least 1 CPU, got %d", ErrInvalidRequest, req.CPUs)
	}
	single := false
	switch req.Policy {
	case "", api.TopologyPrefer:
	case api.TopologyRequireSingleNUMA:
		single = true
	default:
		return Allocation{}, fmt.Errorf("%w: unknown topology policy %q: want %q or %q",
			ErrInvalidRequest, clip(req.Policy), api.TopologyPrefer, api.TopologyRequireSingleNUMA)
	}
	if err := m.CheckReserved(reserved); err != nil {
		return Allocation{}, err
	}
	free := m.online.Difference(reserved).Difference(taken)
	n := req.CPUs
	if nf := free.Len(); nf < n {
		return Allocation{}, fmt.Errorf("%w: want %d, %d free (%d online, %d reserved, %d taken)",
			ErrNotEnoughCPUs, n, nf, m.online.Len(), reserved.Intersect(m.online).Len(),
			taken.Intersect(m.online).Difference(reserved).Len())
	}
	freeOf := make([][]int, len(m.cores))
	for i, c := range m.cores {
		for _, id := range c.cpus {
			if free.Contains(id) {
				freeOf[i] = append(freeOf[i], id)
			}
		}
	}

	var best *candidate
	consider := func(takes []take) {
		c := m.candidate(takes, freeOf)
		if best == nil || better(c, best) {
			best = c
		}
	}
	// A request that fits in one core gets one core: the first preference
	// trumps all others, so no wider domain needs a look.
	for i := range m.cores {
		if len(freeOf[i]) >= n {
			consider([]take{{i, n}})
		}
	}
	if best == nil {
		for _, d := range m.domains {
			if single && !d.oneNUMA {
				continue
			}
			if takes := greedy(d.cores, m.cores, freeOf, n); takes != nil {
				consider(takes)
			}
		}
	}
	if best == nil {
		// Only require-single-numa gets here: some CPUs are free, but not
		// enough in any one node.
		most, at := 0, -1
		for _, g := range m.numa {
			if k := g.cpus.Intersect(free).Len(); at < 0 || k > most {
				most, at = k, g.id
			}
		}
		return Allocation{}, fmt.Errorf("%w: want %d, the most free in one node is %d (numa:%d)",
			ErrNoSingleNUMA, n, most, at)
	}
	cpus := NewCPUSet(best.cpus...)
	return Allocation{CPUs: cpus, MemNodes: m.memNodes(cpus)}, nil
}

func better(a, b *candidate) bool {
	if c := a.score.compare(b.score); c != 0 {
		return c < 0
	}
	return slices.Compare(a.cpus, b.cpus) < 0
}

// candidate scores takes.
func (m *Machine) candidate(takes []take, freeOf [][]int) *candidate {
	c := &candidate{takes: takes}
	first := m.cores[takes[0].core]
	c.score.touched = len(takes)
	if len(takes) > 1 {
		c.score.notOneCore = 1
	}
	for _, t := range takes {
		k := m.cores[t.core]
		if t.n < len(k.cpus) {
			c.score.partial++
		}
		if t.n < len(freeOf[t.core]) {
			c.score.frag++
		}
		if k.l3 != first.l3 {
			c.score.notL3 = 1
		}
		if k.numa != first.numa {
			c.score.notNUMA = 1
		}
		if k.socket != first.socket {
			c.score.notSocket = 1
		}
		c.cpus = append(c.cpus, freeOf[t.core][:t.n]...)
	}
	slices.Sort(c.cpus)
	return c
}

// greedy picks n free CPUs from the cores of one domain (ascending by
// lowest CPU) or returns nil if the domain has fewer free. It takes whole
// free cores, largest first; then all the free CPUs of cores others hold
// part of, largest first; and splits at most one core for the rest, the one
// with the fewest free CPUs that suffice.
func greedy(dom []int, cores []core, freeOf [][]int, n int) []take {
	total := 0
	for _, i := range dom {
		total += len(freeOf[i])
	}
	if total < n {
		return nil
	}
	var whole, part []int
	for _, i := range dom {
		switch f := len(freeOf[i]); {
		case f == 0:
		case f == len(cores[i].cpus):
			whole = append(whole, i)
		default:
			part = append(part, i)
		}
	}
	byFree := func(a, b int) int { return len(freeOf[b]) - len(freeOf[a]) }
	slices.SortStableFunc(whole, byFree)
	slices.SortStableFunc(part, byFree)

	var takes []take
	used := map[int]bool{}
	r := n
	for _, list := range [][]int{whole, part} {
		for _, i := range list {
			if f := len(freeOf[i]); f <= r {
				takes = append(takes, take{i, f})
				used[i] = true
				r -= f
			}
		}
	}
	if r == 0 {
		return takes
	}
	// Every unused core with free CPUs has more than r: split the one with
	// the fewest, a core already in part use before a whole one, then the
	// lowest.
	split := -1
	for _, list := range [][]int{part, whole} {
		for _, i := range list {
			if used[i] {
				continue
			}
			if split < 0 || len(freeOf[i]) < len(freeOf[split]) {
				split = i
			}
		}
	}
	return append(takes, take{split, r})
}
