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
		newServiceRestartCmd(e),
		newServiceRebalanceCmd(e),
	)
	return cmd
}

func newServiceStatsCmd(e *env) *cobra.Command {
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "stats NAME",
		Short: "Show the resource use of a service's running tasks",
		Long: `Show the CPU use, memory and processes of each running task of a service,
measured by the task's agent through its driver (cgroups for the process
driver; the engine's stats for the docker driver, with network and block
I/O). CPU % is the CPU time used between two samples taken --interval apart,
over that time (100% is one CPU). With --watch, a new table every --interval
until Ctrl-C.`,
		Args: exactArgs(1),
	}
	out := addOutputFlag(cmd)
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep sampling and printing until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "time between two samples")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out); err != nil {
			return err
		}
		if interval < 10*time.Millisecond {
			return usageErrorf("--interval %s: at least 10ms", interval)
		}
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		prev, err := c.ServiceStats(ctx, args[0])
		if err != nil {
			return err
		}
		if *out == outputJSON && !watch {
			return writeJSONList(e.stdout, prev)
		}
		clear := watch && isTerminal(e.stdout)
		for {
			select {
			case <-ctx.Done():
				return nil // Ctrl-C is how a watch ends
			case <-time.After(interval):
			}
			cur, err := c.ServiceStats(ctx, args[0])
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if *out == outputJSON {
				if err := writeJSONList(e.stdout, cur); err != nil {
					return err
				}
			} else {
				if clear {
					fmt.Fprint(e.stdout, "\x1b[H\x1b[2J") // home, clear screen
				}
				if err := writeStatsTable(e, prev, cur); err != nil {
					return err
				}
			}
			if !watch {
				return nil
			}
			prev = cur
		}
	}
	return cmd
}

// writeStatsTable prints the samples cur, with the CPU % since prev.
func writeStatsTable(e *env, prev, cur []api.TaskStats) error {
	before := map[string]*api.ResourceStats{}
	for _, st := range prev {
		before[st.TaskID] = st.Stats
	}
	tb := newTable(e.stdout, "ID", "SLOT", "CPU %", "CPU TIME", "MEMORY", "PIDS", "NET RX/TX", "BLOCK R/W", "ERROR")
	for _, st := range cur {
		if st.Stats == nil {
			tb.row(shortID(st.TaskID), strconv.Itoa(st.Slot), "-", "-", "-", "-", "-", "-", st.Error)
			continue
		}
		x := st.Stats
		tb.row(shortID(st.TaskID), strconv.Itoa(st.Slot),
			cpuPercent(before[st.TaskID], x),
			time.Duration(x.CPUNanos).Round(time.Millisecond).String(),
			api.ByteSize(x.MemoryBytes).String(),
			strconv.FormatUint(x.Pids, 10),
			api.ByteSize(x.NetRxBytes).String()+"/"+api.ByteSize(x.NetTxBytes).String(),
			api.ByteSize(x.BlkReadBytes).String()+"/"+api.ByteSize(x.BlkWriteBytes).String(),
			"-")
	}
	return tb.flush()
}

// cpuPercent is the CPU time a task used between two samples over the time
// between them, in percent of one CPU; "-" without an earlier sample (a task
// that just started) or with counters that went back (a restart).
func cpuPercent(a, b *api.ResourceStats) string {
	if a == nil || b == nil || !b.Time.After(a.Time) || b.CPUNanos < a.CPUNanos {
		return "-"
	}
	p := float64(b.CPUNanos-a.CPUNanos) / float64(b.Time.Sub(a.Time).Nanoseconds()) * 100
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

func newServiceLsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List services",
		Args:    noArgs,
	}
	out := addOutputFlag(cmd)
	keys := []string{"name", "mode"}
	rawFilters, quiet := addFilterFlags(cmd, keys, "service names")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out); err != nil {
			return err
		}
		if err := checkQuiet(*quiet, *out); err != nil {
			return err
		}
		f, err := parseFilters(*rawFilters, keys)
		if err != nil {
			return err
		}
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		all, err := c.ListServices(ctx)
		if err != nil {
			return err
		}
		var svcs []api.Service
		for _, s := range all {
			if f.match(func(k string) []string {
				if k == "mode" {
					return []string{s.Spec.Mode}
				}
				return []string{s.Spec.Name}
			}) {
				svcs = append(svcs, s)
			}
		}
		sort.Slice(svcs, func(i, j int) bool { return svcs[i].Spec.Name < svcs[j].Spec.Name })
		if *quiet {
			for _, s := range svcs {
				fmt.Fprintln(e.stdout, s.Spec.Name)
			}
			return nil
		}
		if *out == outputJSON {
			return writeJSONList(e.stdout, svcs)
		}
		tasks, err := c.ListTasks(ctx, "", "")
		if err != nil {
			return err
		}
		running := map[string]int{}        // service name → running tasks
		wanted := map[string]int{}         // service name → tasks desired running
		pending := map[string][]api.Task{} // service name → its pending tasks
		for _, t := range tasks {
			if t.DesiredState != api.TaskRunning {
				continue
			}
			wanted[t.ServiceName]++
			switch t.Status.State {
			case api.TaskRunning:
				running[t.ServiceName]++
			case api.TaskPending:
				pending[t.ServiceName] = append(pending[t.ServiceName], t)
			}
		}
		tb := newTable(e.stdout, "NAME", "MODE", "REPLICAS", "VERSION", "PORTS", "UPDATED", "STATUS")
		tb.wideLast = true
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
				formatPublished(s.Spec.Task.Ports),
				ago(now, s.UpdatedAt),
				serviceStatus(s, pending[s.Spec.Name]))
		}
		if err := tb.flush(); err != nil {
			return err
		}
		for _, s := range svcs {
			printMeshErrors(e.stderr, s)
		}
		return nil
	}
	return cmd
}

// formatPublished writes the ports a service publishes through the mesh
// (or binds on its node, "host"): 18080->http, 5353->dns/udp.
func formatPublished(ports []api.PortSpec) string {
	var parts []string
	for _, p := range ports {
		if p.Publish == 0 {
			continue
		}
		s := strconv.Itoa(p.Publish) + "->" + p.Name
		if p.Protocol == "udp" {
			s += "/udp"
		}
		if p.Mode == "host" {
			s += " (host)"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

// serviceStatus says what holds a service back, in a few words: tasks that
// wait to be placed and why (the newest reason), else an update that has not
// ended.
func serviceStatus(s api.Service, pending []api.Task) string {
	if s.Pending != nil && s.Pending.Count > len(pending) {
		// More replicas wait than are stored as tasks: the service counts them.
		return oneLine(s.Pending.String())
	}
	if len(pending) > 0 {
		newest := pending[0]
		for _, t := range pending[1:] {
			if t.Status.Timestamp.After(newest.Status.Timestamp) {
				newest = t
			}
		}
		why := newest.Status.Message
		if why == "" {
			why = "waiting to be scheduled"
		}
		return fmt.Sprintf("%d pending: %s", len(pending), oneLine(why))
	}
	st := s.UpdateStatus
	if st == nil || st.ToVersion != s.Version {
		return ""
	}
	switch st.State {
	case api.UpdateUpdating, api.UpdateCanary, api.UpdateRollingBack:
		return fmt.Sprintf("%s %d/%d", st.State, st.Updated, st.Total)
	case api.UpdatePaused:
		return "update paused: " + oneLine(st.Message)
	}
	return ""
}

// printMeshErrors warns of the nodes whose gateway refused svc (a published
// port it cannot open there): the service gets no traffic through them.
func printMeshErrors(w io.Writer, svc api.Service) {
	for _, m := range svc.MeshErrors {
		fmt.Fprintf(w, "warning: service %s gets no traffic through node %s: %s\n", svc.Spec.Name, m.Node, m.Error)
	}
}

func newServiceInspectCmd(e *env) *cobra.Command {
	var pretty bool
	cmd := newShowCmd(e, "inspect NAME", "Show a service as JSON (or, with --pretty, for a person)",
		func(ctx context.Context, c *api.Client, name string) (any, error) {
			svc, err := c.GetService(ctx, name)
			if err != nil || !pretty {
				return svc, err
			}
			tasks, err := c.ServiceTasks(ctx, name, false)
			if err != nil {
				return nil, err
			}
			var b strings.Builder
			err = prettyService(&b, e.now(), svc, tasks)
			return b.String(), err
		})
	cmd.Flags().BoolVar(&pretty, "pretty", false, "a summary and the spec as YAML instead of JSON")
	return cmd
}

func newServicePsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ps NAME",
		Short: "List the tasks of a service",
		Args:  exactArgs(1),
	}
	l := addTaskListingFlags(cmd)
	cmd.RunE = l.runE(e, false, func(ctx context.Context, c *api.Client, args []string, all bool) ([]api.Task, error) {
		tasks, err := c.ServiceTasks(ctx, args[0], all)
		if err != nil {
			return nil, err
		}
		if svc, err := c.GetService(ctx, args[0]); err == nil {
			printMeshErrors(e.stderr, svc)
		}
		return tasks, nil
	})
	return cmd
}

// taskProblem is the ERROR cell of a task: its error, or for a task
// pending while it should run, why it waits (the scheduler's reason).
func taskProblem(v api.TaskView) string {
	if v.Error == "" && v.State == api.TaskPending && v.DesiredState == api.TaskRunning {
		return v.Message
	}
	return v.Error
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
