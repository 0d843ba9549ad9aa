package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// cli runs the berth CLI against the cluster's manager (from the test's
// namespace, over the bridge) and returns its stdout, failing t on a
// non-zero exit.
func (c *Cluster) cli(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, err := c.cliResult(t, 30*time.Second, args...)
	if err != nil {
		t.Fatalf("berth %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// serving counts the tasks that run and pass their health check, whatever
// their desired state: a task being drained serves until it stops.
func serving(tasks []api.Task) int {
	n := 0
	for _, t := range tasks {
		if t.Status.State == api.TaskRunning && (t.Status.Health == "" || t.Status.Health == api.HealthHealthy) {
			n++
		}
	}
	return n
}

// TestDrainNoGap: drain the node with the most of eight replicas → its
// tasks move to the other nodes, and at no sample (every 20 ms) do fewer
// than eight replicas run and pass their health check.
func TestDrainNoGap(t *testing.T) {
	RequireAvailable(t)
	if Available() == nil && !HasFlag(berthBin, "node update", "availability") {
		t.Skip("berth node update has no --availability flag yet (node drain, issue 3 item 3)")
	}
	c := NewCluster(t, berthBin, Options{Agents: 3, HeartbeatTimeout: heartbeatTimeout})
	c.Deploy("web", WhoamiSpec("web", 8))
	tasks := c.WaitRunning("web", 8, 60*time.Second)
	victim, survivors := pickVictim(t, c, tasks)
	vid := c.NodeID(victim)
	moving := len(Running(tasks, vid)[vid])
	var survivorIDs []string
	for _, a := range survivors {
		survivorIDs = append(survivorIDs, c.NodeID(a))
	}

	sampler := sampleServing(c, "web", 8)
	t.Logf("draining %s (%d of 8 tasks)", victim.Host.Name, moving)
	start := time.Now()
	c.cli(t, "node", "update", victim.Host.Name, "--availability", "drain")
	c.WaitRunning("web", 8, 60*time.Second, survivorIDs...)
	Eventually(t, 30*time.Second, func() error {
		if n := len(victim.TaskPIDs()); n > 0 {
			return fmt.Errorf("%d task processes still run on the drained node", n)
		}
		return nil
	})
	took := time.Since(start)
	low, lowAt, samples := sampler.done()
	t.Logf("drain moved %d tasks in %v; lowest serving count %d over %d samples", moving, took.Round(time.Millisecond), low, samples)
	if samples < 10 {
		t.Errorf("only %d samples: the check saw too little", samples)
	}
	if low < 8 {
		t.Errorf("serving replicas fell to %d during the drain (want never below 8): %s", low, lowAt)
	}
	n, err := c.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	if a := n[victim.Host.Name].Availability; a != api.AvailabilityDrain {
		t.Errorf("drained node's availability is %q", a)
	}
}
