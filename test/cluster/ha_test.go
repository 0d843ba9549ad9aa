package cluster

import (
	"testing"
)

// TestLeaderDeathDuringDeploy is the HA acceptance test: three
// managers (the first `berth server --listen`, two more `berth server
// --join URL --token M`), kill the leader during a deploy → the deploy
// completes, no spec or task write is lost, and a new leader is elected
// within 5 s.
//
// It needs helper M's HA managers: `berth server --join`, `berth
// join-token manager` and GET /api/v1/cluster/managers. Until the berth
// binary has them it skips, naming what is missing.
func TestLeaderDeathDuringDeploy(t *testing.T) {
	RequireAvailable(t)
	var missing []string
	if !HasFlag(berthBin, "server", "join") {
		missing = append(missing, "`berth server --join`")
	}
	if !HasFlag(berthBin, "join-token", "rotate") {
		missing = append(missing, "`berth join-token manager`")
	}
	if len(missing) > 0 {
		t.Skipf("HA managers are not in this berth binary yet: missing %v (issue 3 item 4); this test is to be written against them", missing)
	}
	// The HA managers exist but this test was not written against them
	// (they landed after it): say so loudly rather than pass.
	t.Skip("NOT WRITTEN: HA managers exist in this binary, but this test has not been written against them yet (three managers, kill the leader mid-deploy, check no write lost and a new leader within 5s)")
}
