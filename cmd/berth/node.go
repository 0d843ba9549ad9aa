package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func newNodeCmd(e *env) *cobra.Command {
	cmd := newGroupCmd("node", "Show and manage the machines of the cluster", "nodes")
	cmd.AddCommand(newNodeLsCmd(e), newNodeInspectCmd(e), newNodeTopologyCmd(e), newNodeUpdateCmd(e), newNodeRmCmd(e), newNodePsCmd(e))
	return cmd
}

func newNodeLsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List nodes",
		Args:    noArgs,
	}
	out := addOutputFlag(cmd)
	keys := []string{"hostname", "status", "availability", "role"}
	rawFilters, quiet := addFilterFlags(cmd, keys, "node ids")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if err := checkQuiet(*quiet, *out); err != nil {
			return err
		}
		_, err := parseFilters(*rawFilters, keys)
		return err
	}
	cmd.RunE = listRunE(e, out, func(ctx context.Context, c *api.Client, _ []string) ([]api.Node, error) {
		f, err := parseFilters(*rawFilters, keys)
		if err != nil {
			return nil, err
		}
		all, err := c.ListNodes(ctx)
		if err != nil {
			return nil, err
		}
		var nodes []api.Node
		for _, n := range all {
			if f.match(func(k string) []string {
				switch k {
				case "hostname":
					return []string{n.Hostname}
				case "status":
					return []string{n.Status}
				case "availability":
					return []string{n.Availability}
				}
				return []string{n.Role}
			}) {
				nodes = append(nodes, n)
			}
		}
		sort.Slice(nodes, func(i, j int) bool {
			if nodes[i].Hostname != nodes[j].Hostname {
				return nodes[i].Hostname < nodes[j].Hostname
			}
			return nodes[i].ID < nodes[j].ID
		})
		return nodes, nil
	}, func(e *env, nodes []api.Node) error {
		if *quiet {
			for _, n := range nodes {
				fmt.Fprintln(e.stdout, n.ID)
			}
			return nil
		}
		tb := newTable(e.stdout, "ID", "HOSTNAME", "STATUS", "AVAILABILITY", "CPUS", "MEMORY", "ADDRESS")
		tb.colorColumns(e.useColor(), 2, 3)
		for _, n := range nodes {
			tb.row(shortID(n.ID), n.Hostname, n.Status, n.Availability,
				formatCPUs(n.Resources.CPUs), humanBytes(int64(n.Resources.Memory)), nodeAddress(n))
		}
		return tb.flush()
	})
	return cmd
}

// nodeAddress is a node's ADDRESS cell: flagged when other nodes cannot
// reach its tasks there (the mesh sends them nothing).
func nodeAddress(n api.Node) string {
	if n.AddressIssue == "" {
		return n.Address
	}
	a := n.Address
	if a == "" {
		a = "-"
	}
	return a + " (unreachable: " + n.AddressIssue + "; restart its agent with --address)"
}

func formatCPUs(n float64) string {
	if n <= 0 {
		return ""
	}
	return strconv.FormatFloat(n, 'f', -1, 64)
}

func newNodeInspectCmd(e *env) *cobra.Command {
	var pretty bool
	cmd := newShowCmd(e, "inspect NODE", "Show a node as JSON (by id or hostname; --pretty: for a person)",
		func(ctx context.Context, c *api.Client, node string) (any, error) {
			n, err := c.GetNode(ctx, node)
			if err != nil || !pretty {
				return n, err
			}
			var b strings.Builder
			prettyNode(&b, e.now(), n)
			return b.String(), nil
		})
	cmd.Flags().BoolVar(&pretty, "pretty", false, "aligned fields instead of JSON")
	return cmd
}

func newNodeTopologyCmd(e *env) *cobra.Command {
	cmd := newShowCmd(e, "topology NODE", "Draw a node's CPU topology and which task holds each CPU",
		func(ctx context.Context, c *api.Client, node string) (any, error) { return c.NodeTopology(ctx, node) })
	cmd.Long = `Draw the CPU topology of a node (by id or hostname): its sockets, NUMA nodes
with their memory, L3 groups, cores and CPUs, and for each CPU the task pinned
to it (service.slot), "reserved" for CPUs kept for the system, or "-". Tasks
on the shared pool are not drawn per CPU; the last line names the pool.`
	return cmd
}

func newNodeUpdateCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update NODE",
		Short: "Change a node's availability and labels",
		Long: `Change a node (by id, unique id prefix or hostname):

  --availability active   the scheduler places tasks on it
  --availability pause    no new tasks; the running ones stay
  --availability drain    no new tasks; the running ones move to other nodes,
                          each replacement started before its old task stops

--label-add KEY=VALUE sets a label and --label-rm KEY removes one (both
repeatable). Labels set or removed here survive the agent restarting with
other --label flags.`,
		Args: exactArgs(1),
	}
	availability := cmd.Flags().String("availability", "", "active, pause or drain")
	add := cmd.Flags().StringArray("label-add", nil, "set a label KEY=VALUE (repeatable)")
	rm := cmd.Flags().StringArray("label-rm", nil, "remove the label KEY (repeatable)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		u := api.NodeUpdate{Availability: *availability, LabelsRm: *rm}
		for _, l := range *add {
			k, v, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				return usageErrorf("--label-add %q: want KEY=VALUE", l)
			}
			if u.LabelsAdd == nil {
				u.LabelsAdd = map[string]string{}
			}
			u.LabelsAdd[k] = v
		}
		if u.Availability == "" && len(u.LabelsAdd) == 0 && len(u.LabelsRm) == 0 {
			return usageErrorf("node update: nothing to change; give --availability, --label-add or --label-rm")
		}
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		n, err := c.UpdateNode(cmd.Context(), args[0], u)
		if err != nil {
			return err
		}
		if _, err = fmt.Fprintf(e.stdout, "%s %s: %s, labels %s\n", shortID(n.ID), n.Hostname, n.Availability, formatLabels(n.Labels)); err != nil {
			return err
		}
		if u.Availability == api.AvailabilityDrain {
			for _, w := range drainWarnings(cmd.Context(), c, n) {
				fmt.Fprintf(e.stderr, "berth: warning: %s\n", w)
			}
		}
		return nil
	}
	return cmd
}

// drainWarnings names the services that draining node n leaves without a
// running task: all their running tasks are on n, and no other node is
// ready and active (or, for a global service or one with placement
// constraints, none other runs it, so likely none qualifies). It is advice
// only: if the cluster cannot be read, it says nothing.
func drainWarnings(ctx context.Context, c *api.Client, n api.Node) []string {
	nodes, err := c.ListNodes(ctx)
	if err != nil {
		return nil
	}
	tasks, err := c.ListTasks(ctx, "", "")
	if err != nil {
		return nil
	}
	others := 0
	for _, o := range nodes {
		if o.ID != n.ID && o.Status == api.NodeReady && o.Availability == api.AvailabilityActive {
			others++
		}
	}
	here, elsewhere := map[string]int{}, map[string]int{}
	constrained := map[string]bool{}
	for _, t := range tasks {
		if t.Status.State != api.TaskRunning {
			continue
		}
		if t.NodeID == n.ID {
			here[t.ServiceName]++
		} else {
			elsewhere[t.ServiceName]++
		}
		if len(t.Placement.Constraints) > 0 || t.Slot == 0 || t.Unit != "" {
			constrained[t.ServiceName] = true
		}
	}
	var lose, mayLose []string
	for name := range here {
		switch {
		case elsewhere[name] > 0:
		case others == 0:
			lose = append(lose, name)
		case constrained[name]:
			mayLose = append(mayLose, name)
		}
	}
	sort.Strings(lose)
	sort.Strings(mayLose)
	var out []string
	if len(lose) > 0 {
		who := "service " + strings.Join(lose, ", ") + " loses every running task; its tasks stay"
		if len(lose) > 1 {
			who = "services " + strings.Join(lose, ", ") + " lose every running task; their tasks stay"
		}
		out = append(out, fmt.Sprintf("no other node is ready and active: %s pending until a node can take them (undo: berth node update %s --availability active)", who, n.Hostname))
	}
	if len(mayLose) > 0 {
		who := "service " + strings.Join(mayLose, ", ") + " runs only on " + n.Hostname + " and has placement rules: if no other node meets them, it loses"
		if len(mayLose) > 1 {
			who = "services " + strings.Join(mayLose, ", ") + " run only on " + n.Hostname + " and have placement rules: if no other node meets them, they lose"
		}
		out = append(out, who+" every running task (see berth service ps NAME)")
	}
	return out
}

// formatLabels writes labels as k=v,k=v in key order, or "none".
func formatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}

func newNodeRmCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "rm NODE...",
		Aliases: []string{"remove"},
		Short:   "Remove nodes that are down",
		Long: `Remove nodes (by id, unique id prefix or hostname). A node must be down (its
agent stopped) unless --force is given; a forced removal marks the node's
tasks lost, and they are replaced on other nodes. To move tasks off a node
without a gap first, drain it (berth node update NODE --availability drain).`,
		Args: minArgs(1),
	}
	force := cmd.Flags().Bool("force", false, "remove a node that is still ready")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		for _, node := range args {
			if err := c.RemoveNode(cmd.Context(), node, *force); err != nil {
				return fmt.Errorf("node %s: %w", node, err)
			}
			if _, err := fmt.Fprintln(e.stdout, node); err != nil {
				return err
			}
		}
		return nil
	}
	return cmd
}
