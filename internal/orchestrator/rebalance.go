package orchestrator

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/scheduler"
)

// Rebalancing. A replicated service whose running tasks are spread unevenly
// over the nodes that could run them (some such node holds at least two
// more than another: after a drain and a reactivation, or when a node
// joins) has tasks moved, start-first, the way a drained node's tasks move:
// a replacement task in the same slot, marked with api.TaskMove, is placed
// by the scheduler; the task it replaces serves until the replacement does
// and is then shut down.
//
// It moves at most update.parallelism slots of a service at a time, and
// only while the service is at rest: no update in flight, every slot with
// exactly one task that serves and has served for the update policy's
// monitor window, and no task still stopping. Services that opted out
// (rebalance: false) are only rebalanced when asked (RebalanceStatus), and
// services with placement preferences never by themselves: their spread is
// over label groups, which evening out the nodes could undo.
//
// No loops: the moves of a batch leave their source node with f tasks of
// the service, and the scheduler places each only on a node holding fewer
// than f of them (TaskMove.Below, counted as max_replicas_per_node counts,
// with the moves placed before it). Whatever the order of placement, each
// move goes from a node holding at least f+1 to one holding at most f-1:
// it lowers the sum of the squares of the per-node counts by at least 2, so
// a service converges after a bounded number of moves, and a move never
// lands beside the task it replaces. A move no node can take (resources,
// ports) is not made: the orchestrator asks the scheduler (a pure function)
// first. One that the scheduler then cannot place all the same (the
// cluster changed meanwhile) is dropped, the old task keeps serving, and
// rebalancing the service waits Options.RebalanceBackoff before it tries
// again; so does a move whose replacement failed.

// moving handles a slot whose newest live task is a rebalance move that has
// not taken over yet. It reports whether it did (the slot needs nothing
// else).
func (r *reconciler) moving(v *slotView) bool {
	newest := v.live[0]
	if newest.Move == nil {
		return false
	}
	if len(v.live) == 1 {
		if newest.Status.State == api.TaskPending && newest.NodeID == "" {
			// The task it was to replace ended meanwhile: it is the slot's
			// only task now and goes wherever the scheduler can put it.
			t := newest
			t.Move = nil
			r.res.Updates = append(r.res.Updates, t)
		}
		return false
	}
	if newest.Status.State == api.TaskPending && newest.Status.Message != pendingMessage {
		// The scheduler found no node that improves the spread: the old
		// task stays and the move is dropped.
		r.shutdown(newest, "rebalance: no node can take the task and spread the service better ("+newest.Status.Message+")")
		return true
	}
	for _, t := range v.live[1:] {
		switch {
		case serving(newest):
			r.shutdown(t, fmt.Sprintf("rebalanced: replaced by task %s on node %s", newest.ID, newest.NodeID))
		case !serving(t):
			// It serves nobody: stopping it costs nothing.
			r.shutdown(t, "replaced by task "+newest.ID)
		}
	}
	return true
}

// rebalance decides the moves of one service (see above) once its slots
// were reconciled. views are its wanted slots as seen before this
// reconcile.
func (r *reconciler) rebalance(svc api.Service, ro *rollout, tasks []api.Task, views []*slotView) {
	st := svc.RebalanceStatus
	asked := st.Pending()
	switch {
	case svc.Spec.Mode != api.ModeReplicated && svc.Spec.Mode != "":
		if asked {
			r.finishRequest(svc, fmt.Sprintf("not rebalanced: a %s task belongs to its node", svc.Spec.Mode))
		}
		return
	case len(svc.Spec.Placement.Preferences) > 0:
		if asked {
			r.finishRequest(svc, "not rebalanced: the service spreads by placement.preferences")
		}
		return
	case !asked && !svc.Spec.RebalanceEnabled():
		return
	}
	if ro.state != "" {
		return // an update moves the tasks; rebalance after it
	}
	// A recent move that ended without ever serving (dropped, rejected,
	// failed) holds rebalancing back; one made for the pending request
	// finishes it instead. Moves that served are ordinary tasks by now.
	for _, t := range tasks {
		if t.Move == nil || !t.Status.State.Terminal() {
			continue
		}
		if _, served := r.servingSince(t); served {
			continue
		}
		if asked && t.Move.Request == st.Requested {
			r.finishRequest(svc, fmt.Sprintf("task %s could not move off node %s: %s", t.ID, t.Move.From, endReason(t)))
			return
		}
		if !asked {
			ended := t.Status.Timestamp
			if ended.Before(t.CreatedAt) {
				ended = t.CreatedAt
			}
			if until := ended.Add(r.opts.RebalanceBackoff); r.now.Before(until) {
				r.wake(until)
				return
			}
		}
	}
	// Only a service at rest moves: nothing changed for it in this
	// reconcile, and every slot runs one task that has served for the
	// monitor window.
	for _, t := range r.res.Creates {
		if t.ServiceID == svc.ID {
			return
		}
	}
	for _, t := range r.res.Updates {
		if t.ServiceID == svc.ID {
			return
		}
	}
	for _, v := range views {
		if v.canary || len(v.live) != 1 || v.stopping || v.drained || v.retry != nil || v.live[0].NodeID == "" {
			return
		}
		if v.phase != phaseDone {
			if !v.countAt.IsZero() {
				r.wake(v.countAt)
			}
			return
		}
	}
	// Count the service's tasks on every node that could run it. At most
	// one task per node is balanced whatever the other nodes: the common
	// case costs no look at them.
	perNode := map[string]int{}
	most := 0
	for _, v := range views {
		perNode[v.live[0].NodeID]++
		most = max(most, perNode[v.live[0].NodeID])
	}
	if most <= 1 && !asked {
		return
	}
	counts := map[string]int{}
	for _, id := range r.eligibleNodes(svc) {
		counts[id] = 0
	}
	onNode := map[string][]slotKey{}
	for _, v := range views {
		id := v.live[0].NodeID
		if _, ok := counts[id]; ok {
			counts[id]++
			onNode[id] = append(onNode[id], v.key)
		}
	}
	nodes := make([]string, 0, len(counts))
	for id := range counts {
		nodes = append(nodes, id)
	}
	sort.Strings(nodes)
	for _, id := range nodes {
		// The highest slots move first.
		ks := onNode[id]
		sort.Slice(ks, func(i, j int) bool { return ks[i].slot > ks[j].slot })
	}
	limit := *ro.policy.Parallelism
	if limit <= 0 {
		limit = len(views)
	}
	var moves []api.Task
	for len(moves) < limit {
		from, to := "", ""
		for _, id := range nodes {
			if from == "" || counts[id] > counts[from] {
				from = id
			}
			if to == "" || counts[id] < counts[to] {
				to = id
			}
		}
		if from == "" || counts[from]-counts[to] <= 1 || len(onNode[from]) == 0 {
			break
		}
		k := onNode[from][0]
		onNode[from] = onNode[from][1:]
		var req uint64
		if asked {
			req = st.Requested
		}
		t := r.newTask(svc, k, 0, time.Time{})
		t.Move = &api.TaskMove{From: from, Request: req}
		moves = append(moves, t)
		counts[from]--
		counts[to]++
	}
	// Every move of the batch goes only to a node holding fewer tasks of
	// the service than its source will hold once the batch is done, in
	// whatever order the scheduler places them: each move then goes from
	// a node holding at least two more than its target, and the sum of the
	// squares of the counts drops by at least 2 with each.
	for i := range moves {
		moves[i].Move.Below = counts[moves[i].Move.From]
	}
	if len(moves) == 0 {
		if asked {
			r.finishRequest(svc, balancedMessage(counts))
		}
		return
	}
	// Only moves the scheduler would place now are made: a node that
	// cannot take the task (resources, ports, CPU sets) does not get a
	// replacement that would wait there in vain, again and again.
	placed, why := r.placeable(moves)
	for _, t := range moves {
		if placed[t.ID] {
			r.res.Creates = append(r.res.Creates, t)
		}
	}
	if len(placed) == 0 && asked {
		r.finishRequest(svc, "no node can take a task and spread the service better: "+why)
	}
}

// placeable asks the scheduler which of moves it would place now, beside
// every task that holds a node; why is the reason of the first it would
// not.
func (r *reconciler) placeable(moves []api.Task) (map[string]bool, string) {
	if r.snapshot == nil {
		snap := scheduler.Snapshot{Nodes: make([]api.Node, 0, len(r.st.Nodes))}
		for _, n := range r.st.Nodes {
			snap.Nodes = append(snap.Nodes, n)
		}
		sort.Slice(snap.Nodes, func(i, j int) bool { return snap.Nodes[i].ID < snap.Nodes[j].ID })
		for _, t := range r.st.Tasks {
			if t.NodeID != "" && !t.Status.State.Terminal() {
				snap.Tasks = append(snap.Tasks, t)
			}
		}
		r.snapshot = &snap
	}
	plan := scheduler.Schedule(*r.snapshot, moves)
	ok := map[string]bool{}
	for _, a := range plan.Assignments {
		ok[a.TaskID] = true
	}
	why := ""
	if len(plan.Unplaced) > 0 {
		why = plan.Unplaced[0].Reason
	}
	return ok, why
}

// eligibleNodes lists the nodes eligible for svc's tasks (eligible), once
// per driver and constraints in a reconcile.
func (r *reconciler) eligibleNodes(svc api.Service) []string {
	key := svc.Spec.Task.Driver + "\x00" + strings.Join(svc.Spec.Placement.Constraints, "\x00")
	if ids, ok := r.eligibleBy[key]; ok {
		return ids
	}
	ids := []string{}
	for id := range r.st.Nodes {
		n := r.st.Nodes[id]
		if eligible(&n, &svc) {
			ids = append(ids, id)
		}
	}
	if r.eligibleBy == nil {
		r.eligibleBy = map[string][]string{}
	}
	r.eligibleBy[key] = ids
	return ids
}

// finishRequest marks the service's pending rebalance request done.
func (r *reconciler) finishRequest(svc api.Service, msg string) {
	st := *svc.RebalanceStatus
	st.Done, st.CompletedAt, st.Message = st.Requested, r.now, msg
	next := svc
	next.RebalanceStatus = &st
	r.res.Services = append(r.res.Services, ServiceWrite{Service: next})
}

// balancedMessage describes a balanced spread: "balanced: 2 nodes hold 2
// tasks each" or "balanced: 3 nodes hold 1 to 2 tasks".
func balancedMessage(counts map[string]int) string {
	if len(counts) == 0 {
		return "nothing to move: no node can run the service"
	}
	lo, hi := -1, 0
	for _, c := range counts {
		if lo < 0 || c < lo {
			lo = c
		}
		hi = max(hi, c)
	}
	if len(counts) == 1 {
		return fmt.Sprintf("balanced: 1 node holds all %d tasks", hi)
	}
	nodes := fmt.Sprintf("%d nodes hold", len(counts))
	if lo == hi {
		return fmt.Sprintf("balanced: %s %d tasks each", nodes, hi)
	}
	return fmt.Sprintf("balanced: %s %d to %d tasks", nodes, lo, hi)
}

// endReason says why an ended task ended, for a person.
func endReason(t api.Task) string {
	switch {
	case t.Status.Err != "":
		return t.Status.Err
	case t.Status.Message != "":
		return t.Status.Message
	}
	return string(t.Status.State)
}
