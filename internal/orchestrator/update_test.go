package orchestrator

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"pgregory.net/rapid"
)

func intp(n int) *int           { return &n }
func floatp(f float64) *float64 { return &f }

// inProgress counts the slots of id whose live new (env V=v) task has not
// yet served for monitor.
func (s *sim) inProgress(id, v string, monitor time.Duration) int {
	n := 0
	for slot, ts := range s.live(id) {
		if api.IsCanarySlot(slot) {
			continue
		}
		for _, t := range ts {
			h, ok := s.healthyAt[t.ID]
			if t.Spec.Env["V"] == v && (!ok || s.now.Sub(h) < monitor) {
				n++
				break
			}
		}
	}
	return n
}

// liveIDs is the set of IDs of live tasks of id with env V=v.
func (s *sim) liveIDs(id, v string) map[string]bool {
	out := map[string]bool{}
	for _, ts := range s.live(id) {
		for _, t := range ts {
			if t.Spec.Env["V"] == v {
				out[t.ID] = true
			}
		}
	}
	return out
}

func (s *sim) createdOf(id, v string) []api.Task {
	var out []api.Task
	for _, t := range s.st.Tasks {
		if t.ServiceID == id && t.Spec.Env["V"] == v {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

func TestRollingUpdateParallelism(t *testing.T) {
	for _, c := range []struct {
		parallelism, want int
	}{{1, 1}, {2, 2}, {0, 4}} {
		t.Run(fmt.Sprint("parallelism ", c.parallelism), func(t *testing.T) {
			s, id := v1Service(t, 4, func(sp *api.ServiceSpec) { sp.Update = &api.UpdatePolicy{Parallelism: intp(c.parallelism)} })
			s.deploy(id, setV("2"))
			monitor := api.DefaultUpdateMonitor
			most := 0
			s.check = func(s *sim, _ Result) {
				if n, byV := s.servingCount(id); n < 4 {
					s.fatalf("step %d: %d tasks serve (%v), want at least 4 (start-first)\n%s", s.steps, n, byV, s.describe(id))
				}
				most = max(most, s.inProgress(id, "2", monitor))
			}
			if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
				t.Fatalf("update did not complete:\n%s", s.describe(id))
			}
			if most != c.want {
				t.Fatalf("at most %d slots moved at once, want %d", most, c.want)
			}
			st := s.svcOf(id).UpdateStatus
			if st.Updated != 4 || st.Total != 4 || st.Failed != 0 || st.CompletedAt.IsZero() || st.Message != "" {
				t.Fatalf("final status %+v", st)
			}
			if !s.until(10, func(s *sim) bool { return s.settled(id, "2") }) {
				t.Fatalf("not settled on v2:\n%s", s.describe(id))
			}
			if n := len(s.createdOf(id, "2")); n != 4 {
				t.Fatalf("%d v2 tasks created, want 4 (one per slot)", n)
			}
		})
	}
}

func TestRollingUpdateDelayAndMonitor(t *testing.T) {
	const delay, monitor = 7 * time.Second, 3 * time.Second
	s, id := v1Service(t, 3, func(sp *api.ServiceSpec) {
		sp.Update = &api.UpdatePolicy{Delay: api.Duration(delay), Monitor: api.Duration(monitor)}
	})
	s.deploy(id, setV("2"))
	var wakes []time.Time
	s.check = func(s *sim, res Result) {
		if !res.Wake.IsZero() {
			wakes = append(wakes, res.Wake)
		}
	}
	if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
		t.Fatalf("update did not complete:\n%s", s.describe(id))
	}
	news := s.createdOf(id, "2")
	if len(news) != 3 {
		t.Fatalf("%d v2 tasks, want 3", len(news))
	}
	for i := 1; i < len(news); i++ {
		// The next batch starts delay after the previous one counted
		// (healthy for monitor); the simulation steps by a second.
		counted := s.healthyAt[news[i-1].ID].Add(monitor)
		gap := news[i].CreatedAt.Sub(counted)
		if gap < delay || gap > delay+s.tick {
			t.Fatalf("batch %d started %s after batch %d counted, want %s (+ one step at most)", i+1, gap, i, delay)
		}
	}
	if len(wakes) == 0 {
		t.Fatal("no wake-up asked for the end of a monitor window or a delay")
	}
}

func TestStopFirstNeverTwoTasksInASlot(t *testing.T) {
	s, id := v1Service(t, 3, func(sp *api.ServiceSpec) {
		sp.Update = &api.UpdatePolicy{Order: api.OrderStopFirst, Parallelism: intp(1)}
	})
	s.stopTime = 3 * time.Second // old tasks take a while to stop
	s.deploy(id, setV("2"))
	s.check = func(s *sim, _ Result) {
		bySlot := map[int]int{}
		for _, tk := range s.st.Tasks {
			if tk.ServiceID == id && !tk.Status.State.Terminal() {
				bySlot[tk.Slot]++
			}
		}
		for slot, n := range bySlot {
			if n > 1 {
				s.fatalf("step %d: slot %d has %d tasks not ended (stop-first)\n%s", s.steps, slot, n, s.describe(id))
			}
		}
		if n, _ := s.servingCount(id); n < 2 {
			s.fatalf("step %d: %d serve, want at least 2 (parallelism 1 of 3)", s.steps, n)
		}
	}
	if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
		t.Fatalf("update did not complete:\n%s", s.describe(id))
	}
	if !s.until(10, func(s *sim) bool { return s.settled(id, "2") }) {
		t.Fatalf("not settled:\n%s", s.describe(id))
	}
}

func TestStartFirstStopsOldOnlyOnceNewServes(t *testing.T) {
	s, id := v1Service(t, 2)
	old := s.liveIDs(id, "1")
	s.behave = byEnv(map[string]behaviour{"2": {healthyAfter: 6 * time.Second}})
	s.deploy(id, setV("2"))
	s.check = func(s *sim, res Result) {
		for _, u := range res.Updates {
			if !old[u.ID] || u.DesiredState != api.TaskShutdown {
				continue
			}
			// The slot's new task must serve now.
			ok := false
			for _, tk := range s.live(id)[u.Slot] {
				ok = ok || (tk.Spec.Env["V"] == "2" && serving(tk))
			}
			if !ok {
				s.fatalf("step %d: old task %s of slot %d stopped before its new task served\n%s", s.steps, u.ID, u.Slot, s.describe(id))
			}
		}
	}
	if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
		t.Fatalf("update did not complete:\n%s", s.describe(id))
	}
}

// A new task that turns unhealthy one second before its monitor window ends
// counts as failed (and the default action rolls back); one that turns
// unhealthy one second after it counted as updated does not.
func TestMonitorWindowEdges(t *testing.T) {
	const monitor = 5 * time.Second
	t.Run("unhealthy at monitor-1s", func(t *testing.T) {
		s, id := v1Service(t, 3)
		s.behave = byEnv(map[string]behaviour{"2": {healthyAfter: time.Second, unhealthyAfter: monitor - time.Second}})
		s.deploy(id, setV("2"))
		if !s.until(100, func(s *sim) bool { return s.state(id) == api.UpdateRollingBack }) {
			t.Fatalf("no rollback:\n%s", s.describe(id))
		}
		if st := s.svcOf(id).UpdateStatus; !strings.Contains(st.Message, "unhealthy") {
			t.Fatalf("message %q does not say the task turned unhealthy", st.Message)
		}
	})
	t.Run("unhealthy at monitor+1s", func(t *testing.T) {
		s, id := v1Service(t, 3)
		s.behave = byEnv(map[string]behaviour{"2": {healthyAfter: time.Second, unhealthyAfter: monitor + time.Second}})
		s.deploy(id, setV("2"))
		for range 60 {
			s.step()
			if st := s.svcOf(id).UpdateStatus; st.Failed != 0 || st.State != api.UpdateUpdating && st.State != api.UpdateCompleted {
				t.Fatalf("a task that counted as updated counted as failed later: %+v", st)
			}
		}
		if n := len(s.createdOf(id, "2")); n < 3 {
			t.Fatalf("the update did not reach every slot (%d v2 tasks)", n)
		}
	})
}

// firstFails makes the first k tasks of env V=v crash two seconds after they
// start (one second after they turned healthy, within the monitor window).
func firstFails(v string, k int) func(api.Task) behaviour {
	var failing []string
	return func(t api.Task) behaviour {
		if t.Spec.Env["V"] != v {
			return behaviour{healthyAfter: time.Second}
		}
		for _, id := range failing {
			if id == t.ID {
				return behaviour{healthyAfter: time.Second, crashAfter: 2 * time.Second}
			}
		}
		if len(failing) < k {
			failing = append(failing, t.ID)
			return behaviour{healthyAfter: time.Second, crashAfter: 2 * time.Second}
		}
		return behaviour{healthyAfter: time.Second}
	}
}

func TestMaxFailureRatio(t *testing.T) {
	for _, c := range []struct {
		ratio     float64
		fails     int
		wantState string
	}{
		{0.25, 1, api.UpdateCompleted}, // 1 of 4 is not over 0.25
		{0.2, 1, api.UpdatePaused},     // 1 of 4 is over 0.2
		{0.25, 2, api.UpdatePaused},    // 2 of 4 is over 0.25
		{0, 1, api.UpdatePaused},
	} {
		t.Run(fmt.Sprintf("%g with %d failures", c.ratio, c.fails), func(t *testing.T) {
			s, id := v1Service(t, 4, func(sp *api.ServiceSpec) {
				sp.Update = &api.UpdatePolicy{MaxFailureRatio: floatp(c.ratio), FailureAction: api.FailurePause}
			})
			s.behave = firstFails("2", c.fails)
			s.deploy(id, setV("2"))
			if !s.until(300, func(s *sim) bool {
				st := s.state(id)
				return st == api.UpdateCompleted || st == api.UpdatePaused
			}) {
				t.Fatalf("update neither completed nor paused:\n%s", s.describe(id))
			}
			st := s.svcOf(id).UpdateStatus
			if st.State != c.wantState {
				t.Fatalf("state %s, want %s: %+v", st.State, c.wantState, st)
			}
			if st.State == api.UpdateCompleted && st.Failed != c.fails {
				t.Fatalf("failed %d, want %d", st.Failed, c.fails)
			}
		})
	}
}

func TestFailureActionPause(t *testing.T) {
	s, id := v1Service(t, 4, func(sp *api.ServiceSpec) { sp.Update = &api.UpdatePolicy{FailureAction: api.FailurePause} })
	s.behave = byEnv(map[string]behaviour{"3": {healthyAfter: time.Second, crashAfter: 2 * time.Second}})
	s.deploy(id, setV("3"))
	if !s.until(100, func(s *sim) bool { return s.state(id) == api.UpdatePaused }) {
		t.Fatalf("not paused:\n%s", s.describe(id))
	}
	st := s.svcOf(id).UpdateStatus
	bad := s.createdOf(id, "3")
	if len(bad) != 1 || !strings.Contains(st.Message, bad[0].ID) || !strings.Contains(st.Message, "exit status 1") ||
		st.Failed != 1 || st.CompletedAt.IsZero() {
		t.Fatalf("pause status %+v (v3 tasks %d)", st, len(bad))
	}
	oldLeft := s.liveIDs(id, "1")
	for range 60 {
		s.step()
	}
	if n := len(s.createdOf(id, "3")); n != 1 {
		t.Fatalf("%d v3 tasks after the pause, want 1: a paused update starts nothing and retries nothing", n)
	}
	if got := s.liveIDs(id, "1"); fmt.Sprint(got) != fmt.Sprint(oldLeft) {
		t.Fatalf("old tasks changed while paused: %v, was %v", got, oldLeft)
	}
	// Resume (the API clears the message): the update goes on with the
	// next slot and retries the failed one; no new failure is needed to
	// move, and the earlier one does not pause it again at once.
	s.resume(id)
	s.step()
	if got := s.state(id); got != api.UpdateUpdating {
		t.Fatalf("state %s right after resume", got)
	}
	if n := len(s.createdOf(id, "3")); n < 2 {
		t.Fatalf("resume moved nothing (%d v3 tasks)", n)
	}
}

func TestFailureActionContinue(t *testing.T) {
	s, id := v1Service(t, 3, func(sp *api.ServiceSpec) { sp.Update = &api.UpdatePolicy{FailureAction: api.FailureContinue} })
	s.behave = byEnv(map[string]behaviour{"3": {healthyAfter: time.Second, crashAfter: 2 * time.Second}})
	s.deploy(id, setV("3"))
	slotsReached := func(s *sim) bool {
		seen := map[int]bool{}
		for _, tk := range s.createdOf(id, "3") {
			seen[tk.Slot] = true
		}
		return len(seen) == 3
	}
	if !s.until(200, slotsReached) {
		t.Fatalf("continue did not move on to every slot:\n%s", s.describe(id))
	}
	st := s.svcOf(id).UpdateStatus
	if st.State != api.UpdateUpdating || st.Failed < 3 || !strings.Contains(st.Message, "continuing") {
		t.Fatalf("status %+v", st)
	}
}

func TestAutomaticRollback(t *testing.T) {
	s, id := v1Service(t, 4)
	s.deploy(id, setV("2"))
	if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
		t.Fatalf("v2 did not complete:\n%s", s.describe(id))
	}
	for range 10 {
		s.step()
	}
	v2 := s.svcOf(id).Version
	s.behave = byEnv(map[string]behaviour{"3": {healthyAfter: time.Second, crashAfter: 2 * time.Second}})
	s.deploy(id, setV("3"))
	v3 := s.svcOf(id).Version
	old := s.liveIDs(id, "2")
	everStopped := map[string]bool{}
	s.check = func(s *sim, res Result) {
		for _, u := range res.Updates {
			if old[u.ID] && u.DesiredState == api.TaskShutdown {
				everStopped[u.ID] = true
			}
		}
		if n, _ := s.servingCount(id); n < 3 {
			s.fatalf("step %d: %d serve, want at least 3 of 4", s.steps, n)
		}
	}
	if !s.until(100, func(s *sim) bool { return s.state(id) == api.UpdateRollingBack }) {
		t.Fatalf("no automatic rollback:\n%s", s.describe(id))
	}
	svc := s.svcOf(id)
	bad := s.createdOf(id, "3")
	st := svc.UpdateStatus
	switch {
	case svc.Spec.Task.Env["V"] != "2" || svc.PreviousSpec == nil || svc.PreviousSpec.Task.Env["V"] != "3":
		t.Fatalf("spec not swapped back: spec V=%s previous %+v", svc.Spec.Task.Env["V"], svc.PreviousSpec)
	case svc.Version != v3+1 || st.FromVersion != v3 || st.ToVersion != v3+1:
		t.Fatalf("versions: service %d, status %d→%d; v2 was %d, v3 %d", svc.Version, st.FromVersion, st.ToVersion, v2, v3)
	case len(bad) != 1 || !strings.Contains(st.Message, bad[0].ID) || !strings.Contains(st.Message, "exit status 1"):
		t.Fatalf("message %q does not name the failed task and its error (v3 tasks: %d)", st.Message, len(bad))
	case len(s.versions) != 1:
		t.Fatalf("%d version records, want 1", len(s.versions))
	}
	rec := s.versions[0]
	if rec.Version != svc.Version || rec.Author != autoRollbackAuthor || !strings.HasPrefix(rec.Summary, fmt.Sprintf("automatic rollback of v%d: ", v3)) ||
		rec.Spec.Task.Env["V"] != "2" {
		t.Fatalf("version record %+v", rec)
	}
	if !s.until(100, func(s *sim) bool { return s.state(id) == api.UpdateRolledBack }) {
		t.Fatalf("rollback did not complete:\n%s", s.describe(id))
	}
	if st := s.svcOf(id).UpdateStatus; !strings.Contains(st.Message, bad[0].ID) || st.CompletedAt.IsZero() {
		t.Fatalf("rolled back status lost its reason: %+v", st)
	}
	if !s.until(10, func(s *sim) bool { return s.settled(id, "2") }) {
		t.Fatalf("not settled on v2:\n%s", s.describe(id))
	}
	// Only the slot the failed task replaced lost its old task; the three
	// healthy old tasks were never touched, and the failed task was not
	// restarted.
	if len(everStopped) != 1 {
		t.Fatalf("%d healthy old tasks stopped, want only the one the failed v3 replaced", len(everStopped))
	}
	if n := len(s.createdOf(id, "3")); n != 1 {
		t.Fatalf("%d v3 tasks, want 1", n)
	}
}

// A new task that never becomes healthy never costs an old task: start-first
// kept it, and the rollback keeps every one.
func TestRollbackKeepsEveryOldTaskWhenTheNewNeverServed(t *testing.T) {
	s, id := v1Service(t, 4, func(sp *api.ServiceSpec) { sp.Update = &api.UpdatePolicy{Parallelism: intp(2)} })
	old := s.liveIDs(id, "1")
	s.behave = byEnv(map[string]behaviour{"2": {healthyAfter: 3 * time.Second, neverHealthy: true}})
	s.deploy(id, setV("2"))
	s.check = func(s *sim, res Result) {
		for _, u := range res.Updates {
			if old[u.ID] && u.DesiredState == api.TaskShutdown {
				s.fatalf("step %d: old task %s stopped", s.steps, u.ID)
			}
		}
	}
	if !s.until(100, func(s *sim) bool { return s.state(id) == api.UpdateRolledBack }) {
		t.Fatalf("no completed rollback:\n%s", s.describe(id))
	}
	if st := s.svcOf(id).UpdateStatus; !strings.Contains(st.Message, "unhealthy") {
		t.Fatalf("message %q", st.Message)
	}
	if got := s.liveIDs(id, "1"); fmt.Sprint(got) != fmt.Sprint(old) {
		t.Fatalf("old tasks %v, want %v", got, old)
	}
}

func TestCanary(t *testing.T) {
	canary := func(auto bool) func(*api.ServiceSpec) {
		return func(sp *api.ServiceSpec) { sp.Update = &api.UpdatePolicy{Canary: 1, AutoPromote: auto} }
	}
	canaryTasks := func(s *sim, id string) []api.Task {
		var out []api.Task
		for slot, ts := range s.live(id) {
			if api.IsCanarySlot(slot) {
				out = append(out, ts...)
			}
		}
		return out
	}
	hold := func(t *testing.T, auto bool) (*sim, string, map[string]bool) {
		s, id := v1Service(t, 4, canary(auto))
		old := s.liveIDs(id, "1")
		s.deploy(id, setV("2"))
		if !s.until(20, func(s *sim) bool { return s.state(id) == api.UpdateCanary }) {
			t.Fatalf("no canary state:\n%s", s.describe(id))
		}
		if !s.until(20, func(s *sim) bool { n, _ := s.servingCount(id); return n == 5 }) {
			t.Fatalf("canary does not serve:\n%s", s.describe(id))
		}
		c := canaryTasks(s, id)
		if len(c) != 1 || c[0].Slot != api.CanarySlotBase+1 || c[0].Spec.Env["V"] != "2" {
			t.Fatalf("canaries %+v", c)
		}
		return s, id, old
	}
	t.Run("hold then promote", func(t *testing.T) {
		s, id, old := hold(t, false)
		for range 40 {
			s.step()
		}
		if s.state(id) != api.UpdateCanary || fmt.Sprint(s.liveIDs(id, "1")) != fmt.Sprint(old) || len(s.createdOf(id, "2")) != 1 {
			t.Fatalf("canary did not hold:\n%s", s.describe(id))
		}
		s.promote(id)
		s.check = func(s *sim, _ Result) {
			if n, _ := s.servingCount(id); n < 4 {
				s.fatalf("step %d: %d serve", s.steps, n)
			}
		}
		if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
			t.Fatalf("promoted update did not complete:\n%s", s.describe(id))
		}
		if !s.until(10, func(s *sim) bool { return s.settled(id, "2") }) {
			t.Fatalf("canary not dropped after completion:\n%s", s.describe(id))
		}
		if st := s.svcOf(id).UpdateStatus; st.Updated != 4 || st.Total != 4 {
			t.Fatalf("status %+v", st)
		}
	})
	t.Run("auto promote", func(t *testing.T) {
		s, id, _ := hold(t, true)
		if !s.until(20, func(s *sim) bool { return s.state(id) == api.UpdateUpdating }) {
			t.Fatalf("not promoted:\n%s", s.describe(id))
		}
		if msg := s.svcOf(id).UpdateStatus.Message; !strings.Contains(msg, "promoted automatically") {
			t.Fatalf("message %q", msg)
		}
		if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
			t.Fatalf("did not complete:\n%s", s.describe(id))
		}
		if !s.until(10, func(s *sim) bool { return s.settled(id, "2") }) {
			t.Fatalf("not settled:\n%s", s.describe(id))
		}
	})
	t.Run("manual rollback drops the canaries", func(t *testing.T) {
		s, id, old := hold(t, false)
		s.manualRollback(id)
		if !s.until(20, func(s *sim) bool { return s.state(id) == api.UpdateRolledBack }) {
			t.Fatalf("rollback did not complete:\n%s", s.describe(id))
		}
		if !s.until(10, func(s *sim) bool { return s.settled(id, "1") }) {
			t.Fatalf("canary not dropped:\n%s", s.describe(id))
		}
		if fmt.Sprint(s.liveIDs(id, "1")) != fmt.Sprint(old) {
			t.Fatalf("old tasks touched by the rollback")
		}
	})
	t.Run("failing canary rolls back", func(t *testing.T) {
		s, id := v1Service(t, 4, canary(false))
		old := s.liveIDs(id, "1")
		s.behave = byEnv(map[string]behaviour{"2": {healthyAfter: time.Second, crashAfter: 3 * time.Second}})
		s.deploy(id, setV("2"))
		if !s.until(50, func(s *sim) bool { return s.state(id) == api.UpdateRolledBack }) {
			t.Fatalf("no rollback:\n%s", s.describe(id))
		}
		if msg := s.svcOf(id).UpdateStatus.Message; !strings.Contains(msg, "canary 1") {
			t.Fatalf("message %q does not name the canary", msg)
		}
		if !s.until(10, func(s *sim) bool { return s.settled(id, "1") }) || fmt.Sprint(s.liveIDs(id, "1")) != fmt.Sprint(old) {
			t.Fatalf("not back on the untouched old tasks:\n%s", s.describe(id))
		}
	})
}

func TestGlobalServiceUpdate(t *testing.T) {
	svc := service("agent", 0, func(sp *api.ServiceSpec) {
		sp.Mode, sp.Replicas = api.ModeGlobal, nil
		sp.Task.Env = map[string]string{"V": "1"}
		sp.Task.Health = healthCheck
	})
	s := newSim(t, svc)
	id := svc.ID
	if !s.until(30, func(s *sim) bool { n, _ := s.servingCount(id); return n == 2 }) {
		t.Fatalf("global service did not start:\n%s", s.describe(id))
	}
	for range 10 {
		s.step()
	}
	s.deploy(id, setV("2"))
	most := 0
	s.check = func(s *sim, _ Result) {
		if n, _ := s.servingCount(id); n < 2 {
			s.fatalf("step %d: %d serve", s.steps, n)
		}
		moving := 0
		for _, tk := range s.st.Tasks {
			if h, ok := s.healthyAt[tk.ID]; tk.Spec.Env["V"] == "2" && !tk.Status.State.Terminal() && (!ok || s.now.Sub(h) < 5*time.Second) {
				moving++
			}
		}
		most = max(most, moving)
	}
	if !s.until(100, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
		t.Fatalf("did not complete:\n%s", s.describe(id))
	}
	if st := s.svcOf(id).UpdateStatus; st.Total != 2 || st.Updated != 2 || most != 1 {
		t.Fatalf("status %+v, at most %d nodes at once", st, most)
	}
	nodes := map[string]bool{}
	for _, tk := range s.createdOf(id, "2") {
		nodes[tk.NodeID] = true
	}
	if len(nodes) != 2 {
		t.Fatalf("v2 on nodes %v", nodes)
	}
}

func TestScaleDuringUpdate(t *testing.T) {
	s, id := v1Service(t, 2)
	s.deploy(id, setV("2"))
	s.step()
	s.step()
	// A scale bumps the version but starts no update (the API leaves the
	// status alone).
	svc := s.svcOf(id)
	svc.Spec.Replicas = intp(4)
	svc.Version++
	s.rev++
	svc.Revision = s.rev
	s.st.Services[id] = svc
	s.step()
	for _, slot := range []int{3, 4} {
		ts := s.live(id)[slot]
		if len(ts) != 1 || ts[0].Spec.Env["V"] != "2" {
			t.Fatalf("new slot %d: %+v", slot, ts)
		}
	}
	if !s.until(200, func(s *sim) bool { return s.state(id) == api.UpdateCompleted }) {
		t.Fatalf("did not complete:\n%s", s.describe(id))
	}
	if st := s.svcOf(id).UpdateStatus; st.Total != 4 || st.Updated != 4 {
		t.Fatalf("status %+v", st)
	}
}

// A start-first update never has fewer tasks serving than replicas, whatever
// the policy and however slow the new version is to turn healthy; a new
// version that never turns healthy is rolled back without ever costing one.
func TestStartFirstNeverDropsBelowReplicas(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		replicas := rapid.IntRange(1, 6).Draw(rt, "replicas")
		pol := &api.UpdatePolicy{
			Parallelism: intp(rapid.IntRange(0, 3).Draw(rt, "parallelism")),
			Delay:       api.Duration(time.Duration(rapid.IntRange(0, 3).Draw(rt, "delay")) * time.Second),
			Monitor:     api.Duration(time.Duration(rapid.IntRange(1, 6).Draw(rt, "monitor")) * time.Second),
		}
		bad := rapid.Bool().Draw(rt, "never healthy")
		healthyAfter := time.Duration(rapid.IntRange(1, 4).Draw(rt, "healthy after")) * time.Second
		s, id := v1Service(rt, replicas, func(sp *api.ServiceSpec) { sp.Update = pol })
		s.stopTime = time.Duration(rapid.IntRange(0, 3).Draw(rt, "stop time")) * time.Second
		s.behave = byEnv(map[string]behaviour{"2": {healthyAfter: healthyAfter, neverHealthy: bad}})
		s.deploy(id, setV("2"))
		s.check = func(s *sim, _ Result) {
			if n, byV := s.servingCount(id); n < replicas {
				s.fatalf("step %d: %d serve (%v), want at least %d\n%s", s.steps, n, byV, replicas, s.describe(id))
			}
		}
		want, v := api.UpdateCompleted, "2"
		if bad {
			want, v = api.UpdateRolledBack, "1"
		}
		if !s.until(400, func(s *sim) bool { return s.state(id) == want }) {
			rt.Fatalf("state %s, want %s\n%s", s.state(id), want, s.describe(id))
		}
		if !s.until(20, func(s *sim) bool { return s.settled(id, v) }) {
			rt.Fatalf("not settled on v%s\n%s", v, s.describe(id))
		}
	})
}
