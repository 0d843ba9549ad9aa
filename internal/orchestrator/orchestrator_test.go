package orchestrator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

// One service whose tasks do not fit in one etcd request must not stop every
// other service from converging.
func TestOneLargeServiceDoesNotStallOthers(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mk := func(id, name string, replicas int, env map[string]string) {
		spec := api.ServiceSpec{Name: name, Replicas: &replicas, Task: api.TaskSpec{Command: []string{"x"}, Env: env}}
		spec.Normalize()
		if err := spec.Validate(); err != nil {
			t.Fatal(err)
		}
		svc := api.Service{ID: id, Spec: spec, Version: 1}
		if err := st.Services.Create(ctx, &svc); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{}
	for i := range 8 {
		env[fmt.Sprintf("V%d", i)] = strings.Repeat("x", 100000) // 800 kB: a valid spec
	}
	mk("a-big", "big", 2, env)
	mk("b-small", "small", 3, nil)

	go New(Config{Store: st}).Run(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tasks, _, err := st.Tasks.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, tk := range tasks {
			if tk.ServiceID == "b-small" {
				n++
			}
		}
		if n == 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("service small has %d of 3 tasks after 10s: the orchestrator is stuck on service big", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A new task that failed within its monitor window makes the orchestrator
// roll the service back in one transaction against a real store: spec and
// previous spec swapped, version bumped, the rollback's status with the
// reason, and the version record. The rollback then completes on the old
// task, which is never touched.
func TestAutomaticRollbackTransaction(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	spec := func(v string) api.ServiceSpec {
		s := api.ServiceSpec{Name: "web", Replicas: intp(1), Task: api.TaskSpec{Command: []string{"x"}, Env: map[string]string{"V": v}}}
		s.Normalize()
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	v1, v2 := spec("1"), spec("2")
	svc := api.Service{ID: "web-id", Spec: v2, Version: 2, PreviousSpec: &v1, CreatedAt: now,
		UpdateStatus: &api.UpdateStatus{State: api.UpdateUpdating, FromVersion: 1, ToVersion: 2, StartedAt: now, Total: 1}}
	if err := st.Services.Create(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	// The old task serves; the new one beside it crashed a second after it
	// started (it has no health check, so it served from its start).
	old := api.Task{ID: "old", ServiceID: svc.ID, ServiceName: "web", Slot: 1, SpecVersion: 1, Spec: v1.Task, NodeID: "n1",
		DesiredState: api.TaskRunning, CreatedAt: now.Add(-time.Hour),
		Status: api.TaskStatus{State: api.TaskRunning, Health: api.HealthNone, StartedAt: now.Add(-time.Hour), Timestamp: now.Add(-time.Hour)}}
	code := 2
	bad := api.Task{ID: "bad", ServiceID: svc.ID, ServiceName: "web", Slot: 1, SpecVersion: 2, Spec: v2.Task, NodeID: "n1",
		DesiredState: api.TaskRunning, CreatedAt: now.Add(-2 * time.Second),
		Status: api.TaskStatus{State: api.TaskFailed, Err: "exit status 2", ExitCode: &code, StartedAt: now.Add(-2 * time.Second),
			FinishedAt: now.Add(-time.Second), Timestamp: now.Add(-time.Second)}}
	for _, tk := range []*api.Task{&old, &bad} {
		if err := st.Tasks.Create(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	go New(Config{Store: st}).Run(ctx)

	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := st.Services.Get(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		if u := got.UpdateStatus; u != nil && u.State == api.UpdateRolledBack {
			if got.Version != 3 || got.Spec.Task.Env["V"] != "1" || got.PreviousSpec == nil || got.PreviousSpec.Task.Env["V"] != "2" {
				t.Fatalf("rolled back service: version %d spec %v previous %+v", got.Version, got.Spec.Task.Env, got.PreviousSpec)
			}
			if u.FromVersion != 2 || u.ToVersion != 3 || !strings.Contains(u.Message, "task bad (slot 1) failed: exit status 2") {
				t.Fatalf("status %+v", u)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no completed rollback after 15s: %+v", got.UpdateStatus)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rec, err := st.Versions.Get(ctx, store.VersionKey("web", 3))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Author != "berth (automatic rollback)" || !strings.HasPrefix(rec.Summary, "automatic rollback of v2: task bad") || rec.Spec.Task.Env["V"] != "1" {
		t.Fatalf("version record %+v", rec)
	}
	o, err := st.Tasks.Get(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	if o.DesiredState != api.TaskRunning {
		t.Fatalf("the healthy old task was touched: %+v", o)
	}
	tasks, _, err := st.Tasks.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range tasks {
		if tk.ID != "old" && tk.DesiredState == api.TaskRunning {
			t.Fatalf("a task beside the old one was created: %+v", tk)
		}
	}
}

// An update completes when its last new task has served for the monitor
// window, though nothing in the store changes then: the loop wakes itself.
func TestUpdateCompletesOnMonitorWakeUp(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	spec := func(v string) api.ServiceSpec {
		s := api.ServiceSpec{Name: "web", Replicas: intp(1), Task: api.TaskSpec{Command: []string{"x"}, Env: map[string]string{"V": v}},
			Update: &api.UpdatePolicy{Monitor: api.Duration(1500 * time.Millisecond)}}
		s.Normalize()
		return s
	}
	v1, v2 := spec("1"), spec("2")
	svc := api.Service{ID: "web-id", Spec: v2, Version: 2, PreviousSpec: &v1, CreatedAt: now,
		UpdateStatus: &api.UpdateStatus{State: api.UpdateUpdating, FromVersion: 1, ToVersion: 2, StartedAt: now, Total: 1}}
	if err := st.Services.Create(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	running := api.TaskStatus{State: api.TaskRunning, Health: api.HealthNone, StartedAt: now, Timestamp: now}
	for _, tk := range []api.Task{
		{ID: "old", ServiceID: svc.ID, ServiceName: "web", Slot: 1, SpecVersion: 1, Spec: v1.Task, NodeID: "n1",
			DesiredState: api.TaskRunning, CreatedAt: now.Add(-time.Hour), Status: api.TaskStatus{State: api.TaskRunning, StartedAt: now.Add(-time.Hour)}},
		{ID: "new", ServiceID: svc.ID, ServiceName: "web", Slot: 1, SpecVersion: 2, Spec: v2.Task, NodeID: "n1",
			DesiredState: api.TaskRunning, CreatedAt: now, Status: running},
	} {
		if err := st.Tasks.Create(ctx, &tk); err != nil {
			t.Fatal(err)
		}
	}
	go New(Config{Store: st}).Run(ctx)
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := st.Services.Get(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		if u := got.UpdateStatus; u.State == api.UpdateCompleted {
			if u.Updated != 1 || u.CompletedAt.Before(now.Add(1500*time.Millisecond)) {
				t.Fatalf("completed too early or miscounted: %+v (new task served from %s)", u, now)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("update not completed 15s after a 1.5s monitor window: %+v", got.UpdateStatus)
		}
		time.Sleep(50 * time.Millisecond)
	}
	old, err := st.Tasks.Get(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	if old.DesiredState != api.TaskShutdown {
		t.Fatalf("the old task was not stopped once the new one served: %+v", old)
	}
}
