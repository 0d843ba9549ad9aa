package nodemonitor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/controller"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestCheck(t *testing.T) {
	st := &controller.State{Nodes: map[string]api.Node{
		"fresh": {ID: "fresh", Status: api.NodeReady, LastHeartbeat: t0.Add(-time.Second)},
		"stale": {ID: "stale", Status: api.NodeReady, LastHeartbeat: t0.Add(-10 * time.Second)},
		"down":  {ID: "down", Status: api.NodeDown, LastHeartbeat: t0.Add(-time.Hour)},
	}, Tasks: map[string]api.Task{
		"a": {ID: "a", NodeID: "stale", Status: api.TaskStatus{State: api.TaskRunning}},
		"b": {ID: "b", NodeID: "down", Status: api.TaskStatus{State: api.TaskAssigned}},
		"c": {ID: "c", NodeID: "down", Status: api.TaskStatus{State: api.TaskFailed}},
		"d": {ID: "d", NodeID: "fresh", Status: api.TaskStatus{State: api.TaskRunning}},
		"e": {ID: "e", NodeID: "removed", Status: api.TaskStatus{State: api.TaskRunning}},
		"f": {ID: "f", NodeID: "removed", Status: api.TaskStatus{State: api.TaskPending}},
	}}
	res := Check(t0, t0.Add(-time.Hour), 5*time.Second, st)
	if len(res.Down) != 1 || res.Down[0].ID != "stale" || res.Down[0].Status != api.NodeDown {
		t.Fatalf("down: %+v", res.Down)
	}
	lost := map[string]bool{}
	for _, l := range res.Lost {
		if l.Status.State != api.TaskLost || l.Status.Err == "" {
			t.Fatalf("lost task %+v", l)
		}
		lost[l.ID] = true
	}
	if fmt.Sprint(lost) != "map[a:true b:true e:true]" {
		t.Fatalf("lost %v, want a, b and e (its node was removed)", lost)
	}
	if want := t0.Add(4 * time.Second); !res.Wake.Equal(want) {
		t.Fatalf("wake %v, want %v (the fresh node's deadline)", res.Wake, want)
	}
	// A leader that just took over gives stale nodes a full period.
	res = Check(t0, t0.Add(-time.Second), 5*time.Second, st)
	if len(res.Down) != 0 {
		t.Fatalf("a new leader marked nodes down at once: %+v", res.Down)
	}
}

func TestMonitorMarksSilentNodeDownAndItsTasksLost(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := &api.Node{ID: "n1", Hostname: "h1", Status: api.NodeReady, LastHeartbeat: time.Now()}
	if err := st.Nodes.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	tk := &api.Task{ID: "t1", NodeID: "n1", DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskRunning}}
	if err := st.Tasks.Create(ctx, tk); err != nil {
		t.Fatal(err)
	}
	go New(Config{Store: st, DownAfter: 300 * time.Millisecond}).Run(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := st.Tasks.Get(ctx, "t1")
		if err != nil {
			t.Fatal(err)
		}
		node, _ := st.Nodes.Get(ctx, "n1")
		if got.Status.State == api.TaskLost && node.Status == api.NodeDown {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s, task %s: want down and lost", node.Status, got.Status.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDefaultTimeout: without DownAfter a node is down three seconds after
// its last heartbeat (three missed beats of the agents' one-second
// interval), not before.
func TestDefaultTimeout(t *testing.T) {
	m := New(Config{})
	if m.cfg.DownAfter != 3*time.Second {
		t.Fatalf("default DownAfter %s, want 3s", m.cfg.DownAfter)
	}
	st := &controller.State{Nodes: map[string]api.Node{
		"n": {ID: "n", Status: api.NodeReady, LastHeartbeat: t0},
	}}
	if res := Check(t0.Add(3*time.Second-time.Millisecond), t0.Add(-time.Hour), m.cfg.DownAfter, st); len(res.Down) != 0 {
		t.Fatalf("down before the timeout: %+v", res.Down)
	} else if !res.Wake.Equal(t0.Add(3 * time.Second)) {
		t.Fatalf("wake %v, want the deadline %v", res.Wake, t0.Add(3*time.Second))
	}
	if res := Check(t0.Add(3*time.Second), t0.Add(-time.Hour), m.cfg.DownAfter, st); len(res.Down) != 1 {
		t.Fatalf("not down at the timeout: %+v", res)
	}
}
