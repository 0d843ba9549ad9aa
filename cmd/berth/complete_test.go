package main

import (
	"strings"
	"testing"
)

// TestCompletion asks cobra's completion entry point (what the shell
// scripts call) for service and node names, which come from the API.
func TestCompletion(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()
	tests := []struct {
		args []string
		want string // the candidates, then cobra's directive line
	}{
		{[]string{"__complete", "service", "ps", "h"}, "hello\n:4\n"},
		{[]string{"__complete", "service", "inspect", ""}, "db\nhello\nweb\n:4\n"},
		{[]string{"__complete", "service", "ps", "hello", ""}, ":4\n"}, // one NAME only
		{[]string{"__complete", "service", "rm", "web", ""}, "db\nhello\n:4\n"},
		{[]string{"__complete", "service", "scale", "he"}, "hello=\n:6\n"},
		{[]string{"__complete", "node", "update", "a"}, "alpha\n:4\n"},
		{[]string{"__complete", "node", "ps", ""}, "alpha\nbeta\n:4\n"},
		{[]string{"__complete", "svc", "logs", "w"}, "web\n:4\n"},
	}
	for _, tt := range tests {
		r := f.run(tt.args...)
		if r.code != 0 || r.stdout != tt.want {
			t.Errorf("%v: code %d stdout %q, want %q (stderr %q)", tt.args, r.code, r.stdout, tt.want, r.stderr)
		}
	}
	// The scripts themselves.
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if r := f.run("completion", sh); r.code != 0 || !strings.Contains(r.stdout, "__complete") {
			t.Errorf("completion %s: code %d, %d bytes", sh, r.code, len(r.stdout))
		}
	}
}
