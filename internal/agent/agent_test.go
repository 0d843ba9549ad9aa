package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent/agenttest"
	"github.com/berth-project/berth/internal/driver"
)

func TestNewRejectsBadConfig(t *testing.T) {
	d := &agenttest.Driver{}
	good := Config{DataDir: t.TempDir(), Drivers: map[string]driver.Driver{"process": d}}
	m := &agenttest.Manager{}
	for name, mod := range map[string]func(*Config){
		"no data dir":     func(c *Config) { c.DataDir = "" },
		"no drivers":      func(c *Config) { c.Drivers = nil },
		"misnamed driver": func(c *Config) { c.Drivers = map[string]driver.Driver{"docker": d} },
		"bad port range":  func(c *Config) { c.PortRange = [2]int{30000, 20000} },
		"relative berth":  func(c *Config) { c.BerthBinary = "bin/berth" },
	} {
		cfg := good
		mod(&cfg)
		if _, err := New(cfg, m); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: New error = %v, want ErrConfig", name, err)
		}
	}
	if _, err := New(good, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("no manager: New error = %v, want ErrConfig", err)
	}
	a, err := New(good, m)
	if err != nil {
		t.Fatal(err)
	}
	if a.cfg.PortRange != [2]int{20000, 32767} || a.cfg.HeartbeatInterval != time.Second || a.cfg.LogListen != "127.0.0.1:0" {
		t.Errorf("defaults not applied: %+v", a.cfg)
	}
}

func TestRegistration(t *testing.T) {
	h := newHarness(t)
	h.cfg.Labels = map[string]string{"zone": "a"}
	var calls atomic.Int32
	h.m.RegisterFunc = func(ctx context.Context, reg api.NodeRegistration) (api.Node, error) {
		if calls.Add(1) <= 2 {
			return api.Node{}, errBoom // the manager is not up yet
		}
		return api.Node{ID: "n-42"}, nil
	}
	a := h.start()
	eventually(t, func() bool { return a.NodeID() == "n-42" }, "registered")
	regs := h.m.Registrations()
	if len(regs) != 3 {
		t.Fatalf("got %d registrations, want 3 (two failures retried)", len(regs))
	}
	reg := regs[2]
	if reg.NodeID != "" || reg.Hostname != "node-a" || reg.Labels["zone"] != "a" {
		t.Errorf("registration = %+v", reg)
	}
	if reg.Resources.CPUs < 1 || reg.Resources.Memory < 1<<20 {
		t.Errorf("resources = %+v", reg.Resources)
	}
	if fmt.Sprint(reg.Drivers) != "[process]" || reg.PortRange != [2]int{20000, 32767} {
		t.Errorf("drivers %v, port range %v", reg.Drivers, reg.PortRange)
	}
	if !strings.HasPrefix(reg.AgentURL, "https://127.0.0.1:") || len(reg.AgentCertSHA256) != 64 || len(reg.AgentSecret) != 64 {
		t.Errorf("log server fields: url %q, fp %q, secret %d chars", reg.AgentURL, reg.AgentCertSHA256, len(reg.AgentSecret))
	}
	b, err := os.ReadFile(filepath.Join(h.dir, "agent", "node-id"))
	if err != nil || strings.TrimSpace(string(b)) != "n-42" {
		t.Fatalf("saved node id = %q, %v", b, err)
	}

	// A restarted agent sends the saved id.
	h.stop()
	h.m.RegisterFunc = nil
	h.start()
	eventually(t, func() bool { return len(h.m.Registrations()) == 4 }, "second registration")
	if got := h.m.Registrations()[3].NodeID; got != "n-42" {
		t.Errorf("second registration sent node id %q, want n-42", got)
	}
}

func TestReconcileStartsStopsAndForgets(t *testing.T) {
	h := newHarness(t)
	h.start()
	t1, t2, t3 := newTask("task-1"), newTask("task-2"), newTask("task-3")
	h.m.Assign(t1, t2, t3)
	for _, id := range []string{"task-1", "task-2", "task-3"} {
		st := h.waitStatus(id, api.TaskRunning)
		if st.PID == 0 || st.StartedAt.IsZero() || st.Health != api.HealthNone {
			t.Errorf("%s running status = %+v", id, st)
		}
		if _, err := os.Stat(filepath.Join(h.dir, "agent", "tasks", id+".json")); err != nil {
			t.Errorf("%s: no saved state: %v", id, err)
		}
	}

	// task-1 is to shut down; task-3 leaves the set; task-2 stays.
	h.m.Assign(shutdown(t1), t2)
	st := h.waitStatus("task-1", api.TaskShutdown)
	if n, grace := h.d.Task("task-1").Stops(); n != 1 || grace != 3*time.Second {
		t.Errorf("task-1 stopped %d times with grace %s, want once with 3s", n, grace)
	}
	if st.FinishedAt.IsZero() {
		t.Errorf("shutdown status has no FinishedAt: %+v", st)
	}
	eventually(t, func() bool { return h.d.Task("task-3").Exited() }, "task-3 stopped")
	eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(h.dir, "agent", "tasks", "task-3.json"))
		return errors.Is(err, os.ErrNotExist)
	}, "task-3 state removed")
	eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(h.dir, "agent", "tasks", "task-1.json"))
		return errors.Is(err, os.ErrNotExist)
	}, "task-1 state removed once its end was reported")
	// A forgotten task is not reported: it is no longer this node's.
	if st, _ := h.m.Status("task-3"); st.State != api.TaskRunning {
		t.Errorf("task-3 last report = %s, want running (nothing after it left the set)", st.State)
	}
	if h.d.Task("task-2").Exited() || h.d.Starts("task-2") != 1 {
		t.Errorf("task-2 was disturbed")
	}

	// The same set again (a reconnect) changes nothing.
	h.m.Assign(shutdown(t1), t2)
	h.m.Assign(t2)
	time.Sleep(20 * time.Millisecond) // nothing to poll for: a negative check
	for _, id := range []string{"task-1", "task-2", "task-3"} {
		if n := h.d.Starts(id); n != 1 {
			t.Errorf("%s started %d times", id, n)
		}
	}
}

func TestTasksNotStartedWhenNotWanted(t *testing.T) {
	h := newHarness(t)
	h.start()
	done := newTask("done")
	done.Status.State = api.TaskFailed
	early := shutdown(newTask("early"))
	lost := newTask("lost")
	lost.Status.State = api.TaskRunning
	h.m.Assign(done, early, lost)

	h.waitStatus("early", api.TaskShutdown)
	st := h.waitStatus("lost", api.TaskFailed)
	if !strings.Contains(st.Err, "no record") {
		t.Errorf("lost task error = %q", st.Err)
	}
	for _, id := range []string{"done", "early", "lost"} {
		if n := h.d.Starts(id); n != 0 {
			t.Errorf("%s started %d times, want 0", id, n)
		}
	}
	if _, ok := h.m.Status("done"); ok {
		t.Errorf("a task already terminal in the set was reported")
	}
}

func TestExitStates(t *testing.T) {
	cases := []struct {
		exit    driver.Exit
		state   api.TaskState
		errText string
		code    int // -1: no exit code
	}{
		{driver.Exit{Code: 0}, api.TaskComplete, "", 0},
		{driver.Exit{Code: 3}, api.TaskFailed, "exit code 3", 3},
		{driver.Exit{Code: -1, Signal: 9}, api.TaskFailed, "killed by signal 9 (killed)", -1},
		{driver.Exit{Code: -1, Signal: 9, OOMKilled: true}, api.TaskFailed, "out of memory", -1},
		{driver.Exit{Code: -1}, api.TaskFailed, "exit code unknown", -1},
		{driver.Exit{Code: -1, Err: errBoom}, api.TaskFailed, "lost track of the task: boom", -1},
	}
	h := newHarness(t)
	h.start()
	var tasks []api.Task
	for i := range cases {
		tasks = append(tasks, newTask(fmt.Sprintf("exit-%d", i)))
	}
	h.m.Assign(tasks...)
	for i, c := range cases {
		id := tasks[i].ID
		h.waitStatus(id, api.TaskRunning)
		h.d.Task(id).Exit(c.exit)
		st := h.waitStatus(id, c.state)
		if st.Err != c.errText {
			t.Errorf("%v: error %q, want %q", c.exit, st.Err, c.errText)
		}
		switch {
		case c.code < 0 && st.ExitCode != nil:
			t.Errorf("%v: exit code %d, want none", c.exit, *st.ExitCode)
		case c.code >= 0 && (st.ExitCode == nil || *st.ExitCode != c.code):
			t.Errorf("%v: exit code %v, want %d", c.exit, st.ExitCode, c.code)
		}
		if !h.d.Task(id).Released() {
			t.Errorf("%v: resources of the ended task not released", c.exit)
		}
	}
}

func TestStartErrors(t *testing.T) {
	h := newHarness(t)
	h.d.StartFunc = func(ctx context.Context, spec driver.StartSpec) error {
		switch spec.TaskID {
		case "invalid":
			return fmt.Errorf("no such user: %w", driver.ErrInvalid)
		case "flaky":
			return fmt.Errorf("cgroup: %w", errBoom)
		}
		return nil
	}
	h.start()
	noCmd := newTask("nocmd")
	noCmd.Spec.Command = nil
	docker := newTask("docker")
	docker.Spec.Driver, docker.Spec.Image, docker.Spec.Command = api.DriverDocker, "nginx", nil
	notFound := newTask("notfound")
	notFound.Spec.Command = []string{"no-such-program-berth"}
	noPort := newTask("noport")
	noPort.Spec.Ports = []api.PortSpec{{Name: "http"}}
	h.m.Assign(newTask("invalid"), newTask("flaky"), noCmd, docker, notFound, noPort)

	for id, want := range map[string]struct {
		state api.TaskState
		err   string
	}{
		"invalid":  {api.TaskRejected, "no such user"},
		"flaky":    {api.TaskFailed, "cgroup: boom"},
		"nocmd":    {api.TaskRejected, "task.command: is required"},
		"docker":   {api.TaskRejected, `driver "docker" is not available`},
		"notfound": {api.TaskRejected, `program "no-such-program-berth" not found`},
		"noport":   {api.TaskRejected, `port "http" has no host port`},
	} {
		st := h.waitStatus(id, want.state)
		if !strings.Contains(st.Err, want.err) {
			t.Errorf("%s: error %q, want it to contain %q", id, st.Err, want.err)
		}
	}
	// The agent never restarts a task itself.
	time.Sleep(20 * time.Millisecond)
	if n := h.d.Starts("flaky"); n != 0 {
		t.Errorf("flaky recorded %d starts", n)
	}
	for _, tr := range h.transitionsOf("flaky") {
		if tr.to == api.TaskRunning {
			t.Errorf("flaky reached running")
		}
	}
}

func TestNotBefore(t *testing.T) {
	h := newHarness(t)
	clock := agenttest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	h.cfg.Clock = clock
	h.start()
	tk := newTask("delayed")
	tk.NotBefore = clock.Now().Add(time.Minute)
	h.m.Assign(tk)
	eventually(t, func() bool { return clock.HasWaiter(tk.NotBefore) }, "runner waits for NotBefore")
	clock.Advance(59 * time.Second)
	time.Sleep(20 * time.Millisecond) // negative check: it must not start early
	if n := h.d.Starts("delayed"); n != 0 {
		t.Fatalf("started %d times before NotBefore", n)
	}
	clock.Advance(time.Second)
	st := h.waitStatus("delayed", api.TaskRunning)
	if !st.StartedAt.Equal(tk.NotBefore) {
		t.Errorf("StartedAt %v, want %v", st.StartedAt, tk.NotBefore)
	}

	// A task asked to shut down while it waits never starts.
	tk2 := newTask("delayed-2")
	tk2.NotBefore = clock.Now().Add(time.Hour)
	h.m.Assign(tk, tk2)
	eventually(t, func() bool { return clock.HasWaiter(tk2.NotBefore) }, "second runner waits")
	h.m.Assign(tk, shutdown(tk2))
	h.waitStatus("delayed-2", api.TaskShutdown)
	if n := h.d.Starts("delayed-2"); n != 0 {
		t.Errorf("delayed-2 started %d times", n)
	}
}

func TestPortInUse(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			busy := holdPort(t, proto)
			free := freePort(t, proto)
			h := newHarness(t)
			h.start()
			tk := newTask("ports-" + proto)
			tk.Spec.Ports = []api.PortSpec{{Name: "free", Protocol: proto}, {Name: "busy", Protocol: proto}}
			tk.Ports = map[string]int{"free": free, "busy": busy}
			h.m.Assign(tk)
			st := h.waitStatus(tk.ID, api.TaskFailed)
			want := fmt.Sprintf("port %d (busy) is in use on this node", busy)
			if st.Err != want {
				t.Errorf("error %q, want %q", st.Err, want)
			}
			if n := h.d.Starts(tk.ID); n != 0 {
				t.Errorf("started %d times", n)
			}
		})
	}
}

func TestRecovery(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.m.Assign(newTask("alive"), newTask("gone"), newTask("stale"))
	for _, id := range []string{"alive", "gone", "stale"} {
		h.waitStatus(id, api.TaskRunning)
	}
	h.stop()
	// Ending Run stops nothing.
	if got := fmt.Sprint(h.d.Running()); got != "[alive gone stale]" {
		t.Fatalf("running after Run returned: %s", got)
	}
	// While the agent is down, one task ends, and the manager moves
	// another elsewhere.
	h.d.Task("gone").Exit(driver.Exit{Code: 0})
	h.m.Assign(newTask("alive"), newTask("gone"))

	h.start()
	st := h.waitStatus("gone", api.TaskFailed)
	if st.Err != "task process ended while the agent was down" || st.ExitCode != nil {
		t.Errorf("gone task status = %+v", st)
	}
	eventually(t, func() bool { return h.d.Task("stale").Exited() }, "stale task stopped")
	time.Sleep(20 * time.Millisecond)
	if h.d.Task("alive").Exited() || h.d.Starts("alive") != 1 {
		t.Errorf("alive task was restarted or stopped")
	}
	// The recovered task is supervised: its end is seen and reported.
	h.d.Task("alive").Exit(driver.Exit{Code: 7})
	st = h.waitStatus("alive", api.TaskFailed)
	if st.Err != "exit code 7" {
		t.Errorf("alive task end = %+v", st)
	}
	for _, tr := range h.transitionsOf("alive") {
		if tr.to == api.TaskStarting {
			t.Errorf("recovered task went through starting again")
		}
	}
}

// A terminal state the last run could not report survives the restart.
func TestTerminalStateSurvivesRestart(t *testing.T) {
	h := newHarness(t)
	var failing atomic.Bool
	h.m.ReportFunc = func(ctx context.Context, nodeID string, rep api.StatusReport) error {
		if failing.Load() {
			return errBoom
		}
		return nil
	}
	h.start()
	h.m.Assign(newTask("t1"))
	h.waitStatus("t1", api.TaskRunning)
	failing.Store(true)
	h.d.Task("t1").Exit(driver.Exit{Code: 2})
	eventually(t, func() bool {
		h.a.mu.Lock()
		defer h.a.mu.Unlock()
		r := h.a.runners["t1"]
		if r == nil {
			return false
		}
		st, _ := r.snapshot()
		return st.State == api.TaskFailed
	}, "t1 failed locally")
	h.stop()
	failing.Store(false)
	h.start()
	st := h.waitStatus("t1", api.TaskFailed)
	if st.Err != "exit code 2" || st.ExitCode == nil || *st.ExitCode != 2 {
		t.Errorf("status after restart = %+v", st)
	}
	if n := h.d.Starts("t1"); n != 1 {
		t.Errorf("started %d times", n)
	}
}

func TestShutdownStopsEverything(t *testing.T) {
	h := newHarness(t)
	h.start()
	clockless := newTask("waiting")
	clockless.NotBefore = time.Now().Add(time.Hour)
	h.m.Assign(newTask("a"), newTask("b"), clockless)
	h.waitStatus("a", api.TaskRunning)
	h.waitStatus("b", api.TaskRunning)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.a.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, id := range []string{"a", "b", "waiting"} {
		if st, _ := h.m.Status(id); st.State != api.TaskShutdown {
			t.Errorf("%s reported %s after Shutdown, want shutdown", id, st.State)
		}
	}
	if len(h.d.Running()) != 0 {
		t.Errorf("still running: %v", h.d.Running())
	}
	// Nothing new starts after Shutdown.
	h.m.Assign(newTask("late"))
	time.Sleep(20 * time.Millisecond)
	if h.d.Starts("late") != 0 {
		t.Errorf("a task started after Shutdown")
	}
}

func TestShutdownAfterRunReturned(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.m.Assign(newTask("a"))
	h.waitStatus("a", api.TaskRunning)
	h.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.a.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !h.d.Task("a").Exited() {
		t.Errorf("task not stopped")
	}
	if st, _ := h.m.Status("a"); st.State != api.TaskShutdown {
		t.Errorf("reported %s, want shutdown", st.State)
	}
}

func TestAssignmentStreamReconnects(t *testing.T) {
	h := newHarness(t)
	var fails atomic.Int32
	h.m.AssignmentsFunc = func(ctx context.Context, nodeID string) error {
		if nodeID != "node-1" {
			return fmt.Errorf("wrong node id %q", nodeID)
		}
		if fails.Add(1) <= 2 {
			return errBoom
		}
		return nil
	}
	h.start()
	h.m.Assign(newTask("a"))
	h.waitStatus("a", api.TaskRunning)
	h.m.Break()
	eventually(t, func() bool { return h.m.Streams() == 1 }, "reconnected")
	h.m.Assign()
	eventually(t, func() bool { return h.d.Task("a").Exited() }, "task stopped after the new set")
}

func TestNodeNotFoundReregisters(t *testing.T) {
	h := newHarness(t)
	var first atomic.Bool
	first.Store(true)
	h.m.AssignmentsFunc = func(ctx context.Context, nodeID string) error {
		if first.CompareAndSwap(true, false) {
			return &api.Error{Code: api.CodeNotFound, Message: "no such node"}
		}
		return nil
	}
	h.start()
	eventually(t, func() bool { return len(h.m.Registrations()) == 2 && h.m.Streams() == 1 }, "registered again, then streamed")
}

func TestHeartbeat(t *testing.T) {
	h := newHarness(t)
	h.cfg.HeartbeatInterval = 10 * time.Millisecond
	h.start()
	eventually(t, func() bool { return len(h.m.Reports()) >= 3 }, "three heartbeats")
	for _, r := range h.m.Reports() {
		if len(r.Tasks) != 0 {
			t.Errorf("heartbeat with tasks %v", r.Tasks)
		}
	}
}

func TestReportsRetried(t *testing.T) {
	h := newHarness(t)
	var failing atomic.Bool
	var failed atomic.Int32
	h.m.ReportFunc = func(ctx context.Context, nodeID string, rep api.StatusReport) error {
		if failing.Load() {
			failed.Add(1)
			return errBoom
		}
		return nil
	}
	h.start()
	h.m.Assign(newTask("a"), newTask("b"))
	h.waitStatus("a", api.TaskRunning)
	h.waitStatus("b", api.TaskRunning)
	failing.Store(true)
	h.d.Task("a").Exit(driver.Exit{Code: 0})
	h.d.Task("b").Exit(driver.Exit{Code: 1})
	eventually(t, func() bool { return failed.Load() >= 3 }, "reports failing and retried")
	failing.Store(false)
	h.waitStatus("a", api.TaskComplete)
	h.waitStatus("b", api.TaskFailed)
	// Each history only moves forward.
	for _, id := range []string{"a", "b"} {
		hist := h.m.History(id)
		for i := 1; i < len(hist); i++ {
			if hist[i].State.Before(hist[i-1].State) {
				t.Errorf("%s: reported %s after %s", id, hist[i].State, hist[i-1].State)
			}
		}
	}
}

// The state files of finished tasks are removed once reported, and a late
// set that still lists them does not start them again.
func TestFinishedTasksAreNotRestarted(t *testing.T) {
	h := newHarness(t)
	h.start()
	tk := newTask("once")
	h.m.Assign(tk)
	h.waitStatus("once", api.TaskRunning)
	h.d.Task("once").Exit(driver.Exit{Code: 0})
	h.waitStatus("once", api.TaskComplete)
	eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(h.dir, "agent", "tasks", "once.json"))
		return errors.Is(err, os.ErrNotExist)
	}, "state file removed")
	h.m.Assign(tk) // stale: read before the report landed
	time.Sleep(20 * time.Millisecond)
	if n := h.d.Starts("once"); n != 1 {
		t.Errorf("started %d times", n)
	}
}
