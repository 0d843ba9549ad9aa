// Package orchestrator turns services into tasks: for every service it
// compares the slots it wants with the tasks that exist, creates
// replacements, and marks extra or outdated tasks for shutdown. It runs
// rolling updates (batches, monitor windows, failure actions, canaries,
// automatic rollback; see update.go) and is the only writer of a service's
// update progress once the API started an update. It never places tasks
// (the scheduler does; a global task is only created with its node, and a
// per-unit task with its node and unit, which the scheduler turns into a
// CPU set), never runs them (agents do), and never changes a service's spec
// except to roll it back automatically.
//
// Reconcile is a pure function of the state and the time; Orchestrator is the
// loop that feeds it from the store and commits what it returns.
package orchestrator

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/scheduler"
	"github.com/berth-project/berth/internal/topology"
)

// State is what a reconcile looks at.
type State struct {
	Services map[string]api.Service // by ID
	Tasks    map[string]api.Task    // by ID
	Nodes    map[string]api.Node    // by ID
	// ServingSince is, by task ID, since when the loop first saw each task
	// serving (see ObserveServing); it may be nil. It tells whether a task
	// that failed had served for its monitor window first, for tasks whose
	// agent does not report TaskStatus.HealthySince (older agents).
	ServingSince map[string]time.Time
}

// Result is what a reconcile decided. Creates are new tasks; Updates are
// changed copies of existing tasks (still carrying the revision they were
// read at); Deletes are tasks to remove from the store. Services are
// changes to services (update progress, an automatic rollback), to be
// written before the task changes; if one does not land, the task changes
// of its service must be dropped. Wake, when set, is when the reconcile
// must run again though nothing changes (a monitor window or an update
// delay ends).
type Result struct {
	Creates  []api.Task
	Updates  []api.Task
	Deletes  []api.Task
	Services []ServiceWrite
	Wake     time.Time
}

// ServiceWrite is a change to one service: a changed copy carrying the
// revision it was read at and, for an automatic rollback (a new spec
// version), the version record to write in the same transaction.
type ServiceWrite struct {
	Service api.Service
	Version *api.ServiceVersion
}

// Options tune the reconcile.
type Options struct {
	// HistoryPerSlot is how many ended tasks are kept per slot. Default 5.
	HistoryPerSlot int
	// NewID makes task ids.
	NewID func() string
	// ResetAfter is how long a task must run before its slot's restart
	// back-off starts again from the first delay. Default 10s.
	ResetAfter time.Duration
	// MaxPending is how many tasks waiting for a node a replicated
	// service may have stored at once; its other replicas are counted in
	// the service's Pending and created as earlier ones are placed.
	// Default DefaultMaxPending.
	MaxPending int
	// RebalanceBackoff is how long a service is not rebalanced by itself
	// after a rebalance move failed or found no node. Default 5m.
	RebalanceBackoff time.Duration
}

// DefaultMaxPending bounds the pending tasks stored per replicated service:
// 100,000 replicas that cannot be placed cost 100 records, not 100,000 (each
// of which every controller and every list would carry), and a large scale-up
// reaches the scheduler and the agents in waves instead of all at once.
const DefaultMaxPending = 100

func (o *Options) defaults() {
	if o.HistoryPerSlot <= 0 {
		o.HistoryPerSlot = 5
	}
	if o.ResetAfter <= 0 {
		o.ResetAfter = 10 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.RebalanceBackoff <= 0 {
		o.RebalanceBackoff = 5 * time.Minute
	}
}

// pendingMessage is a new task's status message until the scheduler places
// it or says why it cannot.
const pendingMessage = "waiting to be scheduled"

// slotKey identifies a slot: a replica number, a node for global services,
// or a node and one of its units (with the unit's slot number) for per-unit
// services.
type slotKey struct {
	slot int
	node string
	unit string
}

// Reconcile computes what must change so that the tasks match the services.
func Reconcile(now time.Time, st State, opts Options) Result {
	opts.defaults()
	r := &reconciler{now: now, st: st, opts: opts, templates: map[string]string{}}
	byService := map[string][]api.Task{}
	for _, t := range st.Tasks {
		byService[t.ServiceID] = append(byService[t.ServiceID], t)
	}
	ids := make([]string, 0, len(byService))
	for id := range byService {
		ids = append(ids, id)
	}
	for id := range st.Services {
		if _, ok := byService[id]; !ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		svc, ok := st.Services[id]
		if !ok {
			r.removed(byService[id])
			continue
		}
		r.service(svc, byService[id])
	}
	return r.res
}

type reconciler struct {
	now  time.Time
	st   State
	opts Options
	res  Result
	// templates caches each service's task template in comparable form.
	templates map[string]string
	// pending counts the current service's stored tasks that wait for a
	// node (with those created in this reconcile); withheld, its replicas
	// not created because pending reached Options.MaxPending.
	pending, withheld int
	// snapshot is what the scheduler sees, built for the first rebalance
	// that asks it (rebalance.go).
	snapshot *scheduler.Snapshot
	// eligibleBy caches the nodes eligible for a driver and constraints,
	// for rebalancing.
	eligibleBy map[string][]string
}

// current reports whether t runs the service's current task template.
func (r *reconciler) current(svc api.Service, t api.Task) bool {
	if t.SpecVersion == svc.Version {
		return true
	}
	want, ok := r.templates[svc.ID]
	if !ok {
		want = svc.Spec.TemplateKey()
		r.templates[svc.ID] = want
	}
	return t.TemplateKey() == want
}

// shutdown marks a task to stop. A task that never reached a node is ended
// here, since no agent will ever report on it.
func (r *reconciler) shutdown(t api.Task, why string) {
	if t.DesiredState == api.TaskShutdown && (t.Status.State.Terminal() || t.NodeID != "") {
		return
	}
	t.DesiredState = api.TaskShutdown
	if t.Status.State == api.TaskPending {
		t.Status = api.TaskStatus{State: api.TaskShutdown, Message: why, Timestamp: r.now}
	}
	r.res.Updates = append(r.res.Updates, t)
}

// removed handles the tasks of a deleted service: stop them, then forget them.
func (r *reconciler) removed(tasks []api.Task) {
	for _, t := range tasks {
		switch {
		case t.Status.State.Terminal():
			r.res.Deletes = append(r.res.Deletes, t)
		default:
			r.shutdown(t, "service removed")
		}
	}
}

func (r *reconciler) service(svc api.Service, tasks []api.Task) {
	r.pending, r.withheld = 0, 0
	for _, t := range tasks {
		if waiting(t) {
			r.pending++
		}
	}
	slots := map[slotKey][]api.Task{}
	for _, t := range tasks {
		k := slotKey{slot: t.Slot}
		switch svc.Spec.Mode {
		case api.ModeGlobal:
			k = slotKey{node: t.NodeID}
		case api.ModePerUnit:
			k = slotKey{slot: t.Slot, node: t.NodeID, unit: t.Unit}
		}
		slots[k] = append(slots[k], t)
	}
	want := map[slotKey]bool{}
	switch svc.Spec.Mode {
	case api.ModeGlobal:
		for _, n := range r.st.Nodes {
			k := slotKey{node: n.ID}
			// A paused node keeps the task it runs but gets no new one.
			if eligible(&n, &svc) || (pausedButEligible(&n, &svc) && hasLive(slots[k])) {
				want[k] = true
			}
		}
	case api.ModePerUnit:
		want = r.perUnitSlots(svc, slots)
	default:
		// Slots without a task beyond what MaxPending leaves room for are
		// only counted: a service of 100,000 replicas that cannot be
		// placed costs a reconcile no more than one of MaxPending. (While
		// an update is in flight every slot takes part, for its counts.)
		room, bounded := r.opts.MaxPending-r.pending, !svc.UpdateStatus.InFlight()
		for i := 1; i <= svc.Spec.ReplicaCount(); i++ {
			k := slotKey{slot: i}
			if _, ok := slots[k]; !ok && bounded {
				if room <= 0 {
					r.withheld++
					continue
				}
				room--
			}
			want[k] = true
		}
	}
	keys := make([]slotKey, 0, len(slots)+len(want))
	for k := range slots {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := slots[k]; !ok {
			keys = append(keys, k)
		}
	}
	ro := newRollout(svc)
	canary := map[slotKey]bool{}
	for i := 1; i <= ro.canaries(svc); i++ {
		k := slotKey{slot: api.CanarySlotBase + i}
		// A paused update keeps its canaries but starts no new ones.
		if ro.state == api.UpdatePaused && !hasLive(slots[k]) {
			continue
		}
		canary[k], want[k] = true, true
		if _, ok := slots[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].slot != keys[j].slot {
			return keys[i].slot < keys[j].slot
		}
		if keys[i].node != keys[j].node {
			return keys[i].node < keys[j].node
		}
		return keys[i].unit < keys[j].unit
	})
	var views []*slotView
	anyOld := false
	for _, k := range keys {
		ts := slots[k]
		sort.Slice(ts, func(i, j int) bool { return ts[i].CreatedAt.After(ts[j].CreatedAt) }) // newest first
		if want[k] {
			v := r.view(svc, ro, k, ts, canary[k])
			views = append(views, v)
			anyOld = anyOld || v.phase == phaseOld || v.retry != nil
		}
	}
	if ro.state != "" && r.progress(svc, ro, tasks, views) {
		return // rolled back: the next reconcile moves the tasks
	}
	if !ro.moving() {
		// Paused (perhaps just now): failed attempts are not retried (but
		// for canaries while the update holds at them).
		for _, v := range views {
			if v.phase == phaseProgress && (v.retry != nil || v.failedRetry) && !ro.retrying(v.canary) {
				v.phase = phaseHeld
			}
		}
	}
	if ro.state != "" || anyOld {
		for _, v := range views {
			if !v.countAt.IsZero() {
				r.wake(v.countAt)
			}
		}
	}
	start := r.pick(ro, views)
	byKey := map[slotKey]*slotView{}
	for _, v := range views {
		byKey[v.key] = v
	}
	for _, k := range keys {
		ts := slots[k]
		if !want[k] {
			for _, t := range ts {
				if t.DesiredState == api.TaskRunning || !t.Status.State.Terminal() {
					r.shutdown(t, "slot no longer wanted")
				}
			}
			r.gc(ts, svc.Spec.Mode == api.ModeGlobal || svc.Spec.Mode == api.ModePerUnit || api.IsCanarySlot(k.slot))
			continue
		}
		r.slot(svc, ro, byKey[k], start[k])
		r.gc(ts, false)
	}
	r.rebalance(svc, ro, tasks, views)
	r.notePending(svc, tasks)
}

// waiting reports whether t is a task meant to run that no node has yet.
func waiting(t api.Task) bool {
	return t.DesiredState == api.TaskRunning && t.Status.State == api.TaskPending
}

// notePending records in the service how many of its replicas wait for a
// node and why, when some of them were withheld (see Options.MaxPending), and
// clears the record once none is. The reason is the scheduler's message on
// the stored pending task of the lowest slot that has one.
func (r *reconciler) notePending(svc api.Service, tasks []api.Task) {
	var want *api.PendingReplicas
	if r.withheld > 0 {
		want = &api.PendingReplicas{Count: r.pending + r.withheld, Stored: r.pending, Reason: pendingMessage}
		best := -1
		for _, t := range tasks {
			if waiting(t) && t.Status.Message != "" && t.Status.Message != pendingMessage && (best < 0 || t.Slot < best) {
				best, want.Reason = t.Slot, t.Status.Message
			}
		}
	}
	if (want == nil) == (svc.Pending == nil) && (want == nil || *want == *svc.Pending) {
		return
	}
	for i := range r.res.Services {
		if w := &r.res.Services[i]; w.Service.ID == svc.ID {
			w.Service.Pending = want
			return
		}
	}
	svc.Pending = want
	r.res.Services = append(r.res.Services, ServiceWrite{Service: svc})
}

// hasLive reports whether one of ts is meant to run.
func hasLive(ts []api.Task) bool {
	for _, t := range ts {
		if t.DesiredState == api.TaskRunning && !t.Status.State.Terminal() {
			return true
		}
	}
	return false
}

// serving reports whether a task is running and not known to be unhealthy or
// still starting its health checks.
func serving(t api.Task) bool {
	return t.Status.State == api.TaskRunning && (t.Status.Health == "" || t.Status.Health == api.HealthNone || t.Status.Health == api.HealthHealthy)
}

// slot makes one wanted slot converge; start says its batch has come (an
// old slot moves to the current template).
func (r *reconciler) slot(svc api.Service, ro *rollout, v *slotView, start bool) {
	k, live := v.key, v.live
	if len(live) > 0 {
		newest := live[0]
		// Extra live tasks in one slot: keep the newest; drop older ones once
		// the newest serves (or at once if it is not a version change).
		newestCurrent := r.current(svc, newest)
		if newestCurrent && r.drained(newest) {
			r.moveOff(svc, v)
			return
		}
		if newestCurrent && r.moving(v) {
			return // a rebalance move (rebalance.go)
		}
		// A new task the scheduler cannot place while the old one holds the
		// room: fall back to stop-first for this slot.
		unplaceable := newestCurrent && newest.Status.State == api.TaskPending && newest.Status.Message != pendingMessage
		for _, t := range live[1:] {
			if r.drained(t) && serving(t) && !serving(newest) && !unplaceable {
				continue // drain is start-first: t serves until its replacement does
			}
			if r.current(svc, t) == newestCurrent || serving(newest) || !newestCurrent || unplaceable {
				r.shutdown(t, "replaced by task "+newest.ID)
			}
		}
		if newestCurrent {
			// Ended tasks it superseded (a failed attempt, after a
			// rollback an old one) become history.
			if v.lastEnded != nil {
				for _, t := range v.ts {
					if t.DesiredState == api.TaskRunning && t.Status.State.Terminal() {
						r.retire(t)
					}
				}
			}
			return
		}
		// The slot runs an old template. A new task that failed here is
		// retried as for a restart, while the update moves.
		if v.retry != nil {
			if v.phase != phaseProgress {
				return
			}
			if attempt, notBefore, ok := r.restart(svc, *v.retry); ok {
				r.retire(*v.retry)
				r.create(svc, k, attempt, notBefore)
			}
			return
		}
		if !start {
			return
		}
		if ro.policy.Order == api.OrderStopFirst && !v.drained {
			for _, t := range live {
				r.shutdown(t, fmt.Sprintf("stopped for the update to version %d (stop-first)", svc.Version))
			}
			return
		}
		r.create(svc, k, 0, time.Time{}) // start-first: beside the old one
		return
	}
	if v.stopping && ro.policy.Order == api.OrderStopFirst {
		return // stop-first: the old task must be gone first
	}
	if v.phase == phaseHeld {
		return
	}
	if v.lastEnded == nil {
		r.create(svc, k, 0, time.Time{})
		return
	}
	// The slot's task ended while meant to run.
	t := *v.lastEnded
	if !r.current(svc, t) {
		r.retire(t)
		r.create(svc, k, 0, time.Time{})
		return
	}
	if attempt, notBefore, ok := r.restart(svc, t); ok {
		r.retire(t)
		r.create(svc, k, attempt, notBefore)
	}
}

// drained reports whether t is on a node being drained: a replicated task
// there moves to another node, start-first. Global and per-unit tasks are
// not moved: their slot belongs to the node and is simply no longer wanted.
func (r *reconciler) drained(t api.Task) bool {
	if t.NodeID == "" || t.Unit != "" {
		return false
	}
	n, ok := r.st.Nodes[t.NodeID]
	return ok && n.Availability == api.AvailabilityDrain
}

// moveOff starts the replacement of a slot whose newest live task (of the
// current template) is on a drained node. The old task keeps serving until
// the replacement does (see slot). A replacement that ended before it took
// over is restarted with the restart policy's back-off; if the policy does
// not restart it, the drained task is stopped anyway: drain stops it.
func (r *reconciler) moveOff(svc api.Service, v *slotView) {
	// Keep the task that serves (a replacement that was itself drained
	// before it served does not); stop the others.
	newest, keep := v.live[0], v.live[0]
	for _, t := range v.live {
		if serving(t) {
			keep = t
			break
		}
	}
	for _, t := range v.live {
		if t.ID != keep.ID {
			r.shutdown(t, "node drained: replaced by a task on another node")
		}
	}
	if !r.drained(keep) {
		return // the serving task's node is active again: it stays
	}
	attempt, notBefore := 0, time.Time{}
	if le := v.lastEnded; le != nil && le.CreatedAt.After(newest.CreatedAt) {
		a, nb, ok := r.restart(svc, *le)
		if !ok {
			r.shutdown(keep, "node drained; its replacement ended and the restart policy leaves it down")
			return
		}
		attempt, notBefore = a, nb
	}
	for _, t := range v.ts {
		if t.DesiredState == api.TaskRunning && t.Status.State.Terminal() {
			r.retire(t)
		}
	}
	r.create(svc, v.key, attempt, notBefore)
}

// restart applies the restart policy to an ended task: whether its slot gets
// a new task, which attempt that is, and when it may start (exponential
// back-off from restart.delay, capped at restart.max_delay; the count of
// consecutive restarts starts again after a task ran for the policy's window,
// or ResetAfter without one).
func (r *reconciler) restart(svc api.Service, t api.Task) (attempt int, notBefore time.Time, ok bool) {
	pol := svc.Spec.Restart
	// A task that Berth stopped although it was meant to run (its node shut
	// down) or that was lost with its node did not end by itself: the
	// restart policy, which is about the task's own exit, does not apply.
	// It comes back at once.
	if t.Status.State == api.TaskShutdown || t.Status.State == api.TaskLost {
		return 0, r.now, true
	}
	failed := t.Status.State != api.TaskComplete
	switch {
	case pol.Condition == api.RestartNone:
		return 0, notBefore, false
	case pol.Condition == api.RestartOnFailure && !failed:
		return 0, notBefore, false
	}
	attempt = t.Attempt + 1
	resetAfter := r.opts.ResetAfter
	if pol.Window > 0 {
		resetAfter = pol.Window.D()
	}
	ran := t.Status.FinishedAt.Sub(t.Status.StartedAt)
	if !t.Status.StartedAt.IsZero() && !t.Status.FinishedAt.IsZero() && ran >= resetAfter {
		attempt = 1
	}
	if pol.MaxAttempts > 0 && attempt > pol.MaxAttempts {
		return 0, notBefore, false // the slot stays down; its last task shows why
	}
	delay := pol.Delay.D()
	for i := 1; i < attempt && delay < pol.MaxDelay.D(); i++ {
		delay *= 2
	}
	if delay > pol.MaxDelay.D() {
		delay = pol.MaxDelay.D()
	}
	from := t.Status.FinishedAt
	if from.IsZero() || from.After(r.now) {
		from = r.now
	}
	return attempt, from.Add(delay), true
}

// retire marks an ended task as history so its slot is free.
func (r *reconciler) retire(t api.Task) {
	t.DesiredState = api.TaskShutdown
	r.res.Updates = append(r.res.Updates, t)
}

func (r *reconciler) create(svc api.Service, k slotKey, attempt int, notBefore time.Time) {
	if svc.Spec.Mode == "" || svc.Spec.Mode == api.ModeReplicated {
		if r.pending >= r.opts.MaxPending {
			r.withheld++
			return
		}
		r.pending++
	}
	r.res.Creates = append(r.res.Creates, r.newTask(svc, k, attempt, notBefore))
}

// newTask is a new task for slot k, waiting to be scheduled.
func (r *reconciler) newTask(svc api.Service, k slotKey, attempt int, notBefore time.Time) api.Task {
	t := api.Task{
		ID:           r.opts.NewID(),
		ServiceID:    svc.ID,
		ServiceName:  svc.Spec.Name,
		Slot:         k.slot,
		NodeID:       k.node,
		Unit:         k.unit,
		SpecVersion:  svc.Version,
		Spec:         svc.Spec.Task,
		Placement:    svc.Spec.Placement,
		DesiredState: api.TaskRunning,
		Status:       api.TaskStatus{State: api.TaskPending, Message: pendingMessage, Timestamp: r.now},
		Attempt:      attempt,
		CreatedAt:    r.now,
	}
	if notBefore.After(r.now) {
		t.NotBefore = notBefore
	}
	return t
}

// gc deletes ended history beyond the limit (ts is newest first). With all,
// every ended task goes (the slot itself is gone).
func (r *reconciler) gc(ts []api.Task, all bool) {
	kept := 0
	for _, t := range ts {
		if !t.Status.State.Terminal() || t.DesiredState == api.TaskRunning {
			continue
		}
		kept++
		if all || kept > r.opts.HistoryPerSlot {
			r.res.Deletes = append(r.res.Deletes, t)
		}
	}
}

// eligible reports whether a global service wants a task on node n.
func eligible(n *api.Node, svc *api.Service) bool {
	return n.Availability == api.AvailabilityActive && fits(n, svc)
}

// pausedButEligible reports whether n is paused and would otherwise be
// eligible: a task it runs stays, though it gets no new one.
func pausedButEligible(n *api.Node, svc *api.Service) bool {
	return n.Availability == api.AvailabilityPause && fits(n, svc)
}

// fits reports whether node n is ready, has the service's driver and meets
// its constraints, whatever its availability.
func fits(n *api.Node, svc *api.Service) bool {
	if n.Status != api.NodeReady {
		return false
	}
	driverOK := false
	for _, d := range n.Drivers {
		driverOK = driverOK || d == svc.Spec.Task.Driver
	}
	if !driverOK {
		return false
	}
	for _, s := range svc.Spec.Placement.Constraints {
		c, err := api.ParseConstraint(s)
		if err != nil || !c.Matches(n) {
			return false
		}
	}
	return true
}

// perUnitSlots returns the slots a per-unit service wants: one per unit of
// kind spec.Unit on every eligible node with a topology (a unit whose CPUs
// are all reserved is skipped), or, with replicas, that many of them. The
// chosen ones are spread round robin over the nodes in ID order, each
// node's units in order; slots that already have a live task are kept first
// so that scaling or a node joining moves no running task.
func (r *reconciler) perUnitSlots(svc api.Service, existing map[slotKey][]api.Task) map[slotKey]bool {
	live := func(k slotKey) bool {
		for _, t := range existing[k] {
			if t.DesiredState == api.TaskRunning {
				return true
			}
		}
		return false
	}
	nodes := make([]*api.Node, 0, len(r.st.Nodes))
	for id := range r.st.Nodes {
		n := r.st.Nodes[id]
		if n.Topology != nil && (eligible(&n, &svc) || pausedButEligible(&n, &svc)) {
			nodes = append(nodes, &n)
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	perNode := make([][]slotKey, len(nodes))
	for i, n := range nodes {
		perNode[i] = unitSlots(n, svc.Spec.Unit)
		if n.Availability == api.AvailabilityPause {
			// A paused node keeps its running tasks but gets no new ones.
			var keep []slotKey
			for _, k := range perNode[i] {
				if live(k) {
					keep = append(keep, k)
				}
			}
			perNode[i] = keep
		}
	}
	var order []slotKey // round robin: every node's first unit, then second…
	for round := 0; ; round++ {
		added := false
		for _, ks := range perNode {
			if round < len(ks) {
				order = append(order, ks[round])
				added = true
			}
		}
		if !added {
			break
		}
	}
	want := map[slotKey]bool{}
	if svc.Spec.Replicas == nil {
		for _, k := range order {
			want[k] = true
		}
		return want
	}
	n := *svc.Spec.Replicas
	for _, pass := range []bool{true, false} {
		for _, k := range order {
			if len(want) == n {
				return want
			}
			if !want[k] && live(k) == pass {
				want[k] = true
			}
		}
	}
	return want
}

// unitSlots lists the slots of node n's units of kind, in unit order. A
// topology that is invalid gives none.
func unitSlots(n *api.Node, kind string) []slotKey {
	units, err := topology.Units(*n.Topology, kind)
	if err != nil {
		return nil
	}
	reserved, err := topology.Parse(n.ReservedCPUs)
	if err != nil {
		return nil
	}
	var out []slotKey
	for _, u := range units {
		if u.CPUs.IsSubsetOf(reserved) {
			continue
		}
		out = append(out, slotKey{slot: unitSlot(u.ID), node: n.ID, unit: u.ID})
	}
	return out
}

// unitSlot is the slot number of a unit: its number plus one ("core:3" is
// slot 4), so that it is never 0, the slot of global tasks.
func unitSlot(unit string) int {
	_, num, _ := strings.Cut(unit, ":")
	i, err := strconv.Atoi(num)
	if err != nil || i < 0 {
		return 0
	}
	return i + 1
}
