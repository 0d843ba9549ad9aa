package orchestrator

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
)

// The rolling-update engine. A service's tasks move to a new task template
// slot by slot, in batches of the policy's parallelism:
//
//   - A slot is done when its newest live task runs the current template
//     and has served (running, healthy or without a health check) for the
//     policy's monitor window, counted from the agent's
//     TaskStatus.HealthySince; it is in progress while such a task starts
//     or is monitored, while its old task stops (stop-first), or while a
//     failed new task is retried; it is old while it runs an old task.
//   - A batch starts when no slot is in progress and the delay has passed
//     since the last slot became done. Start-first creates the new task
//     beside the old one, which is shut down once the new one serves;
//     stop-first shuts the old one down and creates the new one once the
//     old one has ended. An old slot whose task does not serve anyway is
//     moved at once, outside the batches: that costs no capacity.
//   - A new task (the current template, created for this update) that
//     fails, is rejected, exits or turns unhealthy before it served for the
//     monitor window counts as failed. When a failure is first counted and
//     the failed share is over max_failure_ratio, the failure action runs:
//     pause, continue, or an automatic rollback that swaps the spec back
//     (the old tasks still running are then current again and are not
//     touched). While the update moves, a failed new task is retried with
//     the restart policy's back-off (each failure counts again), and the
//     retrying slot does not hold up later batches. While it is paused (or
//     holds canaries), failed new tasks are not restarted: their slots wait
//     for a resume, a rollback or a new deploy.
//   - A failure counts toward the action only when first seen: after a
//     resume, the failures already counted do not pause it again.
//
// A rollback (UpdateStatus.Rollback, set by the API's rollback and by the
// automatic one) moves tasks with the rollback: policy of the spec being
// rolled back to (the service's Spec once the rollback started), the same
// rule for manual and automatic rollbacks, also while paused; it runs no
// canaries and cannot roll back in turn. Canaries run in extra slots above
// api.CanarySlotBase and are dropped once the update completes. An update
// with canaries holds at them (state canary) until it is promoted
// (UpdateStatus.Promoted, set by the API's promote or by auto_promote);
// while it holds, a failed canary is retried (its failure counted each
// time), but no replica slot moves. A status written before the Promoted
// flag existed that is updating with tasks of the update already created
// counts as promoted (an older API promoted it).
//
// Whether a failed task had served for its monitor window first comes from
// its HealthySince. Tasks reported by agents older than that field fall
// back to the loop's memory of when it first saw each task serving
// (State.ServingSince, ObserveServing), which a new leader starts without.
//
// Without an update in flight (no update status, or a finished one) tasks
// of an old template still move with the update: policy, but nothing is
// counted or written.

// phase is where a wanted slot stands in a rollout.
type phase int

const (
	phaseDone     phase = iota // runs a current task that counts as updated
	phaseProgress              // moving: see the package comment above
	phaseOld                   // runs an old task; waits for its batch
	phaseHeld                  // a failed task its restart policy leaves down
)

// slotView is one wanted slot as the reconcile sees it.
type slotView struct {
	key    slotKey
	canary bool
	ts     []api.Task // every task of the slot, newest first
	live   []api.Task // desired running and not ended, newest first
	// lastEnded is the newest task that ended while meant to run.
	lastEnded *api.Task
	// stopping: a task told to stop is still running on its node.
	stopping bool
	// serving: a live task serves.
	serving bool
	// drained: the newest live task is on a drained node and must move.
	drained bool
	// retry is a failed current task newer than the slot's old live task:
	// an attempt at updating the slot that failed.
	retry *api.Task
	// failedRetry: the slot retries a new task that failed within its
	// monitor window. It does not hold up later batches: the failure is
	// the failure policy's business.
	failedRetry bool
	phase       phase
	// doneAt is when the slot's task counted as updated (phaseDone);
	// countAt when its serving task will count (phaseProgress).
	doneAt, countAt time.Time
}

// rollout is the update context of one service in one reconcile.
type rollout struct {
	// state is the in-flight update state, or "" when no update is in
	// flight.
	state  string
	status *api.UpdateStatus
	policy api.UpdatePolicy
}

// policyOf returns p with its defaults filled in (a stored spec is
// normalized, but the engine does not rely on it).
func policyOf(p *api.UpdatePolicy, rollback bool) api.UpdatePolicy {
	var out api.UpdatePolicy
	if p != nil {
		out = *p
	}
	if out.Parallelism == nil {
		n := api.DefaultUpdateParallelism
		out.Parallelism = &n
	}
	if out.Order == "" {
		out.Order = api.OrderStartFirst
	}
	if out.Monitor == 0 {
		out.Monitor = api.Duration(api.DefaultUpdateMonitor)
	}
	if out.MaxFailureRatio == nil {
		zero := 0.0
		out.MaxFailureRatio = &zero
	}
	if out.FailureAction == "" {
		out.FailureAction = api.FailureRollback
		if rollback {
			out.FailureAction = api.FailurePause
		}
	}
	return out
}

func newRollout(svc api.Service) *rollout {
	ro := &rollout{}
	if svc.UpdateStatus.InFlight() {
		st := *svc.UpdateStatus
		ro.status, ro.state = &st, st.State
	}
	if ro.rollback() {
		ro.policy = policyOf(svc.Spec.Rollback, true)
	} else {
		ro.policy = policyOf(svc.Spec.Update, false)
	}
	return ro
}

func (ro *rollout) monitor() time.Duration { return ro.policy.Monitor.D() }

// rollback reports whether the update in flight is a rollback. The state
// rolling_back says so too for a status written before the flag existed.
func (ro *rollout) rollback() bool {
	return ro.state == api.UpdateRollingBack || (ro.status != nil && ro.status.Rollback)
}

// moving reports whether batches may start and failed new tasks be retried.
func (ro *rollout) moving() bool {
	return ro.state == "" || ro.state == api.UpdateUpdating || ro.state == api.UpdateRollingBack
}

// retrying reports whether failed new tasks of a slot are retried: while
// the update moves, and for a canary slot while the update holds at its
// canaries (a resume after a failed canary tries it again).
func (ro *rollout) retrying(canary bool) bool {
	return ro.moving() || (canary && ro.state == api.UpdateCanary)
}

// canaries is how many canary slots the service has now: the update
// policy's canaries while its update runs them (canary) or rolls on after
// their promotion (updating, paused).
func (ro *rollout) canaries(svc api.Service) int {
	if (svc.Spec.Mode != api.ModeReplicated && svc.Spec.Mode != "") || ro.rollback() {
		return 0
	}
	switch ro.state {
	case api.UpdateCanary, api.UpdateUpdating, api.UpdatePaused:
		return policyOf(svc.Spec.Update, false).Canary
	}
	return 0
}

// servingSince is since when t serves, or last served before it turned
// unhealthy or ended: when it turned healthy, or when it started without a
// health check. The agent says so exactly (HealthySince). For a task of an
// older agent, the loop's memory of when it first saw the task serving wins
// over the status, whose timestamp moves on when health changes.
func (r *reconciler) servingSince(t api.Task) (time.Time, bool) {
	if s := t.Status.HealthySince; !s.IsZero() {
		return s, true
	}
	if s, ok := r.st.ServingSince[t.ID]; ok {
		return s, true
	}
	if serving(t) {
		return statusServingSince(t.Status), true
	}
	if t.Spec.Health == nil && !t.Status.StartedAt.IsZero() {
		return t.Status.StartedAt, true
	}
	return time.Time{}, false
}

// statusServingSince derives since when a serving task serves from its
// status alone: the time of the last status change for a healthy task (the
// change to healthy), its start otherwise.
func statusServingSince(st api.TaskStatus) time.Time {
	if st.Health == api.HealthHealthy && !st.Timestamp.IsZero() {
		return st.Timestamp
	}
	if !st.StartedAt.IsZero() {
		return st.StartedAt
	}
	return st.Timestamp
}

// ObserveServing records in seen since when each serving task of tasks
// serves, the first time it is seen serving, and forgets tasks that are
// gone. The loop keeps seen across reconciles and passes it as
// State.ServingSince, so that a task that turned unhealthy or ended is still
// known to have served (or not) for a monitor window. Only tasks whose agent
// does not report HealthySince (older agents) need it; others are not
// recorded.
func ObserveServing(seen map[string]time.Time, tasks map[string]api.Task) {
	for id, t := range tasks {
		if _, ok := seen[id]; !ok && serving(t) && t.Status.HealthySince.IsZero() {
			seen[id] = statusServingSince(t.Status)
		}
	}
	for id := range seen {
		if _, ok := tasks[id]; !ok {
			delete(seen, id)
		}
	}
}

// view classifies a wanted slot.
func (r *reconciler) view(svc api.Service, ro *rollout, k slotKey, ts []api.Task, canary bool) *slotView {
	v := &slotView{key: k, canary: canary, ts: ts}
	for i, t := range ts {
		switch {
		case t.DesiredState == api.TaskRunning && !t.Status.State.Terminal():
			v.live = append(v.live, t)
			v.serving = v.serving || serving(t)
		case t.DesiredState == api.TaskRunning:
			if v.lastEnded == nil {
				v.lastEnded = &ts[i]
			}
		case !t.Status.State.Terminal() && t.NodeID != "":
			v.stopping = true
		}
	}
	v.drained = len(v.live) > 0 && r.drained(v.live[0])
	restartable := func(t api.Task) bool { _, _, ok := r.restart(svc, t); return ok }
	switch {
	case len(v.live) > 0 && r.current(svc, v.live[0]):
		v.phase = phaseProgress
		n := v.live[0]
		if serving(n) {
			since, _ := r.servingSince(n)
			at := since.Add(ro.monitor())
			if r.now.Before(at) {
				v.countAt = at
			} else {
				v.phase, v.doneAt = phaseDone, at
			}
		}
	case len(v.live) > 0:
		v.phase = phaseOld
		if le := v.lastEnded; le != nil && r.current(svc, *le) && le.CreatedAt.After(v.live[0].CreatedAt) {
			v.retry = le
			v.phase = phaseProgress
			v.failedRetry = r.updateFailure(svc, ro, *le)
			if !ro.retrying(canary) || !restartable(*le) {
				v.phase = phaseHeld
			}
		}
	case v.stopping && ro.policy.Order == api.OrderStopFirst:
		v.phase = phaseProgress
	case v.lastEnded != nil && r.current(svc, *v.lastEnded):
		v.phase = phaseProgress
		v.failedRetry = r.updateFailure(svc, ro, *v.lastEnded)
		// A new task that failed within its window is not restarted while
		// the update is paused (nor a replica's while it holds at its
		// canaries): its slot waits for a resume, a promotion, a rollback
		// or a new deploy.
		if (v.failedRetry && !ro.retrying(canary)) || !restartable(*v.lastEnded) {
			v.phase = phaseHeld
		}
	default:
		v.phase = phaseProgress // created or restarted now
	}
	return v
}

// pick chooses the old slots that start moving now.
func (r *reconciler) pick(ro *rollout, views []*slotView) map[slotKey]bool {
	start := map[slotKey]bool{}
	if ro.state == api.UpdateCanary || ro.state == api.UpdateUpdating {
		for _, v := range views {
			if v.canary && v.phase == phaseOld {
				start[v.key] = true // canary slots are extra: nothing to hold
			}
		}
	}
	if !ro.moving() {
		return start
	}
	inProgress := 0
	var lastDone time.Time
	var olds []*slotView
	for _, v := range views {
		if v.canary {
			continue
		}
		switch v.phase {
		case phaseProgress:
			if !v.failedRetry {
				inProgress++
			}
		case phaseDone:
			if v.doneAt.After(lastDone) {
				lastDone = v.doneAt
			}
		case phaseOld:
			if !v.serving || v.drained {
				// It serves nobody: replacing it costs nothing. Or its node
				// is drained: it moves now, start-first.
				start[v.key] = true
			} else {
				olds = append(olds, v)
			}
		}
	}
	if inProgress > 0 || len(olds) == 0 {
		return start
	}
	if at := lastDone.Add(ro.policy.Delay.D()); r.now.Before(at) {
		r.wake(at)
		return start
	}
	n := *ro.policy.Parallelism
	if n <= 0 || n > len(olds) {
		n = len(olds)
	}
	for _, v := range olds[:n] {
		start[v.key] = true
	}
	return start
}

// wake asks for a reconcile at t.
func (r *reconciler) wake(t time.Time) {
	if t.After(r.now) && (r.res.Wake.IsZero() || t.Before(r.res.Wake)) {
		r.res.Wake = t
	}
}

// failure is a new task that failed within its monitor window.
type failure struct {
	task api.Task
	at   time.Time
	why  string
}

// failedAt reports whether t failed by itself, when, and why.
func failedAt(t api.Task) (time.Time, string, bool) {
	st := t.Status
	switch {
	case st.State == api.TaskFailed || st.State == api.TaskRejected || st.State == api.TaskComplete:
		at := st.FinishedAt
		if at.IsZero() {
			at = st.Timestamp
		}
		why := st.Err
		if why == "" {
			why = st.Message
		}
		if why == "" && st.ExitCode != nil {
			why = fmt.Sprintf("exited with code %d", *st.ExitCode)
		}
		if why == "" {
			why = string(st.State)
		}
		return at, string(st.State) + ": " + why, true
	case st.State == api.TaskRunning && st.Health == api.HealthUnhealthy:
		why := "unhealthy"
		if st.Err != "" {
			why += ": " + st.Err
		}
		return st.Timestamp, why, true
	}
	return time.Time{}, "", false
}

// failedInWindow reports whether t, a task of the update, failed before it
// served for the monitor window, and when and why. A task with a health
// check that is not known to have served counts as failed.
func (r *reconciler) failedInWindow(svc api.Service, ro *rollout, t api.Task) (time.Time, string, bool) {
	if ro.status == nil || t.SpecVersion < ro.status.ToVersion || !r.current(svc, t) {
		return time.Time{}, "", false
	}
	at, why, ok := failedAt(t)
	if !ok {
		return time.Time{}, "", false
	}
	if since, known := r.servingSince(t); known && !at.Before(since.Add(ro.monitor())) {
		return time.Time{}, "", false // it counted as updated before it failed
	}
	return at, why, true
}

// updateFailure reports whether t is a task of the update that failed within
// its monitor window.
func (r *reconciler) updateFailure(svc api.Service, ro *rollout, t api.Task) bool {
	_, _, ok := r.failedInWindow(svc, ro, t)
	return ok
}

// failures lists the tasks of the update that failed within their monitor
// window, oldest failure first.
func (r *reconciler) failures(svc api.Service, ro *rollout, tasks []api.Task) []failure {
	var out []failure
	for _, t := range tasks {
		if at, why, ok := r.failedInWindow(svc, ro, t); ok {
			out = append(out, failure{task: t, at: at, why: why})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].at.Equal(out[j].at) {
			return out[i].at.Before(out[j].at)
		}
		return out[i].task.ID < out[j].task.ID
	})
	return out
}

func slotName(slot int) string {
	if api.IsCanarySlot(slot) {
		return fmt.Sprintf("canary %d", slot-api.CanarySlotBase)
	}
	return fmt.Sprintf("slot %d", slot)
}

// progress moves the update status on and queues its write. It reports
// whether the service's spec changed (an automatic rollback): its tasks then
// wait for the next reconcile, which sees the new spec.
func (r *reconciler) progress(svc api.Service, ro *rollout, tasks []api.Task, views []*slotView) bool {
	st := *ro.status
	total, updated, canaries, canariesDone := 0, 0, 0, 0
	allDone := true
	for _, v := range views {
		if v.canary {
			canaries++
			if v.phase == phaseDone {
				canariesDone++
			}
			continue
		}
		total++
		if v.phase == phaseDone {
			updated++
		} else {
			allDone = false
		}
	}
	st.Total, st.Updated = total, updated
	fails := r.failures(svc, ro, tasks)
	newFailure := len(fails) > st.Failed
	if newFailure {
		st.Failed = len(fails)
	}
	ratio := *ro.policy.MaxFailureRatio
	exceeded := st.Failed > 0 && float64(st.Failed) > ratio*float64(max(total, 1))
	if newFailure && exceeded && st.State != api.UpdatePaused {
		f := fails[len(fails)-1]
		why := fmt.Sprintf("task %s (%s) %s within monitor %s; %d of %d tasks failed (max_failure_ratio %g)",
			f.task.ID, slotName(f.task.Slot), f.why, ro.policy.Monitor, st.Failed, total, ratio)
		action := ro.policy.FailureAction
		if action == api.FailureRollback && (ro.rollback() || svc.PreviousSpec == nil) {
			action = api.FailurePause
			why += "; there is no version to roll back to"
		}
		switch action {
		case api.FailureRollback:
			r.rollback(svc, st, why)
			return true
		case api.FailurePause:
			st.State, st.Message, st.CompletedAt = api.UpdatePaused, "paused: "+why, r.now
		default:
			st.Message = why + "; continuing (failure_action continue)"
		}
	}
	n := ro.canaries(svc)
	switch st.State {
	case api.UpdateUpdating:
		switch {
		case n > 0 && !st.Promoted && !allDone && r.begun(svc, ro, tasks):
			// Updating with tasks of the update but not promoted: a status
			// an API older than the flag promoted or resumed.
			st.Promoted = true
		case n > 0 && !st.Promoted && !allDone:
			st.State, st.Message = api.UpdateCanary, canaryMessage(svc, ro, n)
		case allDone:
			st.State, st.CompletedAt = api.UpdateCompleted, r.now
			if st.Failed == 0 {
				st.Message = ""
			}
		}
	case api.UpdateCanary:
		switch {
		case ro.policy.AutoPromote && canaries > 0 && canariesDone == canaries:
			st.State, st.Promoted = api.UpdateUpdating, true
			st.Message = fmt.Sprintf("canaries healthy for %s: promoted automatically", ro.policy.Monitor)
		case st.Message == "":
			// Back at the canaries after a resume.
			st.Message = canaryMessage(svc, ro, n)
		}
	case api.UpdateRollingBack:
		if allDone {
			st.State, st.CompletedAt = api.UpdateRolledBack, r.now
		}
	}
	ro.state = st.State
	if !reflect.DeepEqual(st, *svc.UpdateStatus) {
		next := svc
		next.UpdateStatus = &st
		r.res.Services = append(r.res.Services, ServiceWrite{Service: next})
	}
	return false
}

// canaryMessage is the status message of an update holding at its n
// canaries.
func canaryMessage(svc api.Service, ro *rollout, n int) string {
	what := fmt.Sprintf("%d canary tasks of version %d run", n, svc.Version)
	if n == 1 {
		what = fmt.Sprintf("1 canary task of version %d runs", svc.Version)
	}
	if ro.policy.AutoPromote {
		return fmt.Sprintf("%s beside the old tasks; promoted once healthy for %s", what, ro.policy.Monitor)
	}
	return what + " beside the old tasks: promote or roll back"
}

// begun reports whether the update has created any task yet (a canary
// included). An update with canaries that has begun but is not promoted
// can only be a status written before the Promoted flag existed.
func (r *reconciler) begun(svc api.Service, ro *rollout, tasks []api.Task) bool {
	for _, t := range tasks {
		if t.SpecVersion >= ro.status.ToVersion && r.current(svc, t) {
			return true
		}
	}
	return false
}

// autoRollbackAuthor is the author of the version an automatic rollback
// writes.
const autoRollbackAuthor = "berth (automatic rollback)"

// rollback queues the automatic rollback of svc: its previous spec becomes
// its spec again, as a new version, and the rollback starts.
func (r *reconciler) rollback(svc api.Service, st api.UpdateStatus, why string) {
	failed := svc.Spec
	next := svc
	next.Spec = *svc.PreviousSpec
	next.PreviousSpec = &failed
	next.Version = svc.Version + 1
	next.UpdatedAt = r.now
	next.UpdateStatus = &api.UpdateStatus{State: api.UpdateRollingBack, Message: "automatic rollback: " + why,
		FromVersion: svc.Version, ToVersion: next.Version, StartedAt: r.now, Total: st.Total, Rollback: true}
	rec := &api.ServiceVersion{Service: svc.Spec.Name, Version: next.Version, Spec: next.Spec, CreatedAt: r.now,
		Author: autoRollbackAuthor, Summary: fmt.Sprintf("automatic rollback of v%d: %s", svc.Version, oneLine(why))}
	r.res.Services = append(r.res.Services, ServiceWrite{Service: next, Version: rec})
}

// oneLine keeps the first line of s.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
