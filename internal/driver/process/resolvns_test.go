package process_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/driver/process"
)

// TestTaskResolver starts process tasks with a resolver: each sees a
// read-only /etc/resolv.conf naming the agent's server and search domain,
// runs as its user and in its cgroups from its first instruction, while the
// host's file and mount table, and this process's view, stay as they were.
// With TaskResolvers off the resolver is ignored; a missing program is
// still the caller's error; two resolvers get two namespaces.
func TestTaskResolver(t *testing.T) {
	t.Parallel()
	needRoot(t)
	hostBefore, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Skipf("this host has no /etc/resolv.conf to stand in for: %v", err)
	}
	mountsBefore, hostMountsBefore := resolvMounts(t, "/proc/self/mountinfo"), resolvMounts(t, "/proc/1/mountinfo")
	f := newFixture(t, process.Config{TaskResolvers: true})
	dns := driver.Resolver{Servers: []string{"127.0.0.153"}, Search: []string{"berth"}}
	script := `cat /etc/resolv.conf; id -u; cat /proc/self/cgroup; if echo x >/etc/resolv.conf 2>/dev/null; then echo writable; fi`

	for _, tc := range []struct {
		name   string
		user   string
		limits bool
	}{
		{"root", "", false},
		{"nobody", "65534:65534", true}, // with limits: the cgroup path
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := f.spec("dns-" + tc.name)
			sp.Command = []string{"/bin/sh", "-c", script}
			sp.Workdir = "/"
			sp.User = tc.user
			sp.DNS = dns
			if tc.limits && f.h != nil {
				sp.CPUs, sp.MemoryBytes = 1, 256<<20
			}
			h := f.start(sp)
			if ex := f.wait(h); ex.Code != 0 {
				t.Fatalf("Wait = %+v", ex)
			}
			b, err := os.ReadFile(filepath.Join(f.dir, sp.TaskID+".log"))
			if err != nil {
				t.Fatal(err)
			}
			out := string(b)
			for _, want := range []string{"nameserver 127.0.0.153\n", "search berth\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("the task's /etc/resolv.conf lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "writable") {
				t.Errorf("the task could write its /etc/resolv.conf:\n%s", out)
			}
			uid := "0"
			if tc.user != "" {
				uid = "65534"
			}
			if !strings.Contains(out, "\n"+uid+"\n") {
				t.Errorf("the task did not run as uid %s:\n%s", uid, out)
			}
			if sp.CPUs > 0 {
				var ex struct {
					Cgroup string `json:"cgroup"`
				}
				if err := json.Unmarshal(h.State().Extra, &ex); err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out, ":/"+ex.Cgroup+"\n") {
					t.Errorf("the task is not in its cgroup /%s from its start:\n%s", ex.Cgroup, out)
				}
			}
		})
	}

	t.Run("another resolver", func(t *testing.T) {
		sp := f.spec("dns-other")
		sp.Command = []string{"/bin/cat", "/etc/resolv.conf"}
		sp.Workdir = "/"
		sp.DNS = driver.Resolver{Servers: []string{"127.0.0.154"}}
		h := f.start(sp)
		if ex := f.wait(h); ex.Code != 0 {
			t.Fatalf("Wait = %+v", ex)
		}
		b, err := os.ReadFile(filepath.Join(f.dir, sp.TaskID+".log"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "nameserver 127.0.0.154\n") || strings.Contains(string(b), "search") {
			t.Errorf("a task with another resolver sees:\n%s", b)
		}
	})

	t.Run("off", func(t *testing.T) {
		g := newFixture(t, process.Config{})
		sp := g.spec("dns-noinit")
		sp.Command = []string{"/bin/cat", "/etc/resolv.conf"}
		sp.DNS = dns
		h := g.start(sp)
		if ex := g.wait(h); ex.Code != 0 {
			t.Fatalf("Wait = %+v", ex)
		}
		b, err := os.ReadFile(filepath.Join(g.dir, sp.TaskID+".log"))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != string(hostBefore) {
			t.Errorf("with TaskResolvers off the task should see the host's resolv.conf:\n%s", b)
		}
	})

	t.Run("missing program", func(t *testing.T) {
		sp := f.spec("dns-missing")
		sp.Command = []string{"/nonexistent/program"}
		sp.Workdir = "/"
		sp.DNS = dns
		_, err := f.d.Start(context.Background(), sp)
		if !errors.Is(err, driver.ErrInvalid) {
			t.Fatalf("Start of a missing program = %v, want ErrInvalid", err)
		}
	})

	// This goroutine may run on any thread but the namespace threads.
	if after, err := os.ReadFile("/etc/resolv.conf"); err != nil || string(after) != string(hostBefore) {
		t.Errorf("the host's /etc/resolv.conf changed: %q (%v), was %q", after, err, hostBefore)
	}
	// Neither this process's view (its main thread's) nor the host's (pid
	// 1's) has the tasks' mount.
	if after := resolvMounts(t, "/proc/self/mountinfo"); after != mountsBefore {
		t.Errorf("this process's mounts of resolv.conf changed:\nbefore: %s\nafter: %s", mountsBefore, after)
	}
	if after := resolvMounts(t, "/proc/1/mountinfo"); after != hostMountsBefore {
		t.Errorf("the host's mounts of resolv.conf changed:\nbefore: %s\nafter: %s", hostMountsBefore, after)
	}
}

// resolvMounts returns the lines of a mount table (a mountinfo file) that
// mount something on a resolv.conf.
func resolvMounts(t *testing.T, mountinfo string) string {
	t.Helper()
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "resolv.conf") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}
