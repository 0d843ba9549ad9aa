package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// newJoinTokenCmd prints (or rotates) the token new nodes join with.
func newJoinTokenCmd() *cobra.Command {
	var rotate, quiet bool
	cmd := &cobra.Command{
		Use:   "join-token worker|manager",
		Short: "Print the token new agents (worker) or managers join the cluster with",
		Long: `Print the join token of a role and the command that joins a machine with it.

A join token admits a machine once: an agent proves it with --join, gets a node
certificate from the cluster CA and from then on speaks mutual TLS. The token
also pins the cluster CA, so a joining machine cannot be fooled by a man in
the middle. Keep tokens secret; --rotate replaces one (machines that joined
with the old token keep working, new ones need the new token).`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			role := args[0]
			if role != api.RoleWorker && role != api.RoleManager {
				return usageErrorf("join-token %q: want worker or manager", role)
			}
			c, err := envOf(cmd).apiClient()
			if err != nil {
				return err
			}
			var toks api.JoinTokens
			if rotate {
				toks, err = c.RotateJoinToken(cmd.Context(), role)
			} else {
				toks, err = c.JoinTokens(cmd.Context())
			}
			if err != nil {
				return err
			}
			tok := toks.Worker
			if role == api.RoleManager {
				tok = toks.Manager
			}
			out := cmd.OutOrStdout()
			if quiet {
				fmt.Fprintln(out, tok)
				return nil
			}
			if rotate {
				fmt.Fprintf(out, "The %s join token was rotated: the old one admits no one now.\n\n", role)
			}
			addr := strings.TrimSuffix(c.Addr(), "/api/v1")
			if role == api.RoleWorker {
				fmt.Fprintf(out, "To add a worker to this cluster, run on the new machine:\n\n    %s\n\n", workerJoinCommand(addr, tok))
				fmt.Fprintf(out, "It serves published ports on every interface (--mesh-bind) and task logs on port %s; its address is the one it reaches the manager from (or --address ADDRESS).\n", agentLogPort)
			} else {
				fmt.Fprintf(out, "To add a manager to this cluster, run on the new machine:\n\n    berth server --join %s --token %s --listen ADDRESS:7443\n\n", addr, tok)
			}
			fmt.Fprintf(out, "(%s is this manager's address as this client reaches it: use one the new machine can reach.)\n", addr)
			return nil
		},
	}
	cmd.Flags().BoolVar(&rotate, "rotate", false, "replace the token with a new one first")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the token")
	return cmd
}

// agentLogPort is the log-server port of the printed worker join command:
// the managers fetch task logs there.
const agentLogPort = "7445"

// workerJoinCommand is the command that joins a worker able to serve the
// routing mesh to other machines: published ports on every interface and
// the log server reachable by the managers (the agent's defaults keep both
// on loopback, for one machine).
func workerJoinCommand(addr, tok string) string {
	return "berth agent --join " + addr + " --token " + tok + " --mesh-bind 0.0.0.0 --log-listen 0.0.0.0:" + agentLogPort
}
