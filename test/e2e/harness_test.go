package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/testutil"
)

// pollInterval is how often eventually retries.
const pollInterval = 50 * time.Millisecond

// eventually calls fn until it returns nil and returns how long that took,
// or fails the test with fn's last error once timeout has passed.
func eventually(t testing.TB, timeout time.Duration, fn func() error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := fn()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not true after %v: %v", timeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// requireRoot skips t unless it runs as root.
func requireRoot(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t, "berth up puts every task in its own cgroups under /sys/fs/cgroup, which only root may create")
}

// publicTempDir returns a new directory that tasks, which run as nobody
// under a root Berth, may enter and write (t.TempDir and its parents are
// private to the test's user); it is removed when t ends.
func publicTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-e2e-public-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// helloSpec is the example spec, deployed as it is written.
func helloSpec() string { return filepath.Join(repoRoot, "examples", "hello.yaml") }

// berth is one `berth up` process run by a test, with its own data
// directory, API port and cgroup parent, and what the test learned about the
// task processes it runs.
type berth struct {
	t        *testing.T
	dataDir  string
	cgParent string
	files    []string // spec files given to `up`
	upArgs   []string // extra flags given to `up` (set before start)
	logPath  string   // stdout and stderr of every `up` run

	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd was waited for
	waitErr error
	client  *api.Client

	mu    sync.Mutex
	tasks map[int]uint64 // recorded task pids → their start times
}

// startBerth starts `berth up` with files and waits until its API answers.
// Everything it leaves behind is cleaned up when t ends.
func startBerth(t *testing.T, files ...string) *berth {
	t.Helper()
	return startBerthFlags(t, nil, files...)
}

// startBerthFlags is startBerth with extra flags for `up`.
func startBerthFlags(t *testing.T, flags []string, files ...string) *berth {
	t.Helper()
	requireRoot(t)
	b := &berth{
		t:        t,
		dataDir:  t.TempDir(),
		cgParent: "berth-e2e-" + randomHex(6),
		files:    files,
		upArgs:   flags,
		tasks:    map[int]uint64{},
	}
	b.logPath = filepath.Join(b.dataDir, "berth-up.log")
	t.Cleanup(b.cleanup)
	b.start()
	return b
}

// start runs `berth up` (again, after a stop) with the same flags and waits
// until the API answers. It returns when it did.
func (b *berth) start() time.Time {
	t := b.t
	t.Helper()
	// The old address would answer nothing: wait for the new one.
	if err := os.Remove(filepath.Join(b.dataDir, "api.addr")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "==== berth up started at %s\n", time.Now().Format(time.RFC3339Nano))
	// The mesh entrypoints and the DNS server get free ports (the defaults would collide
	// between tests run in parallel); a test that needs a fixed one passes
	// its own flag in upArgs, which comes later and wins. The chosen
	// addresses are in the data dir's mesh.addr.
	args := []string{"up", "--data-dir", b.dataDir, "--listen", "127.0.0.1:0", "--cgroup-parent", b.cgParent,
		"--mesh-http", "127.0.0.1:0", "--mesh-https", "127.0.0.1:0", "--dns", "127.0.0.1:0",
		// Port 53 on the container bridge and on 127.0.0.153 is one per
		// machine: the tests that need them ask for them (or their own).
		"--dns-bridge", "off", "--task-dns", "off"}
	args = append(args, b.upArgs...)
	args = append(args, b.files...)
	cmd := exec.Command(berthBin, args...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close() // the child has its own descriptor
	if err != nil {
		t.Fatalf("starting berth up: %v", err)
	}
	exited := make(chan struct{})
	b.cmd, b.exited, b.client = cmd, exited, nil
	go func() {
		b.waitErr = cmd.Wait()
		close(exited)
	}()
	eventually(t, 30*time.Second, func() error {
		if b.hasExited() {
			t.Fatalf("berth up exited while starting: %v\n%s", b.waitErr, b.logTail(40))
		}
		c, err := b.newClient()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := c.Info(ctx); err != nil {
			return err
		}
		b.client = c
		return nil
	})
	return time.Now()
}

// newClient builds an api client from the files `berth up` wrote.
func (b *berth) newClient() (*api.Client, error) {
	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(b.dataDir, name)) }
	addr, err := read("api.addr")
	if err != nil {
		return nil, err
	}
	token, err := read("admin.token")
	if err != nil {
		return nil, err
	}
	ca, err := read("ca.pem")
	if err != nil {
		return nil, err
	}
	return api.NewClient(api.ClientConfig{
		Addr:      strings.TrimSpace(string(addr)),
		Token:     strings.TrimSpace(string(token)),
		CACertPEM: ca,
	})
}

func (b *berth) hasExited() bool {
	select {
	case <-b.exited:
		return true
	default:
		return false
	}
}

// pid is the pid of the current `berth up` process.
func (b *berth) pid() int { return b.cmd.Process.Pid }

// signal sends sig to the `berth up` process if it has not been waited for
// (exec.Cmd signals through a pidfd, so never another process).
func (b *berth) signal(sig syscall.Signal) {
	if b.hasExited() {
		return
	}
	if err := b.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		b.t.Errorf("signalling berth up (pid %d) with %v: %v", b.pid(), sig, err)
	}
}

// waitExit waits up to timeout for `berth up` to exit and returns its exit
// code, or -1 and false if it is still running.
func (b *berth) waitExit(timeout time.Duration) (int, bool) {
	select {
	case <-b.exited:
		return b.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return -1, false
	}
}

// kill9 kills `berth up` with SIGKILL and waits for it.
func (b *berth) kill9() {
	b.t.Helper()
	b.signal(syscall.SIGKILL)
	if _, ok := b.waitExit(10 * time.Second); !ok {
		b.t.Fatalf("berth up (pid %d) still runs 10s after SIGKILL", b.pid())
	}
}

// cleanup stops `berth up`, kills any task process still alive (by recorded
// pid and start time, and any process left in this test's cgroup parent)
// and removes the cgroup parent.
func (b *berth) cleanup() {
	t := b.t
	if b.cmd != nil && !b.hasExited() {
		b.signal(syscall.SIGTERM)
		if _, ok := b.waitExit(30 * time.Second); !ok {
			t.Errorf("berth up (pid %d) still runs 30s after SIGTERM; killing it", b.pid())
			b.signal(syscall.SIGKILL)
			b.waitExit(10 * time.Second)
		}
	}
	b.mu.Lock()
	recorded := make(map[int]uint64, len(b.tasks))
	for pid, st := range b.tasks {
		recorded[pid] = st
	}
	b.mu.Unlock()
	for pid, st := range recorded {
		if ok, err := signalIfSame(pid, st, syscall.SIGKILL); err != nil {
			t.Errorf("killing leftover task process %d: %v", pid, err)
		} else if ok {
			t.Logf("cleanup: killed leftover task process %d", pid)
		}
	}
	// Processes in this test's own cgroup parent were started by this
	// test's Berth; a leftover one is recorded (pid and start time) and
	// killed like the others.
	for _, pid := range b.cgroupPIDs() {
		st, _, err := procStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		if !inCgroup(pid, b.cgParent) {
			continue
		}
		if ok, err := signalIfSame(pid, st, syscall.SIGKILL); err != nil {
			t.Errorf("killing process %d left in cgroup %s: %v", pid, b.cgParent, err)
		} else if ok {
			t.Logf("cleanup: killed process %d left in cgroup %s", pid, b.cgParent)
		}
	}
	if err := b.removeCgroups(10 * time.Second); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if t.Failed() {
		t.Logf("berth up output (last lines):\n%s", b.logTail(80))
	}
}

// logTail returns the last n lines `berth up` wrote.
func (b *berth) logTail(n int) string {
	data, err := os.ReadFile(b.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cliResult is what one CLI run printed and how it exited.
type cliResult struct {
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// cli runs the berth CLI against this Berth's data directory, with env
// added to a clean environment.
func (b *berth) cli(env []string, args ...string) cliResult {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBin, append([]string{"--data-dir", b.dataDir}, args...)...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var xe *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &xe):
		res.code = xe.ExitCode()
	default:
		b.t.Fatalf("running berth %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		b.t.Fatalf("berth %s did not finish in 30s", strings.Join(args, " "))
	}
	return res
}

// mustCLI runs the CLI and fails the test unless it exits 0.
func (b *berth) mustCLI(args ...string) string {
	b.t.Helper()
	res := b.cli(nil, args...)
	if res.code != 0 {
		b.t.Fatalf("berth %s: %v", strings.Join(args, " "), res)
	}
	return res.stdout
}

// psCLI runs `berth service ps NAME -o json` (with --all if all) and
// records the task pids it shows.
func (b *berth) psCLI(name string, all bool) ([]api.TaskView, error) {
	args := []string{"service", "ps", name, "-o", "json"}
	if all {
		args = append(args, "--all")
	}
	res := b.cli(nil, args...)
	if res.code != 0 {
		return nil, fmt.Errorf("berth %s: %v", strings.Join(args, " "), res)
	}
	var views []api.TaskView
	if err := json.Unmarshal([]byte(res.stdout), &views); err != nil {
		return nil, fmt.Errorf("service ps -o json printed %q: %w", res.stdout, err)
	}
	b.record(views)
	return views, nil
}

// psAPI lists a service's tasks through the Go client, as TaskViews, and
// records their pids.
func (b *berth) psAPI(name string, all bool) ([]api.TaskView, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tasks, err := b.client.ServiceTasks(ctx, name, all)
	if err != nil {
		return nil, err
	}
	views := make([]api.TaskView, len(tasks))
	for i, t := range tasks {
		views[i] = api.NewTaskView(t)
	}
	b.record(views)
	return views, nil
}

// record notes the pid and start time of every task process shown that
// runs in this test's cgroup parent, so that cleanup can kill it safely.
func (b *berth) record(views []api.TaskView) {
	for _, v := range views {
		if v.PID <= 0 {
			continue
		}
		b.mu.Lock()
		_, known := b.tasks[v.PID]
		b.mu.Unlock()
		if known {
			continue
		}
		st, state, err := procStat(v.PID)
		if err != nil || state == 'Z' || !inCgroup(v.PID, b.cgParent) {
			continue
		}
		b.mu.Lock()
		b.tasks[v.PID] = st
		b.mu.Unlock()
	}
}

// startTimeOf returns the recorded start time of a task pid.
func (b *berth) startTimeOf(pid int) (uint64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, ok := b.tasks[pid]
	return st, ok
}

// alive reports whether the recorded task process pid still runs.
func (b *berth) alive(pid int) bool {
	st, ok := b.startTimeOf(pid)
	return ok && processAlive(pid, st)
}

// killTask sends SIGKILL to a recorded task process.
func (b *berth) killTask(pid int) {
	b.t.Helper()
	st, ok := b.startTimeOf(pid)
	if !ok {
		b.t.Fatalf("task pid %d was never recorded", pid)
	}
	sent, err := signalIfSame(pid, st, syscall.SIGKILL)
	if err != nil || !sent {
		b.t.Fatalf("SIGKILL to task process %d: sent %v, err %v", pid, sent, err)
	}
}

// waitConverged waits until name has exactly n live tasks, in slots 1..n,
// all running and healthy with a live recorded process, and returns them by
// slot (index 0 unused).
func (b *berth) waitConverged(name string, n int, timeout time.Duration) ([]api.TaskView, time.Duration) {
	b.t.Helper()
	var out []api.TaskView
	took := eventually(b.t, timeout, func() error {
		views, err := b.psAPI(name, false)
		if err != nil {
			return err
		}
		bySlot, err := b.converged(views, n)
		if err != nil {
			return err
		}
		out = bySlot
		return nil
	})
	return out, took
}

// converged checks that views are exactly n healthy running tasks in slots
// 1..n whose processes run, and returns them by slot.
func (b *berth) converged(views []api.TaskView, n int) ([]api.TaskView, error) {
	if len(views) != n {
		return nil, fmt.Errorf("%d live tasks, want %d: %s", len(views), n, summary(views))
	}
	bySlot := make([]api.TaskView, n+1)
	for _, v := range views {
		switch {
		case v.Slot < 1 || v.Slot > n || bySlot[v.Slot].ID != "":
			return nil, fmt.Errorf("unexpected or repeated slot %d: %s", v.Slot, summary(views))
		case v.State != api.TaskRunning || v.DesiredState != api.TaskRunning || v.Health != api.HealthHealthy:
			return nil, fmt.Errorf("task %s (slot %d) is %s/%s/%s", v.ID, v.Slot, v.State, v.DesiredState, v.Health)
		case v.PID <= 0 || !b.alive(v.PID):
			return nil, fmt.Errorf("task %s (slot %d) has no live process (pid %d)", v.ID, v.Slot, v.PID)
		case v.Ports["http"] <= 0:
			return nil, fmt.Errorf("task %s (slot %d) has no http port: %v", v.ID, v.Slot, v.Ports)
		}
		bySlot[v.Slot] = v
	}
	return bySlot, nil
}

// summary is a short description of tasks for error messages.
func summary(views []api.TaskView) string {
	parts := make([]string, len(views))
	for i, v := range views {
		parts[i] = fmt.Sprintf("%d:%s:%s/%s/%s:pid=%d", v.Slot, shortID(v.ID), v.State, v.DesiredState, v.Health, v.PID)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// cgroupParentDirs returns the directories of this test's cgroup parent in
// every mounted hierarchy (v1: one per controller; v2: the unified one).
func (b *berth) cgroupParentDirs() []string {
	var dirs []string
	for _, pattern := range []string{"/sys/fs/cgroup/*/" + b.cgParent, "/sys/fs/cgroup/" + b.cgParent} {
		m, _ := filepath.Glob(pattern)
		for _, d := range m {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}

// taskCgroups returns the task groups (directories below the parent) that
// exist in any hierarchy, as "hierarchy/parent/task" paths.
func (b *berth) taskCgroups() []string {
	var out []string
	for _, d := range b.cgroupParentDirs() {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() {
				out = append(out, filepath.Join(d, e.Name()))
			}
		}
	}
	sort.Strings(out)
	return out
}

// cgroupPIDs returns every process in the cgroup parent or below it, in
// any hierarchy, read from the cgroup.procs files.
func (b *berth) cgroupPIDs() []int {
	seen := map[int]bool{}
	for _, d := range b.cgroupParentDirs() {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	out := make([]int, 0, len(seen))
	for pid := range seen {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

// removeCgroups removes the cgroup parent and everything below it in every
// hierarchy, retrying while groups are still busy.
func (b *berth) removeCgroups(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for _, d := range b.cgroupParentDirs() {
			var dirs []string
			_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
				if err == nil && e.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- { // children first
				if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
					left = append(left, fmt.Sprintf("%s: %v", dirs[i], err))
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cannot remove cgroups: %s", strings.Join(left, "; "))
		}
		time.Sleep(pollInterval)
	}
}

// procStat reads a process's start time (clock ticks after boot) and state
// letter from /proc/<pid>/stat.
func procStat(pid int) (start uint64, state byte, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22: starttime
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: starttime: %w", pid, err)
	}
	return start, f[0][0], nil
}

// processAlive reports whether pid is still the process that started at
// start, and is not a zombie.
func processAlive(pid int, start uint64) bool {
	st, state, err := procStat(pid)
	return err == nil && st == start && state != 'Z' && state != 'X'
}

// inCgroup reports whether pid is in a group at or below parent in some
// hierarchy.
func inCgroup(pid int, parent string) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		// hierarchy-id:controllers:/path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[2] == "/"+parent || strings.HasPrefix(parts[2], "/"+parent+"/")) {
			return true
		}
	}
	return false
}

// signalIfSame sends sig to pid only if it is still the process that
// started at start. os.FindProcess holds a pidfd on Linux, so once the start
// time matched, the signal reaches that process or none, even if the pid is
// reused meanwhile. It reports whether the signal was sent.
func signalIfSame(pid int, start uint64, sig syscall.Signal) (bool, error) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false, nil
	}
	defer p.Release()
	if st, state, err := procStat(pid); err != nil || st != start || state == 'Z' {
		return false, nil // gone, reaped and reused, or dead
	}
	if err := p.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// cleanEnv is this process's environment without BERTH_* variables, which
// would point the CLI at some other Berth.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BERTH_") {
			out = append(out, kv)
		}
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
