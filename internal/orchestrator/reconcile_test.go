package orchestrator

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"pgregory.net/rapid"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func idGen() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("t%04d", n) }
}

func service(name string, replicas int, mut ...func(*api.ServiceSpec)) api.Service {
	spec := api.ServiceSpec{Name: name, Replicas: &replicas, Task: api.TaskSpec{Command: []string{"x"}}}
	for _, m := range mut {
		m(&spec)
	}
	spec.Normalize()
	return api.Service{ID: name + "-id", Spec: spec, Version: 1}
}

func task(svc api.Service, id string, slot int, state api.TaskState) api.Task {
	return api.Task{ID: id, ServiceID: svc.ID, ServiceName: svc.Spec.Name, Slot: slot, SpecVersion: svc.Version, Spec: svc.Spec.Task, Placement: svc.Spec.Placement,
		DesiredState: api.TaskRunning, NodeID: "n1", Status: api.TaskStatus{State: state}, CreatedAt: t0.Add(-time.Minute), Revision: 1}
}

func state(svcs []api.Service, tasks ...api.Task) State {
	st := State{Services: map[string]api.Service{}, Tasks: map[string]api.Task{}, Nodes: map[string]api.Node{}}
	for _, s := range svcs {
		st.Services[s.ID] = s
	}
	for _, t := range tasks {
		st.Tasks[t.ID] = t
	}
	st.Nodes["n1"] = api.Node{ID: "n1", Hostname: "a", Status: api.NodeReady, Availability: api.AvailabilityActive, Drivers: []string{"process"}, Labels: map[string]string{"zone": "a"}}
	st.Nodes["n2"] = api.Node{ID: "n2", Hostname: "b", Status: api.NodeReady, Availability: api.AvailabilityActive, Drivers: []string{"process"}, Labels: map[string]string{"zone": "b"}}
	return st
}

func run(st State) Result { return Reconcile(t0, st, Options{NewID: idGen()}) }

func slots(ts []api.Task) []int {
	var out []int
	for _, t := range ts {
		out = append(out, t.Slot)
	}
	sort.Ints(out)
	return out
}

func TestNewServiceCreatesOneTaskPerSlot(t *testing.T) {
	svc := service("web", 3)
	res := run(state([]api.Service{svc}))
	if got := slots(res.Creates); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("created slots %v, want [1 2 3]", got)
	}
	for _, c := range res.Creates {
		if c.Status.State != api.TaskPending || c.DesiredState != api.TaskRunning || c.NodeID != "" || c.SpecVersion != 1 || !c.NotBefore.IsZero() {
			t.Fatalf("bad new task %+v", c)
		}
	}
	if len(res.Updates)+len(res.Deletes) != 0 {
		t.Fatalf("unexpected changes %+v", res)
	}
}

func TestSteadyStateChangesNothing(t *testing.T) {
	svc := service("web", 2)
	res := run(state([]api.Service{svc}, task(svc, "a", 1, api.TaskRunning), task(svc, "b", 2, api.TaskStarting)))
	if len(res.Creates)+len(res.Updates)+len(res.Deletes) != 0 {
		t.Fatalf("steady state produced %+v", res)
	}
}

func TestRestartPolicy(t *testing.T) {
	ended := func(svc api.Service, state api.TaskState, attempt int, ran time.Duration) api.Task {
		tk := task(svc, "old", 1, state)
		tk.Attempt = attempt
		tk.Status.FinishedAt = t0.Add(-100 * time.Millisecond)
		tk.Status.StartedAt = tk.Status.FinishedAt.Add(-ran)
		return tk
	}
	cases := []struct {
		name      string
		restart   api.RestartPolicy
		state     api.TaskState
		attempt   int
		ran       time.Duration
		wantNew   bool
		wantTry   int
		wantDelay time.Duration // from FinishedAt; -1: at once
	}{
		{name: "any after failure", restart: api.RestartPolicy{}, state: api.TaskFailed, ran: time.Second, wantNew: true, wantTry: 1, wantDelay: time.Second},
		{name: "any after complete", restart: api.RestartPolicy{}, state: api.TaskComplete, ran: time.Second, wantNew: true, wantTry: 1, wantDelay: time.Second},
		{name: "back-off doubles", restart: api.RestartPolicy{}, state: api.TaskFailed, attempt: 3, ran: time.Second, wantNew: true, wantTry: 4, wantDelay: 8 * time.Second},
		{name: "back-off capped", restart: api.RestartPolicy{MaxDelay: api.Duration(5 * time.Second)}, state: api.TaskFailed, attempt: 6, ran: time.Second, wantNew: true, wantTry: 7, wantDelay: 5 * time.Second},
		{name: "long run resets", restart: api.RestartPolicy{}, state: api.TaskFailed, attempt: 6, ran: time.Minute, wantNew: true, wantTry: 1, wantDelay: time.Second},
		{name: "window resets", restart: api.RestartPolicy{Window: api.Duration(2 * time.Second)}, state: api.TaskFailed, attempt: 6, ran: 3 * time.Second, wantNew: true, wantTry: 1, wantDelay: time.Second},
		{name: "none", restart: api.RestartPolicy{Condition: api.RestartNone}, state: api.TaskFailed},
		{name: "on-failure after complete", restart: api.RestartPolicy{Condition: api.RestartOnFailure}, state: api.TaskComplete},
		{name: "on-failure after failure", restart: api.RestartPolicy{Condition: api.RestartOnFailure}, state: api.TaskFailed, wantNew: true, wantTry: 1, wantDelay: time.Second},
		{name: "lost comes back at once whatever the policy", restart: api.RestartPolicy{Condition: api.RestartNone}, state: api.TaskLost, attempt: 4, wantNew: true, wantTry: 0, wantDelay: -1},
		{name: "stopped by Berth comes back at once", restart: api.RestartPolicy{Condition: api.RestartOnFailure}, state: api.TaskShutdown, attempt: 2, wantNew: true, wantTry: 0, wantDelay: -1},
		{name: "long window: a 20s run does not reset", restart: api.RestartPolicy{Window: api.Duration(time.Minute)}, state: api.TaskFailed, attempt: 2, ran: 20 * time.Second, wantNew: true, wantTry: 3, wantDelay: 4 * time.Second},
		{name: "max attempts reached", restart: api.RestartPolicy{MaxAttempts: 2}, state: api.TaskFailed, attempt: 2, ran: time.Second},
		{name: "max attempts not yet", restart: api.RestartPolicy{MaxAttempts: 2}, state: api.TaskFailed, attempt: 1, ran: time.Second, wantNew: true, wantTry: 2, wantDelay: 2 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			svc := service("web", 1, func(s *api.ServiceSpec) { s.Restart = c.restart })
			old := ended(svc, c.state, c.attempt, c.ran)
			res := run(state([]api.Service{svc}, old))
			if !c.wantNew {
				if len(res.Creates) != 0 || len(res.Updates) != 0 {
					t.Fatalf("want no restart, got %+v", res)
				}
				return
			}
			if len(res.Creates) != 1 || len(res.Updates) != 1 {
				t.Fatalf("want one create and one retire, got %d creates %d updates", len(res.Creates), len(res.Updates))
			}
			n := res.Creates[0]
			if n.Slot != 1 || n.Attempt != c.wantTry {
				t.Fatalf("new task slot %d attempt %d, want 1 and %d", n.Slot, n.Attempt, c.wantTry)
			}
			if c.wantDelay < 0 {
				if !n.NotBefore.IsZero() {
					t.Fatalf("want an immediate restart, got not before %v", n.NotBefore)
				}
			} else if got := n.NotBefore.Sub(old.Status.FinishedAt); got != c.wantDelay {
				t.Fatalf("delay %v, want %v", got, c.wantDelay)
			}
			if r := res.Updates[0]; r.ID != "old" || r.DesiredState != api.TaskShutdown {
				t.Fatalf("old task not retired: %+v", r)
			}
		})
	}
}

func TestScaleDownShutsDownHighSlots(t *testing.T) {
	svc := service("web", 1)
	res := run(state([]api.Service{svc}, task(svc, "a", 1, api.TaskRunning), task(svc, "b", 2, api.TaskRunning), task(svc, "c", 3, api.TaskPending)))
	if len(res.Creates) != 0 || len(res.Updates) != 2 {
		t.Fatalf("got %+v", res)
	}
	for _, u := range res.Updates {
		if u.Slot == 1 || u.DesiredState != api.TaskShutdown {
			t.Fatalf("bad update %+v", u)
		}
		if u.ID == "c" && u.Status.State != api.TaskShutdown {
			t.Fatalf("a pending task must end at once (no agent has it): %+v", u.Status)
		}
		if u.ID == "b" && u.Status.State != api.TaskRunning {
			t.Fatalf("a running task's status is its agent's to change: %+v", u.Status)
		}
	}
}

func TestRemovedServiceStopsThenForgetsTasks(t *testing.T) {
	svc := service("web", 2)
	done := task(svc, "done", 1, api.TaskShutdown)
	done.DesiredState = api.TaskShutdown
	res := run(state(nil, task(svc, "live", 2, api.TaskRunning), done))
	if len(res.Updates) != 1 || res.Updates[0].ID != "live" || res.Updates[0].DesiredState != api.TaskShutdown {
		t.Fatalf("updates %+v", res.Updates)
	}
	if len(res.Deletes) != 1 || res.Deletes[0].ID != "done" {
		t.Fatalf("deletes %+v", res.Deletes)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	svc := service("web", 1)
	tasks := []api.Task{task(svc, "live", 1, api.TaskRunning)}
	for i := 0; i < 8; i++ {
		h := task(svc, fmt.Sprintf("h%d", i), 1, api.TaskFailed)
		h.DesiredState = api.TaskShutdown
		h.CreatedAt = t0.Add(-time.Duration(10-i) * time.Hour)
		tasks = append(tasks, h)
	}
	res := run(state([]api.Service{svc}, tasks...))
	if len(res.Deletes) != 3 {
		t.Fatalf("deleted %d, want 3 (8 ended, keep 5)", len(res.Deletes))
	}
	for _, d := range res.Deletes {
		if d.ID != "h0" && d.ID != "h1" && d.ID != "h2" {
			t.Fatalf("deleted %s, want the oldest", d.ID)
		}
	}
}

func TestGlobalServiceOnePerEligibleNode(t *testing.T) {
	svc := service("agent", 0, func(s *api.ServiceSpec) {
		s.Mode = api.ModeGlobal
		s.Replicas = nil
		s.Placement.Constraints = []string{"node.labels.zone != c"}
	})
	st := state([]api.Service{svc})
	st.Nodes["n3"] = api.Node{ID: "n3", Status: api.NodeReady, Availability: api.AvailabilityActive, Drivers: []string{"process"}, Labels: map[string]string{"zone": "c"}}
	st.Nodes["n4"] = api.Node{ID: "n4", Status: api.NodeDown, Availability: api.AvailabilityActive, Drivers: []string{"process"}}
	st.Nodes["n5"] = api.Node{ID: "n5", Status: api.NodeReady, Availability: api.AvailabilityActive, Drivers: []string{"docker"}}
	res := run(st)
	var nodes []string
	for _, c := range res.Creates {
		nodes = append(nodes, c.NodeID)
	}
	sort.Strings(nodes)
	if fmt.Sprint(nodes) != "[n1 n2]" {
		t.Fatalf("global tasks on %v, want [n1 n2]", nodes)
	}
	// A node that stops being eligible loses its task.
	gt := task(svc, "g", 0, api.TaskRunning)
	gt.NodeID = "n3"
	st.Tasks["g"] = gt
	res = run(st)
	if len(res.Updates) != 1 || res.Updates[0].ID != "g" || res.Updates[0].DesiredState != api.TaskShutdown {
		t.Fatalf("updates %+v", res.Updates)
	}
}

func TestNewVersionRollsOneSlotAtATimeStartFirst(t *testing.T) {
	svc := service("web", 3)
	old := []api.Task{task(svc, "a", 1, api.TaskRunning), task(svc, "b", 2, api.TaskRunning), task(svc, "c", 3, api.TaskRunning)}
	svc.Version = 2
	svc.Spec.Task.Env = map[string]string{"V": "2"}
	st := state([]api.Service{svc}, old...)
	res := run(st)
	if len(res.Creates) != 1 || res.Creates[0].Slot != 1 || res.Creates[0].SpecVersion != 2 || len(res.Updates) != 0 {
		t.Fatalf("first step: %+v", res)
	}
	// The new task is starting: nothing else moves, the old one keeps serving.
	n := res.Creates[0]
	n.Status.State = api.TaskStarting
	n.CreatedAt = t0
	st.Tasks[n.ID] = n
	if res := run(st); len(res.Creates)+len(res.Updates) != 0 {
		t.Fatalf("while starting: %+v", res)
	}
	// Healthy: the old task of slot 1 stops at once; slot 2 starts its new
	// task once slot 1's has been healthy for the monitor window (5s).
	n.Status.State, n.Status.Health, n.Status.Timestamp = api.TaskRunning, api.HealthHealthy, t0
	st.Tasks[n.ID] = n
	res = run(st)
	if len(res.Updates) != 1 || res.Updates[0].ID != "a" || res.Updates[0].DesiredState != api.TaskShutdown {
		t.Fatalf("old task not stopped: %+v", res.Updates)
	}
	if len(res.Creates) != 0 || !res.Wake.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("next slot started before the monitor window ended, or no wake-up at its end: %+v", res)
	}
	st.Tasks["a"] = res.Updates[0]
	res = Reconcile(t0.Add(5*time.Second), st, Options{NewID: idGen()})
	if len(res.Creates) != 1 || res.Creates[0].Slot != 2 {
		t.Fatalf("next slot not started: %+v", res.Creates)
	}
}

// TestConvergesUnderChurn drives the reconciler with a simulated scheduler and
// agent that fail tasks at random, and checks that it always ends with
// exactly one live task per wanted slot and never more than one task of the
// current version per slot.
func TestConvergesUnderChurn(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		replicas := rapid.IntRange(0, 12).Draw(rt, "replicas")
		svc := service("web", replicas, func(s *api.ServiceSpec) { s.Restart.Delay = api.Duration(time.Millisecond) })
		st := state([]api.Service{svc})
		now := t0
		ids := idGen()
		rev := int64(1)
		apply := func(res Result) {
			for _, c := range res.Creates {
				rev++
				c.Revision = rev
				st.Tasks[c.ID] = c
			}
			for _, u := range res.Updates {
				rev++
				u.Revision = rev
				st.Tasks[u.ID] = u
			}
			for _, d := range res.Deletes {
				delete(st.Tasks, d.ID)
			}
		}
		steps := rapid.IntRange(1, 40).Draw(rt, "steps")
		for i := 0; i < steps; i++ {
			now = now.Add(time.Second)
			apply(Reconcile(now, st, Options{NewID: ids}))
			// The "cluster": place, start, stop, and fail some tasks.
			for id, tk := range st.Tasks {
				switch {
				case tk.DesiredState == api.TaskShutdown && !tk.Status.State.Terminal():
					tk.Status.State = api.TaskShutdown
				case tk.Status.State == api.TaskPending && !moveFits(st, tk, "n1"):
					tk.Status.Message = "at max_replicas_per_node" // as the scheduler does
				case tk.Status.State == api.TaskPending:
					tk.Status.State, tk.NodeID = api.TaskAssigned, "n1"
				case tk.Status.State == api.TaskAssigned:
					tk.Status.State, tk.Status.StartedAt = api.TaskRunning, now
				case tk.Status.State == api.TaskRunning && rapid.IntRange(0, 9).Draw(rt, "fail "+id) == 0:
					tk.Status.State, tk.Status.FinishedAt = api.TaskFailed, now
				}
				st.Tasks[id] = tk
			}
			if rapid.IntRange(0, 9).Draw(rt, "rescale") == 0 {
				n := rapid.IntRange(0, 12).Draw(rt, "new replicas")
				s := st.Services[svc.ID]
				s.Spec.Replicas = &n
				st.Services[svc.ID] = s
			}
		}
		// Let it settle with no more failures.
		for i := 0; i < 10; i++ {
			now = now.Add(time.Second)
			apply(Reconcile(now, st, Options{NewID: ids}))
			for id, tk := range st.Tasks {
				switch {
				case tk.DesiredState == api.TaskShutdown && !tk.Status.State.Terminal():
					tk.Status.State = api.TaskShutdown
				case tk.Status.State == api.TaskPending && !moveFits(st, tk, "n1"):
					tk.Status.Message = "at max_replicas_per_node" // as the scheduler does
				case tk.Status.State == api.TaskPending:
					tk.Status.State, tk.NodeID = api.TaskAssigned, "n1"
				case tk.Status.State == api.TaskAssigned:
					tk.Status.State = api.TaskRunning
				}
				st.Tasks[id] = tk
			}
		}
		want := st.Services[svc.ID].Spec.ReplicaCount()
		live := map[int]int{}
		for _, tk := range st.Tasks {
			if tk.DesiredState == api.TaskRunning && !tk.Status.State.Terminal() {
				live[tk.Slot]++
			}
		}
		for s := 1; s <= want; s++ {
			if live[s] != 1 {
				rt.Fatalf("slot %d has %d live tasks, want 1 (all: %v)", s, live[s], live)
			}
		}
		if len(live) != want {
			rt.Fatalf("%d slots live, want %d: %v", len(live), want, live)
		}
	})
}

func TestScalingDoesNotReplaceTasks(t *testing.T) {
	svc := service("web", 2)
	st := state([]api.Service{svc}, task(svc, "a", 1, api.TaskRunning), task(svc, "b", 2, api.TaskRunning))
	// A scale (or label change) bumps the version but not the task template.
	svc.Version = 2
	three := 3
	svc.Spec.Replicas = &three
	svc.Spec.Labels = map[string]string{"team": "x"}
	st.Services[svc.ID] = svc
	res := run(st)
	if len(res.Updates) != 0 || len(res.Creates) != 1 || res.Creates[0].Slot != 3 {
		t.Fatalf("scale replaced tasks: %+v", res)
	}
}

func TestUpdateFallsBackToStopFirstWhenTheNewTaskCannotBePlaced(t *testing.T) {
	svc := service("web", 1)
	old := task(svc, "a", 1, api.TaskRunning)
	svc.Version = 2
	svc.Spec.Task.Env = map[string]string{"V": "2"}
	n := api.Task{ID: "new", ServiceID: svc.ID, Slot: 1, SpecVersion: 2, Spec: svc.Spec.Task, DesiredState: api.TaskRunning,
		Status: api.TaskStatus{State: api.TaskPending, Message: pendingMessage}, CreatedAt: t0}
	st := state([]api.Service{svc}, old, n)
	if res := run(st); len(res.Updates) != 0 {
		t.Fatalf("old task stopped before the scheduler spoke: %+v", res.Updates)
	}
	n.Status.Message = "no suitable node (1 node: 1 lacks cpu)"
	st.Tasks["new"] = n
	res := run(st)
	if len(res.Updates) != 1 || res.Updates[0].ID != "a" || res.Updates[0].DesiredState != api.TaskShutdown {
		t.Fatalf("old task not stopped to make room: %+v", res.Updates)
	}
}
