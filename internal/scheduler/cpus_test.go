package scheduler

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/topology"
	"pgregory.net/rapid"
)

// machineTopo builds a topology of sockets × numaPer NUMA nodes (one L3
// each) × coresPer cores × threads. CPU ids run core by core, so core c
// holds CPUs c*threads to c*threads+threads-1.
func machineTopo(sockets, numaPer, coresPer, threads int) *api.Topology {
	t := &api.Topology{}
	cpuList := func(lo, n int) string {
		if n == 1 {
			return fmt.Sprint(lo)
		}
		return fmt.Sprintf("%d-%d", lo, lo+n-1)
	}
	core, numa := 0, 0
	for s := range sockets {
		perSocket := numaPer * coresPer * threads
		t.Sockets = append(t.Sockets, api.CPUSocket{ID: s, CPUs: cpuList(s*perSocket, perSocket)})
		for range numaPer {
			perNUMA := coresPer * threads
			lo := core * threads
			t.NUMANodes = append(t.NUMANodes, api.NUMANode{ID: numa, CPUs: cpuList(lo, perNUMA), Memory: 1 << 30})
			t.L3Groups = append(t.L3Groups, api.CacheGroup{ID: numa, Level: 3, CPUs: cpuList(lo, perNUMA)})
			for range coresPer {
				t.Cores = append(t.Cores, api.CPUCore{ID: core, Socket: s, NUMA: numa, L3: numa, CPUs: cpuList(core*threads, threads)})
				core++
			}
			numa++
		}
	}
	t.Online = cpuList(0, core*threads)
	return t
}

func withTopo(t *api.Topology, reserved string) func(*api.Node) {
	return func(n *api.Node) {
		n.Topology, n.ReservedCPUs = t, reserved
		m, err := topology.NewMachine(*t)
		if err != nil {
			panic(err)
		}
		n.Resources.CPUs = float64(m.Online().Len())
	}
}

func exclusive(cpus float64, policy string) func(*api.Task) {
	return func(t *api.Task) {
		t.Spec.Resources = api.Resources{CPUs: cpus, CPUPolicy: api.CPUPolicyExclusive, Topology: policy}
	}
}

func unit(node, u string) func(*api.Task) {
	return func(t *api.Task) { t.NodeID, t.Unit = node, u }
}

func allocated(cpus, mems string) func(*api.Task) {
	return func(t *api.Task) { t.Allocation = &api.CPUAllocation{CPUs: cpus, MemNodes: mems} }
}

func allocOf(t *testing.T, p Plan, id string) string {
	t.Helper()
	for _, a := range p.Assignments {
		if a.TaskID == id {
			if a.Allocation == nil {
				return ""
			}
			return a.Allocation.CPUs
		}
	}
	t.Fatalf("task %s not assigned: %+v", id, p)
	return ""
}

func reasonOf(t *testing.T, p Plan, id string) string {
	t.Helper()
	for _, u := range p.Unplaced {
		if u.TaskID == id {
			return u.Reason
		}
	}
	t.Fatalf("task %s placed, want it unplaced: %+v", id, p)
	return ""
}

func TestExclusiveCPUsAreDisjointAndSkipReserved(t *testing.T) {
	// 4 cores × 2 threads, CPU 0 reserved: 7 free CPUs.
	snap := Snapshot{Nodes: []api.Node{node("n1", withTopo(machineTopo(1, 1, 4, 2), "0"))}}
	pending := []api.Task{
		task("a", "web", 1, exclusive(2, "")),
		task("b", "web", 2, exclusive(2, "")),
		task("c", "web", 3, exclusive(2, "")),
		task("d", "web", 4, exclusive(2, "")),
		task("e", "other", 1, res(0.5, 0)), // shared: no allocation
	}
	p := Schedule(snap, pending)
	// Whole free cores first, lowest first: cores 1, 2, 3.
	if got := []string{allocOf(t, p, "a"), allocOf(t, p, "b"), allocOf(t, p, "c")}; !reflect.DeepEqual(got, []string{"2-3", "4-5", "6-7"}) {
		t.Fatalf("allocations %v", got)
	}
	if got := allocOf(t, p, "e"); got != "" {
		t.Fatalf("shared task got CPUs %q", got)
	}
	want := "no suitable node (1 node: 1 lacks exclusive CPUs (want 2, most free 1))"
	if got := reasonOf(t, p, "d"); got != want {
		t.Fatalf("reason %q, want %q", got, want)
	}
	for _, a := range p.Assignments {
		if a.Allocation != nil && a.Allocation.MemNodes != "0" {
			t.Fatalf("task %s mem nodes %q, want 0", a.TaskID, a.Allocation.MemNodes)
		}
	}
}

func TestExclusiveRespectsSnapshotAllocations(t *testing.T) {
	topo := machineTopo(1, 1, 2, 1) // 2 CPUs, like this machine
	snap := Snapshot{
		Nodes: []api.Node{node("n1", withTopo(topo, ""))},
		Tasks: []api.Task{
			running(task("old", "db", 1, exclusive(1, ""), allocated("1", "0")), "n1", nil),
			// A shared task with a stale allocation-free record holds nothing.
			running(task("sh", "web", 1), "n1", nil),
		},
	}
	p := Schedule(snap, []api.Task{task("new", "db", 2, exclusive(1, "")), task("big", "db2", 1, exclusive(3, ""))})
	if got := allocOf(t, p, "new"); got != "0" {
		t.Fatalf("allocation %q, want 0", got)
	}
	// "new" took CPU 0 earlier in the same plan.
	if got, want := reasonOf(t, p, "big"), "no suitable node (1 node: 1 lacks exclusive CPUs (want 3, most free 0))"; got != want {
		t.Fatalf("reason %q, want %q", got, want)
	}
	// Alone on the 2-CPU node, 3 exclusive CPUs still do not fit.
	p = Schedule(Snapshot{Nodes: snap.Nodes}, []api.Task{task("big", "db2", 1, exclusive(3, ""))})
	if got, want := reasonOf(t, p, "big"), "no suitable node (1 node: 1 lacks exclusive CPUs (want 3, most free 2))"; got != want {
		t.Fatalf("reason %q, want %q", got, want)
	}
}

func TestExclusiveNeedsTopology(t *testing.T) {
	snap := Snapshot{Nodes: []api.Node{
		node("n1"),
		node("n2", func(n *api.Node) { n.Topology = &api.Topology{Online: "0-1"} }), // invalid
		node("n3", withTopo(machineTopo(1, 1, 2, 1), "5")),                          // reserves a CPU it lacks
		node("n4", withTopo(machineTopo(1, 1, 2, 1), "")),
	}}
	p := Schedule(snap, []api.Task{task("a", "s", 1, exclusive(1, "")), task("b", "s", 2, exclusive(2, ""))})
	if got := allocOf(t, p, "a"); got == "" {
		t.Fatal("no allocation")
	}
	if a := p.Assignments[0]; a.NodeID != "n4" {
		t.Fatalf("placed on %s", a.NodeID)
	}
	want := "no suitable node (4 nodes: 3 have no usable CPU topology, 1 lacks exclusive CPUs (want 2, most free 1))"
	if got := reasonOf(t, p, "b"); got != want {
		t.Fatalf("reason %q\nwant   %q", got, want)
	}
	// Pinned (global) tasks say which.
	p = Schedule(snap, []api.Task{
		task("g1", "g", 0, exclusive(1, ""), onNode("n1")),
		task("g3", "g", 0, exclusive(1, ""), onNode("n3")),
		task("g4", "g", 0, exclusive(3, ""), onNode("n4")),
	})
	for id, want := range map[string]string{
		"g1": "node n1 has no CPU topology",
		"g3": `node n3 has invalid reserved CPUs "5"`,
		"g4": "node n4 lacks exclusive CPUs (want 3, free 2)",
	} {
		if got := reasonOf(t, p, id); got != want {
			t.Errorf("%s: reason %q, want %q", id, got, want)
		}
	}
}

func TestRequireSingleNUMA(t *testing.T) {
	// 2 NUMA nodes of 2 cores: 3 CPUs fit the machine but no NUMA node.
	snap := Snapshot{Nodes: []api.Node{node("n1", withTopo(machineTopo(1, 2, 2, 1), ""))}}
	p := Schedule(snap, []api.Task{
		task("a", "s", 1, exclusive(3, api.TopologyRequireSingleNUMA)),
		task("b", "t", 1, exclusive(3, api.TopologyPrefer)),
	})
	want := "no suitable node (1 node: 1 lacks exclusive CPUs in one NUMA node (want 3, most free 2))"
	if got := reasonOf(t, p, "a"); got != want {
		t.Fatalf("reason %q, want %q", got, want)
	}
	if got := allocOf(t, p, "b"); got != "0-2" {
		t.Fatalf("prefer: %q", got)
	}
	for _, a := range p.Assignments {
		if a.Allocation.MemNodes != "0-1" {
			t.Fatalf("mem nodes %q", a.Allocation.MemNodes)
		}
	}
}

func TestPerUnitAllocations(t *testing.T) {
	topo := machineTopo(1, 2, 2, 2) // 4 cores of 2 threads, 2 NUMA nodes
	nodes := []api.Node{node("n1", withTopo(topo, "0"))}
	snap := Snapshot{
		Nodes: nodes,
		Tasks: []api.Task{
			running(task("x", "db", 1, exclusive(2, ""), allocated("6-7", "1")), "n1", nil),
		},
	}
	// Services are placed in ID order: pu, then zex.
	p := Schedule(snap, []api.Task{
		task("c0", "pu", 1, unit("n1", "core:0")),
		task("c1", "pu", 2, unit("n1", "core:1")),
		task("c3", "pu", 4, unit("n1", "core:3")),
		task("c9", "pu", 10, unit("n1", "core:9")),
		task("e1", "zex", 2, unit("n1", "core:1"), exclusive(0, "")),
		task("e2", "zex", 3, unit("n1", "core:2"), exclusive(0, "")),
	})
	for id, want := range map[string]string{"c0": "1", "c1": "2-3", "e2": "4-5"} {
		if got := allocOf(t, p, id); got != want {
			t.Errorf("%s: allocation %q, want %q", id, got, want)
		}
	}
	for id, want := range map[string]string{
		"c3": "node n1 has CPUs 6-7 of unit core:3 held exclusively by another task",
		"c9": "node n1 has no unit core:9",
		// core:1 already runs a (shared) per-unit task of another service.
		"e1": "node n1 has CPUs 2-3 of unit core:1 held by other pinned tasks",
	} {
		if got := reasonOf(t, p, id); got != want {
			t.Errorf("%s: reason %q, want %q", id, got, want)
		}
	}
	for _, a := range p.Assignments {
		if a.Allocation.MemNodes != "0" && a.Allocation.MemNodes != "1" {
			t.Errorf("%s: mem nodes %q", a.TaskID, a.Allocation.MemNodes)
		}
	}
	// A NUMA unit gets the node's CPUs and memory; one an exclusive task
	// holds part of is refused.
	p = Schedule(snap, []api.Task{task("u0", "numa", 1, unit("n1", "numa:0")), task("u1", "numa", 2, unit("n1", "numa:1"))})
	if a := p.Assignments[0]; a.TaskID != "u0" || *a.Allocation != (api.CPUAllocation{CPUs: "1-3", MemNodes: "0"}) {
		t.Errorf("numa:0: %+v", p.Assignments)
	}
	if got, want := reasonOf(t, p, "u1"), "node n1 has CPUs 6-7 of unit numa:1 held exclusively by another task"; got != want {
		t.Errorf("numa:1: reason %q, want %q", got, want)
	}
	// An exclusive task that is not per-unit avoids every pinned CPU.
	p = Schedule(Snapshot{Nodes: nodes, Tasks: append(snap.Tasks,
		running(task("c0", "pu", 1, unit("n1", "core:0"), allocated("1", "0")), "n1", nil),
		running(task("c1", "pu", 2, unit("n1", "core:1"), allocated("2-3", "0")), "n1", nil))},
		[]api.Task{task("z", "z", 1, exclusive(2, "")), task("z2", "z", 2, exclusive(1, ""))})
	if got := allocOf(t, p, "z"); got != "4-5" {
		t.Errorf("z: %q", got)
	}
	if got, want := reasonOf(t, p, "z2"), "no suitable node (1 node: 1 lacks exclusive CPUs (want 1, most free 0))"; got != want {
		t.Errorf("z2: reason %q, want %q", got, want)
	}
	// Unit CPUs that are all reserved.
	p = Schedule(Snapshot{Nodes: []api.Node{node("n1", withTopo(machineTopo(1, 1, 2, 1), "0"))}},
		[]api.Task{task("r", "pu", 1, unit("n1", "core:0"))})
	if got, want := reasonOf(t, p, "r"), "node n1 reserves all CPUs of unit core:0 (0)"; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
}

// TestOneMachinePerTopology: identical nodes share one parsed Machine.
func TestOneMachinePerTopology(t *testing.T) {
	var snap Snapshot
	for i := range 10 {
		topo := machineTopo(1, 1, 4, 1)
		if i == 9 {
			topo = machineTopo(1, 1, 8, 1)
		}
		snap.Nodes = append(snap.Nodes, node(fmt.Sprintf("n%d", i), withTopo(topo, "")))
	}
	var pending []api.Task
	for i := range 20 {
		pending = append(pending, task(fmt.Sprintf("t%02d", i), "s", i+1, exclusive(1, "")))
	}
	s := &scheduler{services: map[string]*service{}, filters: map[string]*filter{}, demands: map[string]*demand{}}
	s.loadNodes(snap.Nodes)
	for n := range s.nodes {
		s.topoOf(int32(n))
	}
	if len(s.machines) != 2 {
		t.Fatalf("%d machines for 2 distinct topologies", len(s.machines))
	}
	if p := Schedule(snap, pending); len(p.Assignments) != 20 {
		t.Fatalf("%+v", p)
	}
}

// genTopoCluster draws nodes with small topologies (some without one, some
// with reserved CPUs), running tasks holding exclusive, per-unit or no
// CPUs, and pending tasks of every kind.
func genTopoCluster(t *rapid.T) (Snapshot, []api.Task) {
	var snap Snapshot
	nNodes := rapid.IntRange(1, 4).Draw(t, "nodes")
	for i := range nNodes {
		id := fmt.Sprintf("n%d", i)
		if rapid.IntRange(0, 5).Draw(t, "no topology") == 0 {
			snap.Nodes = append(snap.Nodes, node(id))
			continue
		}
		topo := machineTopo(rapid.IntRange(1, 2).Draw(t, "sockets"), rapid.IntRange(1, 2).Draw(t, "numa"),
			rapid.IntRange(1, 3).Draw(t, "cores"), rapid.IntRange(1, 2).Draw(t, "threads"))
		m, _ := topology.NewMachine(*topo)
		reserved := ""
		if rapid.Bool().Draw(t, "reserve") {
			reserved = fmt.Sprint(rapid.IntRange(0, m.Online().Len()-1).Draw(t, "reserved cpu"))
		}
		snap.Nodes = append(snap.Nodes, node(id, withTopo(topo, reserved),
			capacity(rapid.SampledFrom([]float64{0, 64}).Draw(t, "cap"), 0)))
	}
	unitsOf := func(n api.Node, kind string) []topology.Unit {
		if n.Topology == nil {
			return nil
		}
		us, _ := topology.Units(*n.Topology, kind)
		return us
	}
	// Running tasks: allocate exclusive ones for real so the snapshot is
	// consistent, as the scheduler would have made it.
	for i := range rapid.IntRange(0, 6).Draw(t, "running") {
		n := snap.Nodes[rapid.IntRange(0, nNodes-1).Draw(t, "node")]
		tk := running(task(fmt.Sprintf("r%d", i), "old", i+1), n.ID, nil)
		if n.Topology != nil && rapid.Bool().Draw(t, "exclusive") {
			p := Schedule(snap, []api.Task{task(tk.ID, "old", i+1, exclusive(float64(rapid.IntRange(1, 3).Draw(t, "cpus")), ""), onNode(n.ID))})
			if len(p.Assignments) == 1 {
				tk.Spec.Resources = api.Resources{CPUs: float64(1), CPUPolicy: api.CPUPolicyExclusive}
				tk.Allocation = p.Assignments[0].Allocation
			}
		}
		snap.Tasks = append(snap.Tasks, tk)
	}
	var pending []api.Task
	for i := range rapid.IntRange(0, 15).Draw(t, "pending") {
		id := fmt.Sprintf("t%02d", i)
		svc := rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "svc")
		var opts []func(*api.Task)
		switch rapid.IntRange(0, 3).Draw(t, "kind") {
		case 0: // shared
		case 1:
			opts = append(opts, exclusive(float64(rapid.IntRange(1, 4).Draw(t, "cpus")),
				rapid.SampledFrom([]string{"", api.TopologyPrefer, api.TopologyRequireSingleNUMA}).Draw(t, "policy")))
			if rapid.IntRange(0, 4).Draw(t, "global") == 0 {
				opts = append(opts, onNode(snap.Nodes[rapid.IntRange(0, nNodes-1).Draw(t, "node")].ID))
			}
		default: // per-unit, maybe exclusive
			n := snap.Nodes[rapid.IntRange(0, nNodes-1).Draw(t, "node")]
			kind := rapid.SampledFrom(api.UnitKinds).Draw(t, "unit kind")
			u := kind + ":0"
			if us := unitsOf(n, kind); len(us) > 0 {
				u = rapid.SampledFrom(us).Draw(t, "unit").ID
			}
			opts = append(opts, unit(n.ID, u))
			if rapid.Bool().Draw(t, "unit exclusive") {
				opts = append(opts, exclusive(0, ""))
			}
		}
		pending = append(pending, task(id, svc, i+1, opts...))
	}
	return snap, pending
}

// TestCPUSetInvariants: never one CPU to two exclusive tasks, never an
// exclusive CPU that is reserved or pinned by another task, never a
// per-unit task on an exclusive CPU, exclusive tasks get exactly the CPUs
// they asked for, and the plan is deterministic and complete.
func TestCPUSetInvariants(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		snap, pending := genTopoCluster(t)
		plan := Schedule(snap, pending)
		if again := Schedule(snap, pending); !reflect.DeepEqual(plan, again) {
			t.Fatalf("not deterministic")
		}
		if len(plan.Assignments)+len(plan.Unplaced) != len(pending) {
			t.Fatalf("%d pending, plan has %d+%d", len(pending), len(plan.Assignments), len(plan.Unplaced))
		}
		nodes := map[string]api.Node{}
		for _, n := range snap.Nodes {
			nodes[n.ID] = n
		}
		byID := map[string]api.Task{}
		for _, tk := range pending {
			byID[tk.ID] = tk
		}
		type hold struct {
			cpus      topology.CPUSet
			exclusive bool
			id        string
		}
		held := map[string][]hold{}
		for _, tk := range snap.Tasks {
			if tk.Allocation != nil {
				held[tk.NodeID] = append(held[tk.NodeID], hold{topology.MustParse(tk.Allocation.CPUs), tk.Spec.Resources.Exclusive(), tk.ID})
			}
		}
		for _, a := range plan.Assignments {
			tk := byID[a.TaskID]
			n := nodes[a.NodeID]
			needs := tk.Unit != "" || tk.Spec.Resources.Exclusive()
			if needs != (a.Allocation != nil) {
				t.Fatalf("task %s (unit %q, %+v) allocation %+v", tk.ID, tk.Unit, tk.Spec.Resources, a.Allocation)
			}
			if a.Allocation == nil {
				continue
			}
			cpus := topology.MustParse(a.Allocation.CPUs)
			if cpus.IsEmpty() {
				t.Fatalf("task %s got no CPUs", tk.ID)
			}
			m, err := topology.NewMachine(*n.Topology)
			if err != nil {
				t.Fatal(err)
			}
			if !cpus.IsSubsetOf(m.Online()) {
				t.Fatalf("task %s got CPUs %s the node lacks", tk.ID, cpus)
			}
			if reserved := topology.MustParse(n.ReservedCPUs); cpus.Overlaps(reserved) {
				t.Fatalf("task %s got reserved CPUs %s of %s", tk.ID, cpus, reserved)
			}
			excl := tk.Spec.Resources.Exclusive()
			if excl && tk.Unit == "" && cpus.Len() != exclusiveCPUs(tk.Spec.Resources) {
				t.Fatalf("task %s asked for %g CPUs, got %s", tk.ID, tk.Spec.Resources.CPUs, cpus)
			}
			if tk.Unit != "" {
				us, _ := m.Units(strings.SplitN(tk.Unit, ":", 2)[0])
				found := false
				for _, u := range us {
					found = found || (u.ID == tk.Unit && cpus.IsSubsetOf(u.CPUs))
				}
				if !found {
					t.Fatalf("task %s on unit %s got CPUs %s outside it", tk.ID, tk.Unit, cpus)
				}
			}
			for _, h := range held[a.NodeID] {
				if (excl || h.exclusive) && cpus.Overlaps(h.cpus) {
					t.Fatalf("task %s (exclusive %v) CPUs %s overlap %s (exclusive %v) CPUs %s", tk.ID, excl, cpus, h.id, h.exclusive, h.cpus)
				}
			}
			held[a.NodeID] = append(held[a.NodeID], hold{cpus, excl, tk.ID})
		}
		for _, u := range plan.Unplaced {
			if u.Reason == "" {
				t.Fatalf("task %s unplaced without a reason", u.TaskID)
			}
		}
	})
}

// TestOrdinaryTasksIgnoreTopology: a plan without CPU-set tasks is the same
// whatever topologies and allocations the nodes and snapshot carry.
func TestOrdinaryTasksIgnoreTopology(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		snap, pending := genCluster(t)
		want := Schedule(snap, pending)
		topo := machineTopo(1, 1, 2, 1)
		for i := range snap.Nodes {
			snap.Nodes[i].Topology = topo
		}
		for i := range snap.Tasks {
			snap.Tasks[i].Allocation = &api.CPUAllocation{CPUs: "0"}
		}
		if got := Schedule(snap, pending); !reflect.DeepEqual(got, want) {
			t.Fatalf("topology changed the plan:\n got %+v\nwant %+v", got, want)
		}
	})
}

// TestCountingMatchesAllocate: the scan's cheap check (enough free CPUs, in
// one NUMA node under require-single-numa) says yes exactly when
// Machine.Allocate finds CPUs.
func TestCountingMatchesAllocate(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		topo := machineTopo(rapid.IntRange(1, 2).Draw(t, "sockets"), rapid.IntRange(1, 3).Draw(t, "numa"),
			rapid.IntRange(1, 3).Draw(t, "cores"), rapid.IntRange(1, 3).Draw(t, "threads"))
		m, err := topology.NewMachine(*topo)
		if err != nil {
			t.Fatal(err)
		}
		online := m.Online().List()
		pick := func(label string) topology.CPUSet {
			var ids []int
			for _, id := range online {
				if rapid.IntRange(0, 3).Draw(t, label) == 0 {
					ids = append(ids, id)
				}
			}
			return topology.NewCPUSet(ids...)
		}
		reserved, taken := pick("reserved"), pick("taken")
		nd := node("n1", withTopo(topo, reserved.String()))
		s := &scheduler{services: map[string]*service{}, filters: map[string]*filter{}, demands: map[string]*demand{}}
		s.loadNodes([]api.Node{nd})
		nt := s.topoOf(0)
		nt.taken = taken
		d := &demand{exclusive: true, excl: rapid.IntRange(1, len(online)+1).Draw(t, "want"),
			policy: rapid.SampledFrom([]string{"", api.TopologyPrefer, api.TopologyRequireSingleNUMA}).Draw(t, "policy")}
		_, allocErr := m.Allocate(reserved, taken, topology.Request{CPUs: d.excl, Policy: d.policy})
		if lacks := s.lacksExclusive(d, 0); lacks != (allocErr != nil) {
			t.Fatalf("lacksExclusive %v, Allocate error %v (free %d, want %d, policy %q)", lacks, allocErr, s.freeExclusive(0, d), d.excl, d.policy)
		}
	})
}
