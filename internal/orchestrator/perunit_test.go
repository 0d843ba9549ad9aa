package orchestrator

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
	"pgregory.net/rapid"
)

// coresTopo is a one-socket topology of n single-thread cores in two NUMA
// nodes (the first half and the rest).
func coresTopo(n int) *api.Topology {
	t := &api.Topology{Online: fmt.Sprintf("0-%d", n-1)}
	t.Sockets = []api.CPUSocket{{ID: 0, CPUs: t.Online}}
	half := n / 2
	t.NUMANodes = []api.NUMANode{{ID: 0, CPUs: fmt.Sprintf("0-%d", half-1)}, {ID: 1, CPUs: fmt.Sprintf("%d-%d", half, n-1)}}
	t.L3Groups = []api.CacheGroup{{ID: 0, Level: 3, CPUs: t.Online}}
	for i := range n {
		numa := 0
		if i >= half {
			numa = 1
		}
		t.Cores = append(t.Cores, api.CPUCore{ID: i, NUMA: numa, CPUs: fmt.Sprint(i)})
	}
	return t
}

func perUnit(unit string, replicas *int) func(*api.ServiceSpec) {
	return func(s *api.ServiceSpec) { s.Mode, s.Unit, s.Replicas = api.ModePerUnit, unit, replicas }
}

// keys lists created tasks as node/unit/slot, sorted.
func keys(ts []api.Task) []string {
	var out []string
	for _, t := range ts {
		out = append(out, fmt.Sprintf("%s/%s/%d", t.NodeID, t.Unit, t.Slot))
	}
	sort.Strings(out)
	return out
}

func withTopos(st State, cores map[string]int, reserved map[string]string) State {
	for id, n := range cores {
		node := st.Nodes[id]
		node.Topology = coresTopo(n)
		node.ReservedCPUs = reserved[id]
		st.Nodes[id] = node
	}
	return st
}

func TestPerUnitOneTaskPerUnit(t *testing.T) {
	svc := service("pu", 0, perUnit(api.UnitCore, nil))
	st := withTopos(state([]api.Service{svc}), map[string]int{"n1": 2, "n2": 4}, map[string]string{"n2": "0"})
	// n3 has no topology: no units.
	st.Nodes["n3"] = api.Node{ID: "n3", Status: api.NodeReady, Availability: api.AvailabilityActive, Drivers: []string{"process"}}
	res := run(st)
	want := "[n1/core:0/1 n1/core:1/2 n2/core:1/2 n2/core:2/3 n2/core:3/4]" // n2's core 0 is reserved
	if got := fmt.Sprint(keys(res.Creates)); got != want {
		t.Fatalf("created %s, want %s", got, want)
	}
	for _, c := range res.Creates {
		if c.NodeID == "" || c.Status.State != api.TaskPending {
			t.Fatalf("bad task %+v", c)
		}
	}
	// NUMA units.
	svc = service("pn", 0, perUnit(api.UnitNUMA, nil))
	res = run(withTopos(state([]api.Service{svc}), map[string]int{"n1": 4}, nil))
	if got := fmt.Sprint(keys(res.Creates)); got != "[n1/numa:0/1 n1/numa:1/2]" {
		t.Fatalf("numa: created %s", got)
	}
}

func TestPerUnitReplicasSpreadRoundRobin(t *testing.T) {
	three := 3
	svc := service("pu", 0, perUnit(api.UnitCore, &three))
	st := withTopos(state([]api.Service{svc}), map[string]int{"n1": 4, "n2": 4}, nil)
	res := run(st)
	if got := fmt.Sprint(keys(res.Creates)); got != "[n1/core:0/1 n1/core:1/2 n2/core:0/1]" {
		t.Fatalf("created %s", got)
	}
	// Steady state: nothing changes.
	for _, c := range res.Creates {
		c.Status.State = api.TaskRunning
		c.Revision = 1
		st.Tasks[c.ID] = c
	}
	if res := run(st); len(res.Creates)+len(res.Updates)+len(res.Deletes) != 0 {
		t.Fatalf("steady state changed %+v", res)
	}
	// Scale to 1: the first in round-robin order stays, the others stop.
	one := 1
	svc.Spec.Replicas = &one
	st.Services[svc.ID] = svc
	res = run(st)
	if len(res.Creates) != 0 || len(res.Updates) != 2 {
		t.Fatalf("scale down: %+v", res)
	}
	for _, u := range res.Updates {
		if u.DesiredState != api.TaskShutdown || u.Unit == "core:0" && u.NodeID == "n1" {
			t.Fatalf("scale down stopped %s/%s", u.NodeID, u.Unit)
		}
	}
}

func TestPerUnitKeepsLiveSlotsWhenANodeJoins(t *testing.T) {
	two := 2
	svc := service("pu", 0, perUnit(api.UnitCore, &two))
	st := withTopos(state([]api.Service{svc}), map[string]int{"n2": 2}, nil)
	delete(st.Nodes, "n1")
	res := run(st)
	if got := fmt.Sprint(keys(res.Creates)); got != "[n2/core:0/1 n2/core:1/2]" {
		t.Fatalf("created %s", got)
	}
	for _, c := range res.Creates {
		c.Status.State = api.TaskRunning
		st.Tasks[c.ID] = c
	}
	// n1 joins: round robin would now pick n1's core 0, but the running
	// tasks stay where they are.
	st = withTopos(st, map[string]int{"n1": 2}, nil)
	st.Nodes["n1"] = func() api.Node {
		n := st.Nodes["n1"]
		n.ID, n.Status, n.Availability, n.Drivers = "n1", api.NodeReady, api.AvailabilityActive, []string{"process"}
		return n
	}()
	if res := run(st); len(res.Creates)+len(res.Updates)+len(res.Deletes) != 0 {
		t.Fatalf("a joining node moved tasks: %+v", res)
	}
	// n2 goes down: its slots are no longer wanted and n1 takes over.
	n2 := st.Nodes["n2"]
	n2.Status = api.NodeDown
	st.Nodes["n2"] = n2
	res = run(st)
	if got := fmt.Sprint(keys(res.Creates)); got != "[n1/core:0/1 n1/core:1/2]" {
		t.Fatalf("after n2 went down created %s", got)
	}
	if len(res.Updates) != 2 {
		t.Fatalf("updates %+v", res.Updates)
	}
}

// TestPerUnitConverges: whatever nodes, units and replicas, one reconcile
// from scratch wants exactly min(replicas, units) distinct (node, unit)
// slots on eligible nodes, and a second pass over the result is steady.
func TestPerUnitConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var replicas *int
		if rapid.Bool().Draw(t, "has replicas") {
			n := rapid.IntRange(0, 12).Draw(t, "replicas")
			replicas = &n
		}
		kind := rapid.SampledFrom([]string{api.UnitCore, api.UnitNUMA, api.UnitSocket, api.UnitL3}).Draw(t, "kind")
		svc := service("pu", 0, perUnit(kind, replicas))
		st := state([]api.Service{svc})
		delete(st.Nodes, "n1")
		delete(st.Nodes, "n2")
		total := 0
		for i := range rapid.IntRange(0, 4).Draw(t, "nodes") {
			id := fmt.Sprintf("n%d", i)
			n := api.Node{ID: id, Status: api.NodeReady, Availability: api.AvailabilityActive, Drivers: []string{"process"}}
			if rapid.IntRange(0, 4).Draw(t, "down") == 0 {
				n.Status = api.NodeDown
			}
			if rapid.IntRange(0, 4).Draw(t, "no topo") > 0 {
				cores := rapid.IntRange(2, 6).Draw(t, "cores")
				n.Topology = coresTopo(cores)
				if n.Status == api.NodeReady {
					total += map[string]int{api.UnitCore: cores, api.UnitNUMA: 2, api.UnitSocket: 1, api.UnitL3: 1}[kind]
				}
			}
			st.Nodes[id] = n
		}
		res := run(st)
		want := total
		if replicas != nil {
			want = min(*replicas, total)
		}
		seen := map[string]bool{}
		for _, c := range res.Creates {
			k := c.NodeID + "/" + c.Unit
			if seen[k] || !strings.HasPrefix(c.Unit, kind+":") || st.Nodes[c.NodeID].Status != api.NodeReady || c.Slot < 1 {
				t.Fatalf("bad or duplicate slot %s (slot %d)", k, c.Slot)
			}
			seen[k] = true
			c.Status.State = api.TaskRunning
			st.Tasks[c.ID] = c
		}
		if len(res.Creates) != want {
			t.Fatalf("created %d, want %d", len(res.Creates), want)
		}
		if again := run(st); len(again.Creates)+len(again.Updates)+len(again.Deletes) != 0 {
			t.Fatalf("not steady: %+v", again)
		}
	})
}
