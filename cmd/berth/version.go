package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// versionInfo is what `berth version` reports about the binary.
type versionInfo struct {
	Version string `json:"version"`
	Commit  string `json:"commit,omitempty"`
	// Modified reports a build from a work tree with uncommitted changes.
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// serverVersion is what the API says of the manager that answered.
type serverVersion struct {
	Addr    string `json:"addr"`
	Version string `json:"version"`
	Leader  bool   `json:"leader"`
}

// buildVersion reads the binary's version: the -X main.version the build
// set, else the module version; the commit from the VCS stamp the go
// command records (absent with -buildvcs=false or outside a repository).
func buildVersion() versionInfo {
	v := versionInfo{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if v.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func newVersionCmd(e *env) *cobra.Command {
	var client bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the version of berth and of the manager it reaches",
		Long: `Show the version of this binary (its version, the commit it was built from and
the Go version), then, unless --client is given, the version of the manager
the client commands reach (if one is configured and answers within 5s).`,
		Args: noArgs,
	}
	out := addOutputFlag(cmd)
	cmd.Flags().BoolVar(&client, "client", false, "only this binary: do not ask the API")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out); err != nil {
			return err
		}
		res := struct {
			Client      versionInfo    `json:"client"`
			Server      *serverVersion `json:"server,omitempty"`
			ServerError string         `json:"server_error,omitempty"`
		}{Client: buildVersion()}
		if !client {
			if c, err := e.apiClient(); err != nil {
				res.ServerError = err.Error()
			} else {
				ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
				info, err := c.Info(ctx)
				cancel()
				if err != nil {
					res.ServerError = err.Error()
				} else {
					res.Server = &serverVersion{Addr: strings.TrimSuffix(c.Addr(), "/api/v1"), Version: info.Version, Leader: info.Leader}
				}
			}
		}
		if *out == outputJSON {
			return writeJSON(e.stdout, res)
		}
		v := res.Client
		commit := v.Commit
		switch {
		case commit == "":
			commit = "unknown"
		case v.Modified:
			commit += " (modified)"
		}
		fmt.Fprintf(e.stdout, "berth %s\ncommit   %s\ngo       %s %s\n", v.Version, commit, v.Go, v.Platform)
		switch {
		case res.Server != nil:
			role := "follower"
			if res.Server.Leader {
				role = "leader"
			}
			fmt.Fprintf(e.stdout, "server   %s at %s (%s)\n", res.Server.Version, res.Server.Addr, role)
		case !client:
			fmt.Fprintf(e.stdout, "server   unknown: %s\n", oneLine(res.ServerError))
		}
		return nil
	}
	return cmd
}
