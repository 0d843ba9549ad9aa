package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func newServiceLogsCmd(e *env) *cobra.Command {
	var follow, stamps bool
	var tail int
	var since string
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Show the output of a service's tasks, merged in time order",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail < -1 {
				return usageErrorf("--tail %d: want a number of lines, or -1 for all", tail)
			}
			from, err := parseSince(since, time.Now())
			if err != nil {
				return usageErrorf("%v", err)
			}
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var rc io.ReadCloser
			if from.IsZero() && !stamps {
				// Ask as before, so a manager of an older Berth answers too.
				rc, err = c.ServiceLogs(ctx, args[0], tail, follow)
			} else {
				rc, err = c.ServiceLogsWith(ctx, args[0], api.LogOptions{Tail: tail, Since: from, Follow: follow, Timestamps: stamps})
			}
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
	cmd.Flags().BoolVarP(&stamps, "timestamps", "t", false, "start each line with the time it was written (RFC 3339, UTC)")
	cmd.Flags().StringVar(&since, "since", "", "show only lines written since a time (RFC 3339, e.g. 2026-12-08T10:00:00Z) or for a duration back (e.g. 10m, 1h30m)")
	return cmd
}

// parseSince reads --since: empty (no limit), a positive duration back from
// now, or an RFC 3339 time (a date alone means its midnight UTC).
func parseSince(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--since %s: want a positive duration such as 10m", v)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration (10m, 2h) or an RFC 3339 time (2026-12-08T10:00:00Z)", v)
}
