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
	cmd := &cobra.Command{
		Use:   "rollback NAME [--to VERSION]",
		Short: "Roll a service back to an earlier version",
		Long: `Roll a service back to the spec it had before its last change, or to a kept
version (see 'berth service history'). The rollback is a new version; its tasks
move back under the spec's rollback: policy. Canaries waiting for promotion are
dropped.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
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
			return nil
		},
	}
	cmd.Flags().Uint64Var(&to, "to", 0, "version to roll back to (default: the previous spec)")
	return cmd
}

// stateNote is ", tasks rolling_back" style text about an update, if any.
func stateNote(svc api.Service) string {
	if st := svc.UpdateStatus; st != nil && st.ToVersion == svc.Version {
		return "; update state: " + st.State
	}
	return ""
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
	if state != "" {
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

// wait follows the service res until its update ends, or, when the deploy
// started none (a new service, or a change that replaces no task), until its
// tasks run.
func (w *waiter) wait(ctx context.Context, res api.DeployResult) error {
	name := res.Spec.Name
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	defer w.endLine()
	var last api.Service
	svc, err := w.c.WaitForUpdate(ctx, name, res.Version, w.interval, func(s api.Service) {
		last = s
		if st := s.UpdateStatus; st != nil && st.ToVersion >= res.Version {
			state := st.State
			if st.Failed > 0 {
				state += fmt.Sprintf(", %d failed", st.Failed)
			}
			w.show(name, state, st.Updated, st.Total, "updated")
		}
	})
	switch {
	case err == nil:
		w.endLine()
		if err := w.checkMesh(ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(w.out, "service %s: update to version %d completed\n", name, svc.Version)
		return nil
	case errors.Is(err, api.ErrNoUpdate):
		return w.waitRunning(ctx, name)
	case errors.Is(err, api.ErrCanariesWaiting):
		w.endLine()
		fmt.Fprintf(w.out, "service %s: canaries are running; promote them with 'berth service promote %s' or drop them with 'berth service rollback %s'\n", name, name, name)
		return nil
	case errors.Is(err, api.ErrUpdatePaused):
		return fmt.Errorf("service %s: update paused: %s; continue with 'berth service update %s --resume' or go back with 'berth service rollback %s'",
			name, reasonOf(svc), name, name)
	case errors.Is(err, api.ErrUpdateRolledBack):
		return fmt.Errorf("service %s: update failed and was rolled back: %s", name, reasonOf(svc))
	case ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("service %s: timed out after %s waiting for the update%s", name, w.timeout, progressOf(last))
	}
	return err
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
	return fmt.Sprintf(" (%s, %d/%d updated, %d failed)", st.State, st.Updated, st.Total, st.Failed)
}

// waitRunning polls the service's tasks until every task it wants is
// running and healthy (or has no health check).
func (w *waiter) waitRunning(ctx context.Context, name string) error {
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
				w.show(name, "", running, want, "running")
				if want > 0 && running >= want || svc.Spec.Mode == api.ModeReplicated && want == 0 {
					w.endLine()
					if err := w.checkMesh(ctx, name); err != nil {
						return err
					}
					fmt.Fprintf(w.out, "service %s: %d/%d tasks running\n", name, running, want)
					return nil
				}
			}
		}
		if err != nil && ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("service %s: timed out after %s waiting for its tasks (%d/%d running)", name, w.timeout, running, want)
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
