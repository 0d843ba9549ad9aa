package orchestrator

import (
	"github.com/berth-project/berth/api"
)

// moveFits reports whether a fake scheduler may put t on node: a rebalance
// move only goes to a node holding fewer than Move.Below live tasks of its
// service, as the real scheduler does (scheduler.capMoves).
func moveFits(st State, t api.Task, node string) bool {
	if t.Move == nil {
		return true
	}
	n := 0
	for _, o := range st.Tasks {
		if o.ServiceID == t.ServiceID && o.NodeID == node && !o.Status.State.Terminal() {
			n++
		}
	}
	return n < t.Move.Below
}
