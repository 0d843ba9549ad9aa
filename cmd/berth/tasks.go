package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// taskFilterKeys are the --filter keys of task listings.
var taskFilterKeys = []string{"service", "node", "state", "desired"}

// taskListing is what a task listing command needs to print its tasks.
type taskListing struct {
	out     *string
	filters *[]string
	quiet   *bool
	all     *bool
}

// addTaskListingFlags adds -o, -a, --filter and -q to a task listing.
func addTaskListingFlags(cmd *cobra.Command) taskListing {
	l := taskListing{out: addOutputFlag(cmd), all: new(bool)}
	cmd.Flags().BoolVarP(l.all, "all", "a", false, "include tasks that have ended")
	l.filters, l.quiet = addFilterFlags(cmd, taskFilterKeys, "task ids")
	return l
}

// print filters tasks and prints them: ids with -q, TaskViews with -o json,
// else a table (with a SERVICE column when withService).
func (l taskListing) print(ctx context.Context, e *env, c *api.Client, tasks []api.Task, f filters, withService bool) error {
	sortTasks(tasks)
	if withService {
		sort.SliceStable(tasks, func(i, j int) bool { return tasks[i].ServiceName < tasks[j].ServiceName })
	}
	var hosts map[string]string
	if len(f["node"]) > 0 || (!*l.quiet && *l.out != outputJSON) {
		hosts = nodeHostnames(ctx, c)
	}
	kept := tasks[:0]
	for _, t := range tasks {
		if f.match(func(k string) []string {
			switch k {
			case "service":
				return []string{t.ServiceName}
			case "node":
				return []string{t.NodeID, hosts[t.NodeID]}
			case "state":
				return []string{string(t.Status.State)}
			case "desired":
				return []string{string(t.DesiredState)}
			}
			return nil
		}) {
			kept = append(kept, t)
		}
	}
	tasks = kept
	if *l.quiet {
		for _, t := range tasks {
			fmt.Fprintln(e.stdout, t.ID)
		}
		return nil
	}
	if *l.out == outputJSON {
		views := make([]api.TaskView, len(tasks))
		for i, t := range tasks {
			views[i] = api.NewTaskView(t)
		}
		return writeJSONList(e.stdout, views)
	}
	header := []string{"ID", "SLOT", "VERSION", "NODE", "STATE", "DESIRED", "HEALTH", "PORTS", "CPUS", "PID", "ERROR"}
	if withService {
		header = append([]string{"ID", "SERVICE"}, header[1:]...)
	}
	tb := newTable(e.stdout, header...)
	tb.wideLast = true
	if withService {
		tb.colorColumns(e.useColor(), 5, 7)
	} else {
		tb.colorColumns(e.useColor(), 4, 6)
	}
	for _, t := range tasks {
		v := api.NewTaskView(t)
		node := hosts[v.Node]
		if node == "" {
			node = shortID(v.Node)
		}
		pid := ""
		if v.PID > 0 {
			pid = strconv.Itoa(v.PID)
		}
		row := []string{shortID(v.ID), formatSlot(v.Slot), strconv.FormatUint(v.SpecVersion, 10), node, string(v.State), string(v.DesiredState), v.Health,
			formatPorts(v.Ports), formatTaskCPUs(v), pid, taskProblem(v)}
		if withService {
			row = append([]string{row[0], v.Service}, row[1:]...)
		}
		tb.row(row...)
	}
	return tb.flush()
}

// runE returns the RunE of a task listing: fetch gets the tasks.
func (l taskListing) runE(e *env, withService bool, fetch func(ctx context.Context, c *api.Client, args []string, all bool) ([]api.Task, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*l.out); err != nil {
			return err
		}
		if err := checkQuiet(*l.quiet, *l.out); err != nil {
			return err
		}
		f, err := parseFilters(*l.filters, taskFilterKeys)
		if err != nil {
			return err
		}
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		tasks, err := fetch(cmd.Context(), c, args, *l.all)
		if err != nil {
			return err
		}
		return l.print(cmd.Context(), e, c, tasks, f, withService)
	}
}

func newPsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List the tasks of every service",
		Long: `List the tasks of every service, by service and slot: those desired running
and those not yet ended, or with -a their history too. --filter narrows the
list (service=, node= by id or host name, state=, desired=).`,
		Args: noArgs,
	}
	l := addTaskListingFlags(cmd)
	cmd.RunE = l.runE(e, true, func(ctx context.Context, c *api.Client, _ []string, all bool) ([]api.Task, error) {
		return c.Tasks(ctx, api.TaskQuery{All: all})
	})
	return cmd
}

func newNodePsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ps NODE",
		Short: "List the tasks placed on a node",
		Long: `List the tasks placed on a node (by id, unique id prefix or host name): those
desired running and those not yet ended, or with -a their history too.`,
		Args: exactArgs(1),
	}
	l := addTaskListingFlags(cmd)
	cmd.RunE = l.runE(e, true, func(ctx context.Context, c *api.Client, args []string, all bool) ([]api.Task, error) {
		n, err := c.GetNode(ctx, args[0])
		if err != nil {
			return nil, err
		}
		return c.Tasks(ctx, api.TaskQuery{Node: n.ID, All: all})
	})
	return cmd
}
