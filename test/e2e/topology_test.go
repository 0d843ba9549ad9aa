package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// whoamiSpec is a whoami service with an http port and health check; extra
// is YAML added at the top level and res the task's resources.
func whoamiSpec(name, extra, res string) string {
	return fmt.Sprintf(`name: %s
%s
task:
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports: [{name: http}]
  health: {http: {port: http, path: /healthz}, interval: 1s}
  resources: %s
`, name, extra, res)
}

func writeSpec(t *testing.T, name, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// procStatusField returns a field of /proc/PID/status, such as
// Cpus_allowed_list.
func procStatusField(pid int, field string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// procEnv returns one variable of a process's environment.
func procEnv(pid int, key string) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return "", false
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// onlineCPUs is the machine's online CPU list, as the kernel writes it.
func onlineCPUs(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// cpuList parses a small kernel CPU list ("0-1,3") into ids.
func cpuList(t *testing.T, s string) []int {
	t.Helper()
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			t.Fatalf("CPU list %q: %v", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				t.Fatalf("CPU list %q: %v", s, err)
			}
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out
}

func requireCPUs(t *testing.T, n int) []int {
	t.Helper()
	cpus := cpuList(t, onlineCPUs(t))
	if len(cpus) < n {
		t.Skipf("needs at least %d online CPUs, this machine has %v", n, cpus)
	}
	return cpus
}

// TestPerUnitCoreReplicasArePinned deploys a `mode: per-unit, unit: core`
// whoami: one replica per core of this machine, each running on exactly its
// core's CPU, with GOMAXPROCS to match, and drawn in `berth node topology`.
func TestPerUnitCoreReplicasArePinned(t *testing.T) {
	t.Parallel()
	cpus := requireCPUs(t, 2)
	b := startBerth(t)
	spec := writeSpec(t, "cores", whoamiSpec("cores", "mode: per-unit\nunit: core", "{memory: 64MiB}"))
	if out := b.mustCLI("deploy", "-f", spec); !strings.Contains(out, "service cores created") {
		t.Errorf("deploy printed %q", out)
	}
	// This machine's cores have one thread each: one replica per CPU.
	views, took := b.waitConverged("cores", len(cpus), deployTimeout)
	t.Logf("%d per-core replicas running and healthy after %v", len(cpus), took.Round(time.Millisecond))
	seen := map[string]int{}
	for _, v := range views[1:] {
		allowed, err := procStatusField(v.PID, "Cpus_allowed_list")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("slot %d (%s): pid %d Cpus_allowed_list %s, task cpus %q mem_nodes %q", v.Slot, v.Unit, v.PID, allowed, v.CPUs, v.MemNodes)
		if len(cpuList(t, allowed)) != 1 {
			t.Errorf("slot %d: Cpus_allowed_list %q is not a single CPU", v.Slot, allowed)
		}
		if allowed != v.CPUs || v.Unit != fmt.Sprintf("core:%d", v.Slot-1) {
			t.Errorf("slot %d: runs on %q, its task says unit %q cpus %q", v.Slot, allowed, v.Unit, v.CPUs)
		}
		if other, dup := seen[allowed]; dup {
			t.Errorf("slots %d and %d both run on CPU %s", other, v.Slot, allowed)
		}
		seen[allowed] = v.Slot
		if procs, _ := procEnv(v.PID, "GOMAXPROCS"); procs != "1" {
			t.Errorf("slot %d: GOMAXPROCS=%q, want 1", v.Slot, procs)
		}
	}
	// `service ps` shows the unit and CPUs.
	table := b.mustCLI("service", "ps", "cores")
	if !strings.Contains(table, "CPUS") || !strings.Contains(table, "core:0=") {
		t.Errorf("service ps shows no CPUs:\n%s", table)
	}
	drawing := b.mustCLI("node", "topology", views[1].Node)
	t.Logf("berth node topology:\n%s", drawing)
	for _, v := range views[1:] {
		want := fmt.Sprintf("cpu %s cores.%d", v.CPUs, v.Slot)
		if !strings.Contains(strings.Join(strings.Fields(drawing), " "), want) {
			t.Errorf("node topology lacks %q", want)
		}
	}
}

// TestExclusiveAndSharedNeverShareACPU runs a shared whoami, then an
// exclusive one: the shared task leaves the exclusive task's CPU, and gets
// it back once the exclusive service is removed.
func TestExclusiveAndSharedNeverShareACPU(t *testing.T) {
	t.Parallel()
	cpus := requireCPUs(t, 2)
	all := onlineCPUs(t)
	b := startBerth(t)
	b.mustCLI("deploy", "-f", writeSpec(t, "shared", whoamiSpec("shared", "replicas: 1", "{cpus: 0.25, memory: 64MiB}")))
	shared, _ := b.waitConverged("shared", 1, deployTimeout)
	sharedPID := shared[1].PID
	allowed := func(pid int) string {
		s, err := procStatusField(pid, "Cpus_allowed_list")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := allowed(sharedPID); got != all || shared[1].CPUs != "" {
		t.Fatalf("the shared task runs on %q (task cpus %q), want all online CPUs %s", got, shared[1].CPUs, all)
	}
	if procs, _ := procEnv(sharedPID, "GOMAXPROCS"); procs != strconv.Itoa(len(cpus)) {
		t.Errorf("shared task GOMAXPROCS=%q, want the pool size %d", procs, len(cpus))
	}

	b.mustCLI("deploy", "-f", writeSpec(t, "excl", whoamiSpec("excl", "replicas: 1", "{cpus: 1, cpu_policy: exclusive, memory: 64MiB}")))
	excl, took := b.waitConverged("excl", 1, deployTimeout)
	ex := excl[1]
	t.Logf("exclusive task running %v after deploy on CPUs %q (mem nodes %q)", took.Round(time.Millisecond), ex.CPUs, ex.MemNodes)
	if len(cpuList(t, ex.CPUs)) != 1 || allowed(ex.PID) != ex.CPUs {
		t.Fatalf("exclusive task: allocation %q, Cpus_allowed_list %q", ex.CPUs, allowed(ex.PID))
	}
	if procs, _ := procEnv(ex.PID, "GOMAXPROCS"); procs != "1" {
		t.Errorf("exclusive task GOMAXPROCS=%q, want 1", procs)
	}
	exCPU := cpuList(t, ex.CPUs)[0]
	eventually(t, 10*time.Second, func() error {
		for _, c := range cpuList(t, allowed(sharedPID)) {
			if c == exCPU {
				return fmt.Errorf("the shared task (pid %d) may still run on CPU %d, which the exclusive task holds: %s", sharedPID, exCPU, allowed(sharedPID))
			}
		}
		return nil
	})
	t.Logf("shared task now on %s, exclusive on %s", allowed(sharedPID), ex.CPUs)
	if !b.alive(sharedPID) {
		t.Fatal("the shared task was restarted to change its CPUs; it should be moved live")
	}

	b.mustCLI("service", "rm", "excl")
	took = eventually(t, 15*time.Second, func() error {
		if got := allowed(sharedPID); got != all {
			return fmt.Errorf("the shared task runs on %s, want all CPUs %s back", got, all)
		}
		return nil
	})
	t.Logf("shared task back on all CPUs %v after the exclusive service was removed", took.Round(time.Millisecond))
}

// TestTopologyBadInput: a fractional exclusive CPU count and an unknown unit
// are refused at deploy with their field; more exclusive CPUs than the node
// has leaves the task pending with a reason that says so.
func TestTopologyBadInput(t *testing.T) {
	t.Parallel()
	cpus := requireCPUs(t, 1)
	b := startBerth(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct{ name, svc, doc, field string }{
		{"fractional exclusive", "frac", whoamiSpec("frac", "replicas: 1", "{cpus: 1.5, cpu_policy: exclusive}"), "task.resources.cpus"},
		{"unknown unit", "units", whoamiSpec("units", "mode: per-unit\nunit: socketz", "{}"), "unit"},
	} {
		_, _, err := b.client.DeployService(ctx, c.svc, []byte(c.doc), "application/yaml")
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != 400 || ae.Field != c.field {
			t.Errorf("%s: err %v, want a 400 on field %s", c.name, err, c.field)
			continue
		}
		t.Logf("%s: 400 %s", c.name, ae)
	}
	svcs, err := b.client.ListServices(ctx)
	if err != nil || len(svcs) != 0 {
		t.Fatalf("services after rejected deploys: %+v, %v", svcs, err)
	}

	want := fmt.Sprintf("exclusive CPUs (want %d, most free %d)", len(cpus)+1, len(cpus))
	big := whoamiSpec("big", "replicas: 1", fmt.Sprintf("{cpus: %d, cpu_policy: exclusive}", len(cpus)+1))
	b.mustCLI("deploy", "-f", writeSpec(t, "big", big))
	eventually(t, 15*time.Second, func() error {
		views, err := b.psAPI("big", false)
		if err != nil {
			return err
		}
		if len(views) != 1 || views[0].State != api.TaskPending || !strings.Contains(views[0].Message, want) {
			return fmt.Errorf("want one pending task saying %q: %+v", want, views)
		}
		t.Logf("pending: %s", views[0].Message)
		return nil
	})
}

// TestReservedCPUsMustExist: `berth up --reserved-cpus` naming a CPU this
// machine lacks fails at start and says why.
func TestReservedCPUsMustExist(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	cpus := requireCPUs(t, 1)
	missing := strconv.Itoa(cpus[len(cpus)-1] + 64)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBin, "up", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0",
		"--cgroup-parent", "berth-e2e-"+randomHex(6), "--reserved-cpus", missing)
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("berth up --reserved-cpus %s still ran after 60s:\n%s", missing, out.String())
	}
	var xe *exec.ExitError
	if !errors.As(err, &xe) || xe.ExitCode() == 0 {
		t.Fatalf("berth up --reserved-cpus %s: %v, want a non-zero exit:\n%s", missing, err, out.String())
	}
	if want := "reserved CPUs " + missing; !strings.Contains(out.String(), want) {
		t.Fatalf("output does not say %q:\n%s", want, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	t.Logf("berth up --reserved-cpus %s exited %d: %s", missing, xe.ExitCode(), lines[len(lines)-1])
}
