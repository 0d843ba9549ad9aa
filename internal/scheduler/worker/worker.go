// Package worker is the plumbing around the pure scheduler: it watches the
// store, asks scheduler.Schedule for a plan for the pending tasks, and commits
// the plan with compare-and-swap. It makes no placement decision itself.
package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/controller"
	"github.com/berth-project/berth/internal/scheduler"
	"github.com/berth-project/berth/internal/store"
)

// Config is what the scheduling worker needs.
type Config struct {
	Store  *store.Store
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Worker is the plumbing around Schedule: it watches the store, plans for
// pending tasks and commits the plan with compare-and-swap. Only the leader
// runs it.
type Worker struct {
	cfg Config
	log *slog.Logger
}

// New returns a Worker.
func New(cfg Config) *Worker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Worker{cfg: cfg, log: cfg.Logger.WithGroup("scheduler")}
}

// Run schedules until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	l := &controller.Loop{Name: "scheduler", Store: w.cfg.Store, Logger: w.log, Reconcile: w.reconcile}
	return l.Run(ctx)
}

// Split turns the mirror into a snapshot and the tasks waiting for a node.
func Split(st *controller.State) (scheduler.Snapshot, []api.Task) {
	var snap scheduler.Snapshot
	var pending []api.Task
	for _, n := range st.Nodes {
		snap.Nodes = append(snap.Nodes, n)
	}
	for _, t := range st.Tasks {
		switch {
		case t.Status.State == api.TaskPending && t.DesiredState == api.TaskRunning:
			pending = append(pending, t)
		case t.NodeID != "" && !t.Status.State.Terminal() && t.Status.State != api.TaskPending:
			snap.Tasks = append(snap.Tasks, t)
		}
	}
	return snap, pending
}

func (w *Worker) reconcile(ctx context.Context, st *controller.State) (time.Time, error) {
	snap, pending := Split(st)
	if len(pending) == 0 {
		return time.Time{}, nil
	}
	plan := scheduler.Schedule(snap, pending)
	now := w.cfg.Now().UTC()
	var assigned []api.Task
	for _, a := range plan.Assignments {
		t := st.Tasks[a.TaskID]
		t.NodeID, t.Ports, t.Allocation = a.NodeID, a.Ports, a.Allocation
		t.Status = api.TaskStatus{State: api.TaskAssigned, Message: "assigned to node " + a.NodeID, Timestamp: now}
		assigned = append(assigned, t)
	}
	if err := w.commit(ctx, st, assigned); err != nil {
		return time.Time{}, err
	}
	var why []api.Task
	for _, u := range plan.Unplaced {
		t := st.Tasks[u.TaskID]
		if t.Status.Message == u.Reason {
			continue
		}
		t.Status.Message, t.Status.Timestamp = u.Reason, now
		why = append(why, t)
	}
	if err := w.commit(ctx, st, why); err != nil {
		return time.Time{}, err
	}
	if len(plan.Assignments) > 0 || len(plan.Unplaced) > 0 {
		w.log.Debug("scheduled", "assigned", len(plan.Assignments), "unplaced", len(plan.Unplaced))
	}
	return time.Time{}, nil
}

// commit writes tasks in small guarded batches (store.UpdateMany): a task
// that changed meanwhile is not written and is planned again on the next
// pass; the others land.
func (w *Worker) commit(ctx context.Context, st *controller.State, tasks []api.Task) error {
	done, err := w.cfg.Store.Tasks.UpdateMany(ctx, tasks)
	for i, ok := range done {
		if ok {
			st.PutTask(tasks[i])
		}
	}
	return err
}
