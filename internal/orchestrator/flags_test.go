package orchestrator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// crashOnce makes the first task of env V=v turn healthy after a second and
// crash crashAfter after its start; every other task is healthy after a
// second and stays up.
func crashOnce(v string, crashAfter time.Duration) func(api.Task) behaviour {
	first := ""
	return func(t api.Task) behaviour {
		if t.Spec.Env["V"] == v && (first == "" || first == t.ID) {
			first = t.ID
			return behaviour{healthyAfter: time.Second, crashAfter: crashAfter}
		}
		return behaviour{healthyAfter: time.Second}
	}
}

// A leader change while a new task is in its monitor window: the task's
// window ends and it crashes afterwards while no leader runs. The new
// leader never saw it serving, but its agent's healthy_since says it served
// for its window: it is no failure, and the update completes. With agents
// older than the field the new leader has only its own memory, and counts
// the task as failed (the gap the field closes).
func TestLeaderChangeMidMonitor(t *testing.T) {
	const monitor = 3 * time.Second
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprint("older agents ", legacy), func(t *testing.T) {
			s, id := v1Service(t, 3, func(sp *api.ServiceSpec) { sp.Update = &api.UpdatePolicy{Monitor: api.Duration(monitor)} })
			s.legacyAgents = legacy
			// Healthy 1s after its start, crashes 4s after that: it served
			// one second past its window.
			s.behave = crashOnce("2", time.Second+monitor+time.Second)
			s.deploy(id, setV("2"))
			if !s.until(20, func(s *sim) bool { return len(s.healthyAt) > 0 && s.servingNew(id, "2") }) {
				t.Fatalf("no v2 task healthy:\n%s", s.describe(id))
			}
			s.step() // mid-window: healthy for a second
			s.failover(5 * time.Second)
			first := s.createdOf(id, "2")[0]
			if st := s.st.Tasks[first.ID].Status.State; st != api.TaskFailed {
				t.Fatalf("the first v2 task is %s after the election, want failed", st)
			}
			if legacy {
				if !s.until(5, func(s *sim) bool { return s.state(id) == api.UpdateRollingBack }) {
					t.Fatalf("older agents: the new leader did not count the task as failed:\n%s", s.describe(id))
				}
				return
			}
			s.check = func(s *sim, _ Result) {
				if st := s.svcOf(id).UpdateStatus; st.Failed != 0 || st.State == api.UpdateRollingBack {
					s.fatalf("step %d: a task that served its window counted as failed after a leader change: %+v", s.steps, st)
				}
			}
			if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
				t.Fatalf("update did not complete:\n%s", s.describe(id))
			}
			if len(s.seen) != 0 {
				t.Fatalf("the loop remembered %d tasks that report healthy_since", len(s.seen))
			}
		})
	}
}

// servingNew reports whether a live task of id with env V=v serves.
func (s *sim) servingNew(id, v string) bool {
	for _, ts := range s.live(id) {
		for _, t := range ts {
			if t.Spec.Env["V"] == v && serving(t) {
				return true
			}
		}
	}
	return false
}

// Without a leader change, tasks of agents older than healthy_since still
// count from the loop's memory: one that served its window and then turned
// unhealthy is no failure; one that turned unhealthy within it is.
func TestOlderAgentsFallBackToMemory(t *testing.T) {
	const monitor = 5 * time.Second
	for _, c := range []struct {
		unhealthyAfter time.Duration
		failed         bool
	}{{monitor - time.Second, true}, {monitor + time.Second, false}} {
		t.Run(fmt.Sprint("unhealthy after ", c.unhealthyAfter), func(t *testing.T) {
			s, id := v1Service(t, 3)
			s.legacyAgents = true
			s.behave = byEnv(map[string]behaviour{"2": {healthyAfter: time.Second, unhealthyAfter: c.unhealthyAfter}})
			s.deploy(id, setV("2"))
			for range 40 {
				s.step()
				if st := s.svcOf(id).UpdateStatus; st.State == api.UpdateRollingBack || st.Failed > 0 {
					if !c.failed {
						t.Fatalf("counted as failed: %+v", st)
					}
					return
				}
			}
			if c.failed {
				t.Fatalf("not counted as failed:\n%s", s.describe(id))
			}
		})
	}
}

// A task's healthy_since, not its status timestamp, starts its window: a
// status that moved on (re-reported) does not hold the slot up.
func TestMonitorCountsFromHealthySince(t *testing.T) {
	svc := service("web", 1, func(sp *api.ServiceSpec) {
		sp.Task.Health = healthCheck
		sp.Update = &api.UpdatePolicy{Monitor: api.Duration(5 * time.Second)}
	})
	svc.UpdateStatus = &api.UpdateStatus{State: api.UpdateUpdating, FromVersion: 0, ToVersion: 1, Total: 1, StartedAt: t0.Add(-time.Minute)}
	tk := task(svc, "t1", 1, api.TaskRunning)
	tk.Status.Health = api.HealthHealthy
	tk.Status.StartedAt = t0.Add(-10 * time.Second)
	tk.Status.HealthySince = t0.Add(-6 * time.Second)
	tk.Status.Timestamp = t0.Add(-time.Second)
	res := Reconcile(t0, state([]api.Service{svc}, tk), Options{NewID: idGen()})
	if len(res.Services) != 1 || res.Services[0].Service.UpdateStatus.State != api.UpdateCompleted {
		t.Fatalf("a task healthy for 6s did not count for a 5s window: %+v", res.Services)
	}
	tk.Status.HealthySince = t0.Add(-4 * time.Second)
	res = Reconcile(t0, state([]api.Service{svc}, tk), Options{NewID: idGen()})
	if len(res.Services) != 0 || !res.Wake.Equal(t0.Add(time.Second)) {
		t.Fatalf("a task healthy for 4s: %+v, wake %v", res.Services, res.Wake)
	}
}

// A paused rollback still moves with the rollback: policy: its tasks count
// with its monitor window, not the update's.
func TestPausedRollbackKeepsItsPolicy(t *testing.T) {
	svc := service("web", 2, func(sp *api.ServiceSpec) {
		sp.Task.Health = healthCheck
		sp.Update = &api.UpdatePolicy{Monitor: api.Duration(time.Minute), Canary: 1}
		sp.Rollback = &api.UpdatePolicy{Monitor: api.Duration(2 * time.Second)}
	})
	svc.Version = 3
	prev := svc.Spec
	svc.PreviousSpec = &prev
	svc.UpdateStatus = &api.UpdateStatus{State: api.UpdatePaused, FromVersion: 2, ToVersion: 3, Total: 2, Failed: 1,
		StartedAt: t0.Add(-time.Minute), Rollback: true}
	var tasks []api.Task
	for i := 1; i <= 2; i++ {
		tk := task(svc, fmt.Sprint("t", i), i, api.TaskRunning)
		tk.Status.Health, tk.Status.HealthySince = api.HealthHealthy, t0.Add(-5*time.Second)
		tasks = append(tasks, tk)
	}
	res := Reconcile(t0, state([]api.Service{svc}, tasks...), Options{NewID: idGen()})
	if len(res.Services) != 1 {
		t.Fatalf("no status write: %+v", res)
	}
	if st := res.Services[0].Service.UpdateStatus; st.Updated != 2 || st.State != api.UpdatePaused || !st.Rollback {
		t.Fatalf("paused rollback counted with the update's monitor: %+v", st)
	}
	if len(res.Creates) != 0 {
		t.Fatalf("a paused rollback created tasks (canaries?): %+v", res.Creates)
	}
}

func TestAutomaticRollbackIsFlagged(t *testing.T) {
	s, id := v1Service(t, 3)
	s.behave = byEnv(map[string]behaviour{"2": {healthyAfter: time.Second, crashAfter: 2 * time.Second}})
	s.deploy(id, setV("2"))
	if !s.until(100, func(s *sim) bool { return s.state(id) == api.UpdateRollingBack }) {
		t.Fatalf("no automatic rollback:\n%s", s.describe(id))
	}
	if st := s.svcOf(id).UpdateStatus; !st.Rollback || st.Promoted {
		t.Fatalf("automatic rollback status %+v, want rollback set", st)
	}
	if !s.until(100, func(s *sim) bool { return s.state(id) == api.UpdateRolledBack }) {
		t.Fatalf("rollback did not complete:\n%s", s.describe(id))
	}
	if !s.svcOf(id).UpdateStatus.Rollback {
		t.Fatal("rolled_back status lost the rollback flag")
	}
}

// An update paused in its canary phase, once resumed, holds at its canaries
// again: the failed canary is retried, no replica moves until a promotion.
func TestResumeInCanaryPhaseHolds(t *testing.T) {
	s, id := v1Service(t, 3, func(sp *api.ServiceSpec) {
		sp.Update = &api.UpdatePolicy{Canary: 1, FailureAction: api.FailurePause}
	})
	old := s.liveIDs(id, "1")
	s.behave = crashOnce("2", 2*time.Second)
	s.deploy(id, setV("2"))
	if !s.until(50, func(s *sim) bool { return s.state(id) == api.UpdatePaused }) {
		t.Fatalf("the failing canary did not pause the update:\n%s", s.describe(id))
	}
	if st := s.svcOf(id).UpdateStatus; st.Promoted || st.Failed != 1 || !strings.Contains(st.Message, "canary 1") {
		t.Fatalf("paused status %+v", st)
	}
	s.resume(id)
	if got := s.state(id); got != api.UpdateCanary {
		t.Fatalf("resumed to %s, want canary", got)
	}
	s.check = func(s *sim, res Result) {
		if st := s.svcOf(id).UpdateStatus; st.State != api.UpdateCanary || st.Promoted {
			s.fatalf("step %d: resumed canary phase moved on: %+v", s.steps, st)
		}
		for _, c := range res.Creates {
			if !api.IsCanarySlot(c.Slot) {
				s.fatalf("step %d: replica slot %d moved before a promotion", s.steps, c.Slot)
			}
		}
	}
	if !s.until(30, func(s *sim) bool { return len(s.createdOf(id, "2")) == 2 && s.servingNew(id, "2") }) {
		t.Fatalf("the failed canary was not retried:\n%s", s.describe(id))
	}
	for range 20 {
		s.step()
	}
	if got := s.liveIDs(id, "1"); fmt.Sprint(got) != fmt.Sprint(old) {
		t.Fatalf("old tasks touched while holding: %v, was %v", got, old)
	}
	if msg := s.svcOf(id).UpdateStatus.Message; !strings.Contains(msg, "promote or roll back") {
		t.Fatalf("message after resume %q", msg)
	}
	s.check = nil
	s.promote(id)
	if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
		t.Fatalf("promoted update did not complete:\n%s", s.describe(id))
	}
	if st := s.svcOf(id).UpdateStatus; !st.Promoted || st.Updated != 3 {
		t.Fatalf("final status %+v", st)
	}
	if !s.until(10, func(s *sim) bool { return s.settled(id, "2") }) {
		t.Fatalf("not settled on v2:\n%s", s.describe(id))
	}
}

func TestPromotedFlag(t *testing.T) {
	canary := func(auto bool) func(*api.ServiceSpec) {
		return func(sp *api.ServiceSpec) { sp.Update = &api.UpdatePolicy{Canary: 1, AutoPromote: auto} }
	}
	t.Run("auto promote sets it", func(t *testing.T) {
		s, id := v1Service(t, 2, canary(true))
		s.deploy(id, setV("2"))
		if !s.until(20, func(s *sim) bool { return s.state(id) == api.UpdateCanary }) {
			t.Fatalf("no canary state:\n%s", s.describe(id))
		}
		if s.svcOf(id).UpdateStatus.Promoted {
			t.Fatal("promoted before the canaries served")
		}
		if !s.until(30, func(s *sim) bool { return s.state(id) == api.UpdateUpdating }) {
			t.Fatalf("not promoted:\n%s", s.describe(id))
		}
		if !s.svcOf(id).UpdateStatus.Promoted {
			t.Fatal("automatic promotion did not set promoted")
		}
	})
	t.Run("an older API's promotion rolls on", func(t *testing.T) {
		s, id := v1Service(t, 2, canary(false))
		s.deploy(id, setV("2"))
		if !s.until(20, func(s *sim) bool { return s.state(id) == api.UpdateCanary && s.servingNew(id, "2") }) {
			t.Fatalf("no canary:\n%s", s.describe(id))
		}
		// What an API without the flag wrote for a promotion.
		s.setStatus(id, func(_ api.Service, st *api.UpdateStatus) { st.State, st.Message = api.UpdateUpdating, "" })
		s.step()
		if st := s.svcOf(id).UpdateStatus; st.State != api.UpdateUpdating || !st.Promoted {
			t.Fatalf("status after an unflagged promotion %+v", st)
		}
		if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
			t.Fatalf("did not complete:\n%s", s.describe(id))
		}
	})
}
