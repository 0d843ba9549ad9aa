package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"sync"
	"sync/atomic"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
)

// stopReason says why a runner should stop its task.
type stopReason int

const (
	noStop      stopReason = iota
	stopDesired            // the manager set the desired state to shutdown
	stopAgent              // Agent.Shutdown
	stopForget             // the task left the node's assignment set
)

// stopSlack is how long Stop may take beyond the grace period before the
// runner gives up on it.
const stopSlack = 30 * time.Second

// runner moves one task through its lifecycle, one step at a time, never past
// its desired state: assigned → starting → running → complete | failed |
// shutdown, or rejected when it cannot be started at all.
type runner struct {
	a   *Agent
	id  string
	log *slog.Logger

	// wake is signalled when the desired state or a stop request changes.
	wake chan struct{}
	// done is closed when the runner's goroutine returns (at once for
	// runners that never had one).
	done chan struct{}

	mu      sync.Mutex
	task    api.Task // normalized once the runner validated it
	drvName string
	desired api.TaskState
	// shutdownRev is the store revision of the task when its desired state
	// became shutdown (0 if unknown): gateways that acknowledged it no longer
	// route to the task.
	shutdownRev int64
	stop        stopReason
	status      api.TaskStatus
	handle      driver.Handle
	// cpuSet is the CPU list the task runs on, as last given to its driver
	// ("" when unpinned or not started).
	cpuSet string
	// detachedStop is set once Shutdown took over a detached task.
	detachedStop bool
	// slot is set while the runner holds one of the node's start slots.
	slot atomic.Bool
	// exited is set when the goroutine is about to return (or at once for
	// runners that never had one); finalizeOnExit asks it to finalize the
	// task then, because the manager learned the end before it returned.
	exited, finalizeOnExit bool
}

// markExited records that the runner's goroutine is done and closes done. It
// reports whether the task should be finalized now.
func (r *runner) markExited() bool {
	r.mu.Lock()
	r.exited = true
	f := r.finalizeOnExit
	r.mu.Unlock()
	close(r.done)
	return f
}

// exitedOrDefer reports whether the goroutine is done; if not, it asks it to
// finalize the task when it is.
func (r *runner) exitedOrDefer() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.exited {
		r.finalizeOnExit = true
	}
	return r.exited
}

func newRunner(a *Agent, t api.Task) *runner {
	r := &runner{
		a:       a,
		id:      t.ID,
		log:     a.log.With("task", t.ID, "service", t.ServiceName, "slot", t.Slot),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		task:    t,
		drvName: t.Spec.Driver,
		desired: api.TaskRunning,
		status:  t.Status,
	}
	if r.drvName == "" {
		r.drvName = api.DriverProcess
	}
	if t.DesiredState != api.TaskRunning {
		r.desired = api.TaskShutdown
		r.shutdownRev = t.Revision
		r.stop = stopDesired
	}
	if !r.status.State.Valid() || r.status.State.Before(api.TaskAssigned) {
		r.status.State = api.TaskAssigned
	}
	return r
}

// setDesired records the manager's desired state. It only ever moves from
// running to shutdown.
func (r *runner) setDesired(d api.TaskState, rev int64) {
	if d == api.TaskRunning {
		return
	}
	r.mu.Lock()
	changed := r.desired == api.TaskRunning
	r.desired = api.TaskShutdown
	if changed {
		r.shutdownRev = rev
	}
	if changed && r.stop == noStop {
		r.stop = stopDesired
	}
	r.mu.Unlock()
	if changed {
		r.kick()
	}
}

// requestStop asks the runner to stop its task. Forgetting overrides the
// other reasons (the manager no longer wants to hear about the task); the
// others keep the first reason given.
func (r *runner) requestStop(why stopReason) {
	r.mu.Lock()
	if r.stop == noStop || why == stopForget {
		r.stop = why
	}
	r.mu.Unlock()
	r.kick()
}

func (r *runner) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *runner) stopReason() stopReason {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stop
}

func (r *runner) snapshot() (api.TaskStatus, driver.Handle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status, r.handle
}

// validStep reports whether a task may move from one state to the next: one
// step forward at a time.
func validStep(from, to api.TaskState) bool {
	switch {
	case from.Terminal():
		return false
	case to.Terminal():
		return true
	case to == api.TaskStarting:
		return from.Before(api.TaskStarting)
	case to == api.TaskRunning:
		return from == api.TaskStarting
	}
	return false
}

// advance moves the task to st.State if that is a valid step (and, for
// starting, only while the desired state is running). It persists nothing;
// the caller does. It reports whether the step was taken.
func (r *runner) advance(st api.TaskStatus) bool {
	r.mu.Lock()
	from := r.status.State
	if !validStep(from, st.State) || (st.State == api.TaskStarting && (r.desired != api.TaskRunning || r.stop != noStop)) {
		r.mu.Unlock()
		if st.State != api.TaskStarting {
			r.log.Error("refusing an invalid task state change", "from", from, "to", st.State)
		}
		return false
	}
	if st.Timestamp.IsZero() {
		st.Timestamp = r.a.clock.Now()
	}
	r.status = st
	desired := r.desired
	r.mu.Unlock()
	if h := r.a.onTransition; h != nil {
		h(r.id, from, st.State, desired)
	}
	r.a.rep.enqueue(r.id, st)
	return true
}

// finish moves the task to a terminal status, saves it (when persist is set)
// so it survives a restart until reported, and queues the report.
func (r *runner) finish(st api.TaskStatus, persist bool) {
	if st.FinishedAt.IsZero() {
		st.FinishedAt = r.a.clock.Now()
	}
	if persist {
		r.mu.Lock()
		rec := taskRecord{Task: r.task, Status: st}
		if r.handle != nil {
			s := r.handle.State()
			rec.Driver = &s
		}
		r.mu.Unlock()
		if err := r.a.store.saveTask(rec); err != nil {
			r.log.Error("cannot save task state", "err", err)
		}
	}
	if r.advance(st) {
		r.log.Info("task ended", "state", st.State, "error", st.Err)
	}
}

// run is the runner's goroutine.
func (r *runner) run(ctx context.Context) {
	defer r.a.runWG.Done()
	defer func() {
		if r.markExited() {
			r.a.finalize(r.id)
		}
		if _, excl := r.exclusiveHeld(); excl {
			r.a.refreshShared() // its CPUs go back to the shared pool
		}
	}()
	st, h := r.snapshot()
	if h == nil && st.State.Before(api.TaskRunning) {
		if !r.start(ctx) {
			return
		}
	}
	r.supervise(ctx)
}

// waitUntil waits until t, or until the runner is asked to stop or ctx ends.
// It reports whether t came without a stop request.
func (r *runner) waitUntil(ctx context.Context, t time.Time) bool {
	d := t.Sub(r.a.clock.Now())
	if d <= 0 {
		return r.stopReason() == noStop
	}
	r.log.Info("waiting for the restart delay", "until", t)
	timer := r.a.clock.After(d)
	for {
		select {
		case <-timer:
			return r.stopReason() == noStop
		case <-r.wake:
			if r.stopReason() != noStop {
				return false
			}
		case <-ctx.Done():
			return false
		}
	}
}

// start takes the task from assigned to running. It reports whether the task
// is running; if not, the task is terminal, forgotten, or the agent is
// stopping (ctx done).
func (r *runner) start(ctx context.Context) bool {
	if !r.waitUntil(ctx, r.task.NotBefore) {
		if ctx.Err() == nil {
			r.endBeforeStart()
		}
		return false
	}
	reject := func(state api.TaskState, err error) bool {
		if r.stopReason() == stopForget {
			r.a.forgotten(r) // no longer ours: nothing to report
			return false
		}
		st, _ := r.snapshot()
		st.State, st.Err = state, err.Error()
		r.finish(st, false)
		return false
	}

	drv, ok := r.a.cfg.Drivers[r.drvName]
	if !ok {
		return reject(api.TaskRejected, fmt.Errorf("driver %q is not available on this node", r.drvName))
	}
	t, err := normalizeTask(r.task)
	if err != nil {
		return reject(api.TaskRejected, err)
	}
	// The user the task runs as is part of the task this agent keeps (and
	// saves): its exec health checks run as that user, and so do they
	// after the agent restarts.
	t.Spec.User = taskUser(t.Spec, r.a.root)
	r.mu.Lock()
	r.task = t
	r.mu.Unlock()
	cpus, mems := r.a.pinning(t)
	spec, _, err := buildStartSpec(t, r.a.NodeID(), r.a.berth, r.a.store.logsDir(), r.a.cfg.LogMaxBytes, cpus, mems)
	if err != nil {
		return reject(api.TaskRejected, err)
	}
	r.a.taskDNS(t, &spec)
	if err := checkPorts(t, r.a.portFree); err != nil {
		return reject(api.TaskFailed, err)
	}

	st, _ := r.snapshot()
	st.State, st.Message = api.TaskStarting, ""
	st.Timestamp = time.Time{}
	if !r.advance(st) {
		r.endBeforeStart()
		return false
	}

	if !r.acquireSlot(ctx) {
		if ctx.Err() == nil {
			r.endBeforeStart()
		}
		return false
	}
	h, err := drv.Start(ctx, spec)
	if err != nil || !holdsSlotWhileListening(t) {
		r.releaseSlot()
	}
	if err != nil {
		if ctx.Err() != nil {
			// The agent is stopping; the next run finds the task
			// "starting" with no record and reports it failed.
			return false
		}
		state := api.TaskFailed
		if errors.Is(err, driver.ErrInvalid) {
			state = api.TaskRejected
		}
		r.log.Warn("task did not start", "err", err)
		return reject(state, err)
	}

	ds := h.State()
	st, _ = r.snapshot()
	st.State = api.TaskRunning
	st.PID = ds.PID
	st.ContainerID = ds.ContainerID
	st.StartedAt = r.a.clock.Now()
	st.Timestamp = st.StartedAt
	// Without a health check a running task serves from its start; with
	// one, from when the check first passes (setHealth).
	st.Health, st.HealthySince = api.HealthNone, st.StartedAt
	if t.Spec.Health != nil {
		st.Health, st.HealthySince = api.HealthStarting, time.Time{}
	}
	r.mu.Lock()
	r.handle = h
	r.cpuSet = cpus
	r.mu.Unlock()
	if t.Allocation == nil {
		// The pool may have changed while the task started.
		r.a.refreshShared()
	}
	// Save before reporting: a task the manager sees running must be one a
	// restarted agent can find again.
	if err := r.a.store.saveTask(taskRecord{Task: t, Driver: &ds, Status: st}); err != nil {
		r.log.Error("cannot save task state: the task will not be recovered after an agent restart", "err", err)
	}
	r.advance(st)
	r.log.Info("task running", "pid", ds.PID)
	return true
}

// endBeforeStart ends a task that was never started, because it was asked to
// stop.
func (r *runner) endBeforeStart() {
	switch r.stopReason() {
	case stopForget:
		r.a.forgotten(r)
	case stopAgent:
		st, _ := r.snapshot()
		st.State, st.Message = api.TaskShutdown, "the agent shut down before the task started"
		r.finish(st, false)
	default:
		st, _ := r.snapshot()
		st.State, st.Message = api.TaskShutdown, "shut down before it started"
		r.finish(st, false)
	}
}

// acquireSlot waits for one of the node's start slots. It reports false
// when the runner is asked to stop or ctx ends first.
func (r *runner) acquireSlot(ctx context.Context) bool {
	for {
		select {
		case r.a.starts <- struct{}{}:
			r.slot.Store(true)
			return true
		case <-r.wake:
			if r.stopReason() != noStop {
				return false
			}
		case <-ctx.Done():
			return false
		}
	}
}

// releaseSlot gives the runner's start slot back, once.
func (r *runner) releaseSlot() {
	if r.slot.CompareAndSwap(true, false) {
		<-r.a.starts
	}
}

// holdsSlotWhileListening reports whether a started task keeps its start
// slot until its port first answers (or StartHold passes): those with an
// HTTP or TCP health check, whose program's start is what competes for the
// CPU.
func holdsSlotWhileListening(t api.Task) bool {
	h := t.Spec.Health
	return h != nil && (h.HTTP != nil || h.TCP != nil)
}

type waitResult struct {
	exit driver.Exit
	err  error
}

// supervise watches a running task until it ends, is stopped, fails its
// health check, or the agent stops (ctx done: the task is left running).
func (r *runner) supervise(ctx context.Context) {
	st, h := r.snapshot()
	waitCh := make(chan waitResult, 1)
	go func() {
		ex, err := h.Wait(ctx)
		waitCh <- waitResult{ex, err}
	}()

	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	var healthCh <-chan healthEvent
	if r.task.Spec.Health != nil {
		healthCh = r.a.startHealth(hctx, r, st)
	}
	// A task that holds its start slot gives it back when it first
	// answers, ends, or after StartHold: real time, as the slot is about
	// the machine's CPUs.
	defer r.releaseSlot()
	var holdC <-chan time.Time
	if r.slot.Load() {
		hold := time.NewTimer(StartHold)
		defer hold.Stop()
		holdC = hold.C
	}
	for {
		select {
		case <-holdC:
			r.releaseSlot()
			holdC = nil
		case <-ctx.Done():
			return // detached: the task keeps running
		case res := <-waitCh:
			if res.err != nil && ctx.Err() != nil {
				return
			}
			r.releaseSlot()
			r.ended(h, res)
			return
		case <-r.wake:
			if why := r.stopReason(); why != noStop {
				r.releaseSlot() // not for the whole grace period
				r.stopTask(h, waitCh, why, nil)
				return
			}
		case ev := <-healthCh:
			if ev.health == api.HealthUnhealthy {
				r.releaseSlot()
				r.setHealth(ev.health)
				r.stopTask(h, waitCh, noStop, ev.err)
				return
			}
			if ev.health == api.HealthHealthy {
				r.releaseSlot()
			}
			r.setHealth(ev.health)
		}
	}
}

// setHealth records and reports a change of health of a running task. The
// change to healthy sets HealthySince; the change to unhealthy keeps it, so
// that the manager can tell how long the task served before it failed.
func (r *runner) setHealth(health string) {
	r.mu.Lock()
	if r.status.State != api.TaskRunning || r.status.Health == health {
		r.mu.Unlock()
		return
	}
	now := r.a.clock.Now()
	r.status.Health = health
	r.status.Timestamp = now
	switch health {
	case api.HealthHealthy:
		r.status.HealthySince = now
	case api.HealthStarting:
		r.status.HealthySince = time.Time{}
	}
	st := r.status
	rec := taskRecord{Task: r.task, Status: st}
	if r.handle != nil {
		s := r.handle.State()
		rec.Driver = &s
	}
	r.mu.Unlock()
	r.log.Info("health changed", "health", health)
	// Save before reporting, as for the start: what the manager was told
	// is what a restarted agent finds (and re-reports if it must).
	if err := r.a.store.saveTask(rec); err != nil {
		r.log.Error("cannot save task state", "err", err)
	}
	r.a.rep.enqueue(r.id, st)
}

// ended handles a task that ended on its own.
func (r *runner) ended(h driver.Handle, res waitResult) {
	sctx, cancel := context.WithTimeout(context.Background(), stopSlack)
	defer cancel()
	if err := h.Stop(sctx, 0); err != nil { // release cgroups and the like
		r.log.Warn("cannot release the resources of an ended task", "err", err)
	}
	st, _ := r.snapshot()
	if res.err != nil {
		st.State, st.Err, st.ExitCode = api.TaskFailed, fmt.Sprintf("lost track of the task: %v", res.err), nil
	} else {
		applyExit(&st, res.exit)
	}
	if r.stopReason() == stopForget {
		r.a.forgotten(r)
		return
	}
	r.finish(st, true)
}

// applyExit fills in the terminal state, error and exit code for how a task
// ended on its own.
func applyExit(st *api.TaskStatus, ex driver.Exit) {
	st.ExitCode = nil
	if ex.Code >= 0 {
		c := ex.Code
		st.ExitCode = &c
	}
	switch {
	case ex.OOMKilled:
		st.State, st.Err = api.TaskFailed, "out of memory"
	case ex.Signal != 0:
		st.State, st.Err = api.TaskFailed, fmt.Sprintf("killed by signal %d (%s)", ex.Signal, syscall.Signal(ex.Signal))
	case ex.Err != nil:
		st.State, st.Err = api.TaskFailed, fmt.Sprintf("lost track of the task: %v", ex.Err)
	case ex.Code == 0:
		st.State, st.Message = api.TaskComplete, "exit code 0"
	case ex.Code > 0:
		st.State, st.Err = api.TaskFailed, fmt.Sprintf("exit code %d", ex.Code)
	default:
		st.State, st.Err = api.TaskFailed, "exit code unknown"
	}
}

// stopTask stops the running task: for a stop request (why) or because it
// failed its health check (healthErr).
func (r *runner) stopTask(h driver.Handle, waitCh <-chan waitResult, why stopReason, healthErr error) {
	grace := r.task.Spec.StopGracePeriod.D()
	if grace <= 0 {
		grace = api.DefaultStopGracePeriod
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace+stopSlack)
	defer cancel()
	if why == stopDesired || why == stopForget {
		r.mu.Lock()
		rev := r.shutdownRev
		r.mu.Unlock()
		r.a.drainTask(r.task.ID, rev, grace)
	}
	r.log.Info("stopping task", "grace", grace)
	stopErr := h.Stop(sctx, grace)
	var code *int
	t := time.NewTimer(time.Second)
	select {
	case res := <-waitCh:
		if res.err == nil && res.exit.Code >= 0 {
			c := res.exit.Code
			code = &c
		}
	case <-t.C:
	}
	t.Stop()

	if why == stopForget {
		if stopErr != nil {
			r.log.Error("cannot stop a task that left the node", "err", stopErr)
		}
		r.a.forgotten(r)
		return
	}
	st, _ := r.snapshot()
	st.ExitCode = code
	switch {
	case healthErr != nil:
		st.State, st.Err = api.TaskFailed, "health check failed: "+healthErr.Error()
	case why == stopAgent:
		st.State, st.Message = api.TaskShutdown, "stopped: the agent shut down"
	default:
		st.State, st.Message = api.TaskShutdown, "stopped"
	}
	if stopErr != nil {
		st.Err = joinText(st.Err, "stop: "+stopErr.Error())
	}
	r.finish(st, true)
}

// stopDetached stops a task whose runner goroutine ended with Run (so nobody
// watches it any more). Used by Shutdown after Run returned.
func (r *runner) stopDetached(ctx context.Context) error {
	r.mu.Lock()
	if r.status.State.Terminal() || r.detachedStop {
		r.mu.Unlock()
		return nil
	}
	r.detachedStop = true
	h := r.handle
	grace := r.task.Spec.StopGracePeriod.D()
	r.mu.Unlock()
	if grace <= 0 {
		grace = api.DefaultStopGracePeriod
	}
	st, _ := r.snapshot()
	st.State = api.TaskShutdown
	if h == nil {
		st.Message = "the agent shut down before the task started"
		r.finish(st, false)
		return nil
	}
	st.Message = "stopped: the agent shut down"
	err := h.Stop(ctx, grace)
	if err != nil {
		st.Err = "stop: " + err.Error()
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	if ex, werr := h.Wait(wctx); werr == nil && ex.Code >= 0 {
		c := ex.Code
		st.ExitCode = &c
	}
	cancel()
	r.finish(st, true)
	if err != nil {
		return fmt.Errorf("agent: stop task %s: %w", r.id, err)
	}
	return nil
}

func joinText(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// removeStrays asks every driver that leaves things behind (containers) to
// remove those of this node that no task known here owns: what an agent
// that died between starting a task and saving its record left running.
// It runs once, after recovery and registration and before any new task
// starts, so every task of this node is in a.runners.
func (a *Agent) removeStrays(ctx context.Context) {
	keep := map[string]bool{}
	a.mu.Lock()
	for id := range a.runners {
		keep[id] = true
	}
	a.mu.Unlock()
	for name, d := range a.cfg.Drivers {
		sr, ok := d.(driver.StrayRemover)
		if !ok {
			continue
		}
		removed, err := sr.RemoveStrays(ctx, a.NodeID(), keep)
		if len(removed) > 0 {
			a.log.Warn("removed stray tasks no task of this node owns", "driver", name, "tasks", removed)
		}
		if err != nil {
			a.log.Error("cannot remove stray tasks", "driver", name, "err", err)
		}
	}
}
