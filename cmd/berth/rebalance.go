package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func newServiceRebalanceCmd(e *env) *cobra.Command {
	var wait bool
	var timeout, poll time.Duration
	cmd := &cobra.Command{
		Use:   "rebalance NAME",
		Short: "Spread a service's tasks evenly over the nodes again",
		Long: `Spread the tasks of a replicated service evenly over the nodes that can run
them, once: tasks move off the most loaded nodes start-first (the old task
serves until its replacement does), update.parallelism at a time. This also
works for a service deployed with 'rebalance: false', which the orchestrator
otherwise leaves as it is. Other replicated services are rebalanced by
themselves when nodes join or return.

With --wait, the command waits until the service is balanced (or no node can
take a task and spread it better) and prints how it ended.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 || poll <= 0 {
				return usageErrorf("--timeout and --poll-interval must be positive")
			}
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			name := args[0]
			svc, err := c.Rebalance(cmd.Context(), name)
			if err != nil {
				return err
			}
			req := svc.RebalanceStatus.Requested
			if !wait {
				fmt.Fprintf(e.stdout, "service %s: rebalance requested; tasks move start-first, %s\n", name, atATime(svc.Spec))
				return nil
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			svc, err = c.WaitForRebalance(ctx, name, req, poll)
			switch {
			case errors.Is(err, context.DeadlineExceeded) && cmd.Context().Err() == nil:
				return fmt.Errorf("service %s is not rebalanced after %s; see 'berth service ps %s' (an update in flight or a task that does not serve holds it back)", name, timeout, name)
			case errors.Is(err, api.ErrRebalanceNotDone):
				return fmt.Errorf("service %s was removed or replaced before it was rebalanced", name)
			case err != nil:
				return err
			}
			fmt.Fprintf(e.stdout, "service %s: %s\n", name, svc.RebalanceStatus.Message)
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the service is balanced")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait, how long to wait")
	cmd.Flags().DurationVar(&poll, "poll-interval", defaultPollInterval, "with --wait, how often to read the service")
	_ = cmd.Flags().MarkHidden("poll-interval")
	return cmd
}

// atATime says how many tasks of a service move at once.
func atATime(spec api.ServiceSpec) string {
	n := api.DefaultUpdateParallelism
	if u := spec.Update; u != nil && u.Parallelism != nil {
		n = *u.Parallelism
	}
	switch n {
	case 0:
		return "all at once (update.parallelism 0)"
	case 1:
		return "one at a time (update.parallelism 1)"
	}
	return fmt.Sprintf("%d at a time (update.parallelism)", n)
}
