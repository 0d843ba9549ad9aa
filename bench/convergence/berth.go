package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-project/berth/api"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// errTimeout is wrapped by every wait that ran out of time.
var errTimeout = errors.New("convergence: timed out")

// buildBerth builds ./cmd/berth of the module the working directory is in
// into dir and returns the binary's path.
func buildBerth(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("convergence: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("convergence: not inside the Berth module: run from the repository, or pass -berth")
	}
	bin := filepath.Join(dir, "berth")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/berth")
	cmd.Dir = filepath.Dir(gomod)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("convergence: go build ./cmd/berth: %w\n%s", err, b)
	}
	return bin, nil
}

// instance is a `berth up` process this program started, with what it needs
// to be cleaned up.
type instance struct {
	bin          string
	dataDir      string
	cgroupParent string
	logPath      string
	cmd          *exec.Cmd
	logFile      *os.File
	exited       chan struct{} // closed when the process has been waited for
	waitErr      error
	client       *api.Client
	log          *slog.Logger
}

// randomSuffix returns 8 random hex digits.
func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// startBerth starts `berth up` on a new data directory under tmp, deploying
// files, and waits until the API answers and the node is ready.
func startBerth(ctx context.Context, log *slog.Logger, bin, tmp, logLevel string, files []string, timeout time.Duration) (*instance, error) {
	in := &instance{
		bin:          bin,
		dataDir:      filepath.Join(tmp, "data"),
		cgroupParent: "berth-bench-" + randomSuffix(),
		logPath:      filepath.Join(tmp, "berth-up.log"),
		exited:       make(chan struct{}),
		log:          log,
	}
	f, err := os.Create(in.logPath)
	if err != nil {
		return nil, fmt.Errorf("convergence: berth log: %w", err)
	}
	in.logFile = f
	args := []string{"up", "--data-dir", in.dataDir, "--listen", "127.0.0.1:0",
		"--cgroup-parent", in.cgroupParent, "--log-level", logLevel,
		"--mesh-http", "127.0.0.1:0", "--mesh-https", "off", "--dns", "127.0.0.1:0"}
	args = append(args, files...)
	in.cmd = exec.Command(bin, args...)
	in.cmd.Stdout, in.cmd.Stderr = f, f
	// Its own process group: a Ctrl-C at the terminal reaches this program
	// only, which then stops Berth by pid.
	in.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := in.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("convergence: starting berth up: %w", err)
	}
	go func() {
		in.waitErr = in.cmd.Wait()
		close(in.exited)
	}()
	log.Info("berth up started", "pid", in.cmd.Process.Pid, "data_dir", in.dataDir, "cgroup_parent", in.cgroupParent)

	if err := in.waitReady(ctx, timeout); err != nil {
		return in, err
	}
	return in, nil
}

// pid returns the pid of the `berth up` process.
func (in *instance) pid() int { return in.cmd.Process.Pid }

// waitReady waits for the client files, an answering API and a ready node.
func (in *instance) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-in.exited:
			return fmt.Errorf("convergence: berth up exited during start-up (%v); see %s", in.waitErr, in.logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if in.client == nil {
			c, err := in.newClient()
			if err != nil {
				last = err
				continue
			}
			in.client = c
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		nodes, err := in.client.ListNodes(cctx)
		cancel()
		if err != nil {
			last = err
			continue
		}
		for _, n := range nodes {
			if n.Status == api.NodeReady {
				return nil
			}
		}
		last = errors.New("no ready node yet")
	}
	return fmt.Errorf("%w: waiting for berth up to be ready: %v", errTimeout, last)
}

// newClient reads the data directory's client files.
func (in *instance) newClient() (*api.Client, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(in.dataDir, name))
		if err == nil && len(bytes.TrimSpace(b)) == 0 {
			err = fmt.Errorf("%s is empty", name)
		}
		return b, err
	}
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
	line, _, _ := bytes.Cut(addr, []byte("\n"))
	return api.NewClient(api.ClientConfig{
		Addr:      strings.TrimSpace(string(line)),
		Token:     strings.TrimSpace(string(token)),
		CACertPEM: ca,
	})
}

// stop sends SIGTERM to `berth up` (which stops its tasks) and waits up to
// grace for it to exit, then kills it. It returns how long the graceful
// stop took.
func (in *instance) stop(grace time.Duration) (time.Duration, error) {
	select {
	case <-in.exited:
		return 0, nil
	default:
	}
	start := time.Now()
	if err := in.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("convergence: SIGTERM to berth up: %w", err)
	}
	select {
	case <-in.exited:
		return time.Since(start), nil
	case <-time.After(grace):
	}
	in.log.Warn("berth up did not stop in time; killing it", "pid", in.pid(), "grace", grace)
	_ = in.cmd.Process.Kill()
	<-in.exited
	return time.Since(start), fmt.Errorf("%w: berth up did not stop within %s", errTimeout, grace)
}

// cleanup removes what the instance left behind: processes still in its
// cgroups (tasks a killed `berth up` could not stop), the cgroups and the
// data directory. The process must have exited.
func (in *instance) cleanup() error {
	var errs []error
	if err := removeCgroupParent(in.log, in.cgroupParent); err != nil {
		errs = append(errs, err)
	}
	if in.logFile != nil {
		in.logFile.Close()
	}
	if err := os.RemoveAll(in.dataDir); err != nil {
		errs = append(errs, fmt.Errorf("convergence: removing the data dir: %w", err))
	}
	return errors.Join(errs...)
}

// cgroupDirs returns the directories named parent in every cgroup hierarchy
// (v1 controllers and the v2 mount), skipping the symbolic links that name
// co-mounted controllers twice.
func cgroupDirs(parent string) []string {
	var out []string
	entries, err := os.ReadDir(cgroupRoot)
	if err != nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		// Pure v2: the root is the hierarchy.
		if p := filepath.Join(cgroupRoot, parent); isDir(p) {
			out = append(out, p)
		}
		return out
	}
	for _, e := range entries {
		if !e.IsDir() || e.Type()&fs.ModeSymlink != 0 {
			continue
		}
		if p := filepath.Join(cgroupRoot, e.Name(), parent); isDir(p) {
			out = append(out, p)
		}
	}
	return out
}

func isDir(p string) bool {
	st, err := os.Lstat(p)
	return err == nil && st.IsDir()
}

// removeCgroupParent kills any process left in the groups under parent (they
// are tasks of the Berth instance this program started) and removes the
// groups, deepest first.
func removeCgroupParent(log *slog.Logger, parent string) error {
	var errs []error
	for _, root := range cgroupDirs(parent) {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs) // children before parents
		for _, d := range dirs {
			if pids := cgroupPIDs(d); len(pids) > 0 {
				log.Warn("killing processes left in a task cgroup", "cgroup", d, "pids", pids)
				for _, pid := range pids {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			if err := rmdirRetry(d, 5*time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func cgroupPIDs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil && n > 0 {
			pids = append(pids, n)
		}
	}
	return pids
}

// rmdirRetry removes a cgroup directory, retrying while killed processes
// leave it (EBUSY).
func rmdirRetry(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("convergence: removing cgroup %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cgroupCPU returns the CPU time used so far by all tasks under the cgroup
// parent, from cpuacct (v1) or cpu.stat (v2); ok is false when neither is
// readable (no task has been started yet).
func cgroupCPU(parent string) (d time.Duration, ok bool) {
	if b, err := os.ReadFile(filepath.Join(cgroupRoot, "cpuacct", parent, "cpuacct.usage")); err == nil {
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err == nil {
			return time.Duration(n), true
		}
	}
	for _, p := range []string{filepath.Join(cgroupRoot, "unified", parent, "cpu.stat"), filepath.Join(cgroupRoot, parent, "cpu.stat")} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					return time.Duration(n) * time.Microsecond, true
				}
			}
		}
	}
	return 0, false
}
