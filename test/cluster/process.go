package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// BinEnv names an environment variable that, when set, gives the berth
// binary to use instead of building one (for running the tests against a
// release build, or while the tree does not build).
const BinEnv = "BERTH_CLUSTER_BIN"

// BuildBerth builds the berth binary of the module that holds the working
// directory into a new temporary directory and returns its path and a
// function that removes the directory. TestMain functions call it once.
// When $BERTH_CLUSTER_BIN is set, it returns that binary instead.
func BuildBerth() (bin string, cleanup func(), err error) {
	if b := os.Getenv(BinEnv); b != "" {
		abs, err := filepath.Abs(b)
		if err != nil {
			return "", nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", nil, fmt.Errorf("cluster: $%s: %w", BinEnv, err)
		}
		return abs, func() {}, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "berth-cluster-bin-")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "berth")
	build := exec.Command("go", "build", "-o", bin, "./cmd/berth")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("cluster: building berth: %w", err)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cluster: no go.mod above the working directory")
		}
		dir = parent
	}
}

// APIPort is the port managers listen on in the tests: every manager has
// its own address, so the default port cannot collide.
const APIPort = "7443"

// Process is one Berth process (`berth server` or `berth agent`) running on
// a Host, with its own data directory and, for an agent, its own cgroup
// parent.
type Process struct {
	t testing.TB
	// Host is where the process runs.
	Host *Host
	// DataDir is the process's --data-dir.
	DataDir string
	// CgroupParent is an agent's --cgroup-parent ("" for a manager).
	CgroupParent string
	// Args are the arguments the process was started with (after the
	// binary), kept for Restart.
	Args []string

	bin     string
	logPath string
	cmd     *exec.Cmd
	env     []string // added to the clean environment
	exited  chan struct{}
	waitErr error
}

// StartServer starts `berth server` on h, listening on h's address, with
// extra flags appended, and waits until its API answers. The manager's
// data directory is fresh unless dataDir is given.
func StartServer(t testing.TB, bin string, h *Host, dataDir string, extra ...string) *Process {
	t.Helper()
	return startServer(t, bin, h, dataDir, nil, extra...)
}

// StartJoinedServer starts `berth server` on h as a further manager of the
// cluster of the manager at joinURL, with the manager join token token (in
// BERTH_JOIN_TOKEN, so that it does not show in ps), its embedded etcd
// member's peers on h's address and port EtcdPeerPort, and waits until its
// API answers. A restart keeps the arguments: a manager that has joined
// ignores --join.
func StartJoinedServer(t testing.TB, bin string, h *Host, joinURL, token string, extra ...string) *Process {
	t.Helper()
	args := append([]string{"--etcd-peer-port", EtcdPeerPort, "--join", joinURL}, extra...)
	return startServer(t, bin, h, "", []string{"BERTH_JOIN_TOKEN=" + token}, args...)
}

// EtcdPeerPort is the etcd peer port of the managers in the tests (the
// default of `berth server`, given explicitly).
const EtcdPeerPort = "7444"

func startServer(t testing.TB, bin string, h *Host, dataDir string, env []string, extra ...string) *Process {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	p := &Process{t: t, Host: h, DataDir: dataDir, bin: bin}
	p.Args = append([]string{"--data-dir", dataDir, "server", "--listen", h.IP + ":" + APIPort,
		"--advertise", h.IP, "--log-level", "debug"}, extra...)
	t.Cleanup(p.cleanup)
	p.start(env...)
	p.WaitServing(30 * time.Second)
	return p
}

// WaitServing waits until a manager process's API answers, failing t if
// the process exits first.
func (p *Process) WaitServing(timeout time.Duration) {
	t, h := p.t, p.Host
	t.Helper()
	eventually(t, timeout, func() error {
		if p.Exited() {
			t.Fatalf("berth server on %s exited while starting: %v\n%s", h.Name, p.waitErr, p.LogTail(40))
		}
		c, err := p.Client()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = c.Info(ctx)
		return err
	})
}

// ManagerURL is the API address of a manager process.
func (p *Process) ManagerURL() string { return "https://" + p.Host.IP + ":" + APIPort }

// Client returns an admin API client for a manager process, made from the
// files it wrote into its data directory, talking to its address on the
// bridge.
func (p *Process) Client() (*api.Client, error) {
	token, err := os.ReadFile(filepath.Join(p.DataDir, "admin.token"))
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(filepath.Join(p.DataDir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	return api.NewClient(api.ClientConfig{Addr: p.ManagerURL(), Token: strings.TrimSpace(string(token)), CACertPEM: ca})
}

// StartAgent starts `berth agent` on h for the manager m, with h's name as
// host name, h's address, a cgroup parent and a port range of its own, and
// extra flags appended. It connects in local mode: the admin token (in
// BERTH_TOKEN) and the cluster CA file from m's data directory (see
// StartJoinedAgent for the way workers join). It does not wait for the
// node to register (see Cluster.WaitNodesReady).
func StartAgent(t testing.TB, bin string, h *Host, m *Process, extra ...string) *Process {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(m.DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{t: t, Host: h, DataDir: t.TempDir(), bin: bin, CgroupParent: "berth-cluster-" + randomHex(5)}
	p.Args = append([]string{"--data-dir", p.DataDir, "agent", "--addr", m.ManagerURL(),
		"--ca", filepath.Join(m.DataDir, "ca.pem"), "--hostname", h.Name, "--address", h.IP,
		"--cgroup-parent", p.CgroupParent, "--port-range", "20000-29999",
		"--mesh-http", "127.0.0.1:0", "--mesh-https", "127.0.0.1:0", "--dns", "127.0.0.1:0",
		"--stop-tasks", "--log-level", "debug"}, extra...)
	t.Cleanup(p.cleanup)
	p.start("BERTH_TOKEN=" + strings.TrimSpace(string(token)))
	return p
}

// StartJoinedAgent starts `berth agent` on h the way a worker joins:
// `--join joinURL` with the worker join token (in BERTH_JOIN_TOKEN), no
// admin token and no CA file — the agent pins the CA from the token, gets a
// node certificate and from then on speaks mutual TLS, failing over between
// the managers it learns. Host name, address, cgroup parent, port range and
// extra flags are as for StartAgent. A restart keeps the arguments: an agent
// that has joined ignores --join.
func StartJoinedAgent(t testing.TB, bin string, h *Host, joinURL, token string, extra ...string) *Process {
	t.Helper()
	p := &Process{t: t, Host: h, DataDir: t.TempDir(), bin: bin, CgroupParent: "berth-cluster-" + randomHex(5)}
	p.Args = append([]string{"--data-dir", p.DataDir, "agent", "--join", joinURL,
		"--hostname", h.Name, "--address", h.IP,
		"--cgroup-parent", p.CgroupParent, "--port-range", "20000-29999",
		"--mesh-http", "127.0.0.1:0", "--mesh-https", "127.0.0.1:0", "--dns", "127.0.0.1:0",
		"--stop-tasks", "--log-level", "debug"}, extra...)
	t.Cleanup(p.cleanup)
	p.start("BERTH_JOIN_TOKEN=" + token)
	return p
}

// start runs the process with its Args and env added to a clean
// environment.
func (p *Process) start(env ...string) {
	t := p.t
	t.Helper()
	p.env = env
	if p.logPath == "" {
		p.logPath = filepath.Join(p.DataDir, "berth.log")
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "==== started at %s: berth %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.Args, " "))
	cmd := p.Host.Command(p.bin, p.Args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close()
	if err != nil {
		t.Fatalf("starting berth on %s: %v", p.Host.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		p.waitErr = cmd.Wait()
		close(exited)
	}()
}

// PID is the process id (nsenter execs berth in place).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process if it has not been waited for. exec.Cmd
// signals through a pidfd, so never another process.
func (p *Process) Signal(sig syscall.Signal) {
	if p.Exited() {
		return
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("signalling berth (pid %d) on %s with %v: %v", p.PID(), p.Host.Name, sig, err)
	}
}

// WaitExit waits up to timeout for the process to end and reports whether
// it did.
func (p *Process) WaitExit(timeout time.Duration) bool {
	select {
	case <-p.exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Kill sends SIGKILL and waits for the process to end. Its tasks, if it is
// an agent, keep running, as they would on a machine whose agent crashed.
func (p *Process) Kill() {
	p.t.Helper()
	p.Signal(syscall.SIGKILL)
	if !p.WaitExit(10 * time.Second) {
		p.t.Fatalf("berth (pid %d) on %s still runs 10s after SIGKILL", p.PID(), p.Host.Name)
	}
}

// Restart starts the process again with the same arguments and
// environment, after it ended.
func (p *Process) Restart() {
	p.t.Helper()
	if !p.Exited() {
		p.t.Fatalf("berth on %s still runs", p.Host.Name)
	}
	p.start(p.env...)
}

// LogTail returns the last n lines the process wrote.
func (p *Process) LogTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TaskPIDs returns the processes in the agent's task cgroups: the task
// processes it started, whether or not it still runs.
func (p *Process) TaskPIDs() []int {
	if p.CgroupParent == "" {
		return nil
	}
	return cgroupPIDs(p.CgroupParent)
}

// cleanup stops the process (SIGTERM, then SIGKILL), kills what is left in
// its cgroup parent and removes the cgroups.
func (p *Process) cleanup() {
	t := p.t
	if p.cmd != nil && !p.Exited() {
		p.Signal(syscall.SIGTERM)
		if !p.WaitExit(30 * time.Second) {
			// A graceful stop that hangs is a bug of the agent, not of
			// what these tests check: report it loudly, without failing.
			t.Logf("WARNING: berth (pid %d) on %s still runs 30s after SIGTERM; killing it", p.PID(), p.Host.Name)
			p.Signal(syscall.SIGKILL)
			p.WaitExit(10 * time.Second)
		}
	}
	if p.CgroupParent != "" {
		// Every process in this agent's cgroup parent was started by it
		// (the parent's name is random): kill what is left, checked by
		// start time so a reused pid is never hit.
		for _, pid := range cgroupPIDs(p.CgroupParent) {
			st, _, err := procStat(pid)
			if err != nil || !inCgroup(pid, p.CgroupParent) {
				continue
			}
			if ok, err := signalIfSame(pid, st, syscall.SIGKILL); err != nil {
				t.Errorf("killing process %d left in cgroup %s: %v", pid, p.CgroupParent, err)
			} else if ok {
				t.Logf("cleanup: killed process %d left in cgroup %s", pid, p.CgroupParent)
			}
		}
		if err := removeCgroups(p.CgroupParent, 10*time.Second); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	if t.Failed() {
		t.Logf("berth on %s (%s), last lines:\n%s", p.Host.Name, p.Host.IP, p.LogTail(60))
	}
}

// Eventually calls fn until it returns nil and returns how long that took,
// or fails t with fn's last error once timeout has passed.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) time.Duration {
	t.Helper()
	return eventually(t, timeout, fn)
}

// pollInterval is how often eventually retries.
const pollInterval = 50 * time.Millisecond

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

// cgroupDirs returns the directories of a cgroup parent in every mounted
// hierarchy (v1: one per controller; v2: the unified one).
func cgroupDirs(parent string) []string {
	var dirs []string
	for _, pattern := range []string{"/sys/fs/cgroup/*/" + parent, "/sys/fs/cgroup/" + parent} {
		m, _ := filepath.Glob(pattern)
		for _, d := range m {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}

// cgroupPIDs returns every process at or below a cgroup parent in any
// hierarchy.
func cgroupPIDs(parent string) []int {
	seen := map[int]bool{}
	for _, d := range cgroupDirs(parent) {
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
					if _, state, err := procStat(pid); err == nil && state != 'Z' {
						seen[pid] = true
					}
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

// removeCgroups removes a cgroup parent and everything below it in every
// hierarchy, retrying while groups are still busy.
func removeCgroups(parent string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for _, d := range cgroupDirs(parent) {
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
	i := bytes.LastIndexByte(data, ')') // the name may hold spaces and parentheses
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

// ProcessAlive reports whether pid runs, is not a zombie, and started at
// start (as procStat reads it), so that a reused pid does not count.
func ProcessAlive(pid int, start uint64) bool {
	st, state, err := procStat(pid)
	return err == nil && st == start && state != 'Z' && state != 'X'
}

// StartTime returns pid's start time, for ProcessAlive.
func StartTime(pid int) (uint64, error) {
	st, _, err := procStat(pid)
	return st, err
}

// inCgroup reports whether pid is in a group at or below parent in some
// hierarchy.
func inCgroup(pid int, parent string) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[2] == "/"+parent || strings.HasPrefix(parts[2], "/"+parent+"/")) {
			return true
		}
	}
	return false
}

// signalIfSame sends sig to pid only if it is still the process that
// started at start; os.FindProcess holds a pidfd, so the signal reaches
// that process or none.
func signalIfSame(pid int, start uint64, sig syscall.Signal) (bool, error) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false, nil
	}
	defer p.Release()
	if st, state, err := procStat(pid); err != nil || st != start || state == 'Z' {
		return false, nil
	}
	if err := p.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// cleanEnv is this process's environment without BERTH_* variables.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BERTH_") {
			out = append(out, kv)
		}
	}
	return out
}
