// Package whoami is a tiny HTTP app that says which task answered. Examples,
// tests and benchmarks deploy it (`berth whoami`) as a backend: it is the
// thing behind the routing mesh in proxy benchmarks, so it must stay small
// and fast (keep-alive, nothing logged per request). It must not import the
// rest of Berth.
package whoami

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits of the /cpu and /sleep endpoints, in milliseconds.
const (
	MaxCPUMillis   = 10000
	MaxSleepMillis = 60000
)

// ShutdownTimeout is how long in-flight requests get to finish after SIGTERM
// or the end of the context, unless --shutdown-timeout says otherwise.
const ShutdownTimeout = 10 * time.Second

// ErrUsage is returned (wrapped) for bad command-line arguments.
var ErrUsage = errors.New("whoami: usage")

// ExitError asks the caller to exit the process with Code: it ends Run when
// --fail-after fires.
type ExitError struct {
	Code   int
	Reason string
}

// Error says why Run ended and with which code.
func (e *ExitError) Error() string { return fmt.Sprintf("whoami: %s (exit code %d)", e.Reason, e.Code) }

// options are the parsed flags.
type options struct {
	port           int
	listenAddr     string
	name, service  string
	version        string
	unhealthy      bool
	unhealthyAfter time.Duration
	failAfter      time.Duration
	exitCode       int
	shutdown       time.Duration
}

var varRef = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$`)

func parse(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("whoami", flag.ContinueOnError)
	fs.SetOutput(out)
	port := fs.String("port", "", "port to listen on (required; 0 picks a free one; ${VAR} reads VAR)")
	fs.StringVar(&o.listenAddr, "listen-addr", "0.0.0.0", "address to listen on (the default, every interface, lets other nodes' gateways reach it)")
	fs.StringVar(&o.name, "name", os.Getenv("BERTH_TASK_NAME"), "name to answer with (default $BERTH_TASK_NAME, else hostname-pid)")
	fs.StringVar(&o.service, "service", os.Getenv("BERTH_SERVICE"), "service to answer with (default $BERTH_SERVICE)")
	fs.StringVar(&o.version, "version-label", "v1", "version to answer with")
	fs.BoolVar(&o.unhealthy, "unhealthy", false, "start unhealthy: /healthz answers 503")
	fs.DurationVar(&o.unhealthyAfter, "unhealthy-after", 0, "turn unhealthy after this long")
	fs.DurationVar(&o.failAfter, "fail-after", 0, "exit with --exit-code after this long")
	fs.IntVar(&o.exitCode, "exit-code", 1, "exit code for --fail-after")
	fs.DurationVar(&o.shutdown, "shutdown-timeout", ShutdownTimeout, "how long in-flight requests may finish after SIGTERM (0: cut them off at once, like a program that does not shut down gracefully)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	p := *port
	if m := varRef.FindStringSubmatch(p); m != nil {
		// Not expanded by Berth (run by hand): read the variable.
		p = os.Getenv(m[1])
	}
	if p == "" {
		return o, fmt.Errorf("%w: --port is required", ErrUsage)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return o, fmt.Errorf("%w: --port %q is not a port number", ErrUsage, p)
	}
	o.port = n
	if o.unhealthyAfter < 0 || o.failAfter < 0 || o.shutdown < 0 {
		return o, fmt.Errorf("%w: durations must not be negative", ErrUsage)
	}
	if o.name == "" {
		h, _ := os.Hostname()
		o.name = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	return o, nil
}

// Run serves until ctx ends or the process gets SIGTERM or SIGINT, then lets
// in-flight requests finish (up to ShutdownTimeout) and returns nil. With
// --fail-after it returns an *ExitError instead. It writes one line to stdout
// when it listens: "whoami NAME listening on ADDR".
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	return run(ctx, args, stdout, nil)
}

// run is Run with a hook that gets the app once it listens (for tests).
func run(ctx context.Context, args []string, stdout io.Writer, ready func(*app)) error {
	o, err := parse(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	ln, err := net.Listen("tcp", net.JoinHostPort(o.listenAddr, strconv.Itoa(o.port)))
	if err != nil {
		return fmt.Errorf("whoami: %w", err)
	}
	app, err := newApp(o)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           app,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "whoami %s listening on %s\n", o.name, ln.Addr())
	if ready != nil {
		ready(app)
	}

	if o.unhealthyAfter > 0 {
		t := time.AfterFunc(o.unhealthyAfter, func() { app.healthy.Store(false) })
		defer t.Stop()
	}
	var fail <-chan time.Time
	if o.failAfter > 0 {
		t := time.NewTimer(o.failAfter)
		defer t.Stop()
		fail = t.C
	}

	select {
	case err := <-served:
		return fmt.Errorf("whoami: serve: %w", err)
	case <-fail:
		srv.Close() // a crash, not a clean stop
		return &ExitError{Code: o.exitCode, Reason: fmt.Sprintf("failing after %s as asked", o.failAfter)}
	case <-ctx.Done():
	}
	if o.shutdown <= 0 {
		srv.Close() // cut in-flight requests off, as asked
		return nil
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("whoami: shutdown: %w", err)
	}
	return nil
}

// app is the HTTP handler.
type app struct {
	mux     *http.ServeMux
	healthy atomic.Bool
	// inflight counts /cpu and /sleep requests being served.
	inflight atomic.Int64
	// who is the JSON body of "/", made once: it never changes.
	who []byte
}

// Who is the body of "/".
type Who struct {
	Name     string `json:"name"`
	Service  string `json:"service"`
	Version  string `json:"version"`
	Hostname string `json:"hostname"`
	PID      int    `json:"pid"`
}

func newApp(o options) (*app, error) {
	host, _ := os.Hostname()
	who, err := json.Marshal(Who{Name: o.name, Service: o.service, Version: o.version, Hostname: host, PID: os.Getpid()})
	if err != nil {
		return nil, fmt.Errorf("whoami: %w", err)
	}
	a := &app{mux: http.NewServeMux(), who: append(who, '\n')}
	a.healthy.Store(!o.unhealthy)
	a.mux.HandleFunc("/{$}", a.root)
	a.mux.HandleFunc("/healthz", a.healthz)
	a.mux.HandleFunc("/cpu", a.cpu)
	a.mux.HandleFunc("/sleep", a.sleep)
	a.mux.HandleFunc("/inflight", a.inflightCount)
	return a, nil
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *app) root(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(a.who)))
	w.Write(a.who)
}

// inflightCount answers how many /cpu and /sleep requests are being served,
// so that a test can start a long request and know it reached the task.
func (a *app) inflightCount(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%d\n", a.inflight.Load())
}

func (a *app) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !a.healthy.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "unhealthy\n")
		return
	}
	io.WriteString(w, "ok\n")
}

// millis reads the ms query parameter, capped at max.
func millis(w http.ResponseWriter, r *http.Request, max int) (int, bool) {
	n, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || n < 0 {
		http.Error(w, "ms must be a non-negative number of milliseconds", http.StatusBadRequest)
		return 0, false
	}
	return min(n, max), true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// cpu burns ms milliseconds of CPU time on one thread and says how long that
// took: under a CPU limit it takes longer than ms.
func (a *app) cpu(w http.ResponseWriter, r *http.Request) {
	ms, ok := millis(w, r, MaxCPUMillis)
	if !ok {
		return
	}
	a.inflight.Add(1)
	defer a.inflight.Add(-1)
	start := time.Now()
	used := burn(r.Context(), time.Duration(ms)*time.Millisecond)
	writeJSON(w, map[string]any{
		"cpu_ms":     used.Milliseconds(),
		"elapsed_ms": time.Since(start).Milliseconds(),
	})
}

// burn spins until the calling thread used d of CPU time or ctx ends, and
// returns the CPU time used.
func burn(ctx context.Context, d time.Duration) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	clock := threadCPU
	if _, ok := threadCPU(); !ok {
		// No per-thread CPU clock: count wall time instead.
		t0 := time.Now()
		clock = func() (time.Duration, bool) { return time.Since(t0), true }
	}
	start, _ := clock()
	x := uint64(1)
	for i := 0; ; i++ {
		for j := 0; j < 20000; j++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		now, _ := clock()
		used := now - start
		if used >= d || (i%16 == 0 && ctx.Err() != nil) {
			sink.Store(x)
			return used
		}
	}
}

var sink atomic.Uint64 // keeps the burn loop from being optimised away

// threadCPU is the CPU time used by the calling OS thread.
func threadCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

func (a *app) sleep(w http.ResponseWriter, r *http.Request) {
	ms, ok := millis(w, r, MaxSleepMillis)
	if !ok {
		return
	}
	a.inflight.Add(1)
	defer a.inflight.Add(-1)
	start := time.Now()
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	}
	writeJSON(w, map[string]any{"slept_ms": time.Since(start).Milliseconds()})
}
