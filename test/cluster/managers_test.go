package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// TestRemovedManagerStops: three managers. A killed leader shows
// unreachable in `manager ls` within a probe, not ready (and leader) until
// its record's lease expires. Removing it warns that the two managers left
// survive the loss of none; removing one more, running, manager makes that
// process stop, saying why, instead of answering /healthz with ok while
// every other call fails.
func TestRemovedManagerStops(t *testing.T) {
	RequireAvailable(t)
	c := NewCluster(t, berthBin, Options{Managers: 3})
	leader, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	var victim, asker *Process
	for _, m := range c.Managers {
		switch {
		case m == leader:
		case victim == nil:
			victim = m
		default:
			asker = m
		}
	}
	idOf := func(p *Process) string {
		t.Helper()
		ctx, cancel := callCtx()
		defer cancel()
		ms, err := c.ManagerClient(asker).ClusterManagers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.APIURL == p.ManagerURL() {
				return m.ID
			}
		}
		t.Fatalf("no manager at %s in %+v", p.ManagerURL(), ms)
		return ""
	}
	leaderID, victimID := idOf(leader), idOf(victim)

	leader.Kill()
	killed := time.Now()
	var d time.Duration
	Eventually(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms, err := c.ManagerClient(asker).ClusterManagers(ctx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.ID == leaderID && (m.Status == api.ManagerReady || m.Leader) {
				return fmt.Errorf("the killed leader shows %s (leader %v)", m.Status, m.Leader)
			}
		}
		d = time.Since(killed)
		return nil
	})
	t.Logf("the killed leader stopped showing ready %v after the kill", d.Round(time.Millisecond))
	if d > 4*time.Second {
		t.Errorf("the killed leader showed ready for %v", d)
	}

	rm := func(id string) {
		t.Helper()
		_, stderr, err := c.cliResult(t, time.Minute, "--addr", asker.ManagerURL(), "manager", "rm", id)
		if err != nil || !strings.Contains(stderr, "survives the loss of no manager") {
			t.Fatalf("manager rm %s: %v, stderr %q", id, err, stderr)
		}
	}
	rm(leaderID) // two left
	rm(victimID) // one left, and the removed one runs
	removedAt := time.Now()
	if !victim.WaitExit(30 * time.Second) {
		t.Fatalf("the removed manager still runs 30 s after its removal\n%s", victim.LogTail(20))
	}
	t.Logf("the removed manager exited %v after its removal", time.Since(removedAt).Round(time.Millisecond))
	if tail := victim.LogTail(40); !strings.Contains(tail, "etcd member stopped") {
		t.Errorf("the removed manager did not say why it stopped:\n%s", tail)
	}
	// The one left serves, and lists itself alone once the removed one's
	// record expired (until then it is unreachable, never ready).
	Eventually(t, 30*time.Second, func() error {
		ctx, cancel := callCtx()
		defer cancel()
		ms, err := c.ManagerClient(asker).ClusterManagers(ctx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.ID == victimID && m.Status == api.ManagerReady {
				t.Fatalf("the removed manager shows ready: %+v", ms)
			}
		}
		if len(ms) != 1 {
			return fmt.Errorf("managers: %+v", ms)
		}
		return nil
	})
}
