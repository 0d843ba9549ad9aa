package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent/agenttest"
	"github.com/berth-project/berth/internal/driver"
)

// listenAfter makes the fake driver's tasks open an HTTP server on their
// "http" port only after delay (a program that takes a while to start), or
// never when delay is negative.
func listenAfter(t *testing.T, h *harness, delay time.Duration) {
	h.d.StartFunc = func(ctx context.Context, spec driver.StartSpec) error {
		if delay < 0 {
			return nil
		}
		port := 0
		for _, e := range spec.Env {
			if v, ok := strings.CutPrefix(e, "PORT_HTTP="); ok {
				port, _ = strconv.Atoi(v)
			}
		}
		time.AfterFunc(delay, func() {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Errorf("listen: %v", err)
				return
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
		})
		return nil
	}
}

// fastCheck is a health check that, before this fix, killed a task that
// was not listening within 200 ms of its start.
func fastCheck() api.HealthCheck {
	return api.HealthCheck{
		HTTP:     &api.HTTPCheck{Port: "http", Path: "/"},
		Interval: api.Duration(100 * time.Millisecond),
		Timeout:  api.Duration(50 * time.Millisecond),
		Retries:  2,
	}
}

// TestHealthRefusedWhileStarting is issue 12 item 10: a program that opens
// its port later than its health check's retries allow (a start storm on a
// small machine) is still starting, not unhealthy: it becomes healthy and
// is started once.
func TestHealthRefusedWhileStarting(t *testing.T) {
	h := newHarness(t)
	listenAfter(t, h, time.Second)
	h.start()
	tk := healthTask("late", freePort(t, "tcp"), fastCheck())
	h.m.Assign(tk)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := h.m.Status(tk.ID)
		if st.Health == api.HealthHealthy {
			break
		}
		if st.State.Terminal() {
			t.Fatalf("task ended before it listened: %s: %s", st.State, st.Err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healthy after 10s: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := h.d.Starts(tk.ID); n != 1 {
		t.Errorf("started %d times, want 1", n)
	}
}

// TestHealthNeverListens: a program that never opens its port is still
// found unhealthy, once the listen grace is over.
func TestHealthNeverListens(t *testing.T) {
	h := newHarness(t)
	const grace = 700 * time.Millisecond
	h.setup = func(a *Agent) { a.listenGrace = grace }
	listenAfter(t, h, -1)
	h.start()
	port := freePort(t, "tcp")
	tk := healthTask("deaf", port, fastCheck())
	h.m.Assign(tk)
	running := h.waitStatus(tk.ID, api.TaskRunning)
	st := h.waitStatus(tk.ID, api.TaskFailed)
	if !strings.HasPrefix(st.Err, "health check failed: GET http://127.0.0.1:"+strconv.Itoa(port)+"/: ") ||
		!strings.Contains(st.Err, "refused") {
		t.Errorf("error = %q, want a refused health check", st.Err)
	}
	if took := st.FinishedAt.Sub(running.StartedAt); took < grace {
		t.Errorf("unhealthy %s after the start, within the listen grace of %s", took, grace)
	}
}

// TestHealthListenGraceAtLeastStartPeriod: the start period, when longer,
// is the listen grace.
func TestHealthListenGraceAtLeastStartPeriod(t *testing.T) {
	a := &Agent{listenGrace: DefaultListenGrace}
	if p := a.healthPolicy(api.HealthCheck{StartPeriod: api.Duration(90 * time.Second)}); p.listenGrace != 90*time.Second {
		t.Errorf("listen grace = %s, want the start period, 90s", p.listenGrace)
	}
	if p := a.healthPolicy(api.HealthCheck{StartPeriod: api.Duration(time.Second)}); p.listenGrace != DefaultListenGrace {
		t.Errorf("listen grace = %s, want %s", p.listenGrace, DefaultListenGrace)
	}
}

// TestConcurrentStartsBounded is issue 12 item 10: a burst of new tasks is
// started at most MaxConcurrentStarts at a time, and all of them start.
func TestConcurrentStartsBounded(t *testing.T) {
	h := newHarness(t)
	h.cfg.MaxConcurrentStarts = 3
	var mu sync.Mutex
	inStart, most := 0, 0
	h.d.StartFunc = func(ctx context.Context, spec driver.StartSpec) error {
		mu.Lock()
		inStart++
		most = max(most, inStart)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // a slow fork and exec
		mu.Lock()
		inStart--
		mu.Unlock()
		return nil
	}
	h.start()
	tasks, ids := manyTasks(30)
	h.m.Assign(tasks...)
	for _, id := range ids {
		h.waitStatus(id, api.TaskRunning)
	}
	mu.Lock()
	defer mu.Unlock()
	if most > 3 {
		t.Errorf("%d tasks were started at once, want at most 3", most)
	}
	if most < 2 {
		t.Errorf("at most %d task started at once: starts are not concurrent at all", most)
	}
}

// TestStartSlotHeldUntilListening: a task with an HTTP check keeps its start
// slot until its port answers, so a burst of slow starters comes up a few
// at a time instead of all competing for the CPU.
func TestStartSlotHeldUntilListening(t *testing.T) {
	h := newHarness(t)
	h.cfg.MaxConcurrentStarts = 2
	var mu sync.Mutex
	coming, most := 0, 0 // started, not yet answered
	h.d.StartFunc = func(ctx context.Context, spec driver.StartSpec) error {
		port := 0
		for _, e := range spec.Env {
			if v, ok := strings.CutPrefix(e, "PORT_HTTP="); ok {
				port, _ = strconv.Atoi(v)
			}
		}
		mu.Lock()
		coming++
		most = max(most, coming)
		mu.Unlock()
		var answered atomic.Bool
		time.AfterFunc(150*time.Millisecond, func() {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Errorf("listen: %v", err)
				return
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if answered.CompareAndSwap(false, true) {
					mu.Lock()
					coming--
					mu.Unlock()
				}
			})}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
		})
		return nil
	}
	h.start()
	var tasks []api.Task
	for i := range 6 {
		tasks = append(tasks, healthTask(fmt.Sprintf("web-%d", i), freePort(t, "tcp"), fastCheck()))
	}
	h.m.Assign(tasks...)
	eventually(t, func() bool {
		for _, tk := range tasks {
			if st, _ := h.m.Status(tk.ID); st.Health != api.HealthHealthy {
				return false
			}
		}
		return true
	}, "all healthy")
	mu.Lock()
	defer mu.Unlock()
	if most > 2 {
		t.Errorf("%d tasks were coming up at once, want at most 2", most)
	}
}

// TestHealthClosedBeforeAnswerWhileStarting: a port that accepts and closes
// the connection before any answer (Docker's userland proxy in front of a
// program that is not listening yet) is still starting too.
func TestHealthClosedBeforeAnswerWhileStarting(t *testing.T) {
	h := newHarness(t)
	port := freePort(t, "tcp")
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	var serving atomic.Bool
	time.AfterFunc(time.Second, func() { serving.Store(true) })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	proxy := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(proxy)
				return
			}
			if !serving.Load() {
				c.Close() // the proxy found no backend
				continue
			}
			proxy <- c
		}
	}()
	go srv.Serve(&chanListener{l: l, conns: proxy})
	t.Cleanup(func() { l.Close(); srv.Close() })
	// The "proxy" holds the port before the task starts, as docker's does.
	h.setup = func(a *Agent) { a.portFree = func(string, int) error { return nil } }
	h.start()
	tk := healthTask("proxied", port, fastCheck())
	h.m.Assign(tk)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := h.m.Status(tk.ID)
		if st.Health == api.HealthHealthy {
			break
		}
		if st.State.Terminal() {
			t.Fatalf("task ended before its program served: %s: %s", st.State, st.Err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healthy after 10s: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// chanListener serves the connections a test's accept loop hands over.
type chanListener struct {
	l     net.Listener
	conns chan net.Conn
}

func (c *chanListener) Accept() (net.Conn, error) {
	conn, ok := <-c.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return conn, nil
}
func (c *chanListener) Close() error   { return nil }
func (c *chanListener) Addr() net.Addr { return c.l.Addr() }

// TestHealthProbesQuicklyWhileHoldingSlot: an HTTP or TCP check looks for
// its first success every 10 ms in the task's first StartHold (while the
// task holds a start slot), then every 100 ms.
func TestHealthProbesQuicklyWhileHoldingSlot(t *testing.T) {
	a := &Agent{listenGrace: DefaultListenGrace}
	if p := a.healthPolicy(fastCheck()); p.quickFor != StartHold {
		t.Fatalf("quickFor = %s for an HTTP check, want %s", p.quickFor, StartHold)
	}
	if p := a.healthPolicy(api.HealthCheck{Exec: []string{"true"}}); p.quickFor != 0 {
		t.Fatalf("quickFor = %s for an exec check, want 0", p.quickFor)
	}
	clock := agenttest.NewClock(time.Unix(1000, 0))
	start := clock.Now()
	out := make(chan healthEvent, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := a.healthPolicy(fastCheck())
	p.interval = time.Second
	go runHealth(ctx, clock, p, func(context.Context) error { return errBoom }, api.HealthStarting, start, out)
	waitFor := func(d time.Duration) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !clock.HasWaiter(clock.Now().Add(d)) {
			if time.Now().After(deadline) {
				t.Fatalf("at +%s: no wait of %s", clock.Now().Sub(start), d)
			}
			time.Sleep(time.Millisecond)
		}
		clock.Advance(d)
	}
	waitFor(quickProbeInterval)
	waitFor(quickProbeInterval)
	clock.Advance(StartHold) // the next probe is late: the hold is over
	waitFor(startingProbeInterval)
}

// TestStopFreesStartSlot: a task stopped while it holds its start slot (its
// port never answered) gives the slot back before its grace period, so the
// tasks queued behind it start at once.
func TestStopFreesStartSlot(t *testing.T) {
	h := newHarness(t)
	h.cfg.MaxConcurrentStarts = 1
	listenAfter(t, h, -1) // never listens
	// Its stop takes the whole grace: the program ignores SIGTERM.
	release := make(chan struct{})
	h.d.StopFunc = func(tk *agenttest.Task, grace time.Duration) {
		if tk.Spec.TaskID == "slow" {
			<-release
		}
	}
	h.start()
	t.Cleanup(func() { close(release) })
	slow := healthTask("slow", freePort(t, "tcp"), fastCheck())
	h.m.Assign(slow)
	h.waitStatus(slow.ID, api.TaskRunning)
	next := newTask("next")
	h.m.Assign(shutdown(slow), next)
	h.waitStatus(next.ID, api.TaskRunning)
}

// TestClosedBeforeAnswerIsNotListening: whatever error net/http reports
// for a connection the server accepts and closes at once (EOF, reset, or
// its "server closed idle connection" when it sees the close before the
// request is written), an HTTP check counts it as "not listening yet".
// The last one made TestHealthClosedBeforeAnswerWhileStarting flaky.
func TestClosedBeforeAnswerIsNotListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	probe := httpProbe("127.0.0.1", l.Addr().(*net.TCPAddr).Port, "/")
	kinds := map[string]bool{}
	for range 300 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := probe(ctx)
		cancel()
		if err == nil {
			t.Fatal("a closed connection passed the check")
		}
		if !notListening(err) {
			t.Fatalf("error %q does not count as not listening", err)
		}
		kinds[err.Error()[strings.LastIndex(err.Error(), ":")+1:]] = true
	}
	t.Logf("error kinds seen: %v", kinds)
}
