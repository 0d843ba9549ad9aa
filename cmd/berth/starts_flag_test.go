package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestMaxConcurrentStartsFlag: both commands that run an agent take
// --max-concurrent-starts, pass it to the agent's config, and refuse a
// negative value with a one-line usage error.
func TestMaxConcurrentStartsFlag(t *testing.T) {
	t.Parallel()
	for cmd, mk := range map[string]func() *cobra.Command{"up": newUpCmd, "agent": newAgentCmd} {
		f := mk().Flags().Lookup("max-concurrent-starts")
		if f == nil {
			t.Fatalf("berth %s has no --max-concurrent-starts", cmd)
		}
		if f.DefValue != "0" {
			t.Errorf("berth %s --max-concurrent-starts defaults to %q, want 0 (four times the CPUs)", cmd, f.DefValue)
		}
	}
	var af agentFlags
	af.maxStarts, af.portRange = 7, "20000-20100"
	cfg, err := af.config(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConcurrentStarts != 7 {
		t.Fatalf("config MaxConcurrentStarts = %d, want 7", cfg.MaxConcurrentStarts)
	}
	af.maxStarts = -1
	_, err = af.config(t.TempDir(), slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "--max-concurrent-starts -1: want at least 1") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("config with -1: %v, want a one-line usage error", err)
	}
}
