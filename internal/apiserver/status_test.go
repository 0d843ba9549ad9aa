package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/berth-project/berth/api"
)

// TestLargeStatusReportIsBatched: issue 12 item 6. An agent starting 500
// tasks reports 1,000 statuses at once; written one task at a time (a read
// and a write each) the report took longer than the agent's heartbeat
// interval, and its next heartbeat waited behind it: nodes were marked down.
// The report's writes now go in a few batches: the store's revision, which
// grows by one per transaction, moves by a few dozen, not 1,000. Reports on
// tasks of another node, missing tasks and backward moves are still
// ignored, and a task changed meanwhile is still written.
func TestLargeStatusReportIsBatched(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	resp, body := f.do("POST", "/api/v1/nodes/register", "application/json", testToken, []byte(`{"hostname":"h1","drivers":["process"]}`))
	if resp.StatusCode != 200 {
		t.Fatalf("register: %d %s", resp.StatusCode, body)
	}
	var node api.Node
	_ = json.Unmarshal(body, &node)
	const n = 1000
	var rep api.StatusReport
	for i := 0; i < n; i += 64 {
		txn := f.st.Txn()
		for j := i; j < min(i+64, n); j++ {
			tk := api.Task{ID: fmt.Sprintf("t%04d", j), NodeID: node.ID, DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskAssigned}}
			if j == 7 {
				tk.NodeID = "other-node"
			}
			f.st.Tasks.TxnCreate(txn, &tk)
			rep.Tasks = append(rep.Tasks, api.TaskStatusUpdate{ID: tk.ID, Status: api.TaskStatus{State: api.TaskRunning, PID: 1000 + j}})
		}
		if err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rep.Tasks = append(rep.Tasks, api.TaskStatusUpdate{ID: "gone", Status: api.TaskStatus{State: api.TaskRunning}})
	before, err := f.st.Client().Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(rep)
	if resp, body := f.do("POST", "/api/v1/nodes/"+node.ID+"/status", "application/json", testToken, b); resp.StatusCode != 204 {
		t.Fatalf("report: %d %s", resp.StatusCode, body)
	}
	after, err := f.st.Client().Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if d := after.Header.Revision - before.Header.Revision; d > 40 {
		t.Errorf("a report of %d statuses took %d transactions", n, d)
	}
	tasks, _, err := f.st.Tasks.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range tasks {
		want := api.TaskRunning
		if tk.ID == "t0007" {
			want = api.TaskAssigned
		}
		if tk.Status.State != want {
			t.Errorf("task %s is %s, want %s", tk.ID, tk.Status.State, want)
		}
	}
}
