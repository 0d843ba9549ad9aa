package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// completionTimeout bounds the API calls made while the shell waits.
const completionTimeout = 3 * time.Second

// addNameCompletion walks the command tree and gives every command whose
// first argument is a service (NAME under `service`) or a node (NODE)
// completion of the names the API knows (`service scale` completes NAME=),
// and a "did you mean" for a name the API does not know.
func addNameCompletion(e *env, root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.ValidArgsFunction != nil || !c.HasParent() {
			return
		}
		fields := strings.Fields(c.Use)
		if len(fields) < 2 {
			return
		}
		repeat := strings.Contains(c.Use, "...")
		switch arg := fields[1]; {
		case arg == "NAME=REPLICAS":
			c.ValidArgsFunction = completeNames(e, listServiceNames, true, "=")
			suggestNames(e, c, "service", listServiceNames)
		case arg == "NAME" && c.Parent().Name() == "service":
			c.ValidArgsFunction = completeNames(e, listServiceNames, repeat, "")
			suggestNames(e, c, "service", listServiceNames)
		case strings.HasPrefix(arg, "NODE"):
			c.ValidArgsFunction = completeNames(e, listNodeNames, repeat || strings.HasSuffix(arg, "..."), "")
			suggestNames(e, c, "node", listNodeNames)
		}
	}
	walk(root)
}

// suggestNames wraps the RunE of c, whose arguments name services or nodes
// (NAME or NAME=VALUE), so that a "not found" error from the API says which
// existing name was probably meant: `service "helo" not found (did you
// mean "hello"?)`.
func suggestNames(e *env, c *cobra.Command, kind string, list func(context.Context, *api.Client) ([]string, error)) {
	run := c.RunE
	if run == nil {
		return
	}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		err := run(cmd, args)
		if !api.IsNotFound(err) || cmd.Context().Err() != nil {
			return err
		}
		cl, cerr := e.apiClient()
		if cerr != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		names, lerr := list(ctx, cl)
		if lerr != nil {
			return err
		}
		for _, a := range args {
			a, _, _ = strings.Cut(a, "=")
			if contains(names, a) || !strings.Contains(err.Error(), a) {
				continue
			}
			if s := api.Suggest(a, names); s != "" {
				return fmt.Errorf("%w (did you mean %q?)", err, s)
			}
		}
		return err
	}
}

func listServiceNames(ctx context.Context, c *api.Client) ([]string, error) {
	svcs, err := c.ListServices(ctx)
	names := make([]string, 0, len(svcs))
	for _, s := range svcs {
		names = append(names, s.Spec.Name)
	}
	return names, err
}

func listNodeNames(ctx context.Context, c *api.Client) ([]string, error) {
	nodes, err := c.ListNodes(ctx)
	names := make([]string, 0, len(nodes))
	for _, n := range nodes {
		names = append(names, n.Hostname)
	}
	return names, err
}

// completeNames completes an argument from the names list returns. Unless
// repeat, only the first argument is completed. suffix is appended to each
// candidate (with no space after it).
func completeNames(e *env, list func(context.Context, *api.Client) ([]string, error), repeat bool, suffix string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 && !repeat {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := e.apiClient()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		names, err := list(ctx, c)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		sort.Strings(names)
		var out []cobra.Completion
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) && !contains(args, n) && !containsPrefix(args, n+suffix) {
				out = append(out, n+suffix)
			}
		}
		d := cobra.ShellCompDirectiveNoFileComp
		if suffix != "" {
			d |= cobra.ShellCompDirectiveNoSpace
		}
		return out, d
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func containsPrefix(l []string, p string) bool {
	for _, x := range l {
		if strings.HasPrefix(x, p) {
			return true
		}
	}
	return false
}
