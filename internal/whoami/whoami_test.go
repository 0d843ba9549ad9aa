package whoami

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to write and read from two goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// instance is one whoami run on a free port.
type instance struct {
	url  string
	app  *app
	out  *syncBuffer
	stop context.CancelFunc
	done chan error
}

func start(t *testing.T, args ...string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{out: &syncBuffer{}, stop: cancel, done: make(chan error, 1)}
	ready := make(chan *app, 1)
	go func() {
		in.done <- run(ctx, append([]string{"--port", "0"}, args...), in.out, func(a *app) { ready <- a })
	}()
	select {
	case in.app = <-ready:
	case err := <-in.done:
		t.Fatalf("run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("whoami did not start")
	}
	line := strings.TrimSpace(in.out.String())
	i := strings.LastIndex(line, " ")
	in.url = "http://" + line[i+1:]
	t.Cleanup(func() {
		cancel()
		select {
		case <-in.done:
		case <-time.After(15 * time.Second):
			t.Error("whoami did not stop")
		}
	})
	return in
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestParse(t *testing.T) {
	t.Setenv("BERTH_TASK_NAME", "web.1.abcd")
	t.Setenv("BERTH_SERVICE", "web")
	t.Setenv("PORT", "8081")
	o, err := parse([]string{"--port", "${PORT}"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.port != 8081 || o.name != "web.1.abcd" || o.service != "web" || o.version != "v1" || o.listenAddr != "0.0.0.0" || o.exitCode != 1 {
		t.Errorf("options = %+v", o)
	}
	for _, args := range [][]string{
		{},
		{"--port", "x"},
		{"--port", "70000"},
		{"--port", "${NOPE_UNSET}"},
		{"--port", "1", "extra"},
		{"--port", "1", "--fail-after", "-1s"},
	} {
		if _, err := parse(args, io.Discard); !errors.Is(err, ErrUsage) {
			t.Errorf("parse(%q) = %v, want ErrUsage", args, err)
		}
	}
	if _, err := parse([]string{"--bogus"}, io.Discard); err == nil {
		t.Error("unknown flag accepted")
	}
	os.Unsetenv("BERTH_TASK_NAME")
	o, _ = parse([]string{"--port", "1"}, io.Discard)
	if host, _ := os.Hostname(); !strings.HasPrefix(o.name, host+"-") {
		t.Errorf("default name %q", o.name)
	}
}

func TestServe(t *testing.T) {
	in := start(t, "--name", "web.2.x", "--service", "web", "--version-label", "v7")
	code, body := get(t, in.url+"/")
	var who Who
	if err := json.Unmarshal([]byte(body), &who); err != nil || code != 200 {
		t.Fatalf("GET /: %d %q (%v)", code, body, err)
	}
	if who.Name != "web.2.x" || who.Service != "web" || who.Version != "v7" || who.PID != os.Getpid() || who.Hostname == "" {
		t.Errorf("who = %+v", who)
	}
	if code, body := get(t, in.url+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, _ := get(t, in.url+"/nope"); code != 404 {
		t.Errorf("unknown path: %d", code)
	}

	code, body = get(t, in.url+"/cpu?ms=30")
	var cpu struct{ CPUMs, ElapsedMs int64 }
	_ = json.Unmarshal([]byte(strings.NewReplacer("cpu_ms", "CPUMs", "elapsed_ms", "ElapsedMs").Replace(body)), &cpu)
	// The thread CPU clock may be accounted in ticks, so wall time can read
	// a little below the CPU time burnt; it cannot be far below.
	if code != 200 || cpu.CPUMs < 30 || cpu.ElapsedMs < 25 {
		t.Errorf("cpu: %d %q", code, body)
	}
	code, body = get(t, in.url+"/sleep?ms=20")
	if code != 200 || !strings.Contains(body, "slept_ms") {
		t.Errorf("sleep: %d %q", code, body)
	}
	for _, q := range []string{"/cpu?ms=x", "/cpu", "/sleep?ms=-1"} {
		if code, _ := get(t, in.url+q); code != 400 {
			t.Errorf("%s: %d, want 400", q, code)
		}
	}
}

func TestMillisCap(t *testing.T) {
	for _, c := range []struct {
		q    string
		max  int
		want int
	}{{"ms=5", 10, 5}, {"ms=999999", MaxSleepMillis, MaxSleepMillis}, {"ms=20000", MaxCPUMillis, MaxCPUMillis}} {
		r := httptest.NewRequest("GET", "/x?"+c.q, nil)
		got, ok := millis(httptest.NewRecorder(), r, c.max)
		if !ok || got != c.want {
			t.Errorf("%s cap %d: %d, %v", c.q, c.max, got, ok)
		}
	}
}

func TestHealthFlags(t *testing.T) {
	in := start(t, "--unhealthy")
	if code, body := get(t, in.url+"/healthz"); code != 503 || body != "unhealthy\n" {
		t.Errorf("--unhealthy: %d %q", code, body)
	}
	later := start(t, "--unhealthy-after", "100ms")
	if code, _ := get(t, later.url+"/healthz"); code != 200 {
		t.Errorf("healthy at first: %d", code)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, _ := get(t, later.url+"/healthz"); code == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never turned unhealthy")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFailAfter(t *testing.T) {
	var out syncBuffer
	err := Run(context.Background(), []string{"--port", "0", "--fail-after", "50ms", "--exit-code", "3"}, &out)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 3 {
		t.Fatalf("Run = %v, want ExitError code 3", err)
	}
}

func TestGracefulShutdown(t *testing.T) {
	in := start(t)
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get(in.url + "/sleep?ms=300")
		if err != nil {
			res <- result{err: err}
			return
		}
		resp.Body.Close()
		res <- result{code: resp.StatusCode}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for in.app.inflight.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("request never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	in.stop()
	r := <-res
	if r.err != nil || r.code != 200 {
		t.Errorf("in-flight request: %d, %v", r.code, r.err)
	}
	if err := <-in.done; err != nil {
		t.Errorf("Run = %v", err)
	}
	in.done <- nil // for the cleanup
	if _, err := http.Get(in.url + "/"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func BenchmarkRoot(b *testing.B) {
	a, err := newApp(options{name: "bench", version: "v1"})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	b.ReportAllocs()
	for b.Loop() {
		a.ServeHTTP(httptest.NewRecorder(), r)
	}
}

// TestAbruptShutdown checks --shutdown-timeout 0: in-flight requests are cut
// off at once (a program that does not shut down gracefully), and /inflight
// counts them while they run.
func TestAbruptShutdown(t *testing.T) {
	in := start(t, "--shutdown-timeout", "0")
	res := make(chan error, 1)
	go func() {
		resp, err := http.Get(in.url + "/sleep?ms=5000")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		res <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body := get(t, in.url+"/inflight")
		if body == "1\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/inflight never said 1 (last %q)", body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	in.stop()
	select {
	case err := <-res:
		if err == nil {
			t.Error("the in-flight request completed; --shutdown-timeout 0 should cut it off")
		}
	case <-time.After(3 * time.Second):
		t.Error("the in-flight request was not cut off")
	}
	if err := <-in.done; err != nil {
		t.Errorf("Run = %v", err)
	}
	in.done <- nil // for the cleanup
}
