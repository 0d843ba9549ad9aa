package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func newServiceCmd(e *env) *cobra.Command {
	cmd := newGroupCmd("service", "Manage services", "services", "svc")
	cmd.AddCommand(
		newServiceLsCmd(e),
		newServiceInspectCmd(e),
		newServicePsCmd(e),
		newServiceScaleCmd(e),
		newServiceRmCmd(e),
		newServiceLogsCmd(e),
		newServiceStatsCmd(e),
		newServiceHistoryCmd(e), newServiceRollbackCmd(e), newServicePromoteCmd(e), newServiceUpdateCmd(e),
		newServiceRebalanceCmd(e),
	)
	return cmd
}

func newServiceStatsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats NAME",
		Short: "Show the resource use of a service's running tasks",
		Long: `Show a sample of the CPU time, memory and processes of each running task of a
service, measured by the task's agent through its driver (cgroups for the
process driver; the engine's stats for the docker driver, with network and
block I/O).`,
		Args: exactArgs(1),
	}
	out := addOutputFlag(cmd)
	cmd.RunE = listRunE(e, out, func(ctx context.Context, c *api.Client, args []string) ([]api.TaskStats, error) {
		return c.ServiceStats(ctx, args[0])
	}, func(e *env, stats []api.TaskStats) error {
		tb := newTable(e.stdout, "ID", "SLOT", "CPU TIME", "MEMORY", "PIDS", "NET RX/TX", "BLOCK R/W", "ERROR")
		for _, st := range stats {
			if st.Stats == nil {
				tb.row(shortID(st.TaskID), strconv.Itoa(st.Slot), "-", "-", "-", "-", "-", st.Error)
				continue
			}
			x := st.Stats
			tb.row(shortID(st.TaskID), strconv.Itoa(st.Slot),
				time.Duration(x.CPUNanos).Round(time.Millisecond).String(),
				api.ByteSize(x.MemoryBytes).String(),
				strconv.FormatUint(x.Pids, 10),
				api.ByteSize(x.NetRxBytes).String()+"/"+api.ByteSize(x.NetTxBytes).String(),
				api.ByteSize(x.BlkReadBytes).String()+"/"+api.ByteSize(x.BlkWriteBytes).String(),
				"-")
		}
		return tb.flush()
	})
	return cmd
}

func newServiceLsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List services",
		Args:    noArgs,
	}
	out := addOutputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out); err != nil {
			return err
		}
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		svcs, err := c.ListServices(ctx)
		if err != nil {
			return err
		}
		sort.Slice(svcs, func(i, j int) bool { return svcs[i].Spec.Name < svcs[j].Spec.Name })
		if *out == outputJSON {
			return writeJSONList(e.stdout, svcs)
		}
		tasks, err := c.ListTasks(ctx, "", "")
		if err != nil {
			return err
		}
		running := map[string]int{} // service name → running tasks
		wanted := map[string]int{}  // service name → tasks desired running
		for _, t := range tasks {
			if t.DesiredState != api.TaskRunning {
				continue
			}
			wanted[t.ServiceName]++
			if t.Status.State == api.TaskRunning {
				running[t.ServiceName]++
			}
		}
		tb := newTable(e.stdout, "NAME", "MODE", "REPLICAS", "VERSION", "UPDATED")
		now := e.now()
		for _, s := range svcs {
			mode := s.Spec.Mode
			if mode == "" {
				mode = api.ModeReplicated
			}
			desired := wanted[s.Spec.Name] // global and per-unit: one per eligible node or unit
			if mode == api.ModePerUnit {
				mode += " (" + s.Spec.Unit + ")"
			}
			if mode == api.ModeReplicated {
				desired = s.Spec.ReplicaCount()
			}
			tb.row(s.Spec.Name, mode,
				fmt.Sprintf("%d/%d", running[s.Spec.Name], desired),
				strconv.FormatUint(s.Version, 10),
				ago(now, s.UpdatedAt))
		}
		return tb.flush()
	}
	return cmd
}

func newServiceInspectCmd(e *env) *cobra.Command {
	return newShowCmd(e, "inspect NAME", "Show a service as JSON",
		func(ctx context.Context, c *api.Client, name string) (any, error) { return c.GetService(ctx, name) })
}

func newServicePsCmd(e *env) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "ps NAME",
		Short: "List the tasks of a service",
		Args:  exactArgs(1),
	}
	out := addOutputFlag(cmd)
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include tasks that have ended")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out); err != nil {
			return err
		}
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		tasks, err := c.ServiceTasks(ctx, args[0], all)
		if err != nil {
			return err
		}
		sortTasks(tasks)
		if *out == outputJSON {
			views := make([]api.TaskView, len(tasks))
			for i, t := range tasks {
				views[i] = api.NewTaskView(t)
			}
			return writeJSONList(e.stdout, views)
		}
		hosts := nodeHostnames(ctx, c)
		tb := newTable(e.stdout, "ID", "SLOT", "NODE", "STATE", "DESIRED", "HEALTH", "PORTS", "CPUS", "PID", "ERROR")
		for _, t := range tasks {
			v := api.NewTaskView(t)
			node := hosts[v.Node]
			if node == "" {
				node = shortID(v.Node)
			}
			slot, pid := formatSlot(v.Slot), ""
			if v.PID > 0 {
				pid = strconv.Itoa(v.PID)
			}
			tb.row(shortID(v.ID), slot, node, string(v.State), string(v.DesiredState), v.Health,
				formatPorts(v.Ports), formatTaskCPUs(v), pid, v.Error)
		}
		return tb.flush()
	}
	return cmd
}

// formatSlot shows a task's slot: its replica number, "canary N" for a
// canary (whose slot is above api.CanarySlotBase, an internal numbering a
// user need not see), or nothing for a global service's task.
func formatSlot(slot int) string {
	switch {
	case api.IsCanarySlot(slot):
		return "canary " + strconv.Itoa(slot-api.CanarySlotBase)
	case slot > 0:
		return strconv.Itoa(slot)
	}
	return ""
}

// formatTaskCPUs shows where a task runs: its pinned CPUs (with the unit or
// memory nodes when it has them), "shared" for a placed task on the node's
// shared pool, or nothing while it is pending.
func formatTaskCPUs(v api.TaskView) string {
	switch {
	case v.CPUs == "" && v.Node == "":
		return ""
	case v.CPUs == "":
		return "shared"
	}
	s := v.CPUs
	if v.Unit != "" {
		s = v.Unit + "=" + s
	}
	if v.MemNodes != "" {
		s += " mem " + v.MemNodes
	}
	return s
}

// sortTasks orders tasks by slot, then newest first, then by id.
func sortTasks(tasks []api.Task) {
	sort.SliceStable(tasks, func(i, j int) bool {
		a, b := tasks[i], tasks[j]
		if a.Slot != b.Slot {
			return a.Slot < b.Slot
		}
		if a.Slot == 0 && a.NodeID != b.NodeID { // global: one slot per node
			return a.NodeID < b.NodeID
		}
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.After(b.CreatedAt)
		}
		return a.ID < b.ID
	})
}

// nodeHostnames maps node ids to hostnames. It is only for display: if
// the nodes cannot be listed, ids are shown instead.
func nodeHostnames(ctx context.Context, c *api.Client) map[string]string {
	nodes, err := c.ListNodes(ctx)
	if err != nil {
		return nil
	}
	m := make(map[string]string, len(nodes))
	for _, n := range nodes {
		m[n.ID] = n.Hostname
	}
	return m
}

// scaleArg is one NAME=N argument of `service scale`.
type scaleArg struct {
	name     string
	replicas int
}

// parseScaleArgs checks every NAME=N argument before anything is scaled.
func parseScaleArgs(args []string) ([]scaleArg, error) {
	out := make([]scaleArg, 0, len(args))
	seen := map[string]bool{}
	for _, a := range args {
		name, n, ok := strings.Cut(a, "=")
		if !ok || name == "" {
			return nil, usageErrorf("invalid argument %q: want NAME=REPLICAS, such as web=3", a)
		}
		r, err := strconv.Atoi(n)
		if err != nil {
			return nil, usageErrorf("invalid argument %q: replicas must be a whole number", a)
		}
		if r < 0 {
			return nil, usageErrorf("invalid argument %q: replicas must not be negative", a)
		}
		if r > api.MaxReplicas {
			return nil, usageErrorf("invalid argument %q: replicas must be at most %d", a, api.MaxReplicas)
		}
		if seen[name] {
			return nil, usageErrorf("service %q is given more than once", name)
		}
		seen[name] = true
		out = append(out, scaleArg{name, r})
	}
	return out, nil
}

func newServiceScaleCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "scale NAME=REPLICAS [NAME=REPLICAS...]",
		Short: "Set the number of replicas of services",
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			scales, err := parseScaleArgs(args)
			if err != nil {
				return err
			}
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			for _, s := range scales {
				svc, err := c.ScaleService(cmd.Context(), s.name, s.replicas)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "service %s scaled to %d (version %d)\n", s.name, s.replicas, svc.Version)
			}
			return nil
		},
	}
}

func newServiceRmCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME [NAME...]",
		Aliases: []string{"remove"},
		Short:   "Remove services and stop their tasks",
		Args:    minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			// Remove what can be removed; report every failure.
			var errs []error
			for _, name := range args {
				if err := c.RemoveService(cmd.Context(), name); err != nil {
					if cmd.Context().Err() != nil {
						return err
					}
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					continue
				}
				fmt.Fprintln(e.stdout, name)
			}
			switch len(errs) {
			case 0:
				return nil
			case 1:
				return errors.Unwrap(errs[0]) // the server's message names the service
			}
			msgs := make([]string, len(errs))
			for i, err := range errs {
				msgs[i] = err.Error()
			}
			return fmt.Errorf("%d services not removed: %s", len(errs), strings.Join(msgs, "; "))
		},
	}
}

func newServiceLogsCmd(e *env) *cobra.Command {
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Show the output of a service's tasks",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail < -1 {
				return usageErrorf("--tail %d: want a number of lines, or -1 for all", tail)
			}
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			rc, err := c.ServiceLogs(ctx, args[0], tail, follow)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(e.stdout, rc)
			if ctx.Err() != nil {
				return nil // interrupted: the normal way to stop following
			}
			if err != nil {
				return fmt.Errorf("log stream of %s broke: %w", args[0], err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines until interrupted")
	cmd.Flags().IntVarP(&tail, "tail", "n", -1, "number of lines to show from the end of each task's log (-1 for all)")
	return cmd
}
