package docker

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
)

func baseSpec() driver.StartSpec {
	return driver.StartSpec{TaskID: "abc123", ServiceName: "web", Slot: 2, NodeID: "n1", Image: "app:1",
		Command: []string{"/bin/app", "--port", "8080"}, Env: []string{"A=1"}}
}

// TestContainerConfigDefaults: the zero ContainerOptions give a hardened
// container.
func TestContainerConfigDefaults(t *testing.T) {
	sp := baseSpec()
	sp.CPUs, sp.MemoryBytes, sp.CPUSet, sp.MemNodes = 1.5, 64<<20, "2-3", "0"
	sp.Ports = []driver.Port{{Name: "http", Protocol: "tcp", HostPort: 20001}, {Name: "dns", Protocol: "udp", HostPort: 20002}}
	cfg, hc, err := containerConfig(sp, "", "127.0.0.1", "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !hc.ReadonlyRootfs || !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 ||
		!slices.Equal(hc.SecurityOpt, []string{"no-new-privileges"}) || hc.Privileged || len(hc.Devices) != 0 ||
		hc.NetworkMode.IsHost() || hc.PidMode.IsHost() || !hc.IpcMode.IsPrivate() || hc.Init == nil || !*hc.Init {
		t.Errorf("not hardened: %+v", hc)
	}
	if cfg.User != NobodyUser {
		t.Errorf("root image without a user runs as %q, want %s", cfg.User, NobodyUser)
	}
	if !slices.Equal(cfg.Entrypoint, []string{"/bin/app"}) || !slices.Equal(cfg.Cmd, []string{"--port", "8080"}) {
		t.Errorf("entrypoint %q cmd %q", cfg.Entrypoint, cfg.Cmd)
	}
	if hc.NanoCPUs != 1_500_000_000 || hc.Memory != 64<<20 || hc.MemorySwap != 64<<20 || hc.CpusetCpus != "2-3" || hc.CpusetMems != "0" {
		t.Errorf("resources %+v", hc.Resources)
	}
	want := nat.PortMap{
		"20001/tcp": {{HostIP: "127.0.0.1", HostPort: "20001"}},
		"20002/udp": {{HostIP: "127.0.0.1", HostPort: "20002"}},
	}
	if len(hc.PortBindings) != 2 || len(cfg.ExposedPorts) != 2 {
		t.Fatalf("ports %v %v", hc.PortBindings, cfg.ExposedPorts)
	}
	for p, b := range want {
		if got := hc.PortBindings[p]; !slices.Equal(got, b) {
			t.Errorf("binding %s = %v, want %v", p, got, b)
		}
	}
	if cfg.Labels[LabelTask] != "abc123" || cfg.Labels[LabelService] != "web" || cfg.Labels[LabelSlot] != "2" || cfg.Labels[LabelNode] != "n1" {
		t.Errorf("labels %v", cfg.Labels)
	}
	if hc.LogConfig.Type != "json-file" || hc.LogConfig.Config["max-size"] != "524288" || hc.LogConfig.Config["max-file"] != "2" {
		t.Errorf("log config %+v", hc.LogConfig)
	}
	if hc.RestartPolicy.Name != container.RestartPolicyDisabled {
		t.Errorf("restart policy %+v: the agent restarts tasks, not the engine", hc.RestartPolicy)
	}
}

func TestContainerConfigUsers(t *testing.T) {
	for _, c := range []struct {
		imageUser, specUser string
		runAsRoot           bool
		want                string
	}{
		{"", "", false, NobodyUser},
		{"root", "", false, NobodyUser},
		{"0:0", "", false, NobodyUser},
		{"app", "", false, ""}, // the image's own non-root user
		{"1000:1000", "", false, ""},
		{"", "", true, ""},              // run_as_root: the image's root
		{"", "1234:5", false, "1234:5"}, // an explicit user always wins
		{"app", "0", false, "0"},
	} {
		sp := baseSpec()
		sp.User, sp.Container.RunAsRoot = c.specUser, c.runAsRoot
		cfg, _, err := containerConfig(sp, c.imageUser, "127.0.0.1", "", 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.User != c.want {
			t.Errorf("image user %q, spec user %q, run_as_root %v: User = %q, want %q", c.imageUser, c.specUser, c.runAsRoot, cfg.User, c.want)
		}
	}
}

func TestContainerConfigRelaxations(t *testing.T) {
	sp := baseSpec()
	sp.Command = nil
	sp.Container = driver.ContainerOptions{WritableRootfs: true, CapAdd: []string{"net_bind_service", "CAP_CHOWN"}, Tmpfs: []string{"/tmp", "/run"}}
	cfg, hc, err := containerConfig(sp, "app", "0.0.0.0", "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if hc.ReadonlyRootfs || !slices.Equal(hc.CapAdd, []string{"CAP_NET_BIND_SERVICE", "CAP_CHOWN"}) || !slices.Equal(hc.CapDrop, []string{"ALL"}) {
		t.Errorf("relaxations: readonly %v cap_add %v cap_drop %v", hc.ReadonlyRootfs, hc.CapAdd, hc.CapDrop)
	}
	if hc.Tmpfs["/tmp"] != tmpfsOptions || hc.Tmpfs["/run"] != tmpfsOptions || !strings.Contains(tmpfsOptions, "noexec") {
		t.Errorf("tmpfs %v", hc.Tmpfs)
	}
	if cfg.Entrypoint != nil || cfg.Cmd != nil {
		t.Errorf("no command must keep the image's: entrypoint %q cmd %q", cfg.Entrypoint, cfg.Cmd)
	}
}

func TestContainerConfigInvalid(t *testing.T) {
	for name, mod := range map[string]func(*driver.StartSpec){
		"relative workdir": func(sp *driver.StartSpec) { sp.Workdir = "rel" },
		"empty program":    func(sp *driver.StartSpec) { sp.Command = []string{""} },
		"cap ALL":          func(sp *driver.StartSpec) { sp.Container.CapAdd = []string{"all"} },
		"tmpfs root":       func(sp *driver.StartSpec) { sp.Container.Tmpfs = []string{"/"} },
		"tmpfs unclean":    func(sp *driver.StartSpec) { sp.Container.Tmpfs = []string{"/a/../b"} },
		"port range":       func(sp *driver.StartSpec) { sp.Ports = []driver.Port{{Name: "x", HostPort: 70000}} },
		"port proto":       func(sp *driver.StartSpec) { sp.Ports = []driver.Port{{Name: "x", Protocol: "sctp", HostPort: 1}} },
		"relative mount":   func(sp *driver.StartSpec) { sp.Container.Mounts = []driver.Mount{{Source: "a", Target: "/a"}} },
	} {
		sp := baseSpec()
		mod(&sp)
		if _, _, err := containerConfig(sp, "", "127.0.0.1", "", 1<<20); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestContainerName(t *testing.T) {
	sp := baseSpec()
	if got := ContainerName(sp); got != "berth.web.2.abc123" {
		t.Errorf("ContainerName = %q", got)
	}
	sp.TaskID = "a/b c"
	if got := ContainerName(sp); got != "berth.web.2.a_b_c" {
		t.Errorf("ContainerName = %q", got)
	}
}

// TestSpecValidation checks the docker fields of api.TaskSpec (they live in
// package api; their behaviour is this driver's).
func TestSpecValidation(t *testing.T) {
	no := false
	for _, c := range []struct {
		name  string
		task  api.TaskSpec
		field string // "" = valid
	}{
		{"defaults", api.TaskSpec{Driver: "docker", Image: "app:1"}, ""},
		{"all fields", api.TaskSpec{Driver: "docker", Image: "registry.example.com:5000/team/app@sha256:0123", Pull: "always", ReadOnly: &no,
			Tmpfs: []string{"/tmp"}, CapAdd: []string{"NET_BIND_SERVICE", "cap_chown"}, RunAsRoot: true}, ""},
		{"bad pull", api.TaskSpec{Driver: "docker", Image: "app", Pull: "sometimes"}, "task.pull"},
		{"bad image", api.TaskSpec{Driver: "docker", Image: "has space"}, "task.image"},
		{"tmpfs relative", api.TaskSpec{Driver: "docker", Image: "app", Tmpfs: []string{"tmp"}}, "task.tmpfs[0]"},
		{"tmpfs root", api.TaskSpec{Driver: "docker", Image: "app", Tmpfs: []string{"/"}}, "task.tmpfs[0]"},
		{"tmpfs twice", api.TaskSpec{Driver: "docker", Image: "app", Tmpfs: []string{"/a", "/a"}}, "task.tmpfs[1]"},
		{"cap ALL", api.TaskSpec{Driver: "docker", Image: "app", CapAdd: []string{"ALL"}}, "task.cap_add[0]"},
		{"cap unknown", api.TaskSpec{Driver: "docker", Image: "app", CapAdd: []string{"NET_BIND", "CHOWN"}}, "task.cap_add[0]"},
		{"exec health runs in the container", api.TaskSpec{Driver: "docker", Image: "app", Health: &api.HealthCheck{Exec: []string{"/bin/check"}}}, ""},
		{"docker field on process", api.TaskSpec{Driver: "process", Command: []string{"x"}, CapAdd: []string{"CHOWN"}}, "task.cap_add"},
		{"run_as_root is for process tasks too", api.TaskSpec{Driver: "process", Command: []string{"x"}, RunAsRoot: true}, ""},
		{"read_only on process", api.TaskSpec{Driver: "process", Command: []string{"x"}, ReadOnly: &no}, "task.read_only"},
	} {
		s := api.ServiceSpec{Name: "svc", Task: c.task}
		s.Normalize()
		err := s.Validate()
		var fe *api.FieldError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.field != "" && (!errors.As(err, &fe) || !fieldIn(err, c.field)):
			t.Errorf("%s: err = %v, want one on %s", c.name, err, c.field)
		}
	}
	s := api.ServiceSpec{Name: "svc", Task: api.TaskSpec{Driver: "docker", Image: "app"}}
	s.Normalize()
	if s.Task.Pull != api.PullIfNotPresent || s.Task.ReadOnly == nil || !*s.Task.ReadOnly {
		t.Errorf("docker defaults: pull %q read_only %v (visible in service inspect)", s.Task.Pull, s.Task.ReadOnly)
	}
}

func fieldIn(err error, field string) bool {
	var v api.ValidationErrors
	if !errors.As(err, &v) {
		return false
	}
	for _, fe := range v {
		if fe.Field == field {
			return true
		}
	}
	return false
}

// TestContainerConfigHostModePorts: a host-mode port reaches the driver as
// its published number, which may lie outside the node's task port range and
// may be shared by tcp and udp; each is bound as it is, on the publish
// address, with the container port equal to it.
func TestContainerConfigHostModePorts(t *testing.T) {
	sp := baseSpec()
	sp.Ports = []driver.Port{
		{Name: "http", Protocol: "tcp", HostPort: 18080},
		{Name: "dns", Protocol: "udp", HostPort: 53},
		{Name: "dns-tcp", Protocol: "tcp", HostPort: 53},
		{Name: "admin", HostPort: 20001}, // allocated from the range; tcp by default
	}
	cfg, hc, err := containerConfig(sp, "", "10.0.0.7", "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := nat.PortMap{
		"18080/tcp": {{HostIP: "10.0.0.7", HostPort: "18080"}},
		"53/udp":    {{HostIP: "10.0.0.7", HostPort: "53"}},
		"53/tcp":    {{HostIP: "10.0.0.7", HostPort: "53"}},
		"20001/tcp": {{HostIP: "10.0.0.7", HostPort: "20001"}},
	}
	if len(hc.PortBindings) != len(want) || len(cfg.ExposedPorts) != len(want) {
		t.Fatalf("bindings %v, exposed %v", hc.PortBindings, cfg.ExposedPorts)
	}
	for p, b := range want {
		if got := hc.PortBindings[p]; !slices.Equal(got, b) {
			t.Errorf("binding %s = %v, want %v", p, got, b)
		}
		if _, ok := cfg.ExposedPorts[p]; !ok {
			t.Errorf("%s not exposed", p)
		}
	}
	if hc.NetworkMode != "bridge" {
		t.Errorf("network mode %q: host-mode ports must not mean the host's network namespace", hc.NetworkMode)
	}
}

// TestContainerConfigBridgeBinding checks that task ports are also bound on
// the bridge address (where other containers reach the host), unless the
// publish address already covers every interface.
func TestContainerConfigBridgeBinding(t *testing.T) {
	sp := driver.StartSpec{TaskID: "t1", Image: "app", Ports: []driver.Port{{Name: "http", Protocol: "tcp", HostPort: 20001}}}
	_, hc, err := containerConfig(sp, "", "127.0.0.1", "172.17.0.1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := hc.PortBindings["20001/tcp"]
	if len(got) != 2 || got[0].HostIP != "127.0.0.1" || got[1].HostIP != "172.17.0.1" || got[1].HostPort != "20001" {
		t.Errorf("bindings %+v, want 127.0.0.1:20001 and 172.17.0.1:20001", got)
	}
	_, hc, err = containerConfig(sp, "", "0.0.0.0", "172.17.0.1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := hc.PortBindings["20001/tcp"]; len(got) != 1 {
		t.Errorf("with publish address 0.0.0.0: bindings %+v, want only that one", got)
	}
}
