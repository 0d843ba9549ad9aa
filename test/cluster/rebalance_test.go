package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// servingSampler reads a service's tasks every 20 ms until stopped and
// keeps the lowest serving count it saw.
type servingSampler struct {
	stop    context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	low     int
	lowAt   string
	samples int
}

func sampleServing(c *Cluster, name string, want int) *servingSampler {
	ctx, stop := context.WithCancel(context.Background())
	s := &servingSampler{stop: stop, low: want}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for ctx.Err() == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ts, err := c.Client.ServiceTasks(cctx, name, true)
			cancel()
			if err == nil {
				n := serving(ts)
				s.mu.Lock()
				s.samples++
				if n < s.low {
					s.low, s.lowAt = n, Summary(ts)
				}
				s.mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return s
}

// done stops the sampler and returns the lowest count, where, and how many
// samples it took.
func (s *servingSampler) done() (int, string, int) {
	s.stop()
	s.wg.Wait()
	return s.low, s.lowAt, s.samples
}

// waitRebalanced asks for a rebalance of name and waits until the
// orchestrator finished it: the service is balanced, no move in flight.
func waitRebalanced(t *testing.T, c *Cluster, name string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	svc, err := c.Client.Rebalance(ctx, name)
	if err != nil {
		t.Fatalf("rebalance %s: %v", name, err)
	}
	svc, err = c.Client.WaitForRebalance(ctx, name, svc.RebalanceStatus.Requested, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("waiting for the rebalance of %s: %v", name, err)
	}
	t.Logf("service %s: %s", name, svc.RebalanceStatus.Message)
}

// TestRebalanceAfterReactivate is issue 12 item 21 on real machines: four
// replicas on two nodes; one node is drained (all four on the other), then
// made active again. The replicas spread back, two on each node, start-first
// (at no sample do fewer than four serve), and 'berth service rebalance
// --wait' then finds the service balanced.
func TestRebalanceAfterReactivate(t *testing.T) {
	RequireAvailable(t)
	c := NewCluster(t, berthBin, Options{Agents: 2, HeartbeatTimeout: heartbeatTimeout})
	c.Deploy("web", WhoamiSpec("web", 4))
	c.WaitRunning("web", 4, 60*time.Second)
	a, b := c.Agents[0], c.Agents[1]
	aID, bID := c.NodeID(a), c.NodeID(b)

	c.cli(t, "node", "update", b.Host.Name, "--availability", "drain")
	c.WaitRunning("web", 4, 60*time.Second, aID)
	Eventually(t, 30*time.Second, func() error {
		if n := len(b.TaskPIDs()); n > 0 {
			return fmt.Errorf("%d task processes still run on the drained node", n)
		}
		return nil
	})

	sampler := sampleServing(c, "web", 4)
	start := time.Now()
	c.cli(t, "node", "update", b.Host.Name, "--availability", "active")
	Eventually(t, 120*time.Second, func() error {
		tasks, err := c.Tasks("web")
		if err != nil {
			return err
		}
		var running []api.Task
		if err := checkRunning(tasks, 4, &running); err != nil {
			return err
		}
		byNode := Running(tasks)
		if len(byNode[aID]) != 2 || len(byNode[bID]) != 2 || len(tasks) != 4 {
			return fmt.Errorf("not spread back yet: %s", Summary(tasks))
		}
		return nil
	})
	took := time.Since(start)
	low, lowAt, samples := sampler.done()
	t.Logf("spread back over 2 nodes in %v; lowest serving count %d over %d samples", took.Round(time.Millisecond), low, samples)
	if samples < 10 {
		t.Errorf("only %d samples: the check saw too little", samples)
	}
	if low < 4 {
		t.Errorf("serving replicas fell to %d while rebalancing (want never below 4): %s", low, lowAt)
	}
	if out := c.cli(t, "service", "rebalance", "web", "--wait"); !strings.Contains(out, "balanced: 2 nodes hold 2 tasks each") {
		t.Errorf("service rebalance --wait: %q", out)
	}
}
