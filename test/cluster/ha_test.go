package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// leaderGoal is the goal for a new leader after the leader dies.
const leaderGoal = 5 * time.Second

// webSpec is WhoamiSpec with an environment variable whose value v makes
// a new spec version: changing it rolls the service.
func webSpec(replicas int, v string) []byte {
	doc := string(WhoamiSpec("web", replicas))
	doc = strings.Replace(doc, "  ports:\n", "  env: {ROLL: \""+v+"\"}\n  ports:\n", 1)
	// Two at a time, each watched for 2 s (the default, one by one with
	// 5 s each, takes ~45 s for eight).
	return []byte(doc + "update: {parallelism: 2, monitor: 2s}\n")
}

// failoverClient returns an admin client that sends to the given managers
// in order, failing over to the next when one cannot be reached.
func failoverClient(t *testing.T, ms ...*Process) *api.Client {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(ms[0].DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(ms[0].DataDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, m := range ms {
		addrs = append(addrs, m.ManagerURL())
	}
	cl, err := api.NewClient(api.ClientConfig{Addrs: addrs, Token: strings.TrimSpace(string(token)), CACertPEM: ca})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// others returns the managers of c but m.
func others(c *Cluster, m *Process) []*Process {
	var out []*Process
	for _, x := range c.Managers {
		if x != m {
			out = append(out, x)
		}
	}
	return out
}

// TestLeaderDeathDuringDeploy is the HA acceptance test: three
// managers, each in its own namespace (the first `berth server --listen`,
// two more `berth server --join URL` with the manager token), three agents
// joined with the worker token, eight replicas. During a rolling update,
// SIGKILL the leader → a new leader within 5 s, the update completes
// through the others, every spec write a manager acknowledged (a writer
// deploys services through the managers all along) is in the store, and
// exactly eight replicas run afterwards.
func TestLeaderDeathDuringDeploy(t *testing.T) {
	RequireAvailable(t)
	c := NewCluster(t, berthBin, Options{Managers: 3, Agents: 3, HeartbeatTimeout: heartbeatTimeout})
	c.Deploy("web", webSpec(8, "1"))
	c.WaitRunning("web", 8, 60*time.Second)
	leader, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	survivors := others(c, leader)
	t.Logf("leader is the manager on %s", leader.Host.Name)

	// The writer sends to the leader first: the kill hits its writes in
	// flight, and it fails over to the others.
	writer := failoverClient(t, append([]*Process{leader}, survivors...)...)
	ctx, stopWriting := context.WithCancel(context.Background())
	defer stopWriting()
	var mu sync.Mutex
	var acked, failed []string
	var ackedAfterKill int
	var killed time.Time
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("w-%03d", i)
			doc := fmt.Sprintf("name: %s\nreplicas: 0\ntask:\n  driver: process\n  command: [sleep, \"60\"]\n", name)
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, _, err := writer.DeployService(wctx, name, []byte(doc), "application/yaml")
			cancel()
			mu.Lock()
			if err == nil {
				acked = append(acked, name)
				if !killed.IsZero() {
					ackedAfterKill++
				}
			} else if ctx.Err() == nil {
				failed = append(failed, fmt.Sprintf("%s: %v", name, err))
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 5 {
			return fmt.Errorf("%d writes acknowledged before the kill", len(acked))
		}
		return nil
	})

	// The deploy: a spec change that rolls the eight replicas, sent to a
	// manager that survives. The leader dies once the roll has begun.
	via := c.ManagerClient(survivors[0])
	dctx, cancel := callCtx()
	svc, _, err := via.DeployService(dctx, "web", webSpec(8, "2"), "application/yaml")
	cancel()
	if err != nil {
		t.Fatalf("deploying the change: %v", err)
	}
	updated := 0
	Eventually(t, 30*time.Second, func() error {
		tasks, err := c.Tasks("web")
		if err != nil {
			return err
		}
		updated = 0
		for _, task := range tasks {
			if task.SpecVersion == svc.Version {
				updated++
			}
		}
		if updated == 0 {
			return fmt.Errorf("no task of version %d yet", svc.Version)
		}
		return nil
	})
	mu.Lock()
	killed = time.Now()
	mu.Unlock()
	leader.Kill()
	t.Logf("killed the leader (%s) with %d of 8 tasks of version %d created", leader.Host.Name, updated, svc.Version)

	// A new leader among the two left.
	var newLeader *Process
	Eventually(t, 30*time.Second, func() error {
		l, err := c.Leader()
		if err != nil {
			return err
		}
		newLeader = l
		return nil
	})
	failover := time.Since(killed)
	t.Logf("LEADER FAILOVER: the manager on %s leads %v after SIGKILL of the leader; 5s goal met: %v",
		newLeader.Host.Name, failover.Round(time.Millisecond), failover <= leaderGoal)
	if failover > leaderGoal+loadAllowance {
		t.Errorf("new leader after %v, want within %v (+%v for load)", failover.Round(time.Millisecond), leaderGoal, loadAllowance)
	}

	// The deploy completes: eight replicas of the new version, in eight
	// slots, healthy, and eight task processes on the hosts.
	Eventually(t, 90*time.Second, func() error {
		tasks, err := c.Tasks("web")
		if err != nil {
			return err
		}
		var run []api.Task
		if err := checkRunning(tasks, 8, &run); err != nil {
			return err
		}
		for _, task := range run {
			if task.SpecVersion != svc.Version {
				return fmt.Errorf("slot %d still runs version %d: %s", task.Slot, task.SpecVersion, Summary(tasks))
			}
		}
		return nil
	})
	t.Logf("the deploy completed %v after the kill", time.Since(killed).Round(time.Millisecond))
	Eventually(t, 30*time.Second, func() error {
		total := 0
		for _, a := range c.Agents {
			total += len(a.TaskPIDs())
		}
		if total != 8 {
			return fmt.Errorf("%d task processes run across the hosts, want 8", total)
		}
		return nil
	})

	// Writes go on through the survivors for a while after the failover.
	Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if ackedAfterKill < 5 {
			return fmt.Errorf("%d writes acknowledged after the kill", ackedAfterKill)
		}
		return nil
	})
	stopWriting()
	wg.Wait()
	t.Logf("%d spec writes acknowledged (%d after the kill), %d failed around the kill: %v", len(acked), ackedAfterKill, len(failed), failed)

	// Every acknowledged write is in the store, as each survivor sees it.
	for _, m := range survivors {
		lctx, cancel := callCtx()
		svcs, err := c.ManagerClient(m).ListServices(lctx)
		cancel()
		if err != nil {
			t.Fatalf("listing services on %s: %v", m.Host.Name, err)
		}
		have := map[string]bool{}
		for _, s := range svcs {
			have[s.Spec.Name] = true
		}
		for _, n := range acked {
			if !have[n] {
				t.Errorf("%s: acknowledged service %s is lost", m.Host.Name, n)
			}
		}
		if !have["web"] {
			t.Errorf("%s: service web is lost", m.Host.Name)
		}
	}
}

// TestAgentManagerFailover: two agents joined (worker token) through the
// first manager of three; SIGKILL that manager → the agents heartbeat
// through the others (measured), their nodes never go down, their tasks
// keep running and are not replaced, and a scale-up still reaches them.
func TestAgentManagerFailover(t *testing.T) {
	RequireAvailable(t)
	c := NewCluster(t, berthBin, Options{Managers: 3, Agents: 2, HeartbeatTimeout: heartbeatTimeout})
	c.Deploy("web", WhoamiSpec("web", 4))
	before := c.WaitRunning("web", 4, 60*time.Second)
	var ids []string
	pids := map[int]uint64{}
	for _, task := range before {
		ids = append(ids, task.ID)
		st, err := StartTime(task.Status.PID)
		if err != nil {
			t.Fatalf("task %s pid %d: %v", task.ID, task.Status.PID, err)
		}
		pids[task.Status.PID] = st
	}
	victim := c.Manager // the agents joined through it and talk to it
	leader, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	survivors := others(c, victim)
	obs := failoverClient(t, survivors...)

	// Watch the nodes through the survivors: any sample not ready is a
	// failure; the first heartbeat after the kill is the failover time.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var mu sync.Mutex
	var notReady []string
	firstBeat := map[string]time.Duration{}
	samples := 0
	var killed time.Time
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			nodes, err := obs.ListNodes(lctx)
			cancel()
			if err == nil {
				mu.Lock()
				samples++
				for _, n := range nodes {
					if n.Status != api.NodeReady {
						notReady = append(notReady, fmt.Sprintf("%s %s at %v", n.Hostname, n.Status, time.Since(killed).Round(time.Millisecond)))
					}
					if _, ok := firstBeat[n.Hostname]; !ok && !killed.IsZero() && n.LastHeartbeat.After(killed) {
						firstBeat[n.Hostname] = n.LastHeartbeat.Sub(killed)
					}
				}
				mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	mu.Lock()
	killed = time.Now()
	mu.Unlock()
	victim.Kill()
	t.Logf("killed the manager on %s (the leader: %v), through which the agents joined", victim.Host.Name, victim == leader)

	Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(firstBeat) < len(c.Agents) {
			return fmt.Errorf("heartbeats after the kill from %d of %d agents", len(firstBeat), len(c.Agents))
		}
		return nil
	})
	// Hold on past the heartbeat timeout plus the node monitor's slack, so
	// that a node marked down late is seen.
	if d := heartbeatTimeout + 3*time.Second - time.Since(killed); d > 0 {
		time.Sleep(d)
	}
	stop()
	wg.Wait()
	mu.Lock()
	var worst time.Duration
	for h, d := range firstBeat {
		t.Logf("AGENT FAILOVER: %s heartbeat through another manager %v after the kill", h, d.Round(time.Millisecond))
		worst = max(worst, d)
	}
	t.Logf("%d node samples; heartbeat timeout %v; within it: %v", samples, heartbeatTimeout, worst < heartbeatTimeout)
	if len(notReady) > 0 {
		t.Errorf("nodes went not ready after the manager died: %v", notReady)
	}
	mu.Unlock()

	// The tasks are the same and their processes still the same.
	after := c.WaitRunning("web", 4, 30*time.Second)
	for _, task := range after {
		if !slices.Contains(ids, task.ID) {
			t.Errorf("task %s (slot %d) is new: the manager's death replaced a task", task.ID, task.Slot)
		}
	}
	for pid, st := range pids {
		if !ProcessAlive(pid, st) {
			t.Errorf("task process %d ended after the manager died", pid)
		}
	}

	// A new assignment still reaches the agents.
	sctx, cancel := callCtx()
	_, err = obs.ScaleService(sctx, "web", 6)
	cancel()
	if err != nil {
		t.Fatalf("scaling up through the survivors: %v", err)
	}
	start := time.Now()
	scaled := c.WaitRunning("web", 6, 30*time.Second)
	t.Logf("scale-up to 6 running %v after the call", time.Since(start).Round(time.Millisecond))
	total := 0
	for _, a := range c.Agents {
		total += len(a.TaskPIDs())
	}
	if total != 6 {
		t.Errorf("%d task processes run on the agents, want 6 (store: %s)", total, Summary(scaled))
	}
}
