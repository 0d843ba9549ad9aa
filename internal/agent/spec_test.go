package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

func TestTaskEnvAndCommand(t *testing.T) {
	t.Setenv("BERTH_CANARY_SECRET", "leaked")
	h := newHarness(t)
	h.start()
	p1, p2 := freePort(t, "tcp"), freePort(t, "udp")
	tk := newTask("abcdef1234567890")
	tk.Slot = 2
	tk.Spec.Command = []string{"berth", "whoami", "--port", "${PORT}", "--admin", "${PORT_ADMIN_API}", "${FOO}", "${UNKNOWN}", "${BERTH_CANARY_SECRET}"}
	tk.Spec.Ports = []api.PortSpec{{Name: "http"}, {Name: "admin-api", Protocol: "udp"}}
	tk.Ports = map[string]int{"http": p1, "admin-api": p2}
	tk.Spec.Env = map[string]string{"FOO": "bar", "PATH": "/custom/bin:/usr/bin"}
	tk.Spec.Resources = api.Resources{CPUs: 0.5, Memory: 64 << 20}
	tk.Spec.Workdir = "/srv"
	h.m.Assign(tk)
	h.waitStatus(tk.ID, api.TaskRunning)
	spec := h.d.Task(tk.ID).Spec

	wantCmd := []string{"/opt/berth/bin/berth", "whoami", "--port", strconv.Itoa(p1), "--admin", strconv.Itoa(p2), "bar", "${UNKNOWN}", "${BERTH_CANARY_SECRET}"}
	if !reflect.DeepEqual(spec.Command, wantCmd) {
		t.Errorf("command = %q\nwant      %q", spec.Command, wantCmd)
	}
	// Under a root agent the task runs as nobody, with nobody's home.
	wantUser, wantHome := "", "/"
	if os.Geteuid() == 0 {
		wantUser, wantHome = NobodyUser, homeOf(NobodyUser)
	}
	if spec.User != wantUser {
		t.Errorf("user = %q, want %q", spec.User, wantUser)
	}
	wantEnv := []string{
		"BERTH_NODE_ID=node-1",
		"BERTH_SERVICE=web",
		"BERTH_SLOT=2",
		"BERTH_TASK_ID=abcdef1234567890",
		"BERTH_TASK_NAME=web.2.abcdef12",
		"FOO=bar",
		"HOME=" + wantHome,
		"PATH=/custom/bin:/usr/bin",
		"PORT=" + strconv.Itoa(p1),
		"PORT_ADMIN_API=" + strconv.Itoa(p2),
		"PORT_HTTP=" + strconv.Itoa(p1),
	}
	if !reflect.DeepEqual(spec.Env, wantEnv) {
		t.Errorf("env = %q\nwant  %q", spec.Env, wantEnv)
	}
	for _, kv := range spec.Env {
		if strings.Contains(kv, "leaked") || strings.HasPrefix(kv, "BERTH_CANARY") {
			t.Errorf("the agent's environment leaked: %s", kv)
		}
	}
	if spec.CPUs != 0.5 || spec.MemoryBytes != 64<<20 || spec.Workdir != "/srv" || spec.Slot != 2 || spec.ServiceName != "web" {
		t.Errorf("spec = %+v", spec)
	}
	if spec.LogDir != filepath.Join(h.dir, "agent", "logs") || spec.LogMaxBytes != DefaultLogMaxBytes {
		t.Errorf("log dir %q, max %d", spec.LogDir, spec.LogMaxBytes)
	}
}

func TestResolveProgram(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "/nowhere") // the agent's PATH must not matter
	for _, c := range []struct {
		name, path, workdir, want string
		err                       bool
	}{
		{name: "berth", want: "/b/berth"},
		{name: "/abs/prog", want: "/abs/prog"},
		{name: "./run", workdir: "/srv", want: "/srv/run"},
		{name: "bin/run", want: "/bin/run"},
		{name: "tool", path: "relative:/missing:" + dir, want: exe},
		{name: "data", path: dir, err: true}, // not executable
		{name: "tool", path: "/missing", err: true},
	} {
		got, err := resolveProgram(c.name, c.path, c.workdir, "/b/berth")
		if c.err {
			if !errors.Is(err, errInvalidTask) {
				t.Errorf("%s in %q: error %v, want errInvalidTask", c.name, c.path, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s in %q: %q, %v; want %q", c.name, c.path, got, err, c.want)
		}
	}
}

func TestHomeOf(t *testing.T) {
	for spec, want := range map[string]string{"": "/", "root": "/root", "0": "/root", "root:root": "/root", "no-such-user-berth": "/"} {
		if got := homeOf(spec); got != want {
			t.Errorf("homeOf(%q) = %q, want %q", spec, got, want)
		}
	}
}

func TestValidStep(t *testing.T) {
	states := []api.TaskState{api.TaskAssigned, api.TaskStarting, api.TaskRunning, api.TaskComplete, api.TaskFailed, api.TaskShutdown, api.TaskRejected}
	allowed := map[string]bool{
		"assigned>starting": true, "assigned>complete": true, "assigned>failed": true, "assigned>shutdown": true, "assigned>rejected": true,
		"starting>running": true, "starting>complete": true, "starting>failed": true, "starting>shutdown": true, "starting>rejected": true,
		"running>complete": true, "running>failed": true, "running>shutdown": true, "running>rejected": true,
	}
	for _, from := range states {
		for _, to := range states {
			k := fmt.Sprintf("%s>%s", from, to)
			if got := validStep(from, to); got != allowed[k] {
				t.Errorf("validStep(%s) = %v", k, got)
			}
		}
	}
}

func TestParseMemTotal(t *testing.T) {
	n, err := parseMemTotal(strings.NewReader("MemFree: 10 kB\nMemTotal:       16318480 kB\n"))
	if err != nil || n != 16318480*1024 {
		t.Errorf("parseMemTotal = %d, %v", n, err)
	}
	if _, err := parseMemTotal(strings.NewReader("MemFree: 1 kB\n")); err == nil {
		t.Error("no error without MemTotal")
	}
	if _, err := parseMemTotal(strings.NewReader("MemTotal: x kB\n")); err == nil {
		t.Error("no error for a bad number")
	}
}
