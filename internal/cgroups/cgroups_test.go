package cgroups

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/testutil"
)

const hybridMountinfo = `22 28 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

func TestParseMountInfo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []Mount
		wantErr bool
	}{
		{
			name: "hybrid",
			in:   hybridMountinfo,
			want: []Mount{
				{"/sys/fs/cgroup/cpu", "/", V1, []string{"cpu"}},
				{"/sys/fs/cgroup/cpuacct", "/", V1, []string{"cpuacct"}},
				{"/sys/fs/cgroup/cpuset", "/", V1, []string{"cpuset"}},
				{"/sys/fs/cgroup/memory", "/", V1, []string{"memory"}},
				{"/sys/fs/cgroup/pids", "/", V1, []string{"pids"}},
				{"/sys/fs/cgroup/systemd", "/", V1, nil},
				{"/sys/fs/cgroup/unified", "/", V2, nil},
			},
		},
		{
			name: "co-mounted with optional fields",
			in:   "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 master:3 - cgroup cgroup rw,cpu,cpuacct\n",
			want: []Mount{{"/sys/fs/cgroup/cpu,cpuacct", "/", V1, []string{"cpu", "cpuacct"}}},
		},
		{
			name: "pure v2 in a namespace",
			in:   "29 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
			want: []Mount{{"/sys/fs/cgroup", "/kubepods/pod1", V2, nil}},
		},
		{
			name: "escaped mountpoint",
			in:   `50 23 0:40 / /mnt/my\040cg\134x rw - cgroup2 none rw` + "\n",
			want: []Mount{{`/mnt/my cg\x`, "/", V2, nil}},
		},
		{
			name: "escape at the end of the mountpoint",
			in:   `50 23 0:40 /a\040b /mnt/cg\040 rw - cgroup cgroup rw,memory` + "\n",
			want: []Mount{{"/mnt/cg ", "/a b", V1, []string{"memory"}}},
		},
		{
			name: "no cgroups",
			in:   "22 28 0:20 / /sys rw - sysfs sysfs rw\n",
			want: nil,
		},
		// The kernel never writes a blank line; moby/sys/mountinfo refuses
		// one, as it refuses any line it cannot parse (ADR 0037).
		{name: "blank line", in: "22 28 0:20 / /sys rw - sysfs sysfs rw\n\n", wantErr: true},
		{name: "no separator", in: "22 28 0:20 / /sys rw sysfs sysfs rw\n", wantErr: true},
		{name: "short", in: "22 28 - cgroup2 x rw\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMountInfo(strings.NewReader(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseMountInfo: got %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, tc.want, func(a, b Mount) bool {
				return a.Mountpoint == b.Mountpoint && a.Root == b.Root && a.Version == b.Version && slices.Equal(a.Controllers, b.Controllers)
			}) {
				t.Fatalf("ParseMountInfo =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

// TestLoadFakeRoot detects the version from a fake mountinfo whose mounts
// live in a temp dir.
func TestLoadFakeRoot(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		mountinfo   string // ROOT stands for the fake root
		controllers string // written to <root>/unified/cgroup.controllers
		wantVersion Version
		wantCtl     []string
		wantErr     error
	}{
		{
			name: "hybrid uses v1",
			mountinfo: "32 31 0:29 / ROOT/cpu rw - cgroup cgroup rw,cpu\n" +
				"33 31 0:30 / ROOT/mem rw - cgroup cgroup rw,memory\n" +
				"41 31 0:38 / ROOT/unified rw - cgroup2 cgroup2 rw\n",
			controllers: "hugetlb\n",
			wantVersion: V1,
			wantCtl:     []string{"cpu", "memory"},
		},
		{
			name:        "unified",
			mountinfo:   "41 31 0:38 / ROOT/unified rw - cgroup2 cgroup2 rw\n",
			controllers: "cpuset cpu io memory pids\n",
			wantVersion: V2,
			wantCtl:     []string{"cpu", "cpuset", "io", "memory", "pids"},
		},
		{
			name:        "v1 with only named hierarchy falls to v2",
			mountinfo:   "40 31 0:37 / ROOT/systemd rw - cgroup cgroup rw,name=systemd\n41 31 0:38 / ROOT/unified rw - cgroup2 cgroup2 rw\n",
			controllers: "cpu memory\n",
			wantVersion: V2,
			wantCtl:     []string{"cpu", "memory"},
		},
		{
			name:      "none",
			mountinfo: "22 28 0:20 / /sys rw - sysfs sysfs rw\n",
			wantErr:   ErrUnavailable,
		},
		{
			name:      "v2 without controllers file",
			mountinfo: "41 31 0:38 / ROOT/missing rw - cgroup2 cgroup2 rw\n",
			wantErr:   ErrUnavailable,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "unified"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "unified", "cgroup.controllers"), []byte(tc.controllers), 0o644); err != nil {
				t.Fatal(err)
			}
			mi := filepath.Join(root, "mountinfo")
			if err := os.WriteFile(mi, []byte(strings.ReplaceAll(tc.mountinfo, "ROOT", root)), 0o644); err != nil {
				t.Fatal(err)
			}
			h, err := Load(mi)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Load err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Version() != tc.wantVersion || !slices.Equal(h.Controllers(), tc.wantCtl) {
				t.Fatalf("Load = %v %v, want %v %v", h.Version(), h.Controllers(), tc.wantVersion, tc.wantCtl)
			}
		})
	}
}

// TestV2FilesFake checks the v2 control-file formats against a fake tree
// (this machine has no v2 controllers).
func TestV2FilesFake(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	files := map[string]string{
		"cgroup.controllers":           "cpuset cpu io memory pids",
		"cgroup.subtree_control":       "",
		"berth/cgroup.controllers":     "cpuset cpu memory pids",
		"berth/cgroup.subtree_control": "cpu memory pids cpuset",
		"berth/t1/cpu.max":             "max 100000",
		"berth/t1/memory.max":          "max",
		"berth/t1/cpuset.cpus":         "",
		"berth/t1/cpuset.mems":         "",
		"berth/t1/memory.events":       "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
		"berth/t1/cpu.stat":            "usage_usec 2500\nuser_usec 2000\n",
		"berth/t1/memory.current":      "1000000",
		"berth/t1/memory.stat":         "anon 900000\ninactive_file 100000\n",
		"berth/t1/pids.current":        "3",
	}
	for name, v := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h, err := NewV2(root)
	if err != nil {
		t.Fatal(err)
	}
	lim := Limits{CPUs: 1.5, MemoryBytes: 64 << 20, CPUSet: "0-1", MemNodes: "0"}
	c, err := h.Create("berth/t1", lim)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"berth/t1/cpu.max":       "150000 100000",
		"berth/t1/memory.max":    "67108864",
		"berth/t1/cpuset.cpus":   "0-1",
		"berth/t1/cpuset.mems":   "0",
		"cgroup.subtree_control": "+cpuset", // the last of four writes to a plain file
	} {
		got, _ := os.ReadFile(filepath.Join(root, name))
		if string(got) != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	got, err := c.Limits()
	if err != nil || got != lim {
		t.Errorf("Limits = %+v, %v; want %+v", got, err, lim)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stats{CPUNanos: 2500000, MemoryBytes: 900000, Pids: 3, OOMKills: 1}); st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
	if _, err := h.Create("berth/t2", Limits{CPUs: -1}); err == nil {
		t.Error("Create with negative CPUs succeeded")
	}
	if err := c.SetCPUSet("1", ""); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Limits(); got.CPUSet != "1" || got.MemNodes != "0" {
		t.Errorf("after SetCPUSet(1): %+v", got)
	}
	if err := c.SetCPUSet("", "0"); err == nil {
		t.Error("SetCPUSet with no CPUs succeeded")
	}
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	for name, ok := range map[string]bool{
		"berth/t1": true, "t": true, "a/b/c": true,
		"": false, "/abs": false, "a/../b": false, "..": false, ".": false, "a//b": false, "a/": false,
	} {
		if err := checkName(name); (err == nil) != ok {
			t.Errorf("checkName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestQuota(t *testing.T) {
	t.Parallel()
	for cpus, want := range map[float64]int64{1: 100000, 0.5: 50000, 2.25: 225000, 0.001: 1000, 0.0001: 1000} {
		if got := quota(cpus); got != want {
			t.Errorf("quota(%v) = %d, want %d", cpus, got, want)
		}
	}
}

// testParent returns a unique group name and removes it after the test.
func testParent(t *testing.T, h *Hierarchy) string {
	t.Helper()
	name := fmt.Sprintf("berth-test-%d-%x", os.Getpid(), rand.Uint32())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.RemoveTree(ctx, name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, c := range []string{CPU, CPUAcct, CPUSet, Memory, Pids} {
			if mnt := h.Mountpoint(c); mnt != "" {
				if _, err := os.Stat(filepath.Join(mnt, name)); err == nil {
					t.Errorf("cleanup left %s", filepath.Join(mnt, name))
				}
			}
		}
	})
	return name
}

func realHierarchy(t *testing.T) *Hierarchy {
	t.Helper()
	testutil.RequireRoot(t, "it creates cgroups")
	h, err := Discover()
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("no cgroups here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// startInGroup starts a shell that waits for a go file before exec'ing
// script, moves it into c, and returns it with the go file's path.
func startInGroup(t *testing.T, c *Cgroup, script string) (*exec.Cmd, string) {
	t.Helper()
	goFile := filepath.Join(t.TempDir(), "go")
	cmd := exec.Command("/bin/sh", "-c", `while [ ! -e "$1" ]; do sleep 0.01; done; `+script, "sh", goFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := c.AddPID(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return cmd, goFile
}

func TestRealLifecycle(t *testing.T) {
	t.Parallel()
	h := realHierarchy(t)
	parent := testParent(t, h)
	lim := Limits{CPUs: 0.5, MemoryBytes: 64 << 20}
	if h.Version() == V1 && h.Mountpoint(CPUSet) != "" {
		lim.CPUSet = "0"
	}
	c, err := h.Create(parent+"/t1", lim)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Limits()
	if err != nil {
		t.Fatal(err)
	}
	wantLim := lim
	if lim.CPUSet != "" {
		parentMems, _ := readString(filepath.Join(h.Mountpoint(CPUSet), "cpuset.mems"))
		wantLim.MemNodes = parentMems
	}
	if got != wantLim {
		t.Fatalf("Limits = %+v, want %+v", got, wantLim)
	}
	if again, err := h.Open(parent + "/t1"); err != nil || again.Path(Memory) != c.Path(Memory) {
		t.Fatalf("Open = %v, %v", again, err)
	}
	if _, err := h.Open(parent + "/nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open(missing) err = %v, want ErrNotFound", err)
	}

	// A process that burns CPU for a while in the group.
	cmd, goFile := startInGroup(t, c, `i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 60`)
	pids, err := c.PIDs()
	if err != nil || !slices.Contains(pids, cmd.Process.Pid) {
		t.Fatalf("PIDs = %v, %v; want %d in it", pids, err, cmd.Process.Pid)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	if !strings.Contains(string(cg), parent+"/t1") {
		t.Fatalf("/proc/pid/cgroup does not name the group:\n%s", cg)
	}
	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var st Stats
	for deadline := time.Now().Add(10 * time.Second); ; {
		if st, err = c.Stats(); err != nil {
			t.Fatal(err)
		}
		if st.CPUNanos > 0 && st.MemoryBytes > 0 && st.Pids > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats never showed use: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}

	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	if err := c.Remove(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Remove of a group with a process: err = %v, want a deadline error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("killed process exited cleanly")
	}
	if pids, _ := c.PIDs(); len(pids) != 0 {
		t.Fatalf("PIDs after Kill = %v", pids)
	}
	if err := c.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := h.Open(parent + "/t1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open after Remove err = %v", err)
	}
}

func TestRealOOM(t *testing.T) {
	t.Parallel()
	h := realHierarchy(t)
	if h.Mountpoint(Memory) == "" || (h.Version() == V2 && !h.has(Memory)) {
		t.Skip("no memory controller")
	}
	parent := testParent(t, h)
	c, err := h.Create(parent+"/oom", Limits{MemoryBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Remove(context.Background()) })
	// tail looks for a newline in an endless stream of zeros, buffering it all.
	cmd, goFile := startInGroup(t, c, `exec tail /dev/zero`)
	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("Wait = %v, want killed by SIGKILL", err)
	}
	if n, err := c.OOMKills(); err != nil || n == 0 {
		t.Fatalf("OOMKills = %d, %v; want > 0", n, err)
	}
}

// TestRealV2Unified exercises the v2 code paths (create, clone into the
// group, list, kill, remove) on the unified mount of a hybrid machine, which
// groups processes without controllers.
func TestRealV2Unified(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t, "it creates cgroups")
	h, err := Discover()
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	if h.Version() == V1 {
		mi, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		mounts, _ := ParseMountInfo(strings.NewReader(string(mi)))
		unified := ""
		for _, m := range mounts {
			if m.Version == V2 && m.Root == "/" {
				unified = m.Mountpoint
			}
		}
		if unified == "" {
			t.Skip("v1 machine without a cgroup2 mount")
		}
		if h, err = NewV2(unified); err != nil {
			t.Fatal(err)
		}
	}
	parent := testParent(t, h)
	c, err := h.Create(parent+"/t1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !h.has(Memory) {
		if _, err := h.Create(parent+"/t2", Limits{MemoryBytes: 1 << 30}); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Create with memory limit and no memory controller err = %v, want ErrUnavailable", err)
		}
	}
	dir, err := c.OpenDir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	err = cmd.Start()
	dir.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	if !strings.Contains(string(cg), "0::/"+parent+"/t1\n") {
		t.Fatalf("cloned process not in the group:\n%s", cg)
	}
	if pids, err := c.PIDs(); err != nil || !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Fatalf("PIDs = %v, %v", pids, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := c.Remove(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRealSetCPUSet narrows and widens the CPU set of a group whose process
// runs, and checks what the kernel reports for that process.
func TestRealSetCPUSet(t *testing.T) {
	t.Parallel()
	h := realHierarchy(t)
	if h.Version() != V1 || h.Mountpoint(CPUSet) == "" {
		t.Skip("needs a v1 cpuset hierarchy (this machine's layout); v2 is covered by TestV2FilesFake")
	}
	all, err := readString(filepath.Join(h.Mountpoint(CPUSet), "cpuset.cpus"))
	if err != nil {
		t.Fatal(err)
	}
	parent := testParent(t, h)
	c, err := h.Create(parent+"/t1", Limits{CPUSet: all})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Kill(ctx)
		_ = c.Remove(ctx)
	})
	cmd, _ := startInGroup(t, c, `exec sleep 60`)
	allowed := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Fatal("no Cpus_allowed_list")
		return ""
	}
	if got := allowed(); got != all {
		t.Fatalf("Cpus_allowed_list %q, want %q", got, all)
	}
	if err := c.SetCPUSet("0", ""); err != nil {
		t.Fatal(err)
	}
	if got := allowed(); got != "0" {
		t.Fatalf("after SetCPUSet(0): Cpus_allowed_list %q", got)
	}
	if err := c.SetCPUSet(all, "0"); err != nil {
		t.Fatal(err)
	}
	if got := allowed(); got != all {
		t.Fatalf("after SetCPUSet(%s): Cpus_allowed_list %q", all, got)
	}
	// A group without a CPU set cannot have one changed.
	plain, err := h.Create(parent+"/t2", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Remove(context.Background())
	if err := plain.SetCPUSet("0", ""); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("SetCPUSet on a group without cpuset: %v, want ErrUnavailable", err)
	}
}
