package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// env is the outside world a command sees. main builds it from the process
// (osEnv); tests build their own.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	euid   int
	now    func() time.Time

	// Set by the root command's persistent flags.
	flags globalFlags

	client *api.Client // made on first use by apiClient
}

// globalFlags are the root command's persistent flags.
type globalFlags struct {
	addr, token, ca, dataDir string
}

// osEnv returns the env of this process.
func osEnv() *env {
	return &env{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
		euid:   os.Geteuid(),
		now:    time.Now,
	}
}

type envKey struct{}

// envOf returns the env a command runs in.
func envOf(cmd *cobra.Command) *env {
	if e, ok := cmd.Context().Value(envKey{}).(*env); ok {
		return e
	}
	return osEnv()
}

// dataDirOf returns the data directory a command should use: --data-dir,
// else $BERTH_DATA_DIR, else the default (see DefaultDataDir).
func dataDirOf(cmd *cobra.Command) string { return envOf(cmd).dataDir() }

// usageError is a mistake in the command line: it exits with code 2.
type usageError struct{ err error }

func (u *usageError) Error() string { return u.err.Error() }
func (u *usageError) Unwrap() error { return u.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitError ends the process with a given code, after printing err (if
// its message is not empty).
type exitError struct {
	code int
	err  error
}

func (x *exitError) Error() string { return x.err.Error() }
func (x *exitError) Unwrap() error { return x.err }

// run executes the command line args and returns the exit code. Errors are
// printed to stderr on one line as "berth: <message>".
func run(ctx context.Context, args []string, e *env) int {
	root := newRootCmd(e)
	root.SetArgs(append([]string{}, args...)) // never nil: cobra would read os.Args
	err := root.ExecuteContext(context.WithValue(ctx, envKey{}, e))
	return report(ctx, err, e.stderr)
}

// report prints err, if any, as one line "berth: <message>" and returns
// the exit code: 0, 1, 2 for usage errors, 130 when interrupted, or what an
// *exitError asks for.
func report(ctx context.Context, err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	code := 1
	var ue *usageError
	var xe *exitError
	switch {
	case errors.As(err, &ue):
		code = 2
	case errors.As(err, &xe):
		code = xe.code
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		err = errors.New("interrupted")
		code = 130
	}
	if msg := oneLine(err.Error()); msg != "" {
		fmt.Fprintf(stderr, "berth: %s\n", msg)
	}
	return code
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	var parts []string
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// newRootCmd builds the whole command tree.
func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "berth",
		Short: "Berth runs declared services on your machines",
		Long: `Berth runs declared services on your machines and keeps them running.

The client commands find the API in this order: flags (--addr, --token, --ca),
then the environment (BERTH_ADDR, BERTH_TOKEN, BERTH_CA), then the files
'berth up' writes into the data directory (--data-dir, BERTH_DATA_DIR, or
/var/lib/berth for root and ~/.local/share/berth for others).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRunE,
	}
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	pf := root.PersistentFlags()
	pf.StringVar(&e.flags.addr, "addr", "", "API address, such as https://127.0.0.1:7443, or several managers' addresses separated by commas (env BERTH_ADDR)")
	pf.StringVar(&e.flags.token, "token", "", "API bearer token (env BERTH_TOKEN, which is safer: flags show in ps)")
	pf.StringVar(&e.flags.ca, "ca", "", "PEM file of the cluster CA (env BERTH_CA)")
	pf.StringVar(&e.flags.dataDir, "data-dir", "", "data directory (env BERTH_DATA_DIR)")

	// Every command is registered here, and only here (no init()
	// registration), so the tree is read in one place; each constructor
	// lives in its command group's file. Constructors that take no env find
	// it with envOf(cmd), the data directory with dataDirOf(cmd) and their
	// streams with cmd.InOrStdin(), cmd.OutOrStdout() and cmd.ErrOrStderr().
	root.AddCommand(
		newDeployCmd(e),
		newServiceCmd(e),
		newNodeCmd(e),
		newVersionCmd(e),
		newPsCmd(e),
		newUpCmd(),
		newServerCmd(),
		newAgentCmd(),
		newCertCmd(),
		newManagerCmd(),
		newJoinTokenCmd(),
		newWhoamiCmd(),
	)
	addNameCompletion(e, root)
	return root
}

// groupRunE is the RunE of a command that only groups subcommands: without
// arguments it shows help; with one it reports an unknown command as a
// usage error (cobra would otherwise print help and succeed).
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		best := api.Suggest(args[0], s) // the closest, whatever order cobra keeps
		if best == "" {
			best = s[0]
		}
		msg += fmt.Sprintf(" (did you mean %q?)", best)
	}
	return usageErrorf("%s; run '%s --help'", msg, cmd.CommandPath())
}

// newShowCmd returns a command that fetches one object named by its only
// argument and prints it: a string as it is, anything else as indented JSON.
func newShowCmd(e *env, use, short string, get func(ctx context.Context, c *api.Client, arg string) (any, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			v, err := get(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			if text, ok := v.(string); ok {
				_, err = io.WriteString(e.stdout, text)
				return err
			}
			return writeJSON(e.stdout, v)
		},
	}
}

// newGroupCmd returns a command that holds subcommands.
func newGroupCmd(use, short string, aliases ...string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Aliases: aliases, Args: cobra.ArbitraryArgs, RunE: groupRunE}
}

// exactArgs checks the number of positional arguments, as a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes %s, got %d; usage: %s", subPath(cmd), count(n, "argument"), len(args), usageLine(cmd))
		}
		return nil
	}
}

// minArgs checks that there are at least n positional arguments.
func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageErrorf("%s needs at least %s; usage: %s", subPath(cmd), count(n, "argument"), usageLine(cmd))
		}
		return nil
	}
}

// noArgs rejects positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments, got %q; usage: %s", subPath(cmd), args[0], usageLine(cmd))
	}
	return nil
}

// usageLine is the command's usage without the "[flags]" cobra adds.
func usageLine(cmd *cobra.Command) string {
	return strings.TrimSuffix(cmd.UseLine(), " [flags]")
}

// subPath is a command's path without the program name: "service ls".
func subPath(cmd *cobra.Command) string {
	p := cmd.CommandPath()
	if _, rest, ok := strings.Cut(p, " "); ok {
		return rest
	}
	return p
}

// count writes "1 argument", "2 arguments".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
