package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-project/berth/api"
)

// whoamiCommand is the task command every benchmark service runs: Berth's
// own tiny HTTP app on its allocated port.
var whoamiCommand = []string{"berth", "whoami", "--port", "${PORT_HTTP}"}

// benchSpec returns the spec of a whoami service with replicas tasks, with
// an HTTP health check every healthInterval (none when it is zero) whose
// failures do not count during startPeriod.
func benchSpec(name string, replicas int, healthInterval, startPeriod time.Duration) api.ServiceSpec {
	spec := api.ServiceSpec{
		Name:     name,
		Replicas: &replicas,
		Task: api.TaskSpec{
			Driver:          api.DriverProcess,
			Command:         whoamiCommand,
			Ports:           []api.PortSpec{{Name: "http"}},
			StopGracePeriod: api.Duration(5 * time.Second),
		},
		Restart: api.RestartPolicy{Condition: api.RestartAny, Delay: api.Duration(time.Second)},
	}
	if healthInterval > 0 {
		spec.Task.Health = &api.HealthCheck{
			HTTP:        &api.HTTPCheck{Port: "http", Path: "/healthz"},
			Interval:    api.Duration(healthInterval),
			StartPeriod: api.Duration(startPeriod),
		}
	} else {
		spec.Restart.Condition = api.RestartNone
	}
	return spec
}

// deploy sends spec and returns the time just before the call and how long
// the call took.
func deploy(ctx context.Context, c *api.Client, spec api.ServiceSpec) (t0 time.Time, call time.Duration, err error) {
	doc, err := json.Marshal(spec)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("convergence: encoding spec: %w", err)
	}
	t0 = time.Now()
	_, _, err = c.DeployService(ctx, spec.Name, doc, "application/json")
	call = time.Since(t0)
	if err != nil {
		return t0, call, fmt.Errorf("convergence: deploying %s: %w", spec.Name, err)
	}
	return t0, call, nil
}

// poll calls fetch every interval (measured from the start of one call to
// the start of the next) and gives the result to done until done returns
// true, fetch fails, or timeout passes. It returns the number of polls.
func poll(ctx context.Context, interval, timeout time.Duration, fetch func(context.Context) ([]api.Task, error), done func([]api.Task, time.Time) bool) (int, error) {
	deadline := time.Now().Add(timeout)
	n := 0
	next := time.Now()
	for {
		if d := time.Until(next); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return n, ctx.Err()
			case <-t.C:
			}
		}
		next = time.Now().Add(interval)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		tasks, err := fetch(cctx)
		at := time.Now()
		cancel()
		n++
		if err != nil {
			return n, err
		}
		if done(tasks, at) {
			return n, nil
		}
		if at.After(deadline) {
			return n, fmt.Errorf("%w after %s", errTimeout, timeout)
		}
	}
}

// removeAndWait removes a service and waits until it has no current task and
// every pid in pids has exited. It returns how long that took.
func removeAndWait(ctx context.Context, c *api.Client, name string, pids []int, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	if err := c.RemoveService(ctx, name); err != nil {
		return 0, fmt.Errorf("convergence: removing %s: %w", name, err)
	}
	_, err := poll(ctx, 20*time.Millisecond, timeout,
		func(ctx context.Context) ([]api.Task, error) { return c.ListTasks(ctx, name, "") },
		func(ts []api.Task, _ time.Time) bool {
			if len(ts) > 0 {
				return false
			}
			for _, pid := range pids {
				if processAlive(pid) {
					return false
				}
			}
			return true
		})
	if err != nil {
		return time.Since(start), fmt.Errorf("convergence: waiting for %s to go: %w", name, err)
	}
	return time.Since(start), nil
}

// convergenceRun is one deploy of the many-replica service.
type convergenceRun struct {
	// Total is deploy call → every task running and healthy, as polled.
	Total time.Duration
	// DeployCall is how long the PUT took.
	DeployCall time.Duration
	// AllCreated, AllAssigned and AllRunning are when the poll first saw
	// every task exist, placed on the node, and running.
	AllCreated, AllAssigned, AllRunning time.Duration
	// LastCreatedAt, LastStartedAt and LastHealthyAt come from the task
	// timestamps the orchestrator and the agent wrote (latest over the
	// tasks), so they carry no poll delay.
	LastCreatedAt, LastStartedAt, LastHealthyAt time.Duration
	// TasksEver counts the tasks of the service including replaced ones.
	TasksEver int
	// Failed counts the tasks that ended failed during the run, by error.
	Failed map[string]int
	Polls  int
	// BerthCPU is the CPU time of the `berth up` process during Total;
	// TaskCPU that of all task processes.
	BerthCPU, TaskCPU time.Duration
	Teardown          time.Duration
	// SteadyCPU and PollCPU are the CPU time of `berth up` per second of
	// wall time once converged: without API polling (health checks of every
	// task only) and with polling at the convergence poll interval. Zero
	// unless asked for.
	SteadyCPU, PollCPU float64
}

// measureConvergence deploys a replicas-strong whoami service and waits for
// every task to be running and healthy.
// With overhead > 0 it then measures the CPU use of `berth up` for that long
// without and with API polling.
func measureConvergence(ctx context.Context, in *instance, name string, replicas int, healthInterval, startPeriod, pollEvery, timeout, overhead time.Duration) (convergenceRun, error) {
	var r convergenceRun
	c := in.client
	cpu0, _ := cpuTime(in.pid())
	tcpu0, _ := cgroupCPU(in.cgroupParent)
	t0, call, err := deploy(ctx, c, benchSpec(name, replicas, healthInterval, startPeriod))
	if err != nil {
		return r, err
	}
	r.DeployCall = call
	var last []api.Task
	r.Polls, err = poll(ctx, pollEvery, timeout,
		func(ctx context.Context) ([]api.Task, error) { return c.ServiceTasks(ctx, name, false) },
		func(ts []api.Task, at time.Time) bool {
			last = ts
			live := 0
			assigned, running, healthy := 0, 0, 0
			for _, t := range ts {
				if t.DesiredState != api.TaskRunning {
					continue
				}
				live++
				if t.NodeID != "" && t.Status.State != api.TaskPending {
					assigned++
				}
				if t.Status.State == api.TaskRunning {
					running++
					if t.Status.Health == api.HealthHealthy {
						healthy++
					}
				}
			}
			el := at.Sub(t0)
			if r.AllCreated == 0 && live >= replicas {
				r.AllCreated = el
			}
			if r.AllAssigned == 0 && assigned >= replicas {
				r.AllAssigned = el
			}
			if r.AllRunning == 0 && running >= replicas {
				r.AllRunning = el
			}
			if healthy >= replicas {
				r.Total = el
				return true
			}
			return false
		})
	if cpu1, err := cpuTime(in.pid()); err == nil {
		r.BerthCPU = cpu1 - cpu0
	}
	if tcpu1, ok := cgroupCPU(in.cgroupParent); ok {
		r.TaskCPU = tcpu1 - tcpu0
	}
	if err != nil {
		return r, fmt.Errorf("convergence: %s: %w (last poll: %s)", name, err, describeTasks(last))
	}
	var pids []int
	for _, t := range last {
		r.LastCreatedAt = max(r.LastCreatedAt, t.CreatedAt.Sub(t0))
		r.LastStartedAt = max(r.LastStartedAt, t.Status.StartedAt.Sub(t0))
		r.LastHealthyAt = max(r.LastHealthyAt, t.Status.Timestamp.Sub(t0))
		pids = append(pids, t.Status.PID)
	}
	if all, err := c.ServiceTasks(ctx, name, true); err == nil {
		r.TasksEver = len(all)
		for _, t := range all {
			if t.Status.State == api.TaskFailed || t.Status.State == api.TaskRejected {
				if r.Failed == nil {
					r.Failed = map[string]int{}
				}
				r.Failed[failureKind(t.Status.Err)]++
			}
		}
	}
	if overhead > 0 {
		if r.SteadyCPU, r.PollCPU, err = pollOverhead(ctx, in, name, pollEvery, overhead); err != nil {
			return r, err
		}
	}
	r.Teardown, err = removeAndWait(ctx, c, name, pids, timeout)
	return r, err
}

// failureKind shortens a task error to its kind, for counting: numbers and
// addresses are dropped.
func failureKind(msg string) string {
	switch {
	case strings.Contains(msg, "connection refused"):
		return "health check: connection refused"
	case strings.Contains(msg, "timed out"):
		return "health check: timed out"
	case msg == "":
		return "no error text"
	}
	if len(msg) > 60 {
		msg = msg[:60] + "…"
	}
	return msg
}

// pollOverhead measures the CPU time per wall second of `berth up` over d
// while nothing polls, then over d while the task list of name is polled
// every pollEvery.
func pollOverhead(ctx context.Context, in *instance, name string, pollEvery, d time.Duration) (steady, polled float64, err error) {
	measure := func(during func() error) (float64, error) {
		c0, err := cpuTime(in.pid())
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		if err := during(); err != nil {
			return 0, err
		}
		c1, err := cpuTime(in.pid())
		if err != nil {
			return 0, err
		}
		return (c1 - c0).Seconds() / time.Since(t0).Seconds(), nil
	}
	steady, err = measure(func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	})
	if err != nil {
		return 0, 0, err
	}
	end := time.Now().Add(d)
	polled, err = measure(func() error {
		_, err := poll(ctx, pollEvery, 2*d,
			func(ctx context.Context) ([]api.Task, error) { return in.client.ServiceTasks(ctx, name, false) },
			func(_ []api.Task, at time.Time) bool { return at.After(end) })
		return err
	})
	return steady, polled, err
}

// describeTasks counts tasks by state and health, for error messages.
func describeTasks(ts []api.Task) string {
	counts := map[string]int{}
	for _, t := range ts {
		counts[string(t.Status.State)+"/"+t.Status.Health]++
	}
	return fmt.Sprint(len(ts), " tasks ", counts)
}

// startRun is one deploy of a 1-replica service without a health check.
type startRun struct {
	// Created is when the orchestrator stamped the task (CreatedAt).
	Created time.Duration
	// AgentRunning is the task's StartedAt, stamped by the agent when the
	// driver returned.
	AgentRunning time.Duration
	// APIRunning is when the poll first saw state running with a pid.
	APIRunning time.Duration
	// Connect is when a TCP connection to the task's port first succeeded.
	Connect  time.Duration
	Teardown time.Duration
}

// probeTCP dials addr every interval until a connection succeeds and returns
// the time of success.
func probeTCP(ctx context.Context, addr string, interval time.Duration) (time.Time, error) {
	d := net.Dialer{Timeout: 100 * time.Millisecond}
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			at := time.Now()
			conn.Close()
			return at, nil
		}
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Time{}, ctx.Err()
		case <-t.C:
		}
	}
}

// measureStart deploys a 1-replica whoami service, and measures when the API
// reports it running and when its port accepts a connection; then it removes
// the service and waits until the task is gone.
func measureStart(ctx context.Context, in *instance, name string, pollEvery, probeEvery, timeout time.Duration) (startRun, error) {
	var r startRun
	c := in.client
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0, _, err := deploy(ctx, c, benchSpec(name, 1, 0, 0))
	if err != nil {
		return r, err
	}
	var (
		wg         sync.WaitGroup
		probeAt    time.Time
		probeErr   error
		probing    bool
		task       api.Task
		probeStart = func(port int) {
			probing = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				probeAt, probeErr = probeTCP(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), probeEvery)
			}()
		}
	)
	_, err = poll(ctx, pollEvery, timeout,
		func(ctx context.Context) ([]api.Task, error) { return c.ServiceTasks(ctx, name, false) },
		func(ts []api.Task, at time.Time) bool {
			if len(ts) != 1 {
				return false
			}
			task = ts[0]
			if p := task.Ports["http"]; p > 0 && !probing {
				probeStart(p)
			}
			if task.Status.State.Terminal() {
				return true // reported below
			}
			if task.Status.State == api.TaskRunning && task.Status.PID > 0 {
				r.APIRunning = at.Sub(t0)
				return true
			}
			return false
		})
	if err == nil && task.Status.State != api.TaskRunning {
		err = fmt.Errorf("task ended: %s %s", task.Status.State, task.Status.Err)
	}
	if err != nil {
		cancel()
		wg.Wait()
		return r, fmt.Errorf("convergence: %s: %w", name, err)
	}
	wg.Wait()
	if probeErr != nil {
		return r, fmt.Errorf("convergence: %s: connecting to port %d: %w", name, task.Ports["http"], probeErr)
	}
	r.Connect = probeAt.Sub(t0)
	r.Created = task.CreatedAt.Sub(t0)
	r.AgentRunning = task.Status.StartedAt.Sub(t0)
	r.Teardown, err = removeAndWait(ctx, c, name, []int{task.Status.PID}, timeout)
	return r, err
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("convergence: finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// measureBare starts `berth whoami --port P` with os/exec and returns the
// time from the start call until its port accepts a connection; then it
// stops the process with SIGTERM and waits for it.
func measureBare(ctx context.Context, bin string, probeEvery, timeout time.Duration) (time.Duration, error) {
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.Command(bin, "whoami", "--port", strconv.Itoa(port))
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("convergence: starting whoami: %w", err)
	}
	at, perr := probeTCP(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), probeEvery)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return 0, errors.New("convergence: whoami ignored SIGTERM for 15s")
	}
	if perr != nil {
		return 0, fmt.Errorf("convergence: connecting to bare whoami: %w", perr)
	}
	return at.Sub(t0), nil
}

// rssResult is the idle memory measurement.
type rssResult struct {
	Samples      []int64 // KiB, one per second
	MaxKB        int64
	LastKB       int64
	LastAnonKB   int64 // RssAnon of the last sample: heap, stacks
	LastFileKB   int64 // RssFile of the last sample: mapped binary pages
	Window       time.Duration
	BerthCPU     time.Duration // CPU of berth up during the window
	WhoamiKB     []int64       // RSS of each replica of the example service
	WhoamiAnonKB []int64       // RssAnon of each replica
}

// waitHealthy waits until service name has replicas running tasks that are
// healthy (or have no health check) and returns them.
func waitHealthy(ctx context.Context, c *api.Client, name string, replicas int, timeout time.Duration) ([]api.Task, error) {
	var ok []api.Task
	_, err := poll(ctx, 50*time.Millisecond, timeout,
		func(ctx context.Context) ([]api.Task, error) { return c.ServiceTasks(ctx, name, false) },
		func(ts []api.Task, _ time.Time) bool {
			ok = ok[:0]
			for _, t := range ts {
				if t.Status.State == api.TaskRunning && (t.Status.Health == api.HealthHealthy || t.Spec.Health == nil) {
					ok = append(ok, t)
				}
			}
			return len(ok) >= replicas
		})
	return ok, err
}

// measureRSS samples the VmRSS of `berth up` once a second for window.
func measureRSS(ctx context.Context, in *instance, window time.Duration) (rssResult, error) {
	r := rssResult{Window: window}
	cpu0, err := cpuTime(in.pid())
	if err != nil {
		return r, err
	}
	start := time.Now()
	for i := 0; ; i++ {
		kb, err := statusKB(in.pid(), "VmRSS")
		if err != nil {
			return r, err
		}
		r.Samples = append(r.Samples, kb)
		r.MaxKB = max(r.MaxKB, kb)
		r.LastKB = kb
		r.LastAnonKB, _ = statusKB(in.pid(), "RssAnon")
		r.LastFileKB, _ = statusKB(in.pid(), "RssFile")
		next := start.Add(time.Duration(i+1) * time.Second)
		if next.Sub(start) > window {
			break
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(time.Until(next)):
		}
	}
	cpu1, err := cpuTime(in.pid())
	if err != nil {
		return r, err
	}
	r.BerthCPU = cpu1 - cpu0
	r.Window = time.Since(start)
	return r, nil
}
