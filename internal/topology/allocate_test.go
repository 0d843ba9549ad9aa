package topology

import (
	"errors"
	"math/bits"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
	"pgregory.net/rapid"
)

func TestAllocate(t *testing.T) {
	xeon := discoverFixture(t, "xeon-2s-snc2") // core c = {c, c+64}; NUMA n = 16n..16n+15 (+64)
	epyc := discoverFixture(t, "epyc-nps4")    // core c = {c, c+32}; L3 = 4 cores; NUMA = 2 L3s
	off := discoverFixture(t, "offline-8")     // cores {0} {1} {2,6} {3,7}
	bare := discoverFixture(t, "bare-2s")      // cores {0,4} {2,6} in socket 0, {1,5} {3,7} in socket 1
	tests := []struct {
		name            string
		topo            api.Topology
		reserved, taken string
		n               int
		policy          string
		cpus, mems      string
	}{
		{"one CPU: the lowest", xeon, "", "", 1, "", "0", "0"},
		{"two CPUs: SMT siblings", xeon, "", "", 2, "", "0,64", "0"},
		{"one CPU: the sibling of a held one, not a fresh core", xeon, "", "0", 1, "", "64", "0"},
		{"two CPUs: a whole core, not the half-free one", xeon, "", "0", 2, "", "1,65", "0"},
		{"reserved CPUs are skipped", xeon, "0,64", "", 2, "", "1,65", "0"},
		{"four CPUs: two whole cores", xeon, "", "", 4, "", "0-1,64-65", "0"},
		{"a whole NUMA node", xeon, "", "", 32, "", "0-15,64-79", "0"},
		{"one more than a NUMA node: one L3 and socket, split one core", xeon, "", "", 33, "", "0-16,64-79", "0-1"},
		{"a whole socket", xeon, "", "", 64, "", "0-31,64-95", "0-1"},
		{"whole cores in the next NUMA node over split ones here", xeon, "", "0-13,64-76", 6, "", "16-18,80-82", "1"},
		{"require-single-numa fits", xeon, "", "0-13,64-77", 6, api.TopologyRequireSingleNUMA, "16-18,80-82", "1"},
		{"everything", xeon, "", "", 128, api.TopologyPrefer, "0-127", "0-3"},

		{"one CCX", epyc, "", "", 8, "", "0-3,32-35", "0"},
		{"a free CCX over a CCX with a held CPU", epyc, "", "0", 8, "", "4-7,36-39", "0"},
		{"one NUMA node: two CCXs", epyc, "", "", 16, "", "0-7,32-39", "0"},
		{"three CPUs: a whole core and one thread", epyc, "", "", 3, "", "0-1,32", "0"},
		{"three whole cores of another CCX", epyc, "", "0-2,32-34", 6, "", "4-6,36-38", "0"},

		{"a one-thread core is a whole core", off, "", "", 1, "", "0", "0"},
		{"two CPUs: the first two-thread core", off, "", "", 2, "", "2,6", "0"},
		{"three CPUs: a core and a one-thread core", off, "", "", 3, "", "0,2,6", "0"},
		{"an offline CPU may be reserved", off, "4", "", 1, "", "0", "0"},
		{"taken offline CPUs are ignored", off, "", "5", 6, "", "0-3,6-7", "0"},

		{"one socket over lower ids", bare, "", "", 4, "", "0,2,4,6", "0"},
		{"no NUMA in sysfs: node 0", bare, "", "", 8, api.TopologyRequireSingleNUMA, "0-7", "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Allocate(tt.topo, MustParse(tt.reserved), MustParse(tt.taken), Request{CPUs: tt.n, Policy: tt.policy})
			if err != nil {
				t.Fatal(err)
			}
			if got := a.API(); got != (api.CPUAllocation{CPUs: tt.cpus, MemNodes: tt.mems}) {
				t.Errorf("Allocate(%d) = %+v, want cpus %s mems %s", tt.n, got, tt.cpus, tt.mems)
			}
		})
	}
}

func TestAllocateErrors(t *testing.T) {
	xeon := discoverFixture(t, "xeon-2s-snc2")
	tests := []struct {
		name            string
		reserved, taken string
		req             Request
		want            error
		msg             string
	}{
		{"zero CPUs", "", "", Request{CPUs: 0}, ErrInvalidRequest, "at least 1"},
		{"unknown policy", "", "", Request{CPUs: 1, Policy: "single-numa"}, ErrInvalidRequest,
			`unknown topology policy "single-numa"`},
		{"reserved CPU the node lacks", "126-129", "", Request{CPUs: 1}, ErrUnknownCPUs, "reserved CPUs 128-129"},
		{"more than the machine", "", "", Request{CPUs: 129}, ErrNotEnoughCPUs, "want 129, 128 free"},
		{"more than free", "0-1", "2-99", Request{CPUs: 30}, ErrNotEnoughCPUs,
			"want 30, 28 free (128 online, 2 reserved, 98 taken)"},
		{"no single NUMA node", "", "", Request{CPUs: 33, Policy: api.TopologyRequireSingleNUMA}, ErrNoSingleNUMA,
			"want 33, the most free in one node is 32 (numa:0)"},
		{"no single NUMA node, names the emptiest", "", "0-40", Request{CPUs: 33, Policy: api.TopologyRequireSingleNUMA},
			ErrNoSingleNUMA, "the most free in one node is 32 (numa:3)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Allocate(xeon, MustParse(tt.reserved), MustParse(tt.taken), tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want it to contain %q", err, tt.msg)
			}
		})
	}
	if _, err := Allocate(api.Topology{}, CPUSet{}, CPUSet{}, Request{CPUs: 1}); !errors.Is(err, ErrInvalidTopology) {
		t.Errorf("Allocate on an empty topology = %v, want ErrInvalidTopology", err)
	}
}

// refScore is the preference order of Machine.Allocate, written again from
// its documentation and computed on any set of CPUs: lower is better.
func refScore(m *Machine, free, s CPUSet) [7]int {
	var sc [7]int
	l3s, numas, socks := map[int]bool{}, map[int]bool{}, map[int]bool{}
	touched := 0
	for _, c := range m.cores {
		in := c.set.Intersect(s)
		if in.IsEmpty() {
			continue
		}
		touched++
		l3s[c.l3], numas[c.numa], socks[c.socket] = true, true, true
		if !c.set.IsSubsetOf(s) {
			sc[1]++ // partial
		}
		if !c.set.Intersect(free).IsSubsetOf(s) {
			sc[6]++ // frag
		}
	}
	if touched > 1 {
		sc[0] = 1
	}
	for i, n := range []int{len(l3s), len(numas), len(socks)} {
		if n > 1 {
			sc[2+i] = 1
		}
	}
	sc[5] = touched
	return sc
}

func less(a, b [7]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// TestAllocateIsBest compares Allocate with a search of every subset on
// small machines: no other choice of CPUs is preferred to Allocate's.
func TestAllocateIsBest(t *testing.T) {
	machines := map[string]api.Topology{
		"2 sockets, SNC (L3 over 2 NUMA nodes)": synth(2, 2, 1, 4, 2),
		"EPYC-like (2 L3s per NUMA node)":       synth(1, 2, 4, 8, 2),
		"offline-8":                             discoverFixture(t, "offline-8"),
		"bare-2s":                               discoverFixture(t, "bare-2s"),
	}
	for name, topo := range machines {
		m, err := NewMachine(topo)
		if err != nil {
			t.Fatal(err)
		}
		online := m.Online().List()
		if len(online) > 16 {
			t.Fatalf("%s: %d CPUs is too many to search", name, len(online))
		}
		t.Run(name, rapid.MakeCheck(func(t *rapid.T) {
			var taken []int
			for _, id := range online {
				if rapid.IntRange(0, 2).Draw(t, "taken") == 0 {
					taken = append(taken, id)
				}
			}
			free := m.Online().Difference(NewCPUSet(taken...))
			if free.IsEmpty() {
				return
			}
			n := rapid.IntRange(1, free.Len()).Draw(t, "n")
			single := rapid.Bool().Draw(t, "require-single-numa")
			req := Request{CPUs: n}
			if single {
				req.Policy = api.TopologyRequireSingleNUMA
			}
			got, err := m.Allocate(CPUSet{}, NewCPUSet(taken...), req)

			var best *[7]int
			var bestSet CPUSet
			freeIDs := free.List()
			for mask := uint32(0); mask < 1<<len(freeIDs); mask++ {
				if bits.OnesCount32(mask) != n {
					continue
				}
				var ids []int
				for i, id := range freeIDs {
					if mask&(1<<i) != 0 {
						ids = append(ids, id)
					}
				}
				s := NewCPUSet(ids...)
				sc := refScore(m, free, s)
				if single && sc[3] != 0 {
					continue
				}
				if best == nil || less(sc, *best) {
					best, bestSet = &sc, s
				}
			}
			if best == nil {
				if !errors.Is(err, ErrNoSingleNUMA) {
					t.Fatalf("no choice fits one NUMA node, but Allocate = %v, %v", got.CPUs, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Allocate: %v; but %s fits", err, bestSet)
			}
			if sc := refScore(m, free, got.CPUs); less(*best, sc) {
				t.Fatalf("Allocate(%d) = %s scoring %v; %s scores better: %v", n, got.CPUs, sc, bestSet, *best)
			}
		}))
	}
}

func TestAllocateDeterministic(t *testing.T) {
	m, err := NewMachine(discoverFixture(t, "epyc-nps4"))
	if err != nil {
		t.Fatal(err)
	}
	taken := MustParse("0,5,9-12,33,40-47")
	first, err := m.Allocate(NewCPUSet(63), taken, Request{CPUs: 7})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := m.Allocate(NewCPUSet(63), taken, Request{CPUs: 7})
		if err != nil || !again.CPUs.Equal(first.CPUs) || !again.MemNodes.Equal(first.MemNodes) {
			t.Fatalf("Allocate gave %v then %v (%v)", first, again, err)
		}
	}
}
