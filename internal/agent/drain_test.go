package agent

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent/agenttest"
)

// drainManager is a fake manager whose drained answers are scripted.
type drainManager struct {
	agenttest.Manager
	calls  atomic.Int64
	answer func(call int64) (api.DrainStatus, error)
}

func (m *drainManager) Drained(ctx context.Context, task string, rev int64) (api.DrainStatus, error) {
	return m.answer(m.calls.Add(1))
}

// TestWaitRemoteDrainRidesOutManagerErrors checks that the agent keeps
// asking whether the other gateways let go of a task while the manager
// cannot answer (a leader failing over), instead of stopping the task early,
// and that it waits no longer than the deadline.
func TestWaitRemoteDrainRidesOutManagerErrors(t *testing.T) {
	h := newHarness(t)
	m := &drainManager{answer: func(call int64) (api.DrainStatus, error) {
		if call <= 4 {
			return api.DrainStatus{}, errors.New("connection refused")
		}
		return api.DrainStatus{Drained: call > 6, Waiting: []string{"n2"}}, nil
	}}
	a, err := New(h.cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.waitRemoteDrain("t1", 42, start.Add(20*time.Second))
	if n := m.calls.Load(); n != 7 {
		t.Errorf("asked %d times, want 7 (4 failures, 2 not drained, then drained)", n)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("took %s: it waited out the deadline instead of returning when drained", time.Since(start))
	}

	// Never answering: the wait ends at the deadline, not before.
	m2 := &drainManager{answer: func(int64) (api.DrainStatus, error) { return api.DrainStatus{}, errors.New("down") }}
	a2, err := New(h.cfg, m2)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(1500 * time.Millisecond)
	a2.waitRemoteDrain("t1", 42, deadline)
	if time.Now().Before(deadline) {
		t.Errorf("gave up %s before the deadline after %d tries", time.Until(deadline), m2.calls.Load())
	}
}
