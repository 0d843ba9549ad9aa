package main

import (
	"context"
	"sort"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func newNodeCmd(e *env) *cobra.Command {
	cmd := newGroupCmd("node", "Show the machines of the cluster", "nodes")
	cmd.AddCommand(newNodeLsCmd(e), newNodeInspectCmd(e), newNodeTopologyCmd(e))
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
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out); err != nil {
			return err
		}
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		nodes, err := c.ListNodes(cmd.Context())
		if err != nil {
			return err
		}
		sort.Slice(nodes, func(i, j int) bool {
			if nodes[i].Hostname != nodes[j].Hostname {
				return nodes[i].Hostname < nodes[j].Hostname
			}
			return nodes[i].ID < nodes[j].ID
		})
		if *out == outputJSON {
			return writeJSONList(e.stdout, nodes)
		}
		tb := newTable(e.stdout, "ID", "HOSTNAME", "STATUS", "AVAILABILITY", "CPUS", "MEMORY", "ADDRESS")
		for _, n := range nodes {
			tb.row(shortID(n.ID), n.Hostname, n.Status, n.Availability,
				formatCPUs(n.Resources.CPUs), humanBytes(int64(n.Resources.Memory)), n.Address)
		}
		return tb.flush()
	}
	return cmd
}

func formatCPUs(n float64) string {
	if n <= 0 {
		return ""
	}
	return strconv.FormatFloat(n, 'f', -1, 64)
}

func newNodeInspectCmd(e *env) *cobra.Command {
	return newShowCmd(e, "inspect NODE", "Show a node as JSON (by id or hostname)",
		func(ctx context.Context, c *api.Client, node string) (any, error) { return c.GetNode(ctx, node) })
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
