package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// The manager commands list the cluster's managers and remove one (issue
// #3, HA managers). Managers are added by starting `berth server --join`.

func newManagerCmd() *cobra.Command {
	cmd := newGroupCmd("manager", "List the cluster's managers and remove one", "managers")
	cmd.Long = `List the cluster's managers and remove one. A manager is added by starting
berth server --join URL --token TOKEN (see docs/operations.md).`
	cmd.AddCommand(newManagerLsCmd(), newManagerRmCmd())
	return cmd
}

func newManagerLsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the managers, the leader marked",
		Args:    noArgs,
	}
	out := addOutputFlag(cmd)
	cmd.RunE = listRunE(nil, out, func(ctx context.Context, c *api.Client, _ []string) ([]api.ClusterManager, error) {
		return c.ClusterManagers(ctx)
	}, func(e *env, ms []api.ClusterManager) error {
		tb := newTable(e.stdout, "ID", "STATUS", "LEADER", "API", "PEER")
		for _, m := range ms {
			leader := ""
			if m.Leader {
				leader = "yes"
			}
			tb.row(m.ID, m.Status, leader, m.APIURL, m.PeerURL)
		}
		return tb.flush()
	})
	return cmd
}

func newManagerRmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm ID",
		Short: "Remove a manager from the cluster (its etcd member leaves)",
		Long: `Remove a manager from the cluster: its etcd member leaves the cluster and the
manager can no longer start on its data directory. ID is the id, the member
name or the hex member id that ` + "`berth manager ls`" + ` shows. Ask another
manager than the one removed (--addr). A removal that would leave fewer running
managers than a quorum of the rest needs --force.`,
		Args: exactArgs(1),
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove even if the managers left would not have a quorum")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		e := envOf(cmd)
		c, err := e.apiClient()
		if err != nil {
			return err
		}
		warnings, err := c.RemoveManagerWarn(cmd.Context(), args[0], force)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "manager %s removed\n", args[0])
		for _, w := range warnings {
			fmt.Fprintf(e.stderr, "warning: %s\n", w)
		}
		return nil
	}
	return cmd
}
