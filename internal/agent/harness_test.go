package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent/agenttest"
	"github.com/berth-project/berth/internal/driver"
)

// harness runs one agent against a fake manager and a fake driver.
type harness struct {
	t   *testing.T
	dir string
	m   *agenttest.Manager
	d   *agenttest.LogDriver
	cfg Config
	a   *Agent
	// setup, if set, adjusts each new agent before it runs.
	setup func(*Agent)

	mu          sync.Mutex
	transitions []transition

	cancel context.CancelFunc
	done   chan error
}

type transition struct {
	id               string
	from, to, wanted api.TaskState
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), m: &agenttest.Manager{}, d: &agenttest.LogDriver{}}
	h.cfg = Config{
		DataDir:           h.dir,
		Hostname:          "node-a",
		Address:           "127.0.0.1",
		Drivers:           map[string]driver.Driver{"process": h.d},
		BerthBinary:       "/opt/berth/bin/berth",
		HeartbeatInterval: time.Hour, // tests that want heartbeats shorten it
		Logger:            testLogger(t),
		// Without a topology tasks run unpinned; the CPU tests set one.
		Topology: func() (api.Topology, error) { return api.Topology{}, errNoTopology },
	}
	return h
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("BERTH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// start creates the agent from h.cfg and runs it until the test ends.
func (h *harness) start() *Agent {
	h.t.Helper()
	a, err := New(h.cfg, h.m)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	a.retryMin = 5 * time.Millisecond
	a.rep.maxBackoff = 50 * time.Millisecond
	a.onTransition = func(id string, from, to, wanted api.TaskState) {
		h.mu.Lock()
		h.transitions = append(h.transitions, transition{id, from, to, wanted})
		h.mu.Unlock()
	}
	if h.setup != nil {
		h.setup(a)
	}
	h.a = a
	h.mu.Lock()
	h.transitions = nil // per run
	h.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- a.Run(ctx) }()
	h.t.Cleanup(h.stop)
	return a
}

// stop ends Run (tasks keep running) and waits for it.
func (h *harness) stop() {
	h.t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return after its context ended")
	}
	h.cancel = nil
}

func (h *harness) transitionsOf(id string) []transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []transition
	for _, tr := range h.transitions {
		if tr.id == id {
			out = append(out, tr)
		}
	}
	return out
}

// waitStatus waits until the latest reported state of a task is want.
func (h *harness) waitStatus(id string, want api.TaskState) api.TaskStatus {
	h.t.Helper()
	var st api.TaskStatus
	eventually(h.t, func() bool {
		var ok bool
		st, ok = h.m.Status(id)
		return ok && st.State == want
	}, "task %s reported %s (last: %+v)", id, want, &st)
	return st
}

// eventually polls cond until it holds or 5 seconds pass.
func eventually(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: "+format, args...)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// newTask returns a valid assigned task of service "web".
func newTask(id string) api.Task {
	return api.Task{
		ID:           id,
		ServiceID:    "svc-web",
		ServiceName:  "web",
		Slot:         1,
		NodeID:       "node-1",
		DesiredState: api.TaskRunning,
		Spec: api.TaskSpec{
			Driver:          api.DriverProcess,
			Command:         []string{"/app/server", "--flag"},
			StopGracePeriod: api.Duration(3 * time.Second),
		},
		Status: api.TaskStatus{State: api.TaskAssigned},
	}
}

func shutdown(t api.Task) api.Task {
	t.DesiredState = api.TaskShutdown
	return t
}

var (
	errBoom       = errors.New("boom")
	errNoTopology = errors.New("no topology in this test")
)
