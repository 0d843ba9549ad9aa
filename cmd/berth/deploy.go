package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

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
	cmd := &cobra.Command{
		Use:   "deploy -f FILE [-f FILE...]",
		Short: "Create or update services from spec files",
		Long: `Create or update services from spec files, in YAML or JSON.

Each file holds one service spec; its name field names the service. A file
"-" is read from standard input. All files are read and checked before any
service is changed.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(files) == 0 {
				return usageErrorf("deploy needs at least one -f FILE")
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
			for _, d := range docs {
				// The API answers 200 for both a change and no change;
				// the version before tells them apart.
				var before uint64
				if prev, err := c.GetService(ctx, d.name); err == nil {
					before = prev.Version
				}
				svc, created, err := c.DeployService(ctx, d.name, d.data, d.contentType)
				if err != nil {
					return err
				}
				what := "updated"
				switch {
				case created:
					what = "created"
				case before != 0 && svc.Version == before:
					what = "unchanged"
				}
				fmt.Fprintf(e.stdout, "service %s %s (version %d)\n", d.name, what, svc.Version)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, `spec file, YAML or JSON ("-" for standard input); repeatable`)
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
