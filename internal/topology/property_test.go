package topology

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/berth-project/berth/api"
	"pgregory.net/rapid"
)

// TestAllocatorChurn drives the allocator as the scheduler will: random
// allocations and frees on each fixture, with a random reserved set, and
// checks every result.
func TestAllocatorChurn(t *testing.T) {
	for _, f := range fixtures() {
		m, err := NewMachine(discoverFixture(t, f.name))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(f.name, rapid.MakeCheck(func(t *rapid.T) { churn(t, m) }))
	}
}

func churn(t *rapid.T, m *Machine) {
	online := m.Online()
	all := online.Union(m.Offline()).List()
	var res []int
	for _, id := range all {
		if rapid.IntRange(0, 9).Draw(t, "reserve") == 0 {
			res = append(res, id)
		}
	}
	reserved := NewCPUSet(res...)
	usable := online.Difference(reserved)

	// Empty machine: a request no larger than a core gets one core's SMT
	// siblings.
	if tpc := m.ThreadsPerCore(); reserved.IsEmpty() {
		n := rapid.IntRange(1, tpc).Draw(t, "first n")
		a, err := m.Allocate(reserved, CPUSet{}, Request{CPUs: n})
		if err != nil {
			t.Fatalf("Allocate(%d) on an empty machine: %v", n, err)
		}
		if !inOneCore(m, a.CPUs) {
			t.Fatalf("Allocate(%d) on an empty machine = %s, not the siblings of one core", n, a.CPUs)
		}
	}

	held := map[int]CPUSet{} // allocation number → CPUs
	next := 0
	takenNow := func() CPUSet {
		var s CPUSet
		for _, c := range held {
			s = s.Union(c)
		}
		return s
	}
	steps := rapid.IntRange(1, 40).Draw(t, "steps")
	for range steps {
		if len(held) > 0 && rapid.IntRange(0, 2).Draw(t, "free?") == 0 {
			keys := slices.Sorted(maps.Keys(held))
			k := rapid.SampledFrom(keys).Draw(t, "free")
			delete(held, k)
			continue
		}
		taken := takenNow()
		free := usable.Difference(taken)
		n := rapid.OneOf(rapid.IntRange(1, 4), rapid.IntRange(1, usable.Len()+2)).Draw(t, "n")
		policy := rapid.SampledFrom([]string{"", api.TopologyPrefer, api.TopologyRequireSingleNUMA}).Draw(t, "policy")
		a, err := m.Allocate(reserved, taken, Request{CPUs: n, Policy: policy})

		mostInNUMA := 0
		for _, g := range m.numa {
			mostInNUMA = max(mostInNUMA, g.cpus.Intersect(free).Len())
		}
		switch {
		case n > free.Len():
			if !errors.Is(err, ErrNotEnoughCPUs) {
				t.Fatalf("Allocate(%d) with %d free = %v, %v; want ErrNotEnoughCPUs", n, free.Len(), a.CPUs, err)
			}
			continue
		case policy == api.TopologyRequireSingleNUMA && n > mostInNUMA:
			if !errors.Is(err, ErrNoSingleNUMA) {
				t.Fatalf("Allocate(%d, single NUMA) with at most %d free in a node = %v, %v", n, mostInNUMA, a.CPUs, err)
			}
			continue
		case err != nil:
			t.Fatalf("Allocate(%d, %q) with %d free: %v", n, policy, free.Len(), err)
		}

		if a.CPUs.Len() != n {
			t.Fatalf("Allocate(%d) gave %d CPUs: %s", n, a.CPUs.Len(), a.CPUs)
		}
		if !a.CPUs.IsSubsetOf(free) {
			t.Fatalf("Allocate gave %s; not free: %s (reserved %s, taken %s, offline %s)",
				a.CPUs, a.CPUs.Difference(free), reserved, taken, m.Offline())
		}
		var inMem CPUSet
		for _, g := range m.numa {
			if a.MemNodes.Contains(g.id) {
				inMem = inMem.Union(g.cpus)
			} else if g.cpus.Overlaps(a.CPUs) {
				t.Fatalf("Allocate gave %s with mems %s, but numa %d has some of the CPUs", a.CPUs, a.MemNodes, g.id)
			}
		}
		if !a.CPUs.IsSubsetOf(inMem) {
			t.Fatalf("Allocate gave %s outside its mems %s", a.CPUs, a.MemNodes)
		}
		if policy == api.TopologyRequireSingleNUMA && a.MemNodes.Len() != 1 {
			t.Fatalf("require-single-numa gave %s on NUMA nodes %s", a.CPUs, a.MemNodes)
		}
		coreFits := false
		for _, c := range m.cores {
			coreFits = coreFits || c.set.Intersect(free).Len() >= n
		}
		if coreFits && !inOneCore(m, a.CPUs) {
			t.Fatalf("Allocate(%d) = %s spans cores, but one core had %d free", n, a.CPUs, n)
		}
		shared := m.Shared(reserved, taken.Union(a.CPUs))
		if shared.Overlaps(a.CPUs) || shared.Overlaps(reserved) || shared.Overlaps(taken) {
			t.Fatalf("shared pool %s overlaps an exclusive or reserved CPU", shared)
		}
		if !shared.Union(a.CPUs).Union(taken).Equal(usable) {
			t.Fatalf("shared %s + exclusive %s + %s is not all usable CPUs %s", shared, a.CPUs, taken, usable)
		}
		held[next] = a.CPUs
		next++
	}

	// Free everything: the whole usable set is one allocation again.
	if usable.IsEmpty() {
		return
	}
	a, err := m.Allocate(reserved, CPUSet{}, Request{CPUs: usable.Len()})
	if err != nil || !a.CPUs.Equal(usable) {
		t.Fatalf("after freeing all, Allocate(all %d) = %s, %v; want %s", usable.Len(), a.CPUs, err, usable)
	}
	if !m.Shared(reserved, CPUSet{}).Equal(usable) {
		t.Fatalf("after freeing all, shared = %s, want %s", m.Shared(reserved, CPUSet{}), usable)
	}
}

func inOneCore(m *Machine, cpus CPUSet) bool {
	for _, c := range m.cores {
		if cpus.IsSubsetOf(c.set) {
			return true
		}
	}
	return false
}

// TestAllocateMatchesUnits: a request the size of a unit on an empty
// machine gets the first such unit.
func TestAllocateMatchesUnits(t *testing.T) {
	for _, f := range fixtures() {
		m, err := NewMachine(discoverFixture(t, f.name))
		if err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{api.UnitCore, api.UnitL3, api.UnitNUMA, api.UnitSocket} {
			units, err := m.Units(kind)
			if err != nil {
				t.Fatal(err)
			}
			u := units[0]
			a, err := m.Allocate(CPUSet{}, CPUSet{}, Request{CPUs: u.CPUs.Len()})
			if err != nil {
				t.Fatalf("%s: Allocate(%d): %v", f.name, u.CPUs.Len(), err)
			}
			if !a.CPUs.Equal(u.CPUs) {
				t.Errorf("%s: Allocate(%d) = %s, want the first %s %s", f.name, u.CPUs.Len(), a.CPUs, kind, u.CPUs)
			}
		}
	}
}
