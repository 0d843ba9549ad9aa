package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

// deployDoc is one spec document read from a file, ready to send.
type deployDoc struct {
	source      string // file name, or "stdin"
	name        string // the service name in the document
	data        []byte
	contentType string
}

func newDeployCmd(e *env) *cobra.Command {
	var files []string
	var wait, dryRun bool
	var timeout, poll time.Duration
	cmd := &cobra.Command{
		Use:   "deploy [-f] FILE [FILE...]",
		Short: "Create or update services from spec files",
		Long: `Create or update services from spec files, in YAML or JSON.

Each file holds one service spec; its name field names the service. Files
are given as arguments or with -f (both may be mixed; arguments come after
the -f files). A file "-" is read from standard input. All files are read and checked before any
service is changed. Warnings about an accepted spec go to standard error.

With --dry-run, the API checks each file as a deploy would and says what it
would do: the version it would write, what changes, and which tasks a rolling
update would replace, start or stop. Nothing is stored.

With --wait, each service is followed until its rolling update completes (or,
for a new service or a change that replaces no task, until its tasks run): a
progress bar on a terminal, a line per change otherwise. The command fails if
an update pauses or is rolled back, or on --timeout. An update whose canaries
wait for 'berth service promote' ends the wait successfully.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			files := append(append([]string{}, files...), args...)
			if len(files) == 0 {
				return usageErrorf("deploy needs at least one spec file: berth deploy FILE, or -f FILE")
			}
			if timeout <= 0 || poll <= 0 {
				return usageErrorf("--timeout and --poll-interval must be positive")
			}
			if dryRun && wait {
				return usageErrorf("--dry-run changes nothing, so there is nothing to --wait for")
			}
			docs, err := readSpecDocs(e.stdin, files)
			if err != nil {
				return err
			}
			c, err := e.apiClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if dryRun {
				for _, d := range docs {
					plan, err := c.PlanDeploy(ctx, d.name, d.data, d.contentType)
					if err != nil {
						return fmt.Errorf("%s: %w", d.source, err)
					}
					for _, w := range plan.Warnings {
						fmt.Fprintf(e.stderr, "berth: warning: service %s: %s\n", d.name, oneLine(w))
					}
					writePlan(e.stdout, plan)
				}
				return nil
			}
			for _, d := range docs {
				// The API answers 200 for both a change and no change;
				// the version before tells them apart.
				var before uint64
				if prev, err := c.GetService(ctx, d.name); err == nil {
					before = prev.Version
				}
				res, err := c.Deploy(ctx, d.name, d.data, d.contentType)
				if err != nil {
					return err
				}
				for _, w := range res.Warnings {
					fmt.Fprintf(e.stderr, "berth: warning: service %s: %s\n", d.name, oneLine(w))
				}
				what := "updated"
				switch {
				case res.Created:
					what = "created"
				case before != 0 && res.Version == before:
					what = "unchanged"
				}
				fmt.Fprintf(e.stdout, "service %s %s (version %d)\n", d.name, what, res.Version)
				if wait {
					w := &waiter{c: c, out: e.stdout, interval: poll, timeout: timeout, bar: isTerminal(e.stdout)}
					if err := w.wait(ctx, res); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, `spec file, YAML or JSON ("-" for standard input); repeatable`)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what each deploy would change and which tasks it would replace; change nothing")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow each service until its update completes; fail if it pauses or rolls back")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait, how long to wait for each service")
	cmd.Flags().DurationVar(&poll, "poll-interval", defaultPollInterval, "with --wait, how often to read the service")
	_ = cmd.Flags().MarkHidden("poll-interval")
	return cmd
}

// readSpecDocs reads and parses every file, so that a mistake in any of them
// is reported before anything is deployed.
func readSpecDocs(stdin io.Reader, files []string) ([]deployDoc, error) {
	docs := make([]deployDoc, 0, len(files))
	seen := map[string]string{} // service name → source
	stdinUsed := false
	for _, f := range files {
		d := deployDoc{source: f}
		var data []byte
		var err error
		if f == "-" {
			if stdinUsed {
				return nil, usageErrorf("-f - (standard input) is given more than once")
			}
			stdinUsed = true
			d.source = "stdin"
			data, err = io.ReadAll(io.LimitReader(stdin, api.MaxSpecBytes+1))
			if err != nil {
				err = fmt.Errorf("reading standard input: %w", err)
			}
		} else {
			data, err = readFileLimited(f, api.MaxSpecBytes+1)
		}
		if err != nil {
			return nil, err // a *PathError, or from stdin
		}
		if len(data) > api.MaxSpecBytes {
			return nil, fmt.Errorf("%s: larger than the limit of %d bytes", d.source, api.MaxSpecBytes)
		}
		spec, err := api.ParseServiceSpec(data)
		if err == nil {
			// Check the whole spec here too, so that a mistake in any file
			// stops the deploy before any service is changed.
			checked := spec
			checked.Normalize()
			err = checked.Validate()
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.source, err)
		}
		if spec.Name == "" {
			return nil, fmt.Errorf("%s: %w", d.source, api.Invalid("name", "is required"))
		}
		if prev, dup := seen[spec.Name]; dup {
			return nil, fmt.Errorf("%s: service %q is also in %s", d.source, spec.Name, prev)
		}
		seen[spec.Name] = d.source
		d.name = spec.Name
		d.data = data
		d.contentType = specContentType(f, data)
		docs = append(docs, d)
	}
	return docs, nil
}

// readFileLimited reads at most max bytes of a file.
func readFileLimited(name string, max int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
}

// specContentType tells JSON from YAML by the file's extension, else by
// its first character.
func specContentType(file string, data []byte) string {
	switch strings.ToLower(filepath.Ext(file)) {
	case ".json":
		return "application/json"
	case ".yaml", ".yml":
		return "application/yaml"
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		return "application/json"
	}
	return "application/yaml"
}

// writePlan prints what a deploy would do, like `nomad job plan`.
func writePlan(w io.Writer, p api.DeployPlan) {
	switch p.Action {
	case "create":
		fmt.Fprintf(w, "service %s: would be created (version 1)", p.Service)
		if p.Start > 0 {
			fmt.Fprintf(w, ", starting %s", count(p.Start, "task"))
		}
		fmt.Fprintln(w)
		return
	case "none":
		fmt.Fprintf(w, "service %s: unchanged (version %d): nothing to do\n", p.Service, p.FromVersion)
		return
	}
	fmt.Fprintf(w, "service %s: would be updated, version %d → %d\n", p.Service, p.FromVersion, p.ToVersion)
	fmt.Fprintf(w, "  changes:  %s\n", oneLine(p.Summary))
	if p.TemplateChanged {
		fmt.Fprintf(w, "  replace:  %s by a rolling update%s\n", count(len(p.Replace), "task"), planTasks(p.Replace))
	} else {
		fmt.Fprintln(w, "  replace:  none (the task template is unchanged)")
	}
	if p.Start > 0 {
		fmt.Fprintf(w, "  start:    %s for new slots\n", count(p.Start, "task"))
	}
	if len(p.Stop) > 0 {
		fmt.Fprintf(w, "  stop:     %s%s\n", count(len(p.Stop), "task"), planTasks(p.Stop))
	}
}

// planTasks lists tasks as ": id (slot N), …", at most 10 of them.
func planTasks(ts []api.PlanTask) string {
	if len(ts) == 0 {
		return ""
	}
	parts := make([]string, 0, min(len(ts), 10))
	for i, t := range ts {
		if i == 10 {
			parts = append(parts, fmt.Sprintf("and %d more", len(ts)-10))
			break
		}
		p := shortID(t.ID)
		if slot := formatSlot(t.Slot); slot != "" {
			p += " (slot " + slot + ")"
		}
		parts = append(parts, p)
	}
	return ": " + strings.Join(parts, ", ")
}
