package docker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/driver/docker"
	"github.com/berth-project/berth/internal/driver/docker/dockertest"
	"github.com/berth-project/berth/internal/driver/drivertest"
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testImage builds an image FROM scratch holding the conformance helper at
// /testprog (and no command), removed when t ends, and returns its tag.
func testImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	prog, err := os.ReadFile(drivertest.HelperBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	tag := "berth-test/drivertest:" + randomHex(6)
	dockertest.BuildImage(t, cli, tag, "FROM scratch\nCOPY testprog /testprog\nCOPY merge /merge\n",
		map[string]dockertest.File{"testprog": {Data: prog, Mode: 0o755}, "merge": {Data: mergeBinary(t), Mode: 0o755}})
	return tag
}

var mergeOnce struct {
	sync.Once
	data []byte
	err  error
}

// mergeBinary builds testdata/merge statically, once per test binary.
func mergeBinary(t *testing.T) []byte {
	t.Helper()
	mergeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-docker-merge-")
		if err != nil {
			mergeOnce.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "merge")
		cmd := exec.Command(goTool(), "build", "-o", out, "github.com/berth-project/berth/internal/driver/docker/testdata/merge")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			mergeOnce.err = fmt.Errorf("building testdata/merge: %v\n%s", err, b)
			return
		}
		mergeOnce.data, mergeOnce.err = os.ReadFile(out)
	})
	if mergeOnce.err != nil {
		t.Fatal(mergeOnce.err)
	}
	return mergeOnce.data
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go" // under go test the go command is on PATH
}

func newDriver(t *testing.T, cli *client.Client, cfg docker.Config) *docker.Driver {
	t.Helper()
	if cfg.Client == nil {
		cfg.Client = cli
	}
	d, err := docker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// tmpMount makes the temporary directory, where the suite keeps its helper
// and scratch files, visible at the same path in the container.
func tmpMount() driver.Mount {
	return driver.Mount{Source: os.TempDir(), Target: os.TempDir()}
}

func TestConformance(t *testing.T) {
	cli := dockertest.Client(t)
	tag := testImage(t, cli)
	cpuSet, cpuSetUpdate := "", ""
	if runtime.NumCPU() >= 2 {
		cpuSet, cpuSetUpdate = "0", "1"
	}
	drivertest.Run(t, func(t *testing.T) driver.Driver { return newDriver(t, cli, docker.Config{}) }, drivertest.Options{
		Prepare: func(t *testing.T, sp *driver.StartSpec) {
			sp.Image = tag
			sp.Container.Mounts = []driver.Mount{tmpMount()}
			if strings.Contains(t.Name(), "/Logs") && len(sp.Command) > 0 {
				// The engine reads stdout and stderr through two pipes and
				// cannot order lines across them (ADR 0015); the log cases
				// check that order, so the task writes both to one.
				sp.Command = append([]string{"/merge"}, sp.Command...)
			}
		},
		AllowedExtraEnv: []string{"PATH", "HOSTNAME", "HOME"},
		Limits: func(t *testing.T, h driver.Handle) (drivertest.Limits, error) {
			return cgroupLimits(t, cli, h.State().ContainerID)
		},
		CPUSet:       cpuSet,
		CPUSetUpdate: cpuSetUpdate,
		OOM:          true,
		CorruptState: func(st driver.State) driver.State {
			// The container exists but carries another task's label.
			st.TaskID += "-other"
			return st
		},
		User:    "1234:5678",
		WantUID: 1234,
		WantGID: 5678,
	})
}

// cgroupLimits reads the limits the kernel applies to a container, from the
// cgroup files of its init process (cgroup v1, or v2 when that is all there
// is).
func cgroupLimits(t *testing.T, cli *client.Client, id string) (drivertest.Limits, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cli.ContainerInspect(ctx, id)
	if err != nil {
		return drivertest.Limits{}, err
	}
	pid := c.State.Pid
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return drivertest.Limits{}, err
	}
	paths := map[string]string{} // controller → path ("" key: v2)
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, ctl := range strings.Split(f[1], ",") {
			paths[ctl] = f[2]
		}
	}
	read := func(ctl, file string) string {
		t.Helper()
		var p string
		if rel, ok := paths[ctl]; ok && ctl != "" {
			dir := ctl
			if ctl == "cpu" {
				dir = "cpu,cpuacct"
				if _, err := os.Stat("/sys/fs/cgroup/" + dir); err != nil {
					dir = "cpu"
				}
			}
			p = filepath.Join("/sys/fs/cgroup", dir, rel, file)
		} else {
			p = filepath.Join("/sys/fs/cgroup", paths[""], file)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("reading %s: %v", p, err)
		}
		return strings.TrimSpace(string(b))
	}
	var lim drivertest.Limits
	if _, v1 := paths["memory"]; v1 {
		quota, _ := strconv.ParseFloat(read("cpu", "cpu.cfs_quota_us"), 64)
		period, _ := strconv.ParseFloat(read("cpu", "cpu.cfs_period_us"), 64)
		if quota > 0 && period > 0 {
			lim.CPUs = quota / period
		}
		lim.MemoryBytes, _ = strconv.ParseInt(read("memory", "memory.limit_in_bytes"), 10, 64)
		lim.CPUSet = read("cpuset", "cpuset.cpus")
	} else {
		f := strings.Fields(read("", "cpu.max"))
		if len(f) == 2 && f[0] != "max" {
			q, _ := strconv.ParseFloat(f[0], 64)
			p, _ := strconv.ParseFloat(f[1], 64)
			lim.CPUs = q / p
		}
		lim.MemoryBytes, _ = strconv.ParseInt(read("", "memory.max"), 10, 64)
		lim.CPUSet = read("", "cpuset.cpus")
	}
	if lim.CPUSet == allCPUs() {
		lim.CPUSet = c.HostConfig.CpusetCpus // unpinned: the full set
	}
	return lim, nil
}

func allCPUs() string {
	if n := runtime.NumCPU(); n > 1 {
		return "0-" + strconv.Itoa(n-1)
	}
	return "0"
}

// startSpec is a spec that runs the conformance helper in image tag.
func startSpec(t *testing.T, tag string, args ...string) driver.StartSpec {
	return driver.StartSpec{
		TaskID:      "t-" + randomHex(8),
		ServiceName: "dockertest",
		Slot:        1,
		Image:       tag,
		Command:     append([]string{"/testprog"}, args...),
		LogDir:      t.TempDir(),
		LogMaxBytes: 1 << 20,
	}
}

func start(t *testing.T, d driver.Driver, sp driver.StartSpec) driver.Handle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := d.Start(ctx, sp)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.Stop(ctx, 0); err != nil {
			t.Errorf("cleanup Stop: %v", err)
		}
	})
	return h
}

func waitExit(t *testing.T, h driver.Handle) driver.Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ex, err := h.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return ex
}

// TestHardening checks the defaults with the engine's own view (docker
// inspect) and with the task's: it cannot write to its root filesystem and
// does not run as root.
func TestHardening(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	tag := testImage(t, cli)
	d := newDriver(t, cli, docker.Config{})
	scratch := t.TempDir()
	if err := os.Chmod(scratch, 0o777); err != nil {
		t.Fatal(err)
	}
	sp := startSpec(t, tag, "to", filepath.Join(scratch, "out"), "ids", "to", "-", "touch", "/rootfs-write", "exit", "0")
	sp.Container.Mounts = []driver.Mount{{Source: scratch, Target: scratch}}
	sp.Container.Tmpfs = []string{"/tmp"}
	sp.Ports = []driver.Port{{Name: "http", Protocol: "tcp", HostPort: freePort(t)}}
	sp.CPUSet = "0"
	h := start(t, d, sp)
	ex := waitExit(t, h)
	if ex.Code != 100 { // testprog fails on the read-only root
		t.Errorf("writing to / ended with %+v, want code 100 (read-only file system)", ex)
	}
	ids := strings.Fields(readFile(t, filepath.Join(scratch, "out")))
	if len(ids) < 3 || ids[1] != "65534" || ids[2] != "65534" {
		t.Errorf("a root image ran as %q, want 65534:65534", ids)
	}

	c, err := cli.ContainerInspect(context.Background(), h.State().ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	hc := c.HostConfig
	checks := []struct {
		what string
		ok   bool
	}{
		{"ReadonlyRootfs", hc.ReadonlyRootfs},
		{"CapDrop ALL", slices.Equal(hc.CapDrop, []string{"ALL"}) && len(hc.CapAdd) == 0},
		{"no-new-privileges", slices.ContainsFunc(hc.SecurityOpt, func(s string) bool { return strings.HasPrefix(s, "no-new-privileges") })},
		{"not privileged", !hc.Privileged},
		{"no devices", len(hc.Devices) == 0},
		{"own network", !hc.NetworkMode.IsHost()},
		{"own pid namespace", !hc.PidMode.IsHost()},
		{"own ipc namespace", !hc.IpcMode.IsHost()},
		{"init", hc.Init != nil && *hc.Init},
		{"CpusetCpus", hc.CpusetCpus == "0"},
		{"tmpfs /tmp", hc.Tmpfs["/tmp"] != ""},
		{"user", c.Config.User == docker.NobodyUser},
		{"name", strings.TrimPrefix(c.Name, "/") == docker.ContainerName(sp)},
		{"labels", c.Config.Labels[docker.LabelTask] == sp.TaskID && c.Config.Labels[docker.LabelService] == "dockertest"},
	}
	bridge, err := d.BridgeGateway(context.Background())
	if err != nil {
		t.Fatalf("BridgeGateway: %v", err)
	}
	for _, b := range hc.PortBindings {
		// Loopback for the host, and the bridge gateway for other
		// containers; never every interface.
		checks = append(checks, struct {
			what string
			ok   bool
		}{"port on 127.0.0.1 and the bridge gateway only", len(b) == 2 && b[0].HostIP == "127.0.0.1" && b[1].HostIP == bridge.String()})
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("docker inspect: %s does not hold: %+v", c.what, hc)
		}
	}
}

// freePort returns a port that is free now, from 61000-64999: above the
// kernel's ephemeral range (where outgoing connections take ports from ":0")
// and above the range Berth gives tasks.
func freePort(t *testing.T) int {
	t.Helper()
	for range 200 {
		p := 61000 + mrand.IntN(4000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port in 61000-64999")
	return 0
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRelaxations checks that each relaxation field does what it says.
func TestRelaxations(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	tag := testImage(t, cli)
	d := newDriver(t, cli, docker.Config{})
	sp := startSpec(t, tag, "touch", "/rootfs-write", "ids", "exit", "0")
	sp.Container.WritableRootfs = true
	sp.Container.RunAsRoot = true
	sp.Container.CapAdd = []string{"net_bind_service", "CAP_CHOWN"}
	h := start(t, d, sp)
	if ex := waitExit(t, h); ex.Code != 0 {
		t.Errorf("writing to a writable root: %+v", ex)
	}
	c, err := cli.ContainerInspect(context.Background(), h.State().ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	if c.HostConfig.ReadonlyRootfs || c.Config.User != "" || !slices.Equal(slices.Sorted(slices.Values(c.HostConfig.CapAdd)), []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"}) {
		t.Errorf("relaxed container: readonly %v user %q cap_add %v", c.HostConfig.ReadonlyRootfs, c.Config.User, c.HostConfig.CapAdd)
	}
	rc, err := d.Logs(context.Background(), sp.TaskID, -1, false)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if !strings.HasPrefix(string(b), "ids 0 0") {
		t.Errorf("run_as_root: ids = %q, want uid 0", b)
	}
}

// TestBadInput: each bad spec or engine state gives an error that says
// which.
func TestBadInput(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	tag := testImage(t, cli)
	d := newDriver(t, cli, docker.Config{})
	ctx := context.Background()
	cases := []struct {
		name    string
		mod     func(sp *driver.StartSpec)
		want    error
		invalid bool
		text    string
	}{
		{"missing image, pull never", func(sp *driver.StartSpec) {
			sp.Image, sp.Container.Pull = "berth-test/no-such-image:"+randomHex(4), "never"
		}, docker.ErrImageNotFound, true, "pull is never"},
		{"missing image, pull fails", func(sp *driver.StartSpec) {
			sp.Image = "127.0.0.1:1/berth-test/no-such-image:1"
		}, nil, false, "pull image"},
		{"invalid reference", func(sp *driver.StartSpec) { sp.Image = "Not A/Valid::Ref" }, docker.ErrBadReference, true, "invalid image reference"},
		{"missing program", func(sp *driver.StartSpec) { sp.Command = []string{"/no-such-program"} }, nil, true, "does not exist"},
		{"program is a directory", func(sp *driver.StartSpec) { sp.Command = []string{"/"} }, nil, true, "is a directory"},
		{"missing workdir", func(sp *driver.StartSpec) {
			sp.Workdir = "/no/such/dir"
			sp.Container.Mounts = []driver.Mount{{Source: t.TempDir(), Target: "/no"}}
		}, nil, true, "workdir"},
		{"bad tmpfs", func(sp *driver.StartSpec) { sp.Container.Tmpfs = []string{"relative"} }, nil, true, "tmpfs"},
		{"no image command", func(sp *driver.StartSpec) { sp.Command = nil }, nil, true, "create container"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sp := startSpec(t, tag, "exit", "0")
			c.mod(&sp)
			h, err := d.Start(ctx, sp)
			if err == nil {
				_ = h.Stop(ctx, 0)
				t.Fatal("Start succeeded")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("err = %v, want %v", err, c.want)
			}
			if errors.Is(err, driver.ErrInvalid) != c.invalid {
				t.Errorf("err = %v: ErrInvalid %v, want %v", err, !c.invalid, c.invalid)
			}
			if !strings.Contains(err.Error(), c.text) {
				t.Errorf("err = %v, want it to say %q", err, c.text)
			}
			if id, _ := findContainer(cli, sp.TaskID); id != "" {
				t.Errorf("a failed Start left container %s", id)
			}
		})
	}

	t.Run("engine down", func(t *testing.T) {
		down := newDriver(t, nil, docker.Config{Host: "unix://" + filepath.Join(t.TempDir(), "no.sock")})
		_, err := down.Start(ctx, startSpec(t, tag))
		if !errors.Is(err, docker.ErrEngine) || errors.Is(err, driver.ErrInvalid) {
			t.Errorf("Start with no engine: %v, want ErrEngine (retryable)", err)
		}
		if _, err := down.Ping(ctx); !errors.Is(err, docker.ErrEngine) {
			t.Errorf("Ping with no engine: %v", err)
		}
	})

	t.Run("exits at once", func(t *testing.T) {
		h := start(t, d, startSpec(t, tag, "eprint", "bad config", "exit", "3"))
		if ex := waitExit(t, h); ex.Code != 3 || ex.Err != nil {
			t.Errorf("Wait = %+v, want code 3", ex)
		}
	})
}

func findContainer(cli *client.Client, task string) (string, error) {
	list, err := cli.ContainerList(context.Background(), container.ListOptions{All: true})
	if err != nil {
		return "", err
	}
	for _, c := range list {
		if c.Labels[docker.LabelTask] == task {
			return c.ID, nil
		}
	}
	return "", nil
}

// proxy forwards a unix socket to the engine's until closed, so a test can
// make the engine "go away" for one driver without touching the engine.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newProxy(t *testing.T, target string) (*proxy, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "engine.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(p.close)
	return p, "unix://" + sock
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestEngineGoesAway: a running task whose engine stops answering is given
// up after EngineTimeout with an error that says so; its container (which
// the engine still runs) is cleaned up by the test.
func TestEngineGoesAway(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	host := cli.DaemonHost()
	if !strings.HasPrefix(host, "unix://") {
		t.Skipf("the engine is at %s, not a unix socket this test can proxy", host)
	}
	tag := testImage(t, cli)
	p, addr := newProxy(t, strings.TrimPrefix(host, "unix://"))
	d := newDriver(t, nil, docker.Config{Host: addr, EngineTimeout: time.Second})
	sp := startSpec(t, tag, "forever")
	h, err := d.Start(context.Background(), sp)
	if err != nil {
		t.Fatal(err)
	}
	id := h.State().ContainerID
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true})
	})
	p.close()
	ex := waitExit(t, h)
	if ex.Code != -1 || !errors.Is(ex.Err, docker.ErrEngine) {
		t.Errorf("Wait after the engine went away = %+v, want ErrEngine", ex)
	}
	if err := h.Stop(context.Background(), 0); !errors.Is(err, docker.ErrEngine) {
		t.Errorf("Stop without an engine = %v, want ErrEngine", err)
	}
	// Another driver, on the real engine, adopts it again.
	h2, err := newDriver(t, cli, docker.Config{}).Recover(context.Background(), h.State())
	if err != nil {
		t.Fatalf("Recover after the engine came back: %v", err)
	}
	if err := h2.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
}

// TestRemoveStrays removes this node's containers that no task owns, and
// nothing else.
func TestRemoveStrays(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	tag := testImage(t, cli)
	d := newDriver(t, cli, docker.Config{})
	node, other := "node-"+randomHex(4), "node-"+randomHex(4)
	mk := func(node string) driver.StartSpec {
		sp := startSpec(t, tag, "forever")
		sp.NodeID = node
		return sp
	}
	keep, stray, foreign := mk(node), mk(node), mk(other)
	for _, sp := range []driver.StartSpec{keep, stray, foreign} {
		start(t, d, sp)
	}
	// A fresh driver, as after an agent restart, that adopted only keep.
	d2 := newDriver(t, cli, docker.Config{})
	removed, err := d2.RemoveStrays(context.Background(), node, map[string]bool{keep.TaskID: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{stray.TaskID}) {
		t.Errorf("removed %v, want [%s]", removed, stray.TaskID)
	}
	for _, c := range []struct {
		sp   driver.StartSpec
		want bool
	}{{keep, true}, {stray, false}, {foreign, true}} {
		id, err := findContainer(cli, c.sp.TaskID)
		if err != nil {
			t.Fatal(err)
		}
		if (id != "") != c.want {
			t.Errorf("task %s: container exists %v, want %v", c.sp.TaskID, id != "", c.want)
		}
	}
	if removed, err := d2.RemoveStrays(context.Background(), "", nil); err != nil || len(removed) > 0 {
		t.Errorf("RemoveStrays with no node id: %v, %v", removed, err)
	}
}

// TestLogsOutliveContainer: after Stop removed the container, its logs are
// read from the copy saved in the log directory.
func TestLogsOutliveContainer(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	tag := testImage(t, cli)
	d := newDriver(t, cli, docker.Config{})
	sp := startSpec(t, tag, "lines", "5", "eprint", "oops")
	sp.Command = append([]string{"/merge"}, sp.Command...) // one pipe: ordered
	h := start(t, d, sp)
	waitExit(t, h)
	if err := h.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if id, _ := findContainer(cli, sp.TaskID); id != "" {
		t.Fatalf("container %s still exists after Stop", id)
	}
	rc, err := d.Logs(context.Background(), sp.TaskID, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "line 5\noops\n" {
		t.Errorf("saved logs, tail 2 = %q", b)
	}
	if got := readFile(t, filepath.Join(sp.LogDir, sp.TaskID+".log")); !strings.HasPrefix(got, "line 1\n") {
		t.Errorf("saved log file = %q", got)
	}
}

// TestStats: network and block I/O counters come through besides CPU and
// memory.
func TestStats(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	tag := testImage(t, cli)
	d := newDriver(t, cli, docker.Config{})
	sp := startSpec(t, tag, "burn", "100ms", "forever")
	h := start(t, d, sp)
	var st driver.Stats
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		st, err = h.(driver.Statser).Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.CPUNanos >= uint64(50*time.Millisecond) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.CPUNanos < uint64(50*time.Millisecond) || st.Pids == 0 || st.MemoryBytes == 0 {
		t.Errorf("Stats = %+v", st)
	}
	if err := h.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.(driver.Statser).Stats(context.Background()); !errors.Is(err, driver.ErrGone) {
		t.Errorf("Stats after Stop: %v, want ErrGone", err)
	}
}

// TestKilledUnderMemoryLimitIsNotOOM: a container under a memory limit
// killed with SIGKILL by someone else ends with 137 like an OOM kill does;
// the driver asks the engine's event stream whether an "oom" event came
// (the engine's OOMKilled flag can miss one whose exit it handled first:
// TestConformance/OOMKilled covers the real OOM kill) and must not report
// an OOM kill that was not one, nor wait past the bound for the event.
func TestKilledUnderMemoryLimitIsNotOOM(t *testing.T) {
	cli := dockertest.Client(t)
	tag := testImage(t, cli)
	d := newDriver(t, cli, docker.Config{})
	sp := startSpec(t, tag, "print", "up", "forever")
	sp.MemoryBytes = 64 << 20
	h := start(t, d, sp)
	id := h.State().ContainerID
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	killed := time.Now()
	if err := cli.ContainerKill(ctx, id, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	ex := waitExit(t, h)
	if ex.Code != 137 || ex.OOMKilled {
		t.Errorf("Wait = %+v, want code 137 and no OOM kill", ex)
	}
	if d := time.Since(killed); d > 15*time.Second {
		t.Errorf("the exit took %s to be reported", d)
	}
}
