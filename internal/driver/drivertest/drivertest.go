// Package drivertest is the conformance suite for driver.Driver: every
// driver's tests call Run, which starts real programs (a small helper built
// from ./testprog) through the driver and checks the contract written in
// package driver. Driver-specific checks are switched on through Options.
//
// It is test support only: production code must not import it.
package drivertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/procfs"
)

// Limits are the resource limits a driver applied to a task, as read back
// from wherever the driver put them (cgroup files, container config).
type Limits struct {
	CPUs        float64
	MemoryBytes int64
	CPUSet      string
}

// Options switch on the parts of the suite that depend on the driver.
type Options struct {
	// Prepare, when set, amends every StartSpec the suite builds. The suite
	// puts host paths in specs (the helper binary in Command[0], a scratch
	// directory in Workdir and in the helper's arguments, LogDir); a
	// container driver sets Image here and must make those paths visible at
	// the same place inside the container.
	Prepare func(t *testing.T, spec *driver.StartSpec)

	// HostPIDs says pids seen by the task are host pids, so the suite can
	// check with /proc that a task's children die with it.
	HostPIDs bool

	// KillsEscapedChildren says Stop also kills processes that left the
	// task's process group (setsid), e.g. by tracking them in a cgroup.
	KillsEscapedChildren bool

	// AllowedExtraEnv lists variables a driver may add to the environment
	// (a container runtime adds HOSTNAME, PATH...). Anything else is an
	// error: the environment must be exactly the spec's.
	AllowedExtraEnv []string

	// Limits, when set, returns the limits the driver applied to the
	// running task h. The suite then starts tasks with CPU and memory
	// limits (and CPUSet, below) and compares. Nil skips the limit cases.
	Limits func(t *testing.T, h driver.Handle) (Limits, error)

	// CPUSet is a CPU list to pin a task to in the limits case; empty skips
	// pinning.
	CPUSet string

	// CPUSetUpdate is a second CPU list, different from CPUSet: the suite
	// moves a task pinned to CPUSet there with driver.CPUSetUpdater (when
	// the handle has it) and checks it took. Empty skips that case.
	CPUSetUpdate string

	// OOM says the driver enforces memory limits and reports
	// Exit.OOMKilled; the suite then runs a task that allocates past its
	// limit.
	OOM bool

	// CorruptState returns st changed so that it still names the task but
	// no longer matches it (the process driver adds one to the start time,
	// as a recycled pid would look). Nil skips that case.
	CorruptState func(st driver.State) driver.State

	// User, when set, is a StartSpec.User the suite runs a task as, and
	// WantUID and WantGID are the ids the task must then have. It needs
	// root.
	User             string
	WantUID, WantGID int

	// StopMargin is how much longer than its grace Stop may take. Default
	// 3s.
	StopMargin time.Duration
}

// Run runs the conformance suite against the driver newDriver makes.
// newDriver is called for each case, and again where a case simulates an
// agent restart (Recover), so it must return a fresh driver sharing the
// same host state; it registers its own cleanup with t.
func Run(t *testing.T, newDriver func(t *testing.T) driver.Driver, opts Options) {
	t.Helper()
	if opts.StopMargin == 0 {
		opts.StopMargin = 3 * time.Second
	}
	s := &suite{newDriver: newDriver, opts: opts, prog: HelperBinary(t)}
	cases := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"ExitCode", s.testExitCode},
		{"InvalidSpec", s.testInvalidSpec},
		{"EnvAndWorkdir", s.testEnvAndWorkdir},
		{"User", s.testUser},
		{"StopGraceful", s.testStopGraceful},
		{"StopKillsAfterGrace", s.testStopKillsAfterGrace},
		{"StopKillsChildren", s.testStopKillsChildren},
		{"WaitTwiceAndConcurrently", s.testWaitConcurrent},
		{"StopIdempotent", s.testStopIdempotent},
		{"StopAfterExit", s.testStopAfterExit},
		{"RecoverRunning", s.testRecoverRunning},
		{"RecoverDead", s.testRecoverDead},
		{"RecoverWrongIncarnation", s.testRecoverWrong},
		{"Logs", s.testLogs},
		{"LogsFollow", s.testLogsFollow},
		{"Limits", s.testLimits},
		{"UpdateCPUSet", s.testUpdateCPUSet},
		{"OOMKilled", s.testOOM},
		{"Stats", s.testStats},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t)
		})
	}
}

// HelperBinary builds ./testprog (statically, so it also runs inside a
// container) into a directory anyone may read, removed when t ends, and
// returns its path.
func HelperBinary(tb testing.TB) string {
	tb.Helper()
	dir := publicDir(tb, "berth-drivertest-bin-")
	out := filepath.Join(dir, "testprog")
	goBin, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("building the helper program needs the go command on PATH: %v", err)
	}
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/berth-project/berth/internal/driver/drivertest/testprog")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building the helper program: %v\n%s", err, b)
	}
	return out
}

// publicDir makes a temp directory that a task running as another user can
// enter and write (t.TempDir's parents are private), removed when t ends.
func publicDir(tb testing.TB, prefix string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		tb.Fatal(err)
	}
	return dir
}

type suite struct {
	newDriver func(t *testing.T) driver.Driver
	opts      Options
	prog      string
}

// env is one test's driver and scratch space.
type env struct {
	t       *testing.T
	s       *suite
	d       driver.Driver
	scratch string
	logDir  string
	n       int
}

func (s *suite) env(t *testing.T) *env {
	return &env{t: t, s: s, d: s.newDriver(t), scratch: publicDir(t, "berth-drivertest-"), logDir: t.TempDir()}
}

// path returns a file name in the scratch directory.
func (e *env) path(name string) string { return filepath.Join(e.scratch, name) }

// spec builds a StartSpec running the helper with the given actions.
func (e *env) spec(actions ...string) driver.StartSpec {
	e.n++
	sp := driver.StartSpec{
		TaskID:      fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", " ", "-").Replace(e.t.Name()), e.n),
		ServiceName: "drivertest",
		Slot:        e.n,
		Command:     append([]string{e.s.prog}, actions...),
		Env:         []string{"BERTH_TEST=1"},
		Workdir:     e.scratch,
		LogDir:      e.logDir,
		LogMaxBytes: 1 << 20,
	}
	if e.s.opts.Prepare != nil {
		e.s.opts.Prepare(e.t, &sp)
	}
	return sp
}

// start starts sp and stops the task when the test ends.
func (e *env) start(sp driver.StartSpec) driver.Handle {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := e.d.Start(ctx, sp)
	if err != nil {
		e.t.Fatalf("Start(%v): %v", sp.Command[1:], err)
	}
	e.cleanupStop(h)
	return h
}

func (e *env) cleanupStop(h driver.Handle) {
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.Stop(ctx, 0); err != nil {
			e.t.Errorf("cleanup Stop: %v", err)
		}
	})
}

// wait waits up to d for the task to end.
func (e *env) wait(h driver.Handle, d time.Duration) driver.Exit {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	ex, err := h.Wait(ctx)
	if err != nil {
		e.t.Fatalf("Wait: %v", err)
	}
	return ex
}

// waitFile waits for the helper to create name in the scratch directory.
func (e *env) waitFile(name string) {
	e.t.Helper()
	p := e.path(name)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(p); err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the task never created %s", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// touch creates name in the scratch directory.
func (e *env) touch(name string) {
	e.t.Helper()
	if err := os.WriteFile(e.path(name), nil, 0o666); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) readFile(name string) string {
	e.t.Helper()
	b, err := os.ReadFile(e.path(name))
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

func killedBy(ex driver.Exit, sig syscall.Signal) bool {
	return ex.Signal == int(sig) || ex.Code == 128+int(sig)
}

func (s *suite) testExitCode(t *testing.T) {
	e := s.env(t)
	for _, code := range []int{0, 3, 255} {
		sp := e.spec("print", "hi", "exit", strconv.Itoa(code))
		h := e.start(sp)
		st := h.State()
		if st.Driver != e.d.Name() || st.TaskID != sp.TaskID {
			t.Errorf("State() = %+v, want driver %q task %q", st, e.d.Name(), sp.TaskID)
		}
		ex := e.wait(h, 20*time.Second)
		if ex.Code != code || ex.Signal != 0 || ex.OOMKilled || ex.Err != nil {
			t.Errorf("exit %d: Wait = %+v", code, ex)
		}
	}
}

func (s *suite) testInvalidSpec(t *testing.T) {
	e := s.env(t)
	ctx := context.Background()
	bad := map[string]driver.StartSpec{}
	sp := e.spec()
	sp.Command = nil
	bad["no command"] = sp
	sp = e.spec()
	sp.Command = []string{filepath.Join(e.scratch, "does-not-exist")}
	bad["missing program"] = sp
	sp = e.spec("exit", "0")
	sp.Workdir = filepath.Join(e.scratch, "no-such-dir")
	bad["missing workdir"] = sp
	for name, sp := range bad {
		h, err := e.d.Start(ctx, sp)
		if err == nil {
			e.cleanupStop(h)
			t.Errorf("%s: Start succeeded", name)
			continue
		}
		if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s: Start err = %v, want ErrInvalid", name, err)
		}
	}
}

func (s *suite) testEnvAndWorkdir(t *testing.T) {
	e := s.env(t)
	work := publicDir(t, "berth-drivertest-work-")
	sp := e.spec("to", e.path("out"), "env", "pwd")
	sp.Env = []string{"A=1", "B=two words", "EMPTY=", "EQ=x=y"}
	sp.Workdir = work
	ex := e.wait(e.start(sp), 20*time.Second)
	if ex.Code != 0 {
		t.Fatalf("Wait = %+v", ex)
	}
	var gotEnv []string
	gotWd := ""
	for _, line := range strings.Split(strings.TrimSpace(e.readFile("out")), "\n") {
		if kv, ok := strings.CutPrefix(line, "env "); ok {
			k, _, _ := strings.Cut(kv, "=")
			if !slices.Contains(s.opts.AllowedExtraEnv, k) {
				gotEnv = append(gotEnv, kv)
			}
		}
		if wd, ok := strings.CutPrefix(line, "pwd "); ok {
			gotWd = wd
		}
	}
	slices.Sort(gotEnv)
	if !slices.Equal(gotEnv, sp.Env) {
		t.Errorf("environment = %q, want exactly %q", gotEnv, sp.Env)
	}
	if gotWd != work {
		t.Errorf("workdir = %q, want %q", gotWd, work)
	}
}

func (s *suite) testUser(t *testing.T) {
	if s.opts.User == "" {
		t.Skip("Options.User not set")
	}
	if os.Geteuid() != 0 {
		t.Skip("running as another user needs root")
	}
	e := s.env(t)
	sp := e.spec("to", e.path("out"), "ids")
	sp.User = s.opts.User
	sp.Workdir = "/"
	ex := e.wait(e.start(sp), 20*time.Second)
	if ex.Code != 0 {
		t.Fatalf("Wait = %+v", ex)
	}
	f := strings.Fields(e.readFile("out"))
	if len(f) < 3 || f[1] != strconv.Itoa(s.opts.WantUID) || f[2] != strconv.Itoa(s.opts.WantGID) {
		t.Fatalf("ids = %q, want uid %d gid %d", f, s.opts.WantUID, s.opts.WantGID)
	}
	if len(f) > 3 && slices.Contains(strings.Split(f[3], ","), "0") && s.opts.WantGID != 0 {
		t.Errorf("task kept the root group: %q", f)
	}
}

func (s *suite) testStopGraceful(t *testing.T) {
	e := s.env(t)
	h := e.start(e.spec("term-exit", "7", "touch", "ready", "forever"))
	e.waitFile("ready")
	begin := time.Now()
	if err := h.Stop(context.Background(), 10*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("Stop of a task that exits on SIGTERM took %v", took)
	}
	ex := e.wait(h, time.Second)
	if ex.Code != 7 || ex.Signal != 0 {
		t.Errorf("Wait = %+v, want code 7 from the SIGTERM handler (not SIGKILL)", ex)
	}
}

func (s *suite) testStopKillsAfterGrace(t *testing.T) {
	e := s.env(t)
	h := e.start(e.spec("ignore-term", "touch", "ready", "forever"))
	e.waitFile("ready")
	const grace = 700 * time.Millisecond
	begin := time.Now()
	if err := h.Stop(context.Background(), grace); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	took := time.Since(begin)
	if took < grace {
		t.Errorf("Stop returned after %v, before the grace of %v", took, grace)
	}
	if took > grace+s.opts.StopMargin {
		t.Errorf("Stop took %v, grace %v + margin %v", took, grace, s.opts.StopMargin)
	}
	ex := e.wait(h, time.Second)
	if !killedBy(ex, syscall.SIGKILL) {
		t.Errorf("Wait = %+v, want killed by SIGKILL", ex)
	}
}

func (s *suite) testStopKillsChildren(t *testing.T) {
	if !s.opts.HostPIDs {
		t.Skip("task pids are not host pids")
	}
	e := s.env(t)
	h := e.start(e.spec("child", e.path("child"), "child-setsid", e.path("escaped"), "touch", "ready", "forever"))
	e.waitFile("ready")
	e.waitFile("child")
	e.waitFile("escaped")
	type proc struct {
		name  string
		pid   int
		start uint64
	}
	var procs []proc
	for _, name := range []string{"child", "escaped"} {
		if name == "escaped" && !s.opts.KillsEscapedChildren {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(e.readFile(name)))
		if err != nil {
			t.Fatal(err)
		}
		start, err := procfs.StartTime(pid)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		procs = append(procs, proc{name, pid, start})
	}
	if !s.opts.KillsEscapedChildren {
		// Do not leave the escaped child behind for the next test.
		pid, err := strconv.Atoi(strings.TrimSpace(e.readFile("escaped")))
		if err == nil {
			if start, err := procfs.StartTime(pid); err == nil {
				t.Cleanup(func() {
					if ok, _ := procfs.Alive(pid, start); ok {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				})
			}
		}
	}
	if err := h.Stop(context.Background(), 200*time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// Stop has returned: the processes are dead (maybe zombies not yet
	// reaped by init, which Alive counts as dead).
	for _, p := range procs {
		if ok, err := procfs.Alive(p.pid, p.start); err != nil || ok {
			t.Errorf("%s (pid %d) still alive after Stop (err %v)", p.name, p.pid, err)
		}
	}
}

func (s *suite) testWaitConcurrent(t *testing.T) {
	e := s.env(t)
	h := e.start(e.spec("touch", "ready", "wait-file", e.path("quit"), "exit", "4"))
	e.waitFile("ready")

	// A Wait whose context ends returns promptly with the context's error.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	begin := time.Now()
	_, err := h.Wait(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(begin) > 5*time.Second {
		t.Fatalf("Wait with an expiring context = %v after %v", err, time.Since(begin))
	}

	var wg sync.WaitGroup
	exits := make([]driver.Exit, 5)
	errs := make([]error, 5)
	for i := range exits {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			exits[i], errs[i] = h.Wait(ctx)
		})
	}
	e.touch("quit")
	wg.Wait()
	for i := range exits {
		if errs[i] != nil || exits[i].Code != 4 {
			t.Errorf("concurrent Wait %d = %+v, %v; want code 4", i, exits[i], errs[i])
		}
	}
	if ex := e.wait(h, time.Second); ex.Code != 4 {
		t.Errorf("Wait after exit = %+v, want code 4", ex)
	}
}

func (s *suite) testStopIdempotent(t *testing.T) {
	e := s.env(t)
	h := e.start(e.spec("touch", "ready", "forever"))
	e.waitFile("ready")
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = h.Stop(context.Background(), time.Second) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Stop %d: %v", i, err)
		}
	}
	if err := h.Stop(context.Background(), time.Second); err != nil {
		t.Errorf("Stop after Stop: %v", err)
	}
	if ex := e.wait(h, time.Second); !killedBy(ex, syscall.SIGTERM) {
		t.Errorf("Wait = %+v, want killed by SIGTERM", ex)
	}
}

func (s *suite) testStopAfterExit(t *testing.T) {
	e := s.env(t)
	h := e.start(e.spec("exit", "2"))
	if ex := e.wait(h, 20*time.Second); ex.Code != 2 {
		t.Fatalf("Wait = %+v", ex)
	}
	begin := time.Now()
	if err := h.Stop(context.Background(), 10*time.Second); err != nil {
		t.Fatalf("Stop after exit: %v", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("Stop of an ended task took %v; it should not wait out the grace", took)
	}
	if ex := e.wait(h, time.Second); ex.Code != 2 {
		t.Errorf("Wait after Stop = %+v, want code 2", ex)
	}
}

// roundTrip saves st as the agent would and reads it back.
func roundTrip(t *testing.T, st driver.State) driver.State {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out driver.State
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *suite) testRecoverRunning(t *testing.T) {
	e := s.env(t)
	h := e.start(e.spec("touch", "ready", "wait-file", e.path("quit"), "exit", "5"))
	e.waitFile("ready")
	st := roundTrip(t, h.State())

	d2 := s.newDriver(t) // the agent restarted
	h2, err := d2.Recover(context.Background(), st)
	if err != nil {
		t.Fatalf("Recover of a running task: %v", err)
	}
	e.cleanupStop(h2)
	if got := h2.State(); got.TaskID != st.TaskID || got.Driver != st.Driver || got.PID != st.PID || got.ContainerID != st.ContainerID {
		t.Errorf("recovered State() = %+v, want %+v", got, st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = h2.Wait(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a recovered running task = %v, want it to block", err)
	}
	e.touch("quit")
	ex := e.wait(h2, 20*time.Second)
	if ex.Code != 5 && ex.Code != -1 {
		t.Errorf("recovered Wait = %+v, want code 5 (or -1: unknown)", ex)
	}
	if err := h2.Stop(context.Background(), time.Second); err != nil {
		t.Errorf("Stop of the recovered handle: %v", err)
	}
}

func (s *suite) testRecoverDead(t *testing.T) {
	e := s.env(t)
	ctx := context.Background()

	// Ended and released.
	h := e.start(e.spec("exit", "0"))
	e.wait(h, 20*time.Second)
	st := roundTrip(t, h.State())
	if err := h.Stop(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	if h2, err := s.newDriver(t).Recover(ctx, st); !errors.Is(err, driver.ErrGone) {
		if err == nil {
			e.cleanupStop(h2)
		}
		t.Errorf("Recover of an ended, stopped task: err = %v, want ErrGone", err)
	}

	// Ended but never stopped (the agent died first): Recover reports it
	// gone and cleans up.
	h = e.start(e.spec("exit", "0"))
	e.wait(h, 20*time.Second)
	st = roundTrip(t, h.State())
	if h2, err := s.newDriver(t).Recover(ctx, st); !errors.Is(err, driver.ErrGone) {
		if err == nil {
			e.cleanupStop(h2)
		}
		t.Errorf("Recover of an ended task: err = %v, want ErrGone", err)
	}
}

func (s *suite) testRecoverWrong(t *testing.T) {
	if s.opts.CorruptState == nil {
		t.Skip("Options.CorruptState not set")
	}
	e := s.env(t)
	h := e.start(e.spec("touch", "ready", "forever"))
	e.waitFile("ready")
	st := s.opts.CorruptState(roundTrip(t, h.State()))
	if h2, err := s.newDriver(t).Recover(context.Background(), st); !errors.Is(err, driver.ErrGone) {
		if err == nil {
			e.cleanupStop(h2)
		}
		t.Errorf("Recover with a state that does not match: err = %v, want ErrGone", err)
	}
}

func (s *suite) logger(t *testing.T, d driver.Driver) driver.Logger {
	l, ok := d.(driver.Logger)
	if !ok {
		t.Skipf("%s does not implement driver.Logger", d.Name())
	}
	return l
}

func readAllLines(t *testing.T, rc io.ReadCloser) []string {
	t.Helper()
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func (s *suite) testLogs(t *testing.T) {
	e := s.env(t)
	lg := s.logger(t, e.d)
	sp := e.spec("lines", "50", "eprint", "to stderr", "print", "last")
	h := e.start(sp)
	if ex := e.wait(h, 20*time.Second); ex.Code != 0 {
		t.Fatalf("Wait = %+v", ex)
	}
	ctx := context.Background()
	rc, err := lg.Logs(ctx, sp.TaskID, 3, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readAllLines(t, rc), []string{"line 50", "to stderr", "last"}; !slices.Equal(got, want) {
		t.Errorf("tail 3 = %q, want %q", got, want)
	}
	rc, err = lg.Logs(ctx, sp.TaskID, -1, false)
	if err != nil {
		t.Fatal(err)
	}
	all := readAllLines(t, rc)
	if len(all) != 52 || all[0] != "line 1" || all[51] != "last" {
		t.Errorf("all logs: %d lines %q..., want 52 from \"line 1\" to \"last\"", len(all), all[:min(3, len(all))])
	}
	rc, err = lg.Logs(ctx, sp.TaskID, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAllLines(t, rc); len(got) != 0 {
		t.Errorf("tail 0 = %q, want nothing", got)
	}
	if rc, err := lg.Logs(ctx, "no-such-task", -1, false); err == nil {
		rc.Close()
		t.Error("Logs of an unknown task succeeded")
	}
}

func (s *suite) testLogsFollow(t *testing.T) {
	e := s.env(t)
	lg := s.logger(t, e.d)
	sp := e.spec("print", "before", "touch", "ready", "wait-file", e.path("go"), "print", "after", "eprint", "err after", "forever")
	e.start(sp)
	e.waitFile("ready")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rc, err := lg.Logs(ctx, sp.TaskID, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(rc)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func(want string) {
		t.Helper()
		select {
		case got, ok := <-lines:
			if !ok || got != want {
				t.Fatalf("followed line = %q (open %v), want %q", got, ok, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no followed line; want %q", want)
		}
	}
	next("before")
	e.touch("go")
	next("after")
	next("err after")
	cancel()
	select {
	case _, ok := <-lines:
		if ok {
			t.Error("more lines after cancel")
		}
	case <-time.After(10 * time.Second):
		t.Error("following did not end when its context was cancelled")
	}
	rc.Close()
}

func (s *suite) testLimits(t *testing.T) {
	if s.opts.Limits == nil {
		t.Skip("Options.Limits not set")
	}
	e := s.env(t)
	sp := e.spec("touch", "ready", "forever")
	sp.CPUs = 0.5
	sp.MemoryBytes = 96 << 20
	sp.CPUSet = s.opts.CPUSet
	h := e.start(sp)
	got, err := s.opts.Limits(t, h)
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{CPUs: 0.5, MemoryBytes: 96 << 20, CPUSet: s.opts.CPUSet}
	if got != want {
		t.Errorf("applied limits = %+v, want %+v", got, want)
	}
	e.waitFile("ready")
	if err := h.Stop(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) testUpdateCPUSet(t *testing.T) {
	if s.opts.Limits == nil || s.opts.CPUSet == "" || s.opts.CPUSetUpdate == "" {
		t.Skip("Options.Limits, CPUSet or CPUSetUpdate not set")
	}
	e := s.env(t)
	sp := e.spec("touch", "ready", "forever")
	sp.CPUSet = s.opts.CPUSet
	h := e.start(sp)
	up, ok := h.(driver.CPUSetUpdater)
	if !ok {
		t.Skipf("%s handles do not implement driver.CPUSetUpdater", e.d.Name())
	}
	e.waitFile("ready")
	for _, want := range []string{s.opts.CPUSetUpdate, s.opts.CPUSet} {
		if err := up.UpdateCPUSet(want, ""); err != nil {
			t.Fatalf("UpdateCPUSet(%s): %v", want, err)
		}
		got, err := s.opts.Limits(t, h)
		if err != nil {
			t.Fatal(err)
		}
		if got.CPUSet != want {
			t.Errorf("after UpdateCPUSet(%s) the CPU set is %q", want, got.CPUSet)
		}
		if s.opts.HostPIDs {
			if allowed := cpusAllowed(t, h.State().PID); allowed != want {
				t.Errorf("after UpdateCPUSet(%s) the task's Cpus_allowed_list is %q", want, allowed)
			}
		}
	}
	if err := h.Stop(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := up.UpdateCPUSet(s.opts.CPUSetUpdate, ""); err == nil {
		t.Error("UpdateCPUSet after Stop succeeded")
	}
}

// cpusAllowed returns the Cpus_allowed_list of a host process.
func cpusAllowed(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Cpus_allowed_list in /proc/%d/status", pid)
	return ""
}

func (s *suite) testOOM(t *testing.T) {
	if !s.opts.OOM {
		t.Skip("Options.OOM not set")
	}
	e := s.env(t)
	sp := e.spec("alloc", strconv.Itoa(256<<20), "print", "survived", "forever")
	sp.MemoryBytes = 32 << 20
	h := e.start(sp)
	ex := e.wait(h, 60*time.Second)
	if !ex.OOMKilled || !killedBy(ex, syscall.SIGKILL) {
		t.Errorf("Wait = %+v, want OOMKilled by SIGKILL", ex)
	}

	// A task that stays under its limit is not reported as OOM-killed.
	sp = e.spec("alloc", strconv.Itoa(4<<20), "exit", "0")
	sp.MemoryBytes = 64 << 20
	if ex := e.wait(e.start(sp), 20*time.Second); ex.OOMKilled || ex.Code != 0 {
		t.Errorf("small task: Wait = %+v", ex)
	}
}

func (s *suite) testStats(t *testing.T) {
	e := s.env(t)
	h := e.start(e.spec("burn", "300ms", "alloc", strconv.Itoa(8<<20), "touch", "ready", "forever"))
	st, ok := h.(driver.Statser)
	if !ok {
		t.Skipf("%s handles do not implement driver.Statser", e.d.Name())
	}
	e.waitFile("ready")
	stats, err := st.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stats.CPUNanos < uint64(100*time.Millisecond) || stats.MemoryBytes < 4<<20 || stats.Pids == 0 || stats.Time.IsZero() {
		t.Errorf("Stats after burning 300ms of CPU and allocating 8MiB = %+v", stats)
	}
	if b, err := json.Marshal(stats); err != nil || !bytes.Contains(b, []byte("cpu_nanos")) {
		t.Errorf("Stats JSON = %s, %v", b, err)
	}
}
