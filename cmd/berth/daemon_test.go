package main

import (
	"log/slog"
	"testing"

	"github.com/spf13/cobra"
)

// TestReservedCPUsFlag: both commands that run an agent take
// --reserved-cpus and pass it to the agent's config unchanged (the agent
// checks it against the machine at start).
func TestReservedCPUsFlag(t *testing.T) {
	t.Parallel()
	for cmd, mk := range map[string]func() *cobra.Command{"up": newUpCmd, "agent": newAgentCmd} {
		c := mk()
		f := c.Flags().Lookup("reserved-cpus")
		if f == nil {
			t.Fatalf("berth %s has no --reserved-cpus", cmd)
		}
		if f.DefValue != "" {
			t.Errorf("berth %s --reserved-cpus defaults to %q, want none", cmd, f.DefValue)
		}
	}
	var af agentFlags
	af.reservedCPUs, af.portRange = "0-1,3", "20000-20100"
	cfg, err := af.config(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReservedCPUs != "0-1,3" {
		t.Fatalf("config ReservedCPUs %q", cfg.ReservedCPUs)
	}
}
