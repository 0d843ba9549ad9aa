package scheduler

import (
	"fmt"
	"testing"

	"github.com/berth-project/berth/api"
	"pgregory.net/rapid"
)

func maxPer(n int) func(*api.Task) {
	return func(t *api.Task) { t.Placement.MaxReplicasPerNode = n }
}

func spread(keys ...string) func(*api.Task) {
	return func(t *api.Task) {
		for _, k := range keys {
			t.Placement.Preferences = append(t.Placement.Preferences, api.PlacementPreference{Spread: "node.labels." + k})
		}
	}
}

// perNode counts a plan's assignments (plus the snapshot's tasks of svc)
// per node.
func perNode(snap Snapshot, p Plan, svc string) map[string]int {
	out := map[string]int{}
	for _, t := range snap.Tasks {
		if t.ServiceID == svc && t.NodeID != "" && !t.Status.State.Terminal() {
			out[t.NodeID]++
		}
	}
	for _, a := range p.Assignments {
		out[a.NodeID]++
	}
	return out
}

func TestMaxReplicasPerNode(t *testing.T) {
	snap := Snapshot{Nodes: []api.Node{node("a"), node("b"), node("c")}}
	var pending []api.Task
	for i := 1; i <= 7; i++ {
		pending = append(pending, task(fmt.Sprintf("t%d", i), "web", i, maxPer(2)))
	}
	// One task of web already runs on a; another service's tasks do not count.
	snap.Tasks = append(snap.Tasks, running(task("r1", "web", 9, maxPer(2)), "a", nil),
		running(task("o1", "other", 1), "b", nil), running(task("o2", "other", 2), "b", nil))
	plan := Schedule(snap, pending)
	got := perNode(snap, plan, "web")
	if got["a"] != 2 || got["b"] != 2 || got["c"] != 2 {
		t.Fatalf("per node %v, want 2 each", got)
	}
	if len(plan.Unplaced) != 2 {
		t.Fatalf("unplaced %+v, want 2", plan.Unplaced)
	}
	want := "no suitable node (3 nodes: 3 at max_replicas_per_node 2)"
	for _, u := range plan.Unplaced {
		if u.Reason != want {
			t.Fatalf("reason %q, want %q", u.Reason, want)
		}
	}
	// Mixed reasons: a drained node and a full one.
	snap.Nodes[1] = node("b", avail(api.AvailabilityDrain))
	plan = Schedule(snap, []api.Task{task("x", "web", 1, maxPer(1))})
	if placement(plan)["x"] != "c" {
		t.Fatalf("placement %v, want c", placement(plan))
	}
	plan = Schedule(snap, []api.Task{task("x", "web", 1, maxPer(1)), task("y", "web", 2, maxPer(1))})
	if got := placement(plan)["y"]; got != "!no suitable node (3 nodes: 1 drained, 2 at max_replicas_per_node 1)" {
		t.Fatalf("y: %q", got)
	}
	// A pinned (global) task ignores the cap.
	plan = Schedule(snap, []api.Task{task("g", "web", 0, maxPer(1), onNode("a"))})
	if placement(plan)["g"] != "a" {
		t.Fatalf("pinned: %v", placement(plan))
	}
}

func TestSpreadPreference(t *testing.T) {
	// Zone a has three nodes, zone b one, and one node has no zone: six
	// tasks spread two per zone group (a, b, none), not one per node.
	snap := Snapshot{Nodes: []api.Node{
		node("a1", labels("zone", "a")), node("a2", labels("zone", "a")), node("a3", labels("zone", "a")),
		node("b1", labels("zone", "b")),
		node("x1"),
	}}
	var pending []api.Task
	for i := 1; i <= 6; i++ {
		pending = append(pending, task(fmt.Sprintf("t%d", i), "web", i, spread("zone")))
	}
	plan := Schedule(snap, pending)
	got := perNode(snap, plan, "web")
	zone := map[string]int{"a": got["a1"] + got["a2"] + got["a3"], "b": got["b1"], "none": got["x1"]}
	if zone["a"] != 2 || zone["b"] != 2 || zone["none"] != 2 {
		t.Fatalf("per zone %v (per node %v), want 2 each", zone, got)
	}
	if got["a1"] > 1 || got["a2"] > 1 || got["a3"] > 1 {
		t.Fatalf("within zone a the usual spread applies: %v", got)
	}

	// Existing tasks count: with two already in zone a, the next two go to
	// b and the unlabelled node.
	snap.Tasks = []api.Task{running(task("r1", "web", 7), "a1", nil), running(task("r2", "web", 8), "a2", nil)}
	plan = Schedule(snap, pending[:2])
	if p := placement(plan); !(p["t1"] == "b1" && p["t2"] == "x1" || p["t1"] == "x1" && p["t2"] == "b1") {
		t.Fatalf("placement %v, want b1 and x1", p)
	}

	// A zone whose nodes cannot take the task is skipped.
	snap.Tasks = nil
	snap.Nodes[3] = node("b1", labels("zone", "b"), capacity(0.1, 0))
	plan = Schedule(snap, []api.Task{task("big", "web", 1, spread("zone"), res(1, 0)), task("big2", "web", 2, spread("zone"), res(1, 0))})
	for id, n := range placement(plan) {
		if n == "b1" {
			t.Fatalf("%s placed on b1, which lacks cpu", id)
		}
	}

	// Two levels: zone first, then rack within the zone.
	snap = Snapshot{Nodes: []api.Node{
		node("n1", labels("zone", "a", "rack", "r1")), node("n2", labels("zone", "a", "rack", "r1")),
		node("n3", labels("zone", "a", "rack", "r2")),
		node("n4", labels("zone", "b", "rack", "r1")),
	}}
	pending = nil
	for i := 1; i <= 4; i++ {
		pending = append(pending, task(fmt.Sprintf("t%d", i), "web", i, spread("zone", "rack")))
	}
	got = perNode(snap, Schedule(snap, pending), "web")
	if got["n4"] != 2 || got["n3"] != 1 || got["n1"]+got["n2"] != 1 {
		t.Fatalf("two-level spread %v: want n4 2 (zone b), n3 1 and one on rack r1 of zone a", got)
	}

	// Spread with a per-node cap: zone b's single node fills up at 1, the
	// rest goes to zone a.
	snap = Snapshot{Nodes: []api.Node{node("a1", labels("zone", "a")), node("a2", labels("zone", "a")), node("b1", labels("zone", "b"))}}
	pending = nil
	for i := 1; i <= 3; i++ {
		pending = append(pending, task(fmt.Sprintf("t%d", i), "web", i, spread("zone"), maxPer(1)))
	}
	got = perNode(snap, Schedule(snap, pending), "web")
	if got["a1"] != 1 || got["a2"] != 1 || got["b1"] != 1 {
		t.Fatalf("spread with cap: %v", got)
	}
}

// TestSpreadAndCapProperty: on random labelled nodes, a service with
// spread over zone ends up with zone groups (among nodes that took tasks'
// eligible ones) differing by at most one task, and a cap is never
// exceeded; both schedulers agree.
func TestSpreadAndCapProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var snap Snapshot
		zones := []string{"a", "b", "c", ""}
		for i := range rapid.IntRange(1, 12).Draw(t, "nodes") {
			n := node(fmt.Sprintf("n%02d", i))
			if z := rapid.SampledFrom(zones).Draw(t, "zone"); z != "" {
				n.Labels = map[string]string{"zone": z}
			}
			snap.Nodes = append(snap.Nodes, n)
		}
		capN := rapid.IntRange(0, 3).Draw(t, "cap")
		var pending []api.Task
		for i := range rapid.IntRange(0, 40).Draw(t, "tasks") {
			pending = append(pending, task(fmt.Sprintf("t%03d", i), "web", i+1, spread("zone"), maxPer(capN)))
		}
		plan := Schedule(snap, pending)
		if want := referenceSchedule(snap, pending); fmt.Sprint(normalize(plan)) != fmt.Sprint(normalize(want)) {
			t.Fatalf("got %+v\nwant %+v", plan, want)
		}
		per := perNode(snap, plan, "web")
		group := map[string]int{}
		room := map[string]bool{} // a group with a node below the cap
		for _, n := range snap.Nodes {
			z := n.Labels["zone"]
			group[z] += per[n.ID]
			if capN == 0 || per[n.ID] < capN {
				room[z] = true
			}
		}
		for id, c := range per {
			if capN > 0 && c > capN {
				t.Fatalf("node %s has %d > cap %d", id, c, capN)
			}
		}
		if len(plan.Unplaced) > 0 && len(room) > 0 {
			t.Fatalf("unplaced %v while groups %v have room", plan.Unplaced, room)
		}
		// Groups that still have room hold no more than one task above the
		// least loaded group.
		lo := -1
		for z := range room {
			if lo < 0 || group[z] < lo {
				lo = group[z]
			}
		}
		for z, c := range group {
			if c > lo+1 && room[z] {
				t.Fatalf("group %q has %d, least loaded %d: %v", z, c, lo, group)
			}
		}
	})
}
