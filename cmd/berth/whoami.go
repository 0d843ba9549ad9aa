package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/internal/whoami"
)

// newWhoamiCmd runs the whoami test app. It is the one client-side command
// that imports internal/: it is an app Berth runs, not a client of the API.
func newWhoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "whoami --port N [flags]",
		Short:              "Serve a tiny HTTP app that says which task answered (for examples and tests)",
		DisableFlagParsing: true, // whoami parses its own flags, --help included
		RunE: func(cmd *cobra.Command, args []string) error {
			err := whoami.Run(cmd.Context(), args, cmd.OutOrStdout())
			var xe *whoami.ExitError
			switch {
			case errors.As(err, &xe):
				return &exitError{code: xe.Code, err: err}
			case errors.Is(err, whoami.ErrUsage):
				return &usageError{err}
			}
			return err
		},
	}
}
