package topology

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

// synth builds a topology without sysfs: sockets × coresPerSocket cores of
// threads threads each, numbered as Linux does on x86 (thread t of core c is
// CPU t×cores+c). Each socket's cores are split evenly into numaPerSocket
// NUMA nodes and, independently, into l3PerSocket L3 groups, so L3 groups
// nest in NUMA nodes or the other way round.
func synth(sockets, numaPerSocket, l3PerSocket, coresPerSocket, threads int) api.Topology {
	total := sockets * coresPerSocket
	var t api.Topology
	numaCPUs := make([][]int, sockets*numaPerSocket)
	l3CPUs := make([][]int, sockets*l3PerSocket)
	sockCPUs := make([][]int, sockets)
	for c := range total {
		s, cs := c/coresPerSocket, c%coresPerSocket
		n := s*numaPerSocket + cs*numaPerSocket/coresPerSocket
		l := s*l3PerSocket + cs*l3PerSocket/coresPerSocket
		var cpus []int
		for th := range threads {
			cpus = append(cpus, th*total+c)
		}
		numaCPUs[n] = append(numaCPUs[n], cpus...)
		l3CPUs[l] = append(l3CPUs[l], cpus...)
		sockCPUs[s] = append(sockCPUs[s], cpus...)
		t.Cores = append(t.Cores, api.CPUCore{ID: c, Socket: s, NUMA: n, L3: l, CPUs: NewCPUSet(cpus...).String()})
	}
	t.Online = span(0, total*threads-1).String()
	for i, cpus := range sockCPUs {
		t.Sockets = append(t.Sockets, api.CPUSocket{ID: i, CPUs: NewCPUSet(cpus...).String()})
	}
	for i, cpus := range numaCPUs {
		t.NUMANodes = append(t.NUMANodes, api.NUMANode{ID: i, CPUs: NewCPUSet(cpus...).String(), Memory: 1 << 30})
	}
	for i, cpus := range l3CPUs {
		t.L3Groups = append(t.L3Groups, api.CacheGroup{ID: i, Level: 3, CPUs: NewCPUSet(cpus...).String()})
	}
	return t
}

func TestSynthIsValid(t *testing.T) {
	for _, topo := range []api.Topology{synth(2, 2, 1, 4, 2), synth(1, 2, 4, 8, 2), synth(1, 1, 1, 1, 1)} {
		if _, err := NewMachine(topo); err != nil {
			t.Errorf("synth: %v", err)
		}
	}
}

func TestNewMachineRejects(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *api.Topology)
		msg    string
	}{
		{"bad online", func(t *api.Topology) { t.Online = "0-" }, "online"},
		{"no online", func(t *api.Topology) { t.Online = "" }, "no online CPUs"},
		{"online and offline", func(t *api.Topology) { t.Offline = "3" }, "both online and offline"},
		{"socket CPU not online", func(t *api.Topology) { t.Sockets[0].CPUs = "0-3,9" }, "not online"},
		{"online CPU in no socket", func(t *api.Topology) { t.Sockets[0].CPUs = "0-2" }, "in no socket"},
		{"repeated NUMA id", func(t *api.Topology) { t.NUMANodes[1].ID = 0 }, "repeated"},
		{"huge NUMA id", func(t *api.Topology) { t.NUMANodes[1].ID = MaxCPUID + 1 }, "out of range"},
		{"overlapping L3 groups", func(t *api.Topology) { t.L3Groups[0].CPUs = "0-7" }, "also in another l3"},
		{"empty L3 group", func(t *api.Topology) { t.L3Groups = append(t.L3Groups, api.CacheGroup{ID: 9}) }, "no CPUs"},
		{"core in a missing NUMA node", func(t *api.Topology) { t.Cores[0].NUMA = 7 }, "numa 7 does not exist"},
		{"core outside its NUMA node", func(t *api.Topology) { t.Cores[0].NUMA = 1 }, "not all in numa 1"},
		{"overlapping cores", func(t *api.Topology) { t.Cores[1].CPUs = "0-1" }, "also in another core"},
		{"online CPU in no core", func(t *api.Topology) { t.Cores = t.Cores[1:] }, "in no core"},
		{"bad core list", func(t *api.Topology) { t.Cores[2].CPUs = "x" }, "core 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo := synth(1, 2, 2, 4, 2) // CPUs 0-7; core c = {c, c+4}
			tt.change(&topo)
			_, err := NewMachine(topo)
			if !errors.Is(err, ErrInvalidTopology) {
				t.Fatalf("err = %v, want ErrInvalidTopology", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.msg)
			}
		})
	}
}

func TestUnits(t *testing.T) {
	xeon := discoverFixture(t, "xeon-2s-snc2")
	epyc := discoverFixture(t, "epyc-nps4")
	off := discoverFixture(t, "offline-8")
	memOnly := synth(1, 1, 1, 2, 1)
	memOnly.NUMANodes = append(memOnly.NUMANodes, api.NUMANode{ID: 1, Memory: 1 << 30})

	tests := []struct {
		topo  api.Topology
		kind  string
		count int
		// first and last units as "id cpus mems"
		first, last string
	}{
		{xeon, api.UnitCore, 64, "core:0 0,64 0", "core:63 63,127 3"},
		{xeon, api.UnitL3, 2, "l3:0 0-31,64-95 ", "l3:1 32-63,96-127 "},
		{xeon, api.UnitNUMA, 4, "numa:0 0-15,64-79 0", "numa:3 48-63,112-127 3"},
		{xeon, api.UnitSocket, 2, "socket:0 0-31,64-95 ", "socket:1 32-63,96-127 "},
		{epyc, api.UnitL3, 8, "l3:0 0-3,32-35 0", "l3:7 28-31,60-63 3"},
		{epyc, api.UnitNUMA, 4, "numa:0 0-7,32-39 0", "numa:3 24-31,56-63 3"},
		{epyc, api.UnitSocket, 1, "socket:0 0-63 ", "socket:0 0-63 "},
		{off, api.UnitCore, 4, "core:0 0 0", "core:3 3,7 0"},
		{off, api.UnitSocket, 1, "socket:0 0-3,6-7 0", "socket:0 0-3,6-7 0"},
		{memOnly, api.UnitNUMA, 1, "numa:0 0-1 0", "numa:0 0-1 0"},
	}
	for _, tt := range tests {
		units, err := Units(tt.topo, tt.kind)
		if err != nil {
			t.Errorf("Units(%s): %v", tt.kind, err)
			continue
		}
		show := func(u Unit) string { return fmt.Sprintf("%s %s %s", u.ID, u.CPUs, u.MemNodes) }
		if len(units) != tt.count || show(units[0]) != tt.first || show(units[len(units)-1]) != tt.last {
			t.Errorf("Units(%s) = %d units, first %q, last %q; want %d, %q, %q", tt.kind,
				len(units), show(units[0]), show(units[len(units)-1]), tt.count, tt.first, tt.last)
		}
		var all CPUSet
		for _, u := range units {
			if all.Overlaps(u.CPUs) {
				t.Errorf("Units(%s): %s overlaps an earlier unit", tt.kind, u.ID)
			}
			all = all.Union(u.CPUs)
		}
		if all.String() != tt.topo.Online {
			t.Errorf("Units(%s) cover %s, want all online CPUs %s", tt.kind, all, tt.topo.Online)
		}
	}
	if a := (Unit{CPUs: MustParse("3,67"), MemNodes: NewCPUSet(0)}).Allocation(); a != (api.CPUAllocation{CPUs: "3,67", MemNodes: "0"}) {
		t.Errorf("Unit.Allocation = %+v", a)
	}
}

func TestUnitsErrors(t *testing.T) {
	topo := synth(1, 1, 1, 2, 1)
	for _, kind := range []string{"", "cores", "NUMA", "thread"} {
		_, err := Units(topo, kind)
		if !errors.Is(err, ErrUnknownUnit) {
			t.Errorf("Units(%q) = %v, want ErrUnknownUnit", kind, err)
			continue
		}
		if !strings.Contains(err.Error(), "core, l3, numa, socket") {
			t.Errorf("Units(%q) error %q does not name the valid kinds", kind, err)
		}
	}
	topo.Online = "0-5"
	if _, err := Units(topo, api.UnitCore); !errors.Is(err, ErrInvalidTopology) {
		t.Errorf("Units on an invalid topology = %v, want ErrInvalidTopology", err)
	}
}

func TestShared(t *testing.T) {
	off := discoverFixture(t, "offline-8") // online 0-3,6-7
	got, err := Shared(off, MustParse("0"), MustParse("2,6"))
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != "1,3,7" {
		t.Errorf("Shared = %s, want 1,3,7", got)
	}
	if _, err := Shared(api.Topology{}, CPUSet{}, CPUSet{}); !errors.Is(err, ErrInvalidTopology) {
		t.Errorf("Shared of an empty topology = %v", err)
	}
}
