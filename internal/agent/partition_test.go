package agent

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// TestPartitionHealStopsTasksNoLongerOwned: an agent cut off from its
// manager keeps its tasks running (it cannot know better); meanwhile the
// manager marks its task lost and replaces it elsewhere, so the task leaves
// the node's assignment set. When the agent reconnects, the full set it gets
// first no longer holds the task, and the agent stops it: after the
// partition heals, no replica runs twice. A task assigned to it during the
// partition starts.
func TestPartitionHealStopsTasksNoLongerOwned(t *testing.T) {
	h := newHarness(t)
	var cut atomic.Bool
	errCut := errors.New("connection refused (partitioned)")
	h.m.AssignmentsFunc = func(context.Context, string) error {
		if cut.Load() {
			return errCut
		}
		return nil
	}
	h.m.ReportFunc = func(context.Context, string, api.StatusReport) error {
		if cut.Load() {
			return errCut
		}
		return nil
	}
	h.cfg.HeartbeatInterval = 20 * time.Millisecond
	h.start()
	old, kept := newTask("old"), newTask("kept")
	kept.Slot = 2
	h.m.Assign(old, kept)
	h.waitStatus("old", api.TaskRunning)
	h.waitStatus("kept", api.TaskRunning)

	// Partition: the stream breaks and every call fails.
	cut.Store(true)
	h.m.Break()
	eventually(t, func() bool { return h.m.Streams() == 0 }, "stream closed")
	// The manager, not hearing from the node, marks "old" lost and
	// replaces it on another node; it also assigns "new" here. The set the
	// node will get on reconnect holds "kept" and "new", not "old".
	fresh := newTask("new")
	fresh.Slot = 3
	h.m.Assign(kept, fresh)
	// While cut off the agent stops nothing by itself.
	time.Sleep(100 * time.Millisecond) // a window in which nothing may happen; there is no event to wait for
	if running := h.d.Running(); !slices.Contains(running, "old") || !slices.Contains(running, "kept") {
		t.Fatalf("partitioned agent stopped tasks on its own: running %v", running)
	}

	// Heal.
	cut.Store(false)
	eventually(t, func() bool { return h.d.Task("old").Exited() }, "old task stopped after the partition healed (running %v)", h.d.Running())
	h.waitStatus("new", api.TaskRunning)
	if n, _ := h.d.Task("old").Stops(); n != 1 {
		t.Fatalf("old task stopped %d times, want 1", n)
	}
	if h.d.Task("kept").Exited() || h.d.Starts("kept") != 1 {
		t.Fatalf("kept task was disturbed: exited %v, starts %d", h.d.Task("kept").Exited(), h.d.Starts("kept"))
	}
	// The stopped task is not ours any more: nothing about it after the
	// heal claims it runs here.
	for _, st := range h.m.History("old") {
		if st.State.Terminal() {
			t.Fatalf("the agent reported an end state for a task it no longer owns: %+v", st)
		}
	}
}
