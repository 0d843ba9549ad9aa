package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/driver/drivertest"
	"github.com/berth-project/berth/internal/driver/process"
	"github.com/berth-project/berth/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestTaskUser(t *testing.T) {
	t.Parallel()
	proc := api.TaskSpec{Driver: api.DriverProcess}
	with := func(f func(*api.TaskSpec)) api.TaskSpec {
		s := proc
		f(&s)
		return s
	}
	for _, tc := range []struct {
		name string
		spec api.TaskSpec
		root bool
		want string
	}{
		{"root agent, no user: nobody", proc, true, NobodyUser},
		{"root agent, user given", with(func(s *api.TaskSpec) { s.User = "www-data" }), true, "www-data"},
		{"root agent, run_as_root", with(func(s *api.TaskSpec) { s.RunAsRoot = true }), true, ""},
		{"root agent, user and run_as_root: the user", with(func(s *api.TaskSpec) { s.User, s.RunAsRoot = "1000:1000", true }), true, "1000:1000"},
		{"non-root agent: its own user", proc, false, ""},
		{"non-root agent, user given", with(func(s *api.TaskSpec) { s.User = "1000" }), false, "1000"},
		{"docker: the driver decides", api.TaskSpec{Driver: api.DriverDocker, Image: "alpine"}, true, ""},
	} {
		if got := taskUser(tc.spec, tc.root); got != tc.want {
			t.Errorf("%s: taskUser = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestReachable(t *testing.T) {
	t.Parallel()
	pub := t.TempDir()
	if err := os.Chmod(pub, 0o755); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent is private to this user.
	if reachable(filepath.Join(pub, "nothing"), nobodyUID, nobodyGID) {
		t.Error("a missing file is reachable")
	}
	if !reachable("/bin/sh", nobodyUID, nobodyGID) {
		t.Error("/bin/sh is not reachable by nobody")
	}
	f := filepath.Join(pub, "prog")
	if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != nobodyUID && reachable(f, nobodyUID, nobodyGID) {
		t.Errorf("%s is reachable by nobody through private directories", f)
	}
	if !reachable(f, uint32(os.Geteuid()), uint32(os.Getegid())) {
		t.Errorf("%s is not reachable by its owner", f)
	}
}

// TestProcessTaskRunsAsNobody runs real tasks under a root agent: a task
// whose spec names no user runs as nobody, with no supplementary groups
// and no capabilities; it cannot read the admin token in the data
// directory nor signal Berth; it can still run "berth" although the
// binary lies in a private directory (as `go run` builds it). A task with
// run_as_root runs as root.
func TestProcessTaskRunsAsNobody(t *testing.T) {
	testutil.RequireRoot(t, "the process driver switches to another user")
	// The data directory as Berth makes it: 0700 under a public parent, the
	// admin token 0600.
	parent, err := os.MkdirTemp("", "berth-agent-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(parent, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(dataDir, "admin.token")
	if err := os.WriteFile(token, []byte("berth_secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The berth binary in a private directory, as `go run` leaves it.
	private := t.TempDir()
	bin := filepath.Join(private, "berth")
	src, err := os.ReadFile(drivertest.HelperBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}

	d, err := process.New(process.Config{NoCgroups: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	h.cfg.DataDir = dataDir
	h.cfg.BerthBinary = bin
	h.cfg.Drivers = map[string]driver.Driver{api.DriverProcess: d}
	h.start()

	nobody := newTask("nobody")
	nobody.Spec.Command = []string{"berth", "ids", "caps", "read", token, "signal", fmt.Sprint(os.Getpid())}
	root := newTask("root")
	root.Spec.Command = []string{"berth", "ids", "read", token}
	root.Spec.RunAsRoot = true
	h.m.Assign(nobody, root)

	logOf := func(id string) string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, ok := h.m.Status(id)
			if ok && st.State.Terminal() {
				if st.State != api.TaskComplete {
					t.Fatalf("task %s ended %s: %s", id, st.State, st.Err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s did not complete (last: %+v)", id, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
		f, err := os.Open(filepath.Join(dataDir, "agent", "logs", id+".log"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		return string(b)
	}

	out := logOf("nobody")
	for _, want := range []string{
		"ids 65534 65534 \n", // no supplementary groups
		"caps CapPrm 0000000000000000\n",
		"caps CapEff 0000000000000000\n",
		"caps CapAmb 0000000000000000\n",
		"read " + token + ": open " + token + ": permission denied\n",
		fmt.Sprintf("signal %d: operation not permitted\n", os.Getpid()),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("task without a user: output lacks %q:\n%s", want, out)
		}
	}
	out = logOf("root")
	for _, want := range []string{"ids 0 0 ", "read " + token + ": ok\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("task with run_as_root: output lacks %q:\n%s", want, out)
		}
	}
	// The link or copy of the binary goes when the agent stops.
	h.stop()
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "berth-bin-*", "berth")); len(left) > 0 {
		for _, p := range left {
			if fi, err := os.Stat(p); err == nil && os.SameFile(fi, mustStat(t, bin)) {
				t.Errorf("the agent left %s behind", p)
			}
		}
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// TestRemoveStaleBinDirs: the binary directory of a killed agent (unlocked,
// old) is removed; one an agent holds, or one just made, is kept.
func TestRemoveStaleBinDirs(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	now := time.Now()
	old := now.Add(-2 * binDirGrace)
	mk := func(name string, mtime time.Time) string {
		d := filepath.Join(tmp, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "berth"), []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(d, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return d
	}
	stale := mk(binDirPrefix+"stale", old)
	fresh := mk(binDirPrefix+"fresh", now)
	held := mk(binDirPrefix+"held", old)
	other := mk("not-berth", old)
	lock, err := os.Open(held)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	removeStaleBinDirs(tmp, now, testLogger(t))
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale directory is still there (%v)", err)
	}
	for _, d := range []string{fresh, held, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
}
