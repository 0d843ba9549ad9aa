package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// A global-mode task is created pending with its NodeID already set. It must
// not reach the agent before the scheduler assigned it (and its ports).
func TestAssignmentStreamExcludesUnscheduledTasks(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	node := api.Node{ID: "node1", Hostname: "h", Status: api.NodeReady, Availability: api.AvailabilityActive, Drivers: []string{"process"}}
	if err := f.st.Nodes.Create(ctx, &node); err != nil {
		t.Fatal(err)
	}
	task := api.Task{ID: "task1", ServiceID: "s", ServiceName: "glob", NodeID: "node1", DesiredState: api.TaskRunning,
		Spec:   api.TaskSpec{Driver: "process", Command: []string{"x"}, Ports: []api.PortSpec{{Name: "http", Protocol: "tcp"}}},
		Status: api.TaskStatus{State: api.TaskPending, Message: "waiting to be scheduled"}}
	if err := f.st.Tasks.Create(ctx, &task); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, "GET", f.srv.URL+"/api/v1/nodes/node1/assignments", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() {
		t.Fatal("no first message")
	}
	var as api.Assignments
	if err := json.Unmarshal(sc.Bytes(), &as); err != nil {
		t.Fatal(err)
	}
	for _, tk := range as.Tasks {
		if tk.Status.State == api.TaskPending {
			t.Fatalf("agent was sent unscheduled task %s (state %s, ports %v): it will start or reject it before the scheduler allocates ports", tk.ID, tk.Status.State, tk.Ports)
		}
	}
}

// A spec well under MaxSpecBytes must not produce a 500.
func TestLargeButValidSpecIsStored(t *testing.T) {
	f := newFixture(t)
	doc := `{"name":"lt","task":{"command":["x"],"env":{"X":"` + string(make([]byte, 0)) + repeat("<", 300000) + `"}}}`
	resp, body := f.do("PUT", "/api/v1/services/lt", "application/json", testToken, []byte(doc))
	if resp.StatusCode >= 500 {
		t.Fatalf("a %d-byte spec (limit %d) got %d: %s", len(doc), api.MaxSpecBytes, resp.StatusCode, body)
	}
}

func repeat(s string, n int) string {
	b := make([]byte, 0, n*len(s))
	for range n {
		b = append(b, s...)
	}
	return string(b)
}

// A report of several tasks lands in one batch; a stale one among them is
// still ignored, and a task of another node is left alone.
func TestBatchedStatusReport(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	node := api.Node{ID: "n1", Hostname: "h", Status: api.NodeReady, Drivers: []string{"process"}}
	if err := f.st.Nodes.Create(ctx, &node); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, tk := range []api.Task{
		{ID: "a", NodeID: "n1", Status: api.TaskStatus{State: api.TaskAssigned}},
		{ID: "b", NodeID: "n1", Status: api.TaskStatus{State: api.TaskRunning, Health: api.HealthHealthy, Timestamp: now}},
		{ID: "c", NodeID: "other", Status: api.TaskStatus{State: api.TaskAssigned}},
	} {
		if err := f.st.Tasks.Create(ctx, &tk); err != nil {
			t.Fatal(err)
		}
	}
	rep := api.StatusReport{Tasks: []api.TaskStatusUpdate{
		{ID: "a", Status: api.TaskStatus{State: api.TaskRunning, PID: 7}},
		{ID: "b", Status: api.TaskStatus{State: api.TaskRunning, Health: api.HealthStarting, Timestamp: now.Add(-time.Second)}},
		{ID: "c", Status: api.TaskStatus{State: api.TaskFailed}},
	}}
	b, _ := json.Marshal(rep)
	if resp, body := f.do("POST", "/api/v1/nodes/n1/status", "application/json", testToken, b); resp.StatusCode != 204 {
		t.Fatalf("report: %d %s", resp.StatusCode, body)
	}
	a, _ := f.st.Tasks.Get(ctx, "a")
	bb, _ := f.st.Tasks.Get(ctx, "b")
	c, _ := f.st.Tasks.Get(ctx, "c")
	if a.Status.State != api.TaskRunning || a.Status.PID != 7 {
		t.Errorf("a: %+v", a.Status)
	}
	if bb.Status.Health != api.HealthHealthy {
		t.Errorf("b: a stale report overwrote it: %+v", bb.Status)
	}
	if c.Status.State != api.TaskAssigned {
		t.Errorf("c: another node's report changed it: %+v", c.Status)
	}
}
