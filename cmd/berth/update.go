package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// defaultPollInterval is how often --wait reads the service.
const defaultPollInterval = time.Second

func newServiceHistoryCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "List the kept versions of a service",
		Long: `List the kept versions of a service, newest first: when each was deployed,
by whom, and what changed from the version before. 'berth service rollback
NAME --to VERSION' puts one of them back.`,
		Args: exactArgs(1),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = listRunE(e, out, func(ctx context.Context, c *api.Client, args []string) ([]api.ServiceVersion, error) {
		return c.Versions(ctx, args[0])
	}, func(e *env, vs []api.ServiceVersion) error {
		tb := newTable(e.stdout, "VERSION", "CREATED", "AUTHOR", "SUMMARY")
		now := e.now()
		for _, v := range vs {
			tb.row(strconv.FormatUint(v.Version, 10), ago(now, v.CreatedAt), v.Author, summaryCell(v.Summary))
		}
		return tb.flush()
	})
	return cmd
}

// summaryCell keeps a long summary whole up to a wider limit than other
// cells: it is the last column.
func summaryCell(s string) string {
	if r := []rune(s); len(r) > 2*maxCell {
		return string(r[:2*maxCell-1]) + "…"
	}
	return s
}

func newServiceRollbackCmd(e *env) *cobra.Command {
	var to uint64
	var wait bool
	var timeout, poll time.Duration
	cmd := &cobra.Command{
		Use:   "rollback NAME [--to VERSION] [--wait]",
		Short: "Roll a service back to an earlier version",
		Long: `Roll a service back to the spec it had before its last change, or to a kept
version (see 'berth service history'). The rollback is a new version; its tasks
move back under the spec's rollback: policy. Canaries waiting for promotion are
dropped. With --wait, the rollback is followed until its tasks are back.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 || poll <= 0 {
				return usageErrorf("--timeout and --poll-interval must be positive")
			}
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			svc, err := c.Rollback(cmd.Context(), args[0], to)
			if err != nil {
				return err
			}
			what := "the previous spec"
			if to != 0 {
				what = "version " + strconv.FormatUint(to, 10)
			}
			fmt.Fprintf(e.stdout, "service %s rolled back to %s (now version %d)%s\n", args[0], what, svc.Version, stateNote(svc))
			if !wait {
				return nil
			}
			w := &waiter{c: c, out: e.stdout, interval: poll, timeout: timeout, bar: isTerminal(e.stdout)}
			return w.waitVersion(cmd.Context(), args[0], svc.Version)
		},
	}
	cmd.Flags().Uint64Var(&to, "to", 0, "version to roll back to (default: the previous spec)")
	addWaitFlags(cmd, &wait, &timeout, &poll, "follow the rollback until its tasks are back; fail if it pauses")
	return cmd
}

// addWaitFlags adds --wait, --timeout and the hidden --poll-interval.
func addWaitFlags(cmd *cobra.Command, wait *bool, timeout, poll *time.Duration, usage string) {
	cmd.Flags().BoolVar(wait, "wait", false, usage)
	cmd.Flags().DurationVar(timeout, "timeout", 10*time.Minute, "with --wait, how long to wait")
	cmd.Flags().DurationVar(poll, "poll-interval", defaultPollInterval, "with --wait, how often to read the service")
	_ = cmd.Flags().MarkHidden("poll-interval")
}

// stateNote is ", tasks rolling_back" style text about an update, if any.
func stateNote(svc api.Service) string {
	if st := svc.UpdateStatus; st != nil && st.ToVersion == svc.Version {
		return "; update state: " + st.State
	}
	return ""
}

func newServiceRestartCmd(e *env) *cobra.Command {
	var wait bool
	var timeout, poll time.Duration
	cmd := &cobra.Command{
		Use:   "restart NAME [--wait]",
		Short: "Replace every task of a service, one batch at a time, without a spec change",
		Long: `Replace every task of a service by a rolling update under its update policy
(parallelism, order, health, monitor, failure action), without changing the
spec otherwise: the new version only raises task.force_update. A deploy of the
spec file afterwards keeps it, so it does not restart the tasks again.
With --wait, follow the update as 'deploy --wait' does.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 || poll <= 0 {
				return usageErrorf("--timeout and --poll-interval must be positive")
			}
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			svc, err := c.Restart(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "service %s restarting (version %d)%s\n", args[0], svc.Version, stateNote(svc))
			if !wait {
				return nil
			}
			w := &waiter{c: c, out: e.stdout, interval: poll, timeout: timeout, bar: isTerminal(e.stdout)}
			return w.waitVersion(cmd.Context(), args[0], svc.Version)
		},
	}
	addWaitFlags(cmd, &wait, &timeout, &poll, "follow the restart until every task is replaced; fail if it pauses or rolls back")
	return cmd
}

func newServicePromoteCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "promote NAME",
		Short: "Let an update whose canaries are running carry on",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			svc, err := c.Promote(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "service %s: canaries promoted, the update to version %d carries on\n", args[0], svc.Version)
			return nil
		},
	}
}

func newServiceUpdateCmd(e *env) *cobra.Command {
	var resume bool
	cmd := &cobra.Command{
		Use:   "update NAME --resume",
		Short: "Continue a paused update",
		Long: `Continue a paused update (or rollback) of a service. To change a service,
edit its spec and run 'berth deploy -f FILE'.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !resume {
				return usageErrorf("service update needs --resume; to change a service, edit its spec and run 'berth deploy -f FILE'")
			}
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			svc, err := c.Resume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "service %s: update resumed (%s)\n", args[0], svc.UpdateStatus.State)
			return nil
		},
	}
	cmd.Flags().BoolVar(&resume, "resume", false, "continue the paused update")
	return cmd
}

// waiter follows a deploy until it has taken effect, for deploy --wait.
type waiter struct {
	c        *api.Client
	out      io.Writer
	interval time.Duration
	timeout  time.Duration
	bar      bool // draw a progress bar in place (a terminal)
	last     string
	lastErr  string // the latest error of a task being waited for
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// show prints progress: in place on a terminal, else a line whenever it
// changes.
func (w *waiter) show(name, state string, done, total int, unit string) {
	line := fmt.Sprintf("%s %d/%d %s", progressBar(done, total, 20), done, total, unit)
	if state = strings.TrimPrefix(state, "; "); state != "" {
		line += " (" + state + ")"
	}
	if line == w.last {
		return
	}
	w.last = line
	if w.bar {
		fmt.Fprintf(w.out, "\r\033[K%s: %s", name, line)
		return
	}
	fmt.Fprintf(w.out, "%s: %s\n", name, line)
}

// endLine finishes the in-place bar.
func (w *waiter) endLine() {
	if w.bar && w.last != "" {
		fmt.Fprintln(w.out)
	}
	w.last = ""
}

// progressBar draws [####----] with width cells.
func progressBar(done, total, width int) string {
	n := 0
	if total > 0 {
		n = min(max(done, 0)*width/total, width)
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "]"
}

// failFastAfter is how many tasks of the version being waited for may end
// failed or rejected, while none of them runs, before --wait gives up: no
// task can start (a program that does not exist, an image that cannot be
// pulled), and waiting for the timeout would only hide it.
const failFastAfter = 3

// errNoStart is the cause --wait stops with when no task can start.
var errNoStart = errors.New("no task can start")

// versionTasks sums up the tasks of one version of a service.
type versionTasks struct {
	running int      // observed running
	failed  int      // ended failed or rejected
	last    api.Task // the failed or rejected one that ended last
}

// tasksOfVersion sums up the tasks (history included) whose spec version is
// at least version.
func tasksOfVersion(tasks []api.Task, version uint64) versionTasks {
	var v versionTasks
	for _, t := range tasks {
		if t.SpecVersion < version {
			continue
		}
		switch t.Status.State {
		case api.TaskRunning:
			v.running++
		case api.TaskFailed, api.TaskRejected:
			v.failed++
			if v.failed == 1 || endedAt(t).After(endedAt(v.last)) {
				v.last = t
			}
		}
	}
	return v
}

// endedAt is when a task ended, as well as its status tells.
func endedAt(t api.Task) time.Time {
	if !t.Status.FinishedAt.IsZero() {
		return t.Status.FinishedAt
	}
	return t.Status.Timestamp
}

// taskError is the error of a task that ended, for a message: its slot and
// what went wrong.
func taskError(t api.Task) string {
	why := t.Status.Err
	if why == "" {
		why = t.Status.Message
	}
	if why == "" {
		why = string(t.Status.State)
	}
	slot := formatSlot(t.Slot)
	if slot != "" {
		slot = "slot " + slot + ", "
	}
	return fmt.Sprintf("task %s (%s%s): %s", shortID(t.ID), slot, t.Status.State, oneLine(why))
}

// check reads the tasks of the service and reports errNoStart (with the
// latest task error) when failFastAfter tasks of version have failed or
// been rejected and none runs. last is set to the latest task error, for
// the progress line. A failed read is not fatal: the next poll retries.
func (w *waiter) check(ctx context.Context, name string, version uint64) error {
	tasks, err := w.c.ServiceTasks(ctx, name, true)
	if err != nil {
		return nil
	}
	v := tasksOfVersion(tasks, version)
	w.lastErr = ""
	if v.failed > 0 {
		w.lastErr = taskError(v.last)
	}
	if v.running == 0 && v.failed >= failFastAfter {
		return fmt.Errorf("%w: %d tasks failed or were rejected and none runs; the latest, %s", errNoStart, v.failed, w.lastErr)
	}
	return nil
}

// progressState is the text in parentheses after the progress bar: the
// update state, the failures, and the latest task error.
func (w *waiter) progressState(state string, failed int) string {
	if failed > 0 {
		state += fmt.Sprintf(", %d failed", failed)
	}
	if w.lastErr != "" {
		state += "; last error: " + cell(w.lastErr)
	}
	return state
}

// updateUnit names what an update's counts count: tasks updated, or, for
// a rollback, tasks rolled back.
func updateUnit(st *api.UpdateStatus) string {
	if st.Rollback {
		return "rolled back"
	}
	return "updated"
}

// wait follows the service res until its update ends, or, when the deploy
// started none (a new service, or a change that replaces no task), until its
// tasks run.
func (w *waiter) wait(ctx context.Context, res api.DeployResult) error {
	return w.waitVersion(ctx, res.Spec.Name, res.Version)
}

// waitVersion follows the update of service name to version.
func (w *waiter) waitVersion(ctx context.Context, name string, version uint64) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	defer w.endLine()
	pollCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var last api.Service
	svc, err := w.c.WaitForUpdate(pollCtx, name, version, w.interval, func(s api.Service) {
		last = s
		st := s.UpdateStatus
		if st == nil || st.ToVersion < version {
			return // no update: waitRunning follows the tasks
		}
		// Only while no task has been updated: an updated task runs, so
		// then the version can start, and the full task list (history
		// included) need not be read on every poll of a large service.
		if st.Updated == 0 {
			if err := w.check(pollCtx, name, version); err != nil {
				stop(err)
				return
			}
		}
		w.show(name, w.progressState(st.State, st.Failed), st.Updated, st.Total, updateUnit(st))
	})
	if cause := context.Cause(pollCtx); errors.Is(cause, errNoStart) {
		return fmt.Errorf("service %s: version %d: %w", name, version, cause)
	}
	st := svc.UpdateStatus
	switch {
	case err == nil:
		w.endLine()
		if err := w.checkMesh(ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(w.out, "service %s: update to version %d completed\n", name, svc.Version)
		return nil
	case errors.Is(err, api.ErrNoUpdate):
		// Only tasks of this version count for giving up early: the
		// history of older ones says nothing of whether this one starts.
		return w.waitRunning(ctx, name, version)
	case errors.Is(err, api.ErrCanariesWaiting):
		w.endLine()
		fmt.Fprintf(w.out, "service %s: canaries are running; promote them with 'berth service promote %s' or drop them with 'berth service rollback %s'\n", name, name, name)
		return nil
	case errors.Is(err, api.ErrUpdateRolledBack) && st != nil && st.Rollback && st.ToVersion == version:
		// The rollback being waited for (service rollback --wait) ended.
		w.endLine()
		fmt.Fprintf(w.out, "service %s: rollback to version %d completed (%d/%d tasks rolled back)\n", name, version, st.Updated, st.Total)
		return nil
	case errors.Is(err, api.ErrUpdatePaused):
		return fmt.Errorf("service %s: update paused: %s; continue with 'berth service update %s --resume' or go back with 'berth service rollback %s'",
			name, reasonOf(svc), name, name)
	case errors.Is(err, api.ErrUpdateRolledBack):
		// The counts of an automatic rollback's status are the rollback's,
		// not the failed update's: say so rather than "updated".
		counts := ""
		if st != nil && st.Rollback && st.ToVersion > version {
			counts = fmt.Sprintf(" (now version %d, %d/%d tasks rolled back)", st.ToVersion, st.Updated, st.Total)
		}
		return fmt.Errorf("service %s: update failed and was rolled back%s: %s", name, counts, reasonOf(svc))
	case ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("service %s: timed out after %s waiting for the update%s%s", name, w.timeout, progressOf(last), w.lastErrNote())
	}
	return err
}

// lastErrNote is "; last task error: …" when a task has failed.
func (w *waiter) lastErrNote() string {
	if w.lastErr == "" {
		return ""
	}
	return "; last task error: " + w.lastErr
}

func reasonOf(svc api.Service) string {
	if st := svc.UpdateStatus; st != nil && st.Message != "" {
		return st.Message
	}
	return "no reason given"
}

func progressOf(svc api.Service) string {
	st := svc.UpdateStatus
	if st == nil {
		return ""
	}
	return fmt.Sprintf(" (%s, %d/%d %s, %d failed)", st.State, st.Updated, st.Total, updateUnit(st), st.Failed)
}

// waitRunning polls the service's tasks until every task it wants is
// running and healthy (or has no health check). It gives up early when no
// task of minVersion or later can start (see check).
func (w *waiter) waitRunning(ctx context.Context, name string, minVersion uint64) error {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	running, want := 0, 0
	for {
		svc, err := w.c.GetService(ctx, name)
		if err == nil {
			var tasks []api.Task
			tasks, err = w.c.ServiceTasks(ctx, name, false)
			if err == nil {
				running, want = countRunning(svc, tasks)
				if want > 0 && running >= want || svc.Spec.Mode == api.ModeReplicated && want == 0 {
					w.show(name, "", running, want, "running")
					w.endLine()
					if err := w.checkMesh(ctx, name); err != nil {
						return err
					}
					fmt.Fprintf(w.out, "service %s: %d/%d tasks running\n", name, running, want)
					return nil
				}
				if running == 0 {
					if err := w.check(ctx, name, minVersion); err != nil {
						return fmt.Errorf("service %s: %w", name, err)
					}
				}
				w.show(name, w.progressState("", 0), running, want, "running")
			}
		}
		if err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("service %s: timed out after %s waiting for its tasks (%d/%d running)%s", name, w.timeout, running, want, w.lastErrNote())
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// checkMesh fails when a ready node's gateway refused the service (a
// published port it cannot open there). It first waits until every ready
// gateway has applied a routing state that holds the service's latest task
// writes (its acknowledged revision), so that it judges what the gateways
// made of this deploy, not of an older state.
func (w *waiter) checkMesh(ctx context.Context, name string) error {
	svc, err := w.c.GetService(ctx, name)
	if err != nil {
		return err
	}
	meshed := len(svc.Spec.Routes) > 0
	for _, p := range svc.Spec.Task.Ports {
		meshed = meshed || p.Publish != 0 && p.Mode != api.PublishHost
	}
	if !meshed {
		return nil
	}
	tasks, err := w.c.ServiceTasks(ctx, name, false)
	if err != nil {
		return err
	}
	var rev int64
	for _, t := range tasks {
		rev = max(rev, t.Revision)
	}
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for {
		nodes, err := w.c.ListNodes(ctx)
		if err != nil {
			return err
		}
		behind := ""
		for _, n := range nodes {
			if n.Status == api.NodeReady && n.Gateway != nil && n.Gateway.Revision < rev {
				behind = n.Hostname
			}
		}
		if behind == "" {
			if svc, err = w.c.GetService(ctx, name); err != nil {
				return err
			}
			if len(svc.MeshErrors) > 0 {
				m := svc.MeshErrors[0]
				more := ""
				if len(svc.MeshErrors) > 1 {
					more = fmt.Sprintf(" (and %d more nodes; see 'berth service ls')", len(svc.MeshErrors)-1)
				}
				return fmt.Errorf("service %s: its tasks run, but the gateway of node %s refused it: %s%s", name, m.Node, m.Error, more)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("service %s: timed out waiting for the gateway of node %s to apply the routing state: %w", name, behind, ctx.Err())
		case <-tick.C:
		}
	}
}

// countRunning counts the serving tasks of svc and how many it wants: its
// replicas, or for global and per-unit services the tasks meant to run.
func countRunning(svc api.Service, tasks []api.Task) (running, want int) {
	for _, t := range tasks {
		if t.DesiredState != api.TaskRunning {
			continue
		}
		want++
		if t.Status.State == api.TaskRunning {
			switch t.Status.Health {
			case "", api.HealthNone, api.HealthHealthy:
				running++
			}
		}
	}
	if svc.Spec.Mode == api.ModeReplicated || svc.Spec.Mode == "" {
		want = svc.Spec.ReplicaCount()
	}
	return running, want
}
