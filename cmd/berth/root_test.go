package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// TestExtraCommandsSeeEnv checks what a command added by another file (as
// up/server/agent are) gets: the data directory and the streams.
func TestExtraCommandsSeeEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"probe", "--data-dir", dir}, dir},
		{[]string{"--data-dir", dir, "probe"}, dir},
		{[]string{"probe"}, "/from/env"},
	}
	for _, tt := range tests {
		var out, errb strings.Builder
		e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
			getenv: func(k string) string { return map[string]string{envDataDir: "/from/env"}[k] },
			euid:   1000, now: time.Now}
		root := newRootCmd(e)
		root.AddCommand(&cobra.Command{
			Use: "probe",
			RunE: func(cmd *cobra.Command, args []string) error {
				fmt.Fprint(cmd.OutOrStdout(), dataDirOf(cmd))
				return nil
			},
		})
		root.SetArgs(tt.args)
		if err := root.ExecuteContext(context.WithValue(context.Background(), envKey{}, e)); err != nil {
			t.Fatal(err)
		}
		if out.String() != tt.want {
			t.Errorf("%v: data dir %q, want %q", tt.args, out.String(), tt.want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		code int
		msg  string
	}{
		{errors.New("plain"), 1, "berth: plain\n"},
		{usageErrorf("bad %s", "flag"), 2, "berth: bad flag\n"},
		{fmt.Errorf("wrapped: %w", usageErrorf("bad")), 2, "berth: wrapped: bad\n"},
		{&exitError{code: 3, err: errors.New("failed after 1s")}, 3, "berth: failed after 1s\n"},
		{errors.New("first line\n  second line\n"), 1, "berth: first line; second line\n"},
	}
	for _, tt := range tests {
		var errb strings.Builder
		code := report(context.Background(), tt.err, &errb)
		if code != tt.code || errb.String() != tt.msg {
			t.Errorf("%v: code %d stderr %q, want %d %q", tt.err, code, errb.String(), tt.code, tt.msg)
		}
	}
	var errb strings.Builder
	if code := report(context.Background(), nil, &errb); code != 0 || errb.Len() != 0 {
		t.Errorf("no error: code %d, stderr %q", code, errb.String())
	}
	// A cancelled context turns "context canceled" into "interrupted".
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errb.Reset()
	if code := report(ctx, fmt.Errorf("api: GET /services: %w", context.Canceled), &errb); code != 130 || errb.String() != "berth: interrupted\n" {
		t.Errorf("interrupted: code %d, stderr %q", code, errb.String())
	}
}

func TestWhoamiWiring(t *testing.T) {
	t.Parallel()
	// A usage mistake in whoami's own flags exits 2.
	r := cliRun(context.Background(), nil, "", "whoami")
	if r.code != 2 || !strings.Contains(r.stderr, "--port is required") {
		t.Errorf("whoami without --port: %+v", r)
	}

	// It runs, with flags passed through untouched, until interrupted.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lineWatcher{want: "listening on", seen: make(chan struct{})}
	var errb strings.Builder
	e := &env{stdin: strings.NewReader(""), stdout: out, stderr: &errb, getenv: func(string) string { return "" }, now: time.Now}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"whoami", "--port", "0", "--name", "probe"}, e) }()
	select {
	case <-out.seen:
	case code := <-done:
		t.Fatalf("whoami ended with %d: %q %q", code, out.String(), errb.String())
	case <-time.After(10 * time.Second):
		t.Fatal("whoami did not listen within 10s")
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("whoami after cancel: code %d, stderr %q", code, errb.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("whoami did not stop within 15s")
	}
	if !strings.Contains(out.String(), "probe") {
		t.Errorf("whoami output %q does not carry --name", out.String())
	}
}
