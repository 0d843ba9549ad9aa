package agent

import (
	"context"
	"errors"
	"github.com/berth-project/berth/internal/agent/agenttest"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
)

// serveOnStart makes the fake driver start a real HTTP server on the task's
// "http" port when it starts the task, answering /healthz with *code.
func serveOnStart(t *testing.T, h *harness, port int, code *atomic.Int32, firstOK *atomic.Int64) {
	h.d.StartFunc = func(ctx context.Context, spec driver.StartSpec) error {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := int(code.Load())
			if c == 200 && firstOK != nil {
				firstOK.CompareAndSwap(0, time.Now().UnixNano())
			}
			w.WriteHeader(c)
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		return nil
	}
}

func healthTask(id string, port int, hc api.HealthCheck) api.Task {
	tk := newTask(id)
	tk.Spec.Ports = []api.PortSpec{{Name: "http", Protocol: "tcp"}}
	tk.Ports = map[string]int{"http": port}
	tk.Spec.Health = &hc
	return tk
}

func TestHealthHTTP(t *testing.T) {
	h := newHarness(t)
	port := freePort(t, "tcp")
	var code atomic.Int32
	code.Store(200)
	var firstOK, healthyAt atomic.Int64
	serveOnStart(t, h, port, &code, &firstOK)
	h.m.ReportFunc = func(ctx context.Context, nodeID string, rep api.StatusReport) error {
		for _, u := range rep.Tasks {
			if u.Status.Health == api.HealthHealthy {
				healthyAt.CompareAndSwap(0, time.Now().UnixNano())
			}
		}
		return nil
	}
	h.start()
	tk := healthTask("web-1", port, api.HealthCheck{
		HTTP:     &api.HTTPCheck{Port: "http", Path: "/healthz"},
		Interval: api.Duration(100 * time.Millisecond),
		Timeout:  api.Duration(50 * time.Millisecond),
		Retries:  2,
	})
	h.m.Assign(tk)
	st := h.waitStatus(tk.ID, api.TaskRunning)
	if st.Health != api.HealthStarting && st.Health != api.HealthHealthy {
		t.Errorf("health at start = %q, want starting", st.Health)
	}
	eventually(t, func() bool { st, _ := h.m.Status(tk.ID); return st.Health == api.HealthHealthy }, "healthy")
	lag := time.Duration(healthyAt.Load() - firstOK.Load())
	t.Logf("first healthy answer → report: %s", lag)
	if lag <= 0 || lag > 200*time.Millisecond {
		t.Errorf("health change took %s to be reported; target < 200ms", lag)
	}
	for _, st := range h.m.History(tk.ID) {
		if st.State == api.TaskRunning {
			if st.Health != api.HealthStarting {
				t.Errorf("first running report has health %q, want starting", st.Health)
			}
			break
		}
	}

	code.Store(http.StatusServiceUnavailable)
	st = h.waitStatus(tk.ID, api.TaskFailed)
	want := "health check failed: GET http://127.0.0.1:" + strconv.Itoa(port) + "/healthz: status 503"
	if st.Err != want || st.Health != api.HealthUnhealthy {
		t.Errorf("status = %q / %q, want %q / unhealthy", st.Err, st.Health, want)
	}
	if n, grace := h.d.Task(tk.ID).Stops(); n != 1 || grace != 3*time.Second {
		t.Errorf("stopped %d times with grace %s", n, grace)
	}
}

func TestHealthStartPeriod(t *testing.T) {
	for _, tc := range []struct {
		name        string
		startPeriod time.Duration
		wantHealthy bool
	}{
		{"failures in the start period do not count", 2 * time.Second, true},
		{"without a start period (nor a listen grace) they do", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			// Refused connections would not count either (see
			// TestHealthRefusedWhileStarting): this test is about the
			// start period alone.
			h.setup = func(a *Agent) { a.listenGrace = 0 }
			port := freePort(t, "tcp")
			var listening atomic.Bool
			// The task only listens 300ms after it starts.
			h.d.StartFunc = func(ctx context.Context, spec driver.StartSpec) error {
				time.AfterFunc(300*time.Millisecond, func() {
					l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
					if err != nil {
						return
					}
					listening.Store(true)
					t.Cleanup(func() { l.Close() })
				})
				return nil
			}
			h.start()
			tk := healthTask("slow", port, api.HealthCheck{
				TCP:         &api.TCPCheck{Port: "http"},
				Interval:    api.Duration(100 * time.Millisecond),
				Timeout:     api.Duration(50 * time.Millisecond),
				Retries:     1,
				StartPeriod: api.Duration(tc.startPeriod),
			})
			h.m.Assign(tk)
			if tc.wantHealthy {
				eventually(t, func() bool { st, _ := h.m.Status(tk.ID); return st.Health == api.HealthHealthy }, "healthy")
				if !listening.Load() {
					t.Error("healthy before the task listened")
				}
				return
			}
			st := h.waitStatus(tk.ID, api.TaskFailed)
			if !strings.HasPrefix(st.Err, "health check failed: connect 127.0.0.1:") {
				t.Errorf("error = %q", st.Err)
			}
		})
	}
}

func TestHealthExec(t *testing.T) {
	t.Setenv("BERTH_CANARY", "agent-secret")
	h := newHarness(t)
	h.start()
	ok := newTask("exec-ok")
	ok.Spec.Health = &api.HealthCheck{
		// The check runs with the task's environment, not the agent's.
		Exec:     []string{"sh", "-c", `test "$BERTH_TASK_ID" = exec-ok && test -z "$BERTH_CANARY"`},
		Interval: api.Duration(100 * time.Millisecond), Timeout: api.Duration(2 * time.Second), Retries: 1,
	}
	bad := newTask("exec-bad")
	bad.Spec.Health = &api.HealthCheck{
		Exec:     []string{"sh", "-c", "echo nope; exit 3"},
		Interval: api.Duration(100 * time.Millisecond), Timeout: api.Duration(2 * time.Second), Retries: 2,
	}
	slow := newTask("exec-slow")
	slow.Spec.Health = &api.HealthCheck{
		Exec:     []string{"sh", "-c", "sleep 30"},
		Interval: api.Duration(100 * time.Millisecond), Timeout: api.Duration(50 * time.Millisecond), Retries: 1,
	}
	h.m.Assign(ok, bad, slow)
	eventually(t, func() bool { st, _ := h.m.Status("exec-ok"); return st.Health == api.HealthHealthy }, "exec-ok healthy")
	st := h.waitStatus("exec-bad", api.TaskFailed)
	if !strings.HasPrefix(st.Err, "health check failed: ") || !strings.HasSuffix(st.Err, "exited with code 3: nope") {
		t.Errorf("exec-bad error = %q", st.Err)
	}
	st = h.waitStatus("exec-slow", api.TaskFailed)
	if !strings.Contains(st.Err, "timed out after 50ms") {
		t.Errorf("exec-slow error = %q", st.Err)
	}
}

func TestRunHealthTransitions(t *testing.T) {
	// runHealth alone, with a scripted check: starting → healthy, failures
	// below retries keep it healthy, a success resets the count, retries
	// consecutive failures make it unhealthy.
	script := []error{errBoom, nil, errBoom, nil, errBoom, errBoom, errBoom}
	var i atomic.Int32
	check := func(context.Context) error {
		n := int(i.Add(1)) - 1
		if n >= len(script) {
			return nil
		}
		return script[n]
	}
	out := make(chan healthEvent)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := healthPolicy{interval: time.Millisecond, timeout: time.Second, retries: 3}
	go runHealth(ctx, realClock{}, p, check, api.HealthStarting, time.Now(), out)
	var got []string
	for ev := range out {
		got = append(got, ev.health)
		if ev.health == api.HealthUnhealthy {
			if !errors.Is(ev.err, errBoom) {
				t.Errorf("unhealthy error = %v", ev.err)
			}
			break
		}
	}
	if strings.Join(got, ",") != "healthy,unhealthy" {
		t.Errorf("events %v", got)
	}
	if n := i.Load(); n != 7 {
		t.Errorf("%d checks, want 7 (unhealthy on the third failure in a row)", n)
	}
}

// TestHealthProbesFastUntilFirstSuccess: with a long interval, a task that is
// ready at once is healthy after one quick probe, and failures before the
// first success count only once per interval.
func TestHealthProbesFastUntilFirstSuccess(t *testing.T) {
	clock := agenttest.NewClock(time.Unix(1000, 0))
	var calls atomic.Int32
	check := func(context.Context) error {
		if calls.Add(1) < 5 {
			return errBoom
		}
		return nil
	}
	out := make(chan healthEvent, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := healthPolicy{interval: 10 * time.Second, timeout: time.Second, retries: 2}
	go runHealth(ctx, clock, p, check, api.HealthStarting, clock.Now(), out)
	// Four failing probes 100 ms apart: less than one interval, so they
	// count once and the task is not unhealthy.
	for i := 0; i < 5; i++ {
		deadline := time.Now().Add(5 * time.Second)
		for !clock.HasWaiter(clock.Now().Add(startingProbeInterval)) {
			if time.Now().After(deadline) {
				t.Fatalf("probe %d: no %v wait (the first probes must be quick)", i, startingProbeInterval)
			}
			time.Sleep(time.Millisecond)
		}
		clock.Advance(startingProbeInterval)
	}
	select {
	case ev := <-out:
		if ev.health != api.HealthHealthy {
			t.Fatalf("got %s, want healthy", ev.health)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no health event")
	}
	if n := calls.Load(); n != 5 {
		t.Fatalf("%d probes, want 5", n)
	}
}

// TestHealthySince: the agent sets healthy_since when a task starts serving
// (its check first passes, or it runs without a check), leaves it zero while
// the check has not passed, and keeps it, across an agent restart, when the
// task turns unhealthy and fails or exits: the manager tells from it how
// long the task served.
func TestHealthySince(t *testing.T) {
	h := newHarness(t)
	port := freePort(t, "tcp")
	var code atomic.Int32
	code.Store(http.StatusServiceUnavailable)
	serveOnStart(t, h, port, &code, nil)
	serve := h.d.StartFunc
	h.d.StartFunc = func(ctx context.Context, spec driver.StartSpec) error {
		if spec.TaskID != "checked" {
			return nil
		}
		return serve(ctx, spec)
	}
	h.start()
	checked := healthTask("checked", port, api.HealthCheck{
		HTTP:     &api.HTTPCheck{Port: "http", Path: "/healthz"},
		Interval: api.Duration(100 * time.Millisecond),
		Timeout:  api.Duration(50 * time.Millisecond),
		Retries:  2,
		// Failures before the first success do not count for a while.
		StartPeriod: api.Duration(time.Minute),
	})
	plain := newTask("plain")
	plain.Slot = 2
	h.m.Assign(checked, plain)

	st := h.waitStatus(plain.ID, api.TaskRunning)
	if st.StartedAt.IsZero() || !st.HealthySince.Equal(st.StartedAt) {
		t.Fatalf("task without a check: healthy_since %v, want its start %v", st.HealthySince, st.StartedAt)
	}
	plainSince := st.HealthySince

	st = h.waitStatus(checked.ID, api.TaskRunning)
	if st.Health != api.HealthStarting || !st.HealthySince.IsZero() {
		t.Fatalf("starting task: health %q, healthy_since %v, want starting and zero", st.Health, st.HealthySince)
	}
	// It stays zero while the check fails.
	time.Sleep(200 * time.Millisecond)
	if st, _ := h.m.Status(checked.ID); st.Health != api.HealthStarting || !st.HealthySince.IsZero() {
		t.Fatalf("failing check: health %q, healthy_since %v", st.Health, st.HealthySince)
	}

	before := time.Now()
	code.Store(http.StatusOK)
	eventually(t, func() bool { st, _ := h.m.Status(checked.ID); return st.Health == api.HealthHealthy }, "healthy")
	st, _ = h.m.Status(checked.ID)
	if st.HealthySince.Before(before) || !st.HealthySince.Equal(st.Timestamp) || st.HealthySince.Before(st.StartedAt) {
		t.Fatalf("healthy: healthy_since %v, want the change to healthy (%v, after %v)", st.HealthySince, st.Timestamp, before)
	}
	since := st.HealthySince

	// Across a restart of the agent (the record on disk keeps it).
	h.stop()
	h.start()

	code.Store(http.StatusServiceUnavailable)
	st = h.waitStatus(checked.ID, api.TaskFailed)
	if st.Health != api.HealthUnhealthy || !st.HealthySince.Equal(since) {
		t.Fatalf("failed health check: health %q, healthy_since %v, want unhealthy and %v kept", st.Health, st.HealthySince, since)
	}
	h.d.Task(plain.ID).Exit(driver.Exit{Code: 2})
	st = h.waitStatus(plain.ID, api.TaskFailed)
	if !st.HealthySince.Equal(plainSince) {
		t.Fatalf("exited task: healthy_since %v, want %v kept", st.HealthySince, plainSince)
	}
}
