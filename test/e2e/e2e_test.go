package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// Limits from the brief and from examples/hello.yaml.
const (
	deployTimeout      = 15 * time.Second // hello: 3 running + healthy
	replaceLimit       = 3 * time.Second  // restart delay 1s + 2s
	restartConvergence = 5 * time.Second  // after the API answers again
	stopGrace          = 10 * time.Second // the spec's default stop_grace_period
)

// who is what `berth whoami` answers on "/".
type who struct {
	Name    string `json:"name"`
	Service string `json:"service"`
	PID     int    `json:"pid"`
}

// getWho asks the whoami app on a host port who it is.
func getWho(port int) (who, error) {
	var w who
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
	if err != nil {
		return w, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return w, err
	}
	if resp.StatusCode != http.StatusOK {
		return w, fmt.Errorf("GET / on port %d: %s: %q", port, resp.Status, body)
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return w, fmt.Errorf("GET / on port %d: not JSON: %q: %w", port, body, err)
	}
	return w, nil
}

// taskName is the name Berth gives a task's whoami: service.slot.id[:8].
func taskName(v api.TaskView) string {
	return fmt.Sprintf("%s.%d.%s", v.Service, v.Slot, v.ID[:min(8, len(v.ID))])
}

// TestDeployHello deploys examples/hello.yaml as written and checks that its
// three replicas run, are healthy and answer as themselves.
func TestDeployHello(t *testing.T) {
	t.Parallel()
	b := startBerth(t, helloSpec())
	tasks, took := b.waitConverged("hello", 3, deployTimeout)
	t.Logf("3 replicas running and healthy %v after the API answered", took.Round(time.Millisecond))

	// The CLI shows the same tasks as the API.
	views, err := b.psCLI("hello", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.converged(views, 3); err != nil {
		t.Fatalf("service ps -o json: %v", err)
	}

	names := map[string]int{}
	for slot := 1; slot <= 3; slot++ {
		v := tasks[slot]
		w, err := getWho(v.Ports["http"])
		if err != nil {
			t.Fatalf("slot %d: %v", slot, err)
		}
		if w.Service != "hello" {
			t.Errorf("slot %d answers service %q, want hello", slot, w.Service)
		}
		if w.Name != taskName(v) {
			t.Errorf("slot %d answers name %q, want %q", slot, w.Name, taskName(v))
		}
		if w.PID != v.PID {
			t.Errorf("slot %d answers from pid %d, but service ps says pid %d", slot, w.PID, v.PID)
		}
		if prev, dup := names[w.Name]; dup {
			t.Errorf("slots %d and %d both answer name %q", prev, slot, w.Name)
		}
		names[w.Name] = slot
	}
}

// TestKilledReplicaIsReplaced kills one replica's process and checks that a
// new task takes its slot within the restart delay plus 2s, and that the
// killed task shows failed.
func TestKilledReplicaIsReplaced(t *testing.T) {
	t.Parallel()
	b := startBerth(t, helloSpec())
	before, _ := b.waitConverged("hello", 3, deployTimeout)
	victim := before[2]

	start := time.Now()
	b.killTask(victim.PID)
	var repl api.TaskView
	eventually(t, 15*time.Second, func() error {
		views, err := b.psAPI("hello", false)
		if err != nil {
			return err
		}
		for _, v := range views {
			if v.Slot == 2 && v.ID != victim.ID && v.State == api.TaskRunning {
				repl = v
				return nil
			}
		}
		return fmt.Errorf("no replacement running in slot 2 yet: %s", summary(views))
	})
	took := time.Since(start)
	t.Logf("slot 2 replacement %s running %v after SIGKILL of pid %d (limit %v)",
		shortID(repl.ID), took.Round(time.Millisecond), victim.PID, replaceLimit)
	if took > replaceLimit {
		t.Errorf("replacement took %v, more than %v (restart delay 1s + 2s)", took, replaceLimit)
	}
	if repl.PID == victim.PID || repl.PID <= 0 {
		t.Errorf("replacement task has pid %d (killed pid %d)", repl.PID, victim.PID)
	}

	// The killed task is history: failed, in `service ps --all`.
	eventually(t, 5*time.Second, func() error {
		all, err := b.psCLI("hello", true)
		if err != nil {
			return err
		}
		for _, v := range all {
			if v.ID != victim.ID {
				continue
			}
			if v.State != api.TaskFailed {
				return fmt.Errorf("killed task %s is %s, want failed", v.ID, v.State)
			}
			t.Logf("killed task: state %s, error %q", v.State, v.Error)
			return nil
		}
		return fmt.Errorf("killed task %s is not in service ps --all: %s", victim.ID, summary(all))
	})

	// The other replicas were left alone, and the slot is healthy again.
	after, _ := b.waitConverged("hello", 3, 10*time.Second)
	for _, slot := range []int{1, 3} {
		if after[slot].ID != before[slot].ID || after[slot].PID != before[slot].PID {
			t.Errorf("slot %d changed from %s (pid %d) to %s (pid %d)", slot,
				before[slot].ID, before[slot].PID, after[slot].ID, after[slot].PID)
		}
	}
}

// helloCPUs is what examples/hello.yaml reserves per replica.
const helloCPUs = 0.25

// nodeCPUs waits for the node to register and returns its CPU capacity.
func nodeCPUs(t *testing.T, b *berth) float64 {
	t.Helper()
	var cpus float64
	eventually(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nodes, err := b.client.ListNodes(ctx)
		if err != nil {
			return err
		}
		if len(nodes) != 1 {
			return fmt.Errorf("%d nodes, want 1", len(nodes))
		}
		cpus = nodes[0].Resources.CPUs
		return nil
	})
	return cpus
}

// TestScale scales hello 3 → 10 → 0 with the CLI. hello.yaml reserves 0.25
// CPU per replica, so on a node with fewer than 2.5 CPUs ten replicas cannot
// all be placed (TestScaleBeyondCapacity checks that); there the test
// deploys hello with 0.1 CPU per replica instead.
func TestScale(t *testing.T) {
	t.Parallel()
	b := startBerth(t)
	spec := helloSpec()
	if cpus := nodeCPUs(t, b); 10*helloCPUs > cpus {
		hello, err := os.ReadFile(helloSpec())
		if err != nil {
			t.Fatal(err)
		}
		small := strings.Replace(string(hello), "cpus: 0.25", "cpus: 0.1", 1)
		if small == string(hello) {
			t.Fatal("examples/hello.yaml has no \"cpus: 0.25\"")
		}
		spec = filepath.Join(t.TempDir(), "hello.yaml")
		if err := os.WriteFile(spec, []byte(small), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("the node has %g CPUs, too few for 10 replicas of %g: deploying hello with 0.1 CPU each", cpus, helloCPUs)
	}
	if out := b.mustCLI("deploy", "-f", spec); !strings.Contains(out, "service hello created") {
		t.Errorf("deploy printed %q", out)
	}
	b.waitConverged("hello", 3, deployTimeout)

	out := b.mustCLI("service", "scale", "hello=10")
	if !strings.Contains(out, "scaled to 10") {
		t.Errorf("service scale hello=10 printed %q", out)
	}
	ten, took := b.waitConverged("hello", 10, 30*time.Second)
	t.Logf("10 replicas running and healthy %v after scaling", took.Round(time.Millisecond))
	var pids []int
	for _, v := range ten[1:] {
		pids = append(pids, v.PID)
	}
	slices.Sort(pids)
	if got := b.cgroupPIDs(); !slices.Equal(got, pids) {
		t.Errorf("processes in the cgroup parent: %v, want exactly the tasks' %v", got, pids)
	}

	zeroAt := time.Now()
	b.mustCLI("service", "scale", "hello=0")
	eventually(t, 30*time.Second, func() error {
		views, err := b.psCLI("hello", false)
		if err != nil {
			return err
		}
		if len(views) != 0 {
			return fmt.Errorf("tasks left after scaling to 0: %s", summary(views))
		}
		for _, pid := range pids {
			if b.alive(pid) {
				return fmt.Errorf("task process %d still runs", pid)
			}
		}
		if left := b.taskCgroups(); len(left) > 0 {
			return fmt.Errorf("task cgroups left: %v", left)
		}
		if procs := b.cgroupPIDs(); len(procs) > 0 {
			return fmt.Errorf("processes left in the cgroup parent: %v", procs)
		}
		return nil
	})
	t.Logf("scaled to 0 in %v: no task, process or task cgroup left", time.Since(zeroAt).Round(time.Millisecond))
}

// TestScaleBeyondCapacity scales hello as written past what the node's CPUs
// can hold: as many replicas as fit run, the others stay pending with a
// reason, and nothing is over-committed.
func TestScaleBeyondCapacity(t *testing.T) {
	t.Parallel()
	b := startBerth(t, helloSpec())
	b.waitConverged("hello", 3, deployTimeout)
	cpus := nodeCPUs(t, b)
	fit := int(cpus/helloCPUs + 1e-9)
	want := fit + 2
	b.mustCLI("service", "scale", "hello="+strconv.Itoa(want))
	eventually(t, 30*time.Second, func() error {
		views, err := b.psAPI("hello", false)
		if err != nil {
			return err
		}
		var running, pending int
		var reason string
		for _, v := range views {
			switch {
			case v.State == api.TaskRunning && v.Health == api.HealthHealthy:
				running++
			case v.State == api.TaskPending && v.Message != "":
				pending++
				reason = v.Message
			}
		}
		if len(views) != want || running != fit || pending != 2 {
			return fmt.Errorf("want %d running + healthy and 2 pending with a reason, got %s", fit, summary(views))
		}
		t.Logf("%d of %d replicas run on %g CPUs; the others are pending: %q", running, want, cpus, reason)
		return nil
	})
	if n := len(b.cgroupPIDs()); n != fit {
		t.Errorf("%d processes in the cgroup parent, want %d", n, fit)
	}
}

// TestServiceRm removes hello with the CLI.
func TestServiceRm(t *testing.T) {
	t.Parallel()
	b := startBerth(t, helloSpec())
	tasks, _ := b.waitConverged("hello", 3, deployTimeout)

	rmAt := time.Now()
	if out := b.mustCLI("service", "rm", "hello"); strings.TrimSpace(out) != "hello" {
		t.Errorf("service rm hello printed %q, want \"hello\"", out)
	}
	// The service is gone at once: rm returned after the store write.
	if out := b.mustCLI("service", "ls", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("service ls -o json after rm: %q, want []", out)
	}
	res := b.cli(nil, "service", "ps", "hello")
	checkOneLineError(t, "service ps hello after rm", res, "hello")

	eventually(t, 20*time.Second, func() error {
		for _, v := range tasks[1:] {
			if b.alive(v.PID) {
				return fmt.Errorf("task %s (pid %d) still runs", v.ID, v.PID)
			}
		}
		if left := b.taskCgroups(); len(left) > 0 {
			return fmt.Errorf("task cgroups left: %v", left)
		}
		if procs := b.cgroupPIDs(); len(procs) > 0 {
			return fmt.Errorf("processes left in the cgroup parent: %v", procs)
		}
		return nil
	})
	t.Logf("all processes and task cgroups gone %v after service rm", time.Since(rmAt).Round(time.Millisecond))
	if out := b.mustCLI("service", "ls"); strings.Contains(out, "hello") {
		t.Errorf("service ls still shows hello:\n%s", out)
	}
}

// TestCrashAndRestartAdoptsTasks kills Berth with SIGKILL, kills one
// replica while Berth is down, restarts Berth on the same data directory and
// checks that the survivors are adopted (same processes) and the dead one
// is replaced.
func TestCrashAndRestartAdoptsTasks(t *testing.T) {
	t.Parallel()
	b := startBerth(t, helloSpec())
	before, _ := b.waitConverged("hello", 3, deployTimeout)
	ctx := context.Background()
	svcBefore, err := b.client.GetService(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}

	b.kill9()
	for _, v := range before[1:] {
		if !b.alive(v.PID) {
			t.Fatalf("task %s (pid %d) died with Berth", v.ID, v.PID)
		}
	}
	victim := before[1]
	b.killTask(victim.PID)
	eventually(t, 5*time.Second, func() error {
		if b.alive(victim.PID) {
			return fmt.Errorf("pid %d still runs after SIGKILL", victim.PID)
		}
		return nil
	})

	apiUp := b.start()
	// Diagnostic: the controllers (which replace the dead task) run only
	// once this manager leads.
	led := eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		info, err := b.client.Info(ctx)
		if err != nil {
			return err
		}
		if !info.Leader {
			return fmt.Errorf("the manager is not the leader")
		}
		return nil
	})
	t.Logf("the restarted manager became leader %v after its API answered", led.Round(time.Millisecond))
	svcAfter, err := b.client.GetService(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if svcAfter.Version != svcBefore.Version || svcAfter.ID != svcBefore.ID {
		t.Errorf("after restart the service is %s version %d, was %s version %d",
			svcAfter.ID, svcAfter.Version, svcBefore.ID, svcBefore.Version)
	}
	if a, b := mustJSON(t, svcAfter.Spec), mustJSON(t, svcBefore.Spec); a != b {
		t.Errorf("spec changed across the restart:\nbefore %s\nafter  %s", b, a)
	}

	// Wait longer than the limit, so that a slow convergence is measured
	// and the adoption checks below still run.
	var after []api.TaskView
	eventually(t, 30*time.Second, func() error {
		views, err := b.psAPI("hello", false)
		if err != nil {
			return err
		}
		after, err = b.converged(views, 3)
		return err
	})
	took := time.Since(apiUp)
	t.Logf("converged (3 running + healthy) %v after the API answered again (limit %v)",
		took.Round(time.Millisecond), restartConvergence)
	if took > restartConvergence {
		t.Errorf("converging after the restart took %v, more than %v", took, restartConvergence)
	}

	for _, slot := range []int{2, 3} {
		was, now := before[slot], after[slot]
		if now.ID != was.ID || now.PID != was.PID {
			t.Errorf("slot %d: task %s pid %d before the crash, %s pid %d after: not adopted",
				slot, was.ID, was.PID, now.ID, now.PID)
		}
		// alive checks the start time recorded before the crash: the
		// same process, not a restart that got the same pid.
		if !b.alive(was.PID) {
			t.Errorf("slot %d: process %d was restarted or stopped", slot, was.PID)
		}
	}
	if after[1].ID == victim.ID {
		t.Errorf("slot 1 still shows task %s, which was killed while Berth was down", victim.ID)
	}

	// Exactly the three live tasks' processes are in the cgroup parent.
	want := []int{after[1].PID, after[2].PID, after[3].PID}
	slices.Sort(want)
	if got := b.cgroupPIDs(); !slices.Equal(got, want) {
		t.Errorf("processes in the cgroup parent: %v, want exactly the tasks' %v", got, want)
	}

	all, err := b.psCLI("hello", true)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range all {
		if v.ID == victim.ID {
			found = true
			if v.State != api.TaskFailed {
				t.Errorf("task killed while Berth was down is %s, want failed", v.State)
			}
			t.Logf("task killed while Berth was down: state %s, error %q", v.State, v.Error)
		}
	}
	if !found {
		t.Errorf("task %s killed while Berth was down is not in service ps --all: %s", victim.ID, summary(all))
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSigtermStopsTasks sends SIGTERM to berth up: it must exit 0 within
// the stop grace period, with every task process gone.
func TestSigtermStopsTasks(t *testing.T) {
	t.Parallel()
	b := startBerth(t, helloSpec())
	tasks, _ := b.waitConverged("hello", 3, deployTimeout)

	start := time.Now()
	b.signal(syscall.SIGTERM)
	code, ok := b.waitExit(stopGrace)
	took := time.Since(start)
	if !ok {
		t.Fatalf("berth up still runs %v after SIGTERM", stopGrace)
	}
	t.Logf("berth up exited with code %d %v after SIGTERM", code, took.Round(time.Millisecond))
	if code != 0 {
		t.Errorf("berth up exited with code %d after SIGTERM, want 0", code)
	}
	for _, v := range tasks[1:] {
		if b.alive(v.PID) {
			t.Errorf("task %s (pid %d) still runs after berth up exited", v.ID, v.PID)
		}
	}
	if procs := b.cgroupPIDs(); len(procs) > 0 {
		t.Errorf("processes left in the cgroup parent after berth up exited: %v", procs)
	}
	if left := b.taskCgroups(); len(left) > 0 {
		t.Errorf("task cgroups left after berth up exited: %v", left)
	}
}

// checkOneLineError checks a failed CLI run: non-zero exit, nothing on
// stdout, exactly one line on stderr starting with "berth: " and naming
// want.
func checkOneLineError(t *testing.T, what string, res cliResult, want string) {
	t.Helper()
	if res.code == 0 {
		t.Errorf("%s: exit code 0, want non-zero (%v)", what, res)
	}
	if res.stdout != "" {
		t.Errorf("%s: printed %q on stdout, want nothing", what, res.stdout)
	}
	if !strings.HasPrefix(res.stderr, "berth: ") || !strings.HasSuffix(res.stderr, "\n") || strings.Count(res.stderr, "\n") != 1 {
		t.Errorf("%s: stderr is %q, want one line starting with \"berth: \"", what, res.stderr)
	}
	if !strings.Contains(res.stderr, want) {
		t.Errorf("%s: stderr %q does not name %q", what, res.stderr, want)
	}
}

// TestBadInputIsRejected deploys bad specs and uses a wrong token through
// the CLI: each fails with one line naming the problem, and the stored
// services stay as they were.
func TestBadInputIsRejected(t *testing.T) {
	t.Parallel()
	b := startBerth(t, helloSpec())
	eventually(t, 10*time.Second, func() error {
		if out := b.mustCLI("service", "ls", "-o", "json"); !strings.Contains(out, `"hello"`) {
			return fmt.Errorf("service ls -o json: %s", out)
		}
		return nil
	})
	baseline := b.mustCLI("service", "ls", "-o", "json")

	hello, err := os.ReadFile(helloSpec())
	if err != nil {
		t.Fatal(err)
	}
	// withReplicas returns hello.yaml with its replicas line replaced.
	withReplicas := func(line string) string {
		s := strings.Replace(string(hello), "replicas: 3", line, 1)
		if s == string(hello) {
			t.Fatal("examples/hello.yaml has no \"replicas: 3\" line")
		}
		return s
	}
	dir := t.TempDir()
	cases := []struct {
		name, doc, field string
	}{
		{"negative replicas", withReplicas("replicas: -1"), "replicas"},
		{"negative replicas of a new service", strings.Replace(withReplicas("replicas: -2"), "name: hello", "name: hello-bad", 1), "replicas"},
		{"unknown field", withReplicas("replicas: 3\nreplica_count: 4"), "replica_count"},
		{"unknown nested field", strings.Replace(string(hello), "driver: process", "driver: process\n  comand: [x]", 1), "task.comand"},
		{"bad constraint", withReplicas("replicas: 3\nplacement: {constraints: [\"node.labels.zone = a\"]}"), "placement.constraints[0]"},
		{"wrong type", withReplicas("replicas: three"), "replicas"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := filepath.Join(dir, fmt.Sprintf("bad%d.yaml", i))
			if err := os.WriteFile(f, []byte(c.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			res := b.cli(nil, "deploy", "-f", f)
			t.Logf("berth deploy: %s", strings.TrimSpace(res.stderr))
			checkOneLineError(t, "deploy -f bad.yaml", res, c.field)
			if now := b.mustCLI("service", "ls", "-o", "json"); now != baseline {
				t.Errorf("service ls -o json changed:\nbefore %s\nafter  %s", baseline, now)
			}
		})
	}

	t.Run("wrong token", func(t *testing.T) {
		wrong := []string{"BERTH_TOKEN=wrong"}
		res := b.cli(wrong, "service", "ls")
		t.Logf("berth service ls: %s", strings.TrimSpace(res.stderr))
		checkOneLineError(t, "service ls with a wrong token", res, "token")
		good := filepath.Join(dir, "scaled.yaml")
		if err := os.WriteFile(good, []byte(withReplicas("replicas: 4")), 0o644); err != nil {
			t.Fatal(err)
		}
		res = b.cli(wrong, "deploy", "-f", good)
		checkOneLineError(t, "deploy with a wrong token", res, "token")
		if now := b.mustCLI("service", "ls", "-o", "json"); now != baseline {
			t.Errorf("service ls -o json changed after a deploy with a wrong token:\nbefore %s\nafter  %s", baseline, now)
		}
	})
}

// logLine is one line of `berth service logs`: service.slot.id | text.
var logLine = regexp.MustCompile(`^([a-z][-a-z0-9]*)\.([0-9]+)\.([a-z0-9]+) \| (.*)$`)

// TestServiceLogs reads the last lines of every replica's output.
func TestServiceLogs(t *testing.T) {
	t.Parallel()
	b := startBerth(t, helloSpec())
	tasks, _ := b.waitConverged("hello", 3, deployTimeout)

	out := b.mustCLI("service", "logs", "hello", "--tail", "5")
	perSlot := map[int][]string{}
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		m := logLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("log line %q is not \"hello.<slot>.<id> | text\"", line)
			continue
		}
		slot, _ := strconv.Atoi(m[2])
		if m[1] != "hello" || slot < 1 || slot > 3 {
			t.Errorf("log line %q: not from a hello replica", line)
			continue
		}
		if !strings.HasPrefix(tasks[slot].ID, m[3]) {
			t.Errorf("log line %q: id %q is not slot %d's task %s", line, m[3], slot, tasks[slot].ID)
		}
		perSlot[slot] = append(perSlot[slot], m[4])
	}
	for slot := 1; slot <= 3; slot++ {
		lines := perSlot[slot]
		if len(lines) == 0 || len(lines) > 5 {
			t.Errorf("slot %d: %d log lines, want 1 to 5:\n%s", slot, len(lines), out)
			continue
		}
		// whoami listens on every interface ("[::]:PORT" or "0.0.0.0:PORT").
		wantPrefix, wantSuffix := "whoami "+taskName(tasks[slot])+" listening on ", ":"+strconv.Itoa(tasks[slot].Ports["http"])
		if !slices.ContainsFunc(lines, func(l string) bool {
			return strings.HasPrefix(l, wantPrefix) && strings.HasSuffix(l, wantSuffix)
		}) {
			t.Errorf("slot %d logs %q, want the line %q…%q", slot, lines, wantPrefix, wantSuffix)
		}
	}
}
