package process_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/cgroups"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/driver/drivertest"
	"github.com/berth-project/berth/internal/driver/process"
	"github.com/berth-project/berth/internal/procfs"
	"github.com/berth-project/berth/internal/testutil"
	"github.com/berth-project/berth/internal/topology"
)

// testLogger writes the driver's log to the test's output until the test
// ends (goroutines may log later; that is dropped).
func testLogger(t *testing.T) *slog.Logger {
	w := &safeWriter{w: t.Output()}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type safeWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (s *safeWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return len(p), nil
	}
	return s.w.Write(p)
}

func (s *safeWriter) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// cgroupParent returns a unique parent group and, when the test ends,
// removes it and checks nothing is left in any hierarchy.
func cgroupParent(t *testing.T, h *cgroups.Hierarchy) string {
	t.Helper()
	parent := fmt.Sprintf("berth-test-%d-%x", os.Getpid(), rand.Uint32())
	if h == nil {
		return parent
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var left []string
		for _, c := range h.Controllers() {
			mnt := h.Mountpoint(c)
			_ = filepath.WalkDir(filepath.Join(mnt, parent), func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() && p != filepath.Join(mnt, parent) && !slices.Contains(left, p) {
					left = append(left, p)
				}
				return nil
			})
		}
		if len(left) > 0 {
			t.Errorf("task cgroups left behind: %v", left)
		}
		if err := h.RemoveTree(ctx, parent); err != nil {
			t.Errorf("removing %s: %v", parent, err)
		}
	})
	return parent
}

func needRoot(t *testing.T) {
	testutil.RequireRoot(t, "it creates cgroups")
}

func cgroupOf(t *testing.T, h *cgroups.Hierarchy, st driver.State) *cgroups.Cgroup {
	t.Helper()
	var ex struct {
		Cgroup string `json:"cgroup"`
	}
	if err := json.Unmarshal(st.Extra, &ex); err != nil {
		t.Fatal(err)
	}
	cg, err := h.Open(ex.Cgroup)
	if err != nil {
		t.Fatal(err)
	}
	return cg
}

func corruptStart(st driver.State) driver.State {
	st.StartTime++
	return st
}

// TestConformance runs the suite with the cgroups this machine has (v1 here).
func TestConformance(t *testing.T) {
	needRoot(t)
	h, err := cgroups.Discover()
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	parent := cgroupParent(t, h)
	opts := drivertest.Options{
		HostPIDs:             true,
		KillsEscapedChildren: true,
		OOM:                  true,
		CorruptState:         corruptStart,
		User:                 "nobody",
		WantUID:              65534,
		WantGID:              65534,
		Limits: func(t *testing.T, hd driver.Handle) (drivertest.Limits, error) {
			lim, err := cgroupOf(t, h, hd.State()).Limits()
			return drivertest.Limits{CPUs: lim.CPUs, MemoryBytes: lim.MemoryBytes, CPUSet: lim.CPUSet}, err
		},
	}
	if slices.Contains(h.Controllers(), cgroups.CPUSet) {
		opts.CPUSet = "0"
		// The update case needs a second CPU.
		if all, err := os.ReadFile(filepath.Join(h.Mountpoint(cgroups.CPUSet), "cpuset.cpus")); err == nil && strings.TrimSpace(string(all)) != "0" {
			opts.CPUSetUpdate = strings.TrimSpace(string(all))
		}
	}
	drivertest.Run(t, func(t *testing.T) driver.Driver {
		d, err := process.New(process.Config{CgroupParent: parent, Cgroups: h, Logger: testLogger(t), LogCheckInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}, opts)
}

// TestConformanceV2 runs the suite on the unified hierarchy of a hybrid
// machine: no controllers there, but tasks are cloned into their group
// (CLONE_INTO_CGROUP) and Stop kills the group through it.
func TestConformanceV2(t *testing.T) {
	needRoot(t)
	h, err := cgroups.Discover()
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	if h.Version() == cgroups.V1 {
		if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err != nil {
			t.Skip("v1 without a unified mount at /sys/fs/cgroup/unified")
		}
		if h, err = cgroups.NewV2("/sys/fs/cgroup/unified"); err != nil {
			t.Fatal(err)
		}
	}
	parent := cgroupParent(t, h)
	drivertest.Run(t, func(t *testing.T) driver.Driver {
		d, err := process.New(process.Config{CgroupParent: parent, Cgroups: h, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}, drivertest.Options{
		HostPIDs:             true,
		KillsEscapedChildren: true,
		CorruptState:         corruptStart,
		User:                 "65534:65534",
		WantUID:              65534,
		WantGID:              65534,
	})
}

// TestConformanceNoCgroups runs the suite without cgroups: no limits, and
// children that leave the process group are out of reach.
func TestConformanceNoCgroups(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) driver.Driver {
		d, err := process.New(process.Config{NoCgroups: true, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}, drivertest.Options{HostPIDs: true, CorruptState: corruptStart})
}

// fixture is a driver plus the helper program, for the driver-specific
// tests below.
type fixture struct {
	t    *testing.T
	d    *process.Driver
	prog string
	dir  string
	h    *cgroups.Hierarchy
}

func newFixture(t *testing.T, cfg process.Config) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), prog: drivertest.HelperBinary(t)}
	if !cfg.NoCgroups && os.Geteuid() == 0 {
		if h, err := cgroups.Discover(); err == nil {
			f.h = h
			cfg.Cgroups = h
			cfg.CgroupParent = cgroupParent(t, h)
		}
	}
	if f.h == nil {
		cfg.NoCgroups = true
	}
	cfg.Logger = testLogger(t)
	d, err := process.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.d = d
	return f
}

func (f *fixture) spec(id string, actions ...string) driver.StartSpec {
	return driver.StartSpec{TaskID: id, Command: append([]string{f.prog}, actions...), Workdir: f.dir, LogDir: f.dir}
}

func (f *fixture) start(sp driver.StartSpec) driver.Handle {
	f.t.Helper()
	h, err := f.d.Start(context.Background(), sp)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		if err := h.Stop(context.Background(), 0); err != nil {
			f.t.Errorf("cleanup Stop: %v", err)
		}
	})
	return h
}

func (f *fixture) wait(h driver.Handle) driver.Exit {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ex, err := h.Wait(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return ex
}

func TestStartRejects(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{NoCgroups: true})
	ctx := context.Background()
	mod := func(m func(*driver.StartSpec)) driver.StartSpec {
		sp := f.spec("t1", "exit", "0")
		m(&sp)
		return sp
	}
	rejects := map[string]driver.StartSpec{
		"relative command":       mod(func(s *driver.StartSpec) { s.Command[0] = "testprog" }),
		"slash in task id":       mod(func(s *driver.StartSpec) { s.TaskID = "a/b" }),
		"dot-dot task id":        mod(func(s *driver.StartSpec) { s.TaskID = ".." }),
		"empty task id":          mod(func(s *driver.StartSpec) { s.TaskID = "" }),
		"unknown user":           mod(func(s *driver.StartSpec) { s.User = "no-such-user-berth" }),
		"uid without passwd":     mod(func(s *driver.StartSpec) { s.User = "48213" }),
		"limits without cgroups": mod(func(s *driver.StartSpec) { s.MemoryBytes = 64 << 20 }),
		"cpuset without cgroups": mod(func(s *driver.StartSpec) { s.CPUSet = "0" }),
		"negative cpus":          mod(func(s *driver.StartSpec) { s.CPUs = -1 }),
		"not executable":         mod(func(s *driver.StartSpec) { s.Command[0] = "/etc/passwd" }),
	}
	if cpus, _ := topology.Parse(selfCPUs(t)); cpus.Len() == 1 && cpus.Contains(0) {
		delete(rejects, "cpuset without cgroups") // CPU 0 is the whole machine: no limit
	}
	for name, sp := range rejects {
		h, err := f.d.Start(ctx, sp)
		if err == nil {
			_ = h.Stop(ctx, 0)
			t.Errorf("%s: Start succeeded", name)
		} else if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	// One task id runs once at a time.
	h := f.start(f.spec("dup", "forever"))
	if _, err := f.d.Start(ctx, f.spec("dup", "forever")); err == nil {
		t.Error("second Start of a running task id succeeded")
	}
	if err := h.Stop(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	h2 := f.start(f.spec("dup", "exit", "0"))
	if ex := f.wait(h2); ex.Code != 0 {
		t.Errorf("restart after Stop: %+v", ex)
	}
	// A uid without a passwd entry runs with an explicit group.
	if os.Geteuid() == 0 {
		pub, err := os.MkdirTemp("", "berth-process-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(pub) })
		if err := os.Chmod(pub, 0o777); err != nil {
			t.Fatal(err)
		}
		sp := f.spec("uidgid", "to", filepath.Join(pub, "ids"), "ids")
		sp.User, sp.Workdir = "48213:48214", "/"
		if ex := f.wait(f.start(sp)); ex.Code != 0 {
			t.Fatalf("uid:gid task: %+v", ex)
		}
		b, _ := os.ReadFile(filepath.Join(pub, "ids"))
		if got := strings.TrimSpace(string(b)); got != "ids 48213 48214" {
			t.Errorf("ids = %q, want uid 48213, gid 48214, no supplementary groups", got)
		}
	}
}

// TestInCgroupAtStart checks the program is in every one of its groups
// from its first instruction.
func TestInCgroupAtStart(t *testing.T) {
	t.Parallel()
	needRoot(t)
	f := newFixture(t, process.Config{})
	if f.h == nil {
		t.Skip("no cgroups")
	}
	// cat reads the file within a millisecond of starting: a process that
	// joined its groups after exec would show the parent's groups.
	sp := f.spec("incg")
	sp.Command = []string{"/bin/cat", "/proc/self/cgroup"}
	sp.CPUs, sp.MemoryBytes = 1, 256<<20
	h := f.start(sp)
	if ex := f.wait(h); ex.Code != 0 {
		t.Fatalf("Wait = %+v", ex)
	}
	b, err := os.ReadFile(filepath.Join(f.dir, "incg.log"))
	if err != nil {
		t.Fatal(err)
	}
	var ex struct {
		Cgroup string `json:"cgroup"`
	}
	if err := json.Unmarshal(h.State().Extra, &ex); err != nil {
		t.Fatal(err)
	}
	want := []string{"cpu", "cpuacct", "memory", "pids"}
	if f.h.Version() == cgroups.V2 {
		want = []string{""}
	}
	for _, ctl := range want {
		if !slices.Contains(f.h.Controllers(), ctl) && ctl != "" {
			continue
		}
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			// cgroup 4:memory:/berth-test-x/incg
			parts := strings.SplitN(strings.TrimPrefix(line, "cgroup "), ":", 3)
			if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), ctl) && parts[2] == "/"+ex.Cgroup {
				found = true
			}
		}
		if !found {
			t.Errorf("controller %q: program not in /%s at start:\n%s", ctl, ex.Cgroup, b)
		}
	}
}

// TestLogCap writes far more than the cap and checks the files stay within
// it (plus one check interval of output) and keep the newest lines.
func TestLogCap(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{NoCgroups: true, LogCheckInterval: 20 * time.Millisecond})
	var args []string
	for b := range 40 {
		args = append(args, "print", fmt.Sprintf("batch %d", b), "lines", "100", "sleep", "10ms")
	}
	sp := f.spec("cap", args...)
	sp.LogMaxBytes = 8 << 10
	h := f.start(sp)
	if ex := f.wait(h); ex.Code != 0 {
		t.Fatalf("Wait = %+v", ex)
	}
	// Let one more check run after the last write.
	// The log rotates to .1 once it is over half the cap, and .1 keeps the
	// log's offsets for followers, so .1 can hold up to half the cap plus
	// what the task wrote since the check before: the files stay within the
	// cap plus one check interval of output. The task writes about 1 KiB
	// per 10 ms; allow half the cap of overshoot, for a loaded machine.
	bound := sp.LogMaxBytes + sp.LogMaxBytes/2
	deadline := time.Now().Add(5 * time.Second)
	var total int64
	for {
		total = 0
		for _, name := range []string{"cap.log", "cap.log.1"} {
			if fi, err := os.Stat(filepath.Join(f.dir, name)); err == nil {
				total += fi.Size()
			}
		}
		if total <= bound || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if total > bound {
		t.Errorf("log files hold %d bytes, cap %d (bound %d)", total, sp.LogMaxBytes, bound)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "cap.log.1")); err != nil {
		t.Errorf("no rotated file: %v", err)
	}
	rc, err := f.d.Logs(context.Background(), "cap", -1, false)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	// Rotation may lose the few lines written between its copy and its
	// truncate (see the package comment), so only the shape is checked.
	if !strings.HasSuffix(string(b), "\nline 100\n") || !strings.Contains(string(b), "batch 3") || strings.Contains(string(b), "batch 0\n") {
		t.Errorf("logs do not hold the newest output (%d bytes): ...%q", len(b), b[max(0, len(b)-80):])
	}
}

// TestLogsFollowRotation follows a log that rotates every few lines and
// expects every line once, in order.
func TestLogsFollowRotation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{NoCgroups: true, LogCheckInterval: 30 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	var args []string
	var want []string
	for i := range 30 {
		msg := fmt.Sprintf("message %02d xxxxxxxxxxxxxxxx", i)
		want = append(want, msg)
		args = append(args, "print", msg, "sleep", "40ms")
	}
	args = append(args, "print", "end", "forever")
	want = append(want, "end")
	sp := f.spec("follow", args...)
	sp.LogMaxBytes = 100 // rotates about every other line
	f.start(sp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, err := f.d.Logs(ctx, "follow", -1, true)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got []string
	buf := ""
	p := make([]byte, 4096)
	for !slices.Contains(got, "end") {
		n, err := rc.Read(p)
		buf += string(p[:n])
		for {
			line, rest, ok := strings.Cut(buf, "\n")
			if !ok {
				break
			}
			got, buf = append(got, line), rest
		}
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("followed lines =\n%q\nwant\n%q", got, want)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "follow.log.1")); err != nil {
		t.Errorf("the log never rotated: %v", err)
	}
}

// TestRecoverKeepsCgroupAndLogs recovers a task in a new driver and checks
// stats, logs and Stop (which must remove the cgroups) work through it.
func TestRecoverKeepsCgroupAndLogs(t *testing.T) {
	t.Parallel()
	needRoot(t)
	f := newFixture(t, process.Config{})
	if f.h == nil {
		t.Skip("no cgroups")
	}
	ready := filepath.Join(f.dir, "ready")
	sp := f.spec("rec", "print", "hello", "burn", "200ms", "touch", ready, "forever")
	sp.MemoryBytes = 128 << 20
	h := f.start(sp)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("task never got ready")
		}
	}
	cg := cgroupOf(t, f.h, h.State())

	d2, err := process.New(process.Config{Cgroups: f.h, Logger: testLogger(t), CgroupParent: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	h2, err := d2.Recover(context.Background(), h.State())
	if err != nil {
		t.Fatal(err)
	}
	if again, err := d2.Recover(context.Background(), h.State()); err != nil || again != h2 {
		t.Errorf("second Recover = %v, %v; want the same handle", again, err)
	}
	st, err := h2.(driver.Statser).Stats(context.Background())
	if err != nil || st.CPUNanos < uint64(100*time.Millisecond) || st.Pids == 0 {
		t.Errorf("recovered Stats = %+v, %v", st, err)
	}
	rc, err := d2.Logs(context.Background(), "rec", -1, false)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "hello\n" {
		t.Errorf("recovered logs = %q", b)
	}
	if err := h2.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if ex := f.wait(h2); ex.Code != -1 {
		t.Errorf("recovered exit = %+v, want code -1 (not our child)", ex)
	}
	if pids, _ := cg.PIDs(); len(pids) != 0 {
		t.Errorf("processes left in the cgroup: %v", pids)
	}
	if _, err := f.h.Open(cg.Name()); !errors.Is(err, cgroups.ErrNotFound) {
		t.Errorf("cgroup still there after Stop: %v", err)
	}
	if ok, _ := procfs.Alive(h.State().PID, h.State().StartTime); ok {
		t.Error("task alive after Stop")
	}
}

// TestRecoverGoneCleansCgroup: a task whose leader died but left a child in
// its cgroup is gone; Recover kills the child and removes the group.
func TestRecoverGoneCleansCgroup(t *testing.T) {
	t.Parallel()
	needRoot(t)
	f := newFixture(t, process.Config{})
	if f.h == nil {
		t.Skip("no cgroups")
	}
	pidFile := filepath.Join(f.dir, "child")
	h := f.start(f.spec("gone", "child-setsid", pidFile, "touch", filepath.Join(f.dir, "x"), "exit", "0"))
	f.wait(h)
	cg := cgroupOf(t, f.h, h.State())
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if pids, _ := cg.PIDs(); len(pids) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the escaped child never showed up in the cgroup")
		}
	}
	d2, err := process.New(process.Config{Cgroups: f.h, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Recover(context.Background(), h.State()); !errors.Is(err, driver.ErrGone) {
		t.Fatalf("Recover = %v, want ErrGone", err)
	}
	if _, err := f.h.Open(cg.Name()); !errors.Is(err, cgroups.ErrNotFound) {
		t.Errorf("cgroup still there after Recover: %v", err)
	}
	// The logs of a gone task stay readable.
	rc, err := d2.Logs(context.Background(), "gone", -1, false)
	if err != nil {
		t.Errorf("Logs of a gone task: %v", err)
	} else {
		rc.Close()
	}
}

func TestRecoverRejects(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{NoCgroups: true})
	ctx := context.Background()
	for name, st := range map[string]driver.State{
		"other driver": {Driver: "docker", TaskID: "x", ContainerID: "abc"},
		"bad extra":    {Driver: process.Name, TaskID: "x", PID: 1, Extra: json.RawMessage(`[`)},
		"bad task id":  {Driver: process.Name, TaskID: "../x", PID: 1},
	} {
		if _, err := f.d.Recover(ctx, st); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := f.d.Recover(ctx, driver.State{Driver: process.Name, TaskID: "x"}); !errors.Is(err, driver.ErrGone) {
		t.Errorf("no pid: err = %v, want ErrGone", err)
	}
}

// BenchmarkStartStop measures Start (with its cgroup set-up) plus Stop of a
// task that exits on SIGTERM, per cgroup mode.
func BenchmarkStartStop(b *testing.B) {
	prog := drivertest.HelperBinary(b)
	modes := map[string]func() (*cgroups.Hierarchy, bool){
		"none": func() (*cgroups.Hierarchy, bool) { return nil, true },
	}
	if os.Geteuid() == 0 {
		if h, err := cgroups.Discover(); err == nil {
			modes["discovered-"+h.Version().String()] = func() (*cgroups.Hierarchy, bool) { return h, false }
		}
		if h, err := cgroups.NewV2("/sys/fs/cgroup/unified"); err == nil {
			modes["unified-v2"] = func() (*cgroups.Hierarchy, bool) { return h, false }
		}
	}
	for name, mode := range modes {
		b.Run(name, func(b *testing.B) {
			h, none := mode()
			parent := fmt.Sprintf("berth-bench-%d-%x", os.Getpid(), rand.Uint32())
			if h != nil {
				b.Cleanup(func() { _ = h.RemoveTree(context.Background(), parent) })
			}
			d, err := process.New(process.Config{CgroupParent: parent, Cgroups: h, NoCgroups: none})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				hd, err := d.Start(ctx, driver.StartSpec{TaskID: fmt.Sprint("b", i), Command: []string{prog, "forever"}})
				if err != nil {
					b.Fatal(err)
				}
				if err := hd.Stop(ctx, time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBestEffortLimitsRunWithoutCgroups: where cgroups cannot be used (as
// for a non-root user), BestEffortLimits starts a task that asks for limits
// instead of refusing it.
func TestBestEffortLimitsRunWithoutCgroups(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{NoCgroups: true, BestEffortLimits: true})
	sp := f.spec("besteffort", "exit", "3")
	sp.MemoryBytes, sp.CPUs = 64<<20, 0.5
	h := f.start(sp)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ex, err := h.Wait(ctx)
	if err != nil || ex.Code != 3 {
		t.Fatalf("exit %+v %v, want code 3", ex, err)
	}
}

// TestWholeMachineCPUSetWithoutCgroups: where cgroups are unavailable (an
// agent under `ip netns exec`, which remounts /sys), a task that asks for no
// limits starts although the agent hands it the node's shared pool, every
// CPU; a real limit is still refused.
func TestWholeMachineCPUSetWithoutCgroups(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{NoCgroups: true})
	all := selfCPUs(t)
	sp := f.spec("wholemachine", "exit", "0")
	sp.CPUSet = all
	if ex := f.wait(f.start(sp)); ex.Code != 0 {
		t.Fatalf("task on the whole machine (%s): exit %+v, want 0", all, ex)
	}
	ctx := context.Background()
	limited := map[string]func(*driver.StartSpec){
		"cpus":   func(s *driver.StartSpec) { s.CPUs = 0.5 },
		"memory": func(s *driver.StartSpec) { s.MemoryBytes = 64 << 20 },
		"pinned": func(s *driver.StartSpec) { s.MemNodes = "0" },
	}
	if cpus, _ := topology.Parse(all); cpus.Len() > 1 {
		first, _ := cpus.Min()
		limited["narrower cpuset"] = func(s *driver.StartSpec) { s.CPUSet = fmt.Sprint(first) }
	}
	for name, m := range limited {
		sp := f.spec("limited", "exit", "0")
		sp.CPUSet = all
		m(&sp)
		h, err := f.d.Start(ctx, sp)
		if err == nil {
			_ = h.Stop(ctx, 0)
			t.Errorf("%s: Start without cgroups succeeded", name)
		} else if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), "cgroups are unavailable") {
			t.Errorf("%s: err = %v, want ErrInvalid: cgroups are unavailable", name, err)
		}
	}
}

// selfCPUs returns the CPUs this test process may run on, as a list.
func selfCPUs(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no Cpus_allowed_list in /proc/self/status")
	return ""
}

// TestWholeMachineCPUSetWithoutCpuset: on a hierarchy without the cpuset
// controller (the unified hierarchy of a hybrid machine), a task on the
// whole machine's CPU set still gets its own group, without a CPU set.
func TestWholeMachineCPUSetWithoutCpuset(t *testing.T) {
	t.Parallel()
	needRoot(t)
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err != nil {
		t.Skip("no unified mount at /sys/fs/cgroup/unified")
	}
	h, err := cgroups.NewV2("/sys/fs/cgroup/unified")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(h.Controllers(), cgroups.CPUSet) {
		t.Skip("the unified hierarchy has the cpuset controller")
	}
	d, err := process.New(process.Config{CgroupParent: cgroupParent(t, h), Cgroups: h, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, d: d, dir: t.TempDir(), prog: drivertest.HelperBinary(t), h: h}
	sp := f.spec("wholemachine-v2", "forever")
	sp.CPUSet = selfCPUs(t)
	hd := f.start(sp)
	cg := cgroupOf(t, h, hd.State())
	if cg.Name() == "" {
		t.Fatal("the task has no cgroup")
	}
	sp = f.spec("narrow-v2", "exit", "0")
	sp.CPUSet = "0"
	if cpus, _ := topology.Parse(selfCPUs(t)); cpus.Len() > 1 {
		if hd, err := d.Start(context.Background(), sp); err == nil {
			_ = hd.Stop(context.Background(), 0)
			t.Error("a narrower CPU set started without the cpuset controller")
		} else if !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("narrower CPU set: err = %v, want ErrInvalid", err)
		}
	}
}
