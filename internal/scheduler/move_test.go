package scheduler

import (
	"fmt"
	"testing"

	"github.com/berth-project/berth/api"
)

// TestMoveOnlyWhereItSpreadsBetter: a rebalance move (Task.Move) goes only
// to a node holding fewer than Move.Below tasks of its service. Without the
// cap, the spread order would put it beside the task it replaces, or on
// another node as loaded, and the orchestrator would move it again forever.
func TestMoveOnlyWhereItSpreadsBetter(t *testing.T) {
	node := func(id string, cpus float64) api.Node {
		return api.Node{ID: id, Hostname: id, Status: api.NodeReady, Availability: api.AvailabilityActive,
			Drivers: []string{"process"}, Resources: api.NodeResources{CPUs: cpus}}
	}
	held := func(on string, n int) []api.Task {
		var out []api.Task
		for i := range n {
			out = append(out, api.Task{ID: fmt.Sprintf("%s-%d", on, i), ServiceID: "web", NodeID: on,
				Spec: api.TaskSpec{Driver: "process", Resources: api.Resources{CPUs: 1}}, Status: api.TaskStatus{State: api.TaskRunning}})
		}
		return out
	}
	move := func(from string, below int) api.Task {
		return api.Task{ID: "mv", ServiceID: "web", Spec: api.TaskSpec{Driver: "process", Resources: api.Resources{CPUs: 1}},
			Status: api.TaskStatus{State: api.TaskPending}, DesiredState: api.TaskRunning, Move: &api.TaskMove{From: from, Below: below}}
	}
	for _, c := range []struct {
		name  string
		nodes []api.Node
		tasks []api.Task
		task  api.Task
		want  string // node, or "" for unplaced
	}{
		{"to the emptier node", []api.Node{node("a", 0), node("b", 0)}, held("a", 4), move("a", 3), "b"},
		{"not back beside itself", []api.Node{node("a", 0), node("b", 3)}, append(held("a", 2), held("b", 3)...), move("a", 1), ""},
		{"not to a node as loaded", []api.Node{node("a", 0), node("b", 0), node("c", 1)},
			append(append(held("a", 3), held("b", 3)...), held("c", 1)...), move("a", 2), ""},
		{"within its own cap", []api.Node{node("a", 0), node("b", 0)}, append(held("a", 4), held("b", 1)...),
			func() api.Task { t := move("a", 3); t.Placement.MaxReplicasPerNode = 1; return t }(), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			pending := []api.Task{c.task}
			plan := Schedule(Snapshot{Nodes: c.nodes, Tasks: c.tasks}, pending)
			got := ""
			if len(plan.Assignments) == 1 {
				got = plan.Assignments[0].NodeID
			}
			if got != c.want {
				t.Fatalf("placed on %q, want %q (plan %+v)", got, c.want, plan)
			}
			if pending[0].Placement.MaxReplicasPerNode != c.task.Placement.MaxReplicasPerNode {
				t.Fatal("Schedule modified its argument")
			}
		})
	}
}
