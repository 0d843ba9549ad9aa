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
