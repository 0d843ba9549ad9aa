package scheduler

import "github.com/berth-project/berth/api"

// capMoves returns pending with every rebalance move (Task.Move) capped to
// nodes holding fewer than Move.Below tasks of its service: its per-node cap
// becomes the lower of its own and Below. The cap counts what the scheduler
// counts for max_replicas_per_node (live tasks of the service on the node,
// those still stopping and those placed earlier in this plan), so a move
// lands only where it makes the spread strictly better, and never beside the
// task it replaces. pending is not modified: a copy is returned when a task
// changes.
func capMoves(pending []api.Task) []api.Task {
	var out []api.Task
	for i := range pending {
		m := pending[i].Move
		if m == nil || m.Below <= 0 || pending[i].NodeID != "" {
			continue
		}
		if cur := pending[i].Placement.MaxReplicasPerNode; cur > 0 && cur <= m.Below {
			continue
		}
		if out == nil {
			out = append([]api.Task(nil), pending...)
		}
		out[i].Placement.MaxReplicasPerNode = m.Below
	}
	if out == nil {
		return pending
	}
	return out
}
