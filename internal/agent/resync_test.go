package agent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// waitStored polls until every task's status in the manager's assignment
// set (what its store holds) is running, or the deadline passes.
func waitStored(t *testing.T, h *harness, ids []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var behind []string
		for _, id := range ids {
			if st, ok := h.m.Stored(id); !ok || st.State != api.TaskRunning {
				behind = append(behind, fmt.Sprintf("%s=%s", id, st.State))
			}
		}
		if len(behind) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %d of %d tasks are not running in the manager's store: %v", within, len(behind), len(ids), behind)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func manyTasks(n int) ([]api.Task, []string) {
	var tasks []api.Task
	var ids []string
	for i := range n {
		tk := newTask(fmt.Sprintf("web-%03d", i))
		tasks = append(tasks, tk)
		ids = append(ids, tk.ID)
	}
	return tasks, ids
}

// TestRestartReportsWhatReportsLost is issue 12 item 7: the agent (in `berth
// up`, with its manager) is killed after its tasks started but before the
// manager heard of it. The restarted agent recovers the tasks from its own
// records and must tell the manager, which still has them assigned.
func TestRestartReportsWhatReportsLost(t *testing.T) {
	h := newHarness(t)
	h.m.Echo = true
	var down atomic.Bool
	down.Store(true)
	h.m.ReportFunc = func(ctx context.Context, nodeID string, rep api.StatusReport) error {
		if down.Load() {
			return errors.New("connection refused: the manager is down")
		}
		return nil
	}
	h.start()
	tasks, ids := manyTasks(40)
	h.m.Assign(tasks...)
	eventually(t, func() bool {
		for _, id := range ids {
			if tr := h.transitionsOf(id); len(tr) == 0 || tr[len(tr)-1].to != api.TaskRunning {
				return false
			}
		}
		return true
	}, "all tasks running on the node")
	// The agent dies with its queue of unsent reports; the manager comes
	// back with the tasks still "assigned".
	h.stop()
	for _, id := range ids {
		if st, _ := h.m.Stored(id); st.State != api.TaskAssigned {
			t.Fatalf("task %s stored as %s before the restart; the test wants assigned", id, st.State)
		}
	}
	down.Store(false)
	h.start()
	waitStored(t, h, ids, 5*time.Second)
	for _, id := range ids {
		if n := h.d.Starts(id); n != 1 {
			t.Errorf("task %s started %d times, want 1 (recovered, not restarted)", id, n)
		}
	}
}

// TestReportsSurviveManagerOutage: reports fail for a while (the manager is
// down and its streams break), then succeed; every task reaches its true
// state in the manager's store soon after.
func TestReportsSurviveManagerOutage(t *testing.T) {
	h := newHarness(t)
	h.m.Echo = true
	var down atomic.Bool
	down.Store(true)
	h.m.ReportFunc = func(ctx context.Context, nodeID string, rep api.StatusReport) error {
		if down.Load() {
			return errors.New("connection refused: the manager is down")
		}
		return nil
	}
	h.start()
	tasks, ids := manyTasks(150) // more than one report batch
	h.m.Assign(tasks...)
	eventually(t, func() bool { return len(h.d.Running()) == len(ids) }, "all tasks started")
	h.m.Break()
	down.Store(false)
	waitStored(t, h, ids, 5*time.Second)
	for _, r := range h.m.Reports() {
		if len(r.Tasks) > maxReportBatch {
			t.Errorf("a report carried %d task updates, want at most %d", len(r.Tasks), maxReportBatch)
		}
	}
}

// TestResyncWaitsForTheStream: an assignment set that still shows the old
// status of a task whose report the manager just accepted (the stream lags
// the write) sends nothing again: during a burst, every set would otherwise
// double the status writes.
func TestResyncWaitsForTheStream(t *testing.T) {
	h := newHarness(t)
	h.start()
	tasks, ids := manyTasks(50)
	h.m.Assign(tasks...)
	for _, id := range ids {
		h.waitStatus(id, api.TaskRunning)
	}
	// The same set again, every task still "assigned" in it, then one new
	// task: once that is reported, the set before it was handled.
	h.m.Assign(tasks...)
	extra := newTask("web-extra")
	h.m.Assign(append(tasks, extra)...)
	h.waitStatus(extra.ID, api.TaskRunning)
	for _, id := range ids {
		n := 0
		for _, st := range h.m.History(id) {
			if st.State == api.TaskRunning {
				n++
			}
		}
		if n != 1 {
			t.Errorf("task %s reported running %d times, want once", id, n)
		}
	}
}
