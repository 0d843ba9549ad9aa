package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/apiserver"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

// updCluster is the real API server on a real embedded etcd, reached over
// loopback http, for the commands of rolling updates: their contract with
// the server is what these tests check. No orchestrator runs; tests play
// its part by writing update progress to the store.
type updCluster struct {
	t    *testing.T
	st   *store.Store
	vars map[string]string
	dir  string
}

func newUpdCluster(t *testing.T) *updCluster {
	t.Helper()
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const token = "berth_cli_test_token_0123456789"
	srv := httptest.NewServer(apiserver.New(apiserver.Config{Store: st, Token: token, Version: "test"}).Handler())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	return &updCluster{t: t, st: st, dir: dir,
		vars: map[string]string{envAddr: srv.URL, envToken: token, envDataDir: dir}}
}

func (c *updCluster) run(args ...string) cliResult {
	return cliRun(context.Background(), c.vars, "", args...)
}

// spec writes a spec file of service hello with env V=v and returns its
// path.
func (c *updCluster) spec(v string, extra string) string {
	c.t.Helper()
	p := filepath.Join(c.dir, fmt.Sprintf("hello-%s-%d.yaml", v, len(extra)))
	writeTestFile(c.t, p, fmt.Sprintf(`name: hello
replicas: 2
%stask:
  command: [berth, whoami]
  env: {V: "%s"}
`, extra, v), 0o644)
	return p
}

// setUpdate changes the stored update status of hello as the orchestrator
// would.
func (c *updCluster) setUpdate(change func(*api.UpdateStatus)) {
	c.t.Helper()
	ctx := context.Background()
	for range 10 {
		svc, err := c.st.Services.Get(ctx, "hello")
		if err != nil {
			c.t.Fatal(err)
		}
		change(svc.UpdateStatus)
		err = c.st.Services.Update(ctx, &svc)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			c.t.Fatal(err)
		}
		return
	}
	c.t.Fatal("could not write the update status")
}

func TestServiceHistoryRollbackPromoteResume(t *testing.T) {
	t.Parallel()
	c := newUpdCluster(t)
	for _, v := range []string{"1", "2"} {
		if r := c.run("deploy", "-f", c.spec(v, "")); r.code != 0 {
			t.Fatalf("deploy %s: %+v", v, r)
		}
	}
	steps := []struct {
		name    string
		before  func()
		args    []string
		wantOut []string
		wantErr string
		code    int
	}{
		{name: "history", args: []string{"service", "history", "hello"},
			wantOut: []string{"VERSION   CREATED    AUTHOR   SUMMARY\n", "2         ", "admin    env ~V\n", "1  ", "created\n"}},
		{name: "history json", args: []string{"service", "history", "hello", "-o", "json"}, wantOut: []string{`"summary": "env ~V"`, `"version": 1`}},
		{name: "history unknown", args: []string{"service", "history", "nope"}, wantErr: "berth: no service named \"nope\"\n", code: 1},
		{name: "history bad output", args: []string{"service", "history", "hello", "-o", "yaml"}, wantErr: "unknown output format", code: 2},
		{name: "inspect shows the update", args: []string{"service", "inspect", "hello"},
			wantOut: []string{`"update_status": {`, `"state": "updating"`, `"from_version": 1`, `"to_version": 2`}},
		{name: "promote without canaries", args: []string{"service", "promote", "hello"},
			wantErr: "berth: service hello has no canaries waiting (update state: updating)\n", code: 1},
		{name: "promote canaries", before: func() { c.setUpdate(func(s *api.UpdateStatus) { s.State = api.UpdateCanary }) },
			args: []string{"service", "promote", "hello"}, wantOut: []string{"service hello: canaries promoted, the update to version 2 carries on\n"}},
		{name: "update needs --resume", args: []string{"service", "update", "hello"}, wantErr: "needs --resume", code: 2},
		{name: "resume when not paused", args: []string{"service", "update", "hello", "--resume"},
			wantErr: "berth: service hello has no paused update to resume (update state: updating)\n", code: 1},
		{name: "resume", before: func() {
			c.setUpdate(func(s *api.UpdateStatus) { s.State, s.Message = api.UpdatePaused, "task t1 failed" })
		},
			args: []string{"service", "update", "hello", "--resume"}, wantOut: []string{"service hello: update resumed (updating)\n"}},
		{name: "rollback", args: []string{"service", "rollback", "hello"},
			wantOut: []string{"service hello rolled back to the previous spec (now version 3); update state: rolling_back\n"}},
		{name: "rollback to a version not kept", args: []string{"service", "rollback", "hello", "--to", "99"},
			wantErr: "berth: to: service hello has no version 99; versions you can roll back to: 1, 2\n", code: 1},
		{name: "rollback to a kept version", args: []string{"service", "rollback", "hello", "--to", "2"},
			wantOut: []string{"service hello rolled back to version 2 (now version 4); update state: rolling_back\n"}},
		{name: "rollback --to not a number", args: []string{"service", "rollback", "hello", "--to", "two"}, wantErr: "invalid argument", code: 2},
		{name: "history after rollbacks", args: []string{"service", "history", "hello"},
			wantOut: []string{"rollback to v2: env ~V\n", "rollback to v1: env ~V\n"}},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		r := c.run(st.args...)
		if r.code != st.code {
			t.Fatalf("%s: exit %d, want %d (stdout %q, stderr %q)", st.name, r.code, st.code, r.stdout, r.stderr)
		}
		for _, w := range st.wantOut {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%s: stdout %q lacks %q", st.name, r.stdout, w)
			}
		}
		if st.wantErr != "" && !strings.Contains(r.stderr, st.wantErr) {
			t.Errorf("%s: stderr %q lacks %q", st.name, r.stderr, st.wantErr)
		}
		if st.code == 0 && r.stderr != "" {
			t.Errorf("%s: unexpected stderr %q", st.name, r.stderr)
		}
	}
	var vs []api.ServiceVersion
	if r := c.run("service", "history", "hello", "-o", "json"); json.Unmarshal([]byte(r.stdout), &vs) != nil || len(vs) != 4 || vs[0].Version != 4 {
		t.Fatalf("history json: %+v", r)
	}
}

// simulate plays the orchestrator for hello until ctx ends: it creates a
// running task per replica for the current version, and moves an update
// one task per tick towards the end its spec's "sim" label names
// (complete, pause, rollback; none does nothing).
func (c *updCluster) simulate(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			svc, err := c.st.Services.Get(ctx, "hello")
			if err != nil {
				continue
			}
			sim := svc.Spec.Labels["sim"]
			if sim == "none" {
				continue
			}
			if sim == "reject" {
				// Every task of the version is rejected: the program does
				// not exist.
				n := 0
				tasks, _, _ := c.st.Tasks.List(ctx)
				for _, t := range tasks {
					if t.ServiceID == svc.ID && t.SpecVersion == svc.Version {
						n++
					}
				}
				if n < 10 {
					t := api.Task{ID: fmt.Sprintf("%s-v%d-%d", svc.ID, svc.Version, n), ServiceID: svc.ID, ServiceName: "hello", Slot: 1,
						SpecVersion: svc.Version, DesiredState: api.TaskShutdown,
						Status: api.TaskStatus{State: api.TaskRejected, Err: fmt.Sprintf(`program "nope%d" not found`, n), Timestamp: time.Now()}}
					_ = c.st.Tasks.Create(ctx, &t)
				}
				continue
			}
			tasks, _, err := c.st.Tasks.List(ctx)
			if err != nil {
				continue
			}
			have := 0
			for _, t := range tasks {
				if t.ServiceID == svc.ID {
					have++
				}
			}
			for i := have; i < svc.Spec.ReplicaCount(); i++ {
				t := api.Task{ID: fmt.Sprintf("%s-%d", svc.ID, i), ServiceID: svc.ID, ServiceName: "hello", Slot: i + 1,
					DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskRunning}}
				_ = c.st.Tasks.Create(ctx, &t)
			}
			st := svc.UpdateStatus
			if st == nil || api.UpdateEnded(st.State) {
				continue
			}
			switch {
			case sim == "autorollback" && st.Updated == 1 && !st.Rollback:
				// As the orchestrator does: the rollback's own status,
				// counting the tasks it moved back.
				st.State, st.Rollback, st.ToVersion, st.Updated, st.Failed = api.UpdateRolledBack, true, st.ToVersion+1, 2, 0
				st.Message = "automatic rollback: task t2 failed: exit status 1; 1 of 2 tasks failed"
			case st.Rollback && st.Updated >= st.Total:
				st.State = api.UpdateRolledBack
			case sim == "pause" && st.Updated == 1:
				st.State, st.Message = api.UpdatePaused, "task t2 failed: exit status 1"
			case sim == "rollback" && st.Updated == 1:
				st.State, st.Message = api.UpdateRolledBack, "task t2 unhealthy: connection refused"
			case st.Updated < st.Total:
				st.Updated++
			default:
				st.State = api.UpdateCompleted
			}
			_ = c.st.Services.Update(ctx, &svc)
		}
	}()
}

func TestDeployWait(t *testing.T) {
	t.Parallel()
	c := newUpdCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	c.simulate(ctx, &wg)
	defer wg.Wait()
	defer cancel()
	wait := func(args ...string) cliResult {
		return c.run(append([]string{"deploy", "--wait", "--poll-interval", "10ms"}, args...)...)
	}
	steps := []struct {
		name    string
		args    []string
		wantOut []string
		wantErr string
		code    int
	}{
		{name: "a new service waits for its tasks", args: []string{"-f", c.spec("1", "labels: {sim: complete}\n")},
			wantOut: []string{"service hello created (version 1)\n", "service hello: 2/2 tasks running\n"}},
		{name: "an update is followed to its end", args: []string{"-f", c.spec("2", "labels: {sim: complete}\n")},
			wantOut: []string{"service hello updated (version 2)\n", "/2 updated (updating)\n", // a poll may miss a step: the sim moves on every 20ms
				"service hello: update to version 2 completed\n"}},
		{name: "a change that replaces no task waits for the tasks", args: []string{"-f", c.spec("2", "labels: {sim: complete, x: z}\n")},
			wantOut: []string{"service hello updated (version 3)\n", "service hello: 2/2 tasks running\n"}},
		{name: "a pause fails", args: []string{"-f", c.spec("3", "labels: {sim: pause}\n")},
			wantOut: []string{"service hello updated (version 4)\n"},
			wantErr: "berth: service hello: update paused: task t2 failed: exit status 1; continue with 'berth service update hello --resume' or go back with 'berth service rollback hello'\n", code: 1},
		{name: "a rollback fails", args: []string{"-f", c.spec("4", "labels: {sim: rollback}\n")},
			wantErr: "berth: service hello: update failed and was rolled back: task t2 unhealthy: connection refused\n", code: 1},
		{name: "a timeout fails", args: []string{"--timeout", "300ms", "-f", c.spec("5", "labels: {sim: none}\n")},
			wantErr: "berth: service hello: timed out after 300ms waiting for the update (updating, 0/2 updated, 0 failed)\n", code: 1},
		{name: "canaries end the wait", args: []string{"-f", c.spec("6", "labels: {sim: none}\nupdate: {canary: 1}\n")},
			wantOut: []string{"canaries are running; promote them with 'berth service promote hello'"}},
		{name: "a bad timeout", args: []string{"--timeout", "0s", "-f", c.spec("7", "")}, wantErr: "must be positive", code: 2},
		{name: "an automatic rollback counts what it rolled back", args: []string{"-f", c.spec("8", "labels: {sim: autorollback}\n")},
			wantErr: "berth: service hello: update failed and was rolled back (now version 9, 2/2 tasks rolled back): automatic rollback: task t2 failed: exit status 1; 1 of 2 tasks failed\n", code: 1},
		{name: "tasks that cannot start fail the wait at once, with their error", args: []string{"--timeout", "20s", "-f", c.spec("9", "labels: {sim: reject}\n")},
			wantErr: `berth: service hello: version 9: no task can start: …tasks failed or were rejected and none runs; the latest, task …(slot 1, rejected): program "nope…" not found` + "\n", code: 1},
		{name: "rollback --wait", args: []string{"rollback"}, wantOut: []string{"service hello rolled back to the previous spec (now version 10)",
			"service hello: rollback to version 10 completed (2/2 tasks rolled back)\n"}},
	}
	for _, st := range steps {
		if st.name == "canaries end the wait" {
			prev, err := c.st.Services.Get(ctx, "hello")
			if err != nil {
				t.Fatal(err)
			}
			// Play the orchestrator starting canaries right after the
			// deploy: the wait must return once it sees them.
			go func() {
				deadline := time.Now().Add(10 * time.Second)
				for time.Now().Before(deadline) && ctx.Err() == nil {
					svc, err := c.st.Services.Get(ctx, "hello")
					if err == nil && svc.Version > prev.Version && svc.UpdateStatus != nil && svc.UpdateStatus.State == api.UpdateUpdating {
						svc.UpdateStatus.State = api.UpdateCanary
						if c.st.Services.Update(ctx, &svc) == nil {
							return
						}
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
		var r cliResult
		if st.args[0] == "rollback" {
			r = c.run("service", "rollback", "hello", "--wait", "--poll-interval", "10ms")
		} else {
			r = wait(st.args...)
		}
		if r.code != st.code {
			t.Fatalf("%s: exit %d, want %d (stdout %q, stderr %q)", st.name, r.code, st.code, r.stdout, r.stderr)
		}
		for _, w := range st.wantOut {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%s: stdout %q lacks %q", st.name, r.stdout, w)
			}
		}
		for _, part := range strings.Split(st.wantErr, "…") { // … stands for any text
			if !strings.Contains(r.stderr, part) {
				t.Errorf("%s: stderr %q lacks %q", st.name, r.stderr, part)
			}
		}
		if strings.Contains(r.stdout, "\r") {
			t.Errorf("%s: a progress bar drawn in place on a non-terminal: %q", st.name, r.stdout)
		}
	}
}

func TestDeployPrintsWarnings(t *testing.T) {
	t.Parallel()
	c := newUpdCluster(t)
	p := filepath.Join(c.dir, "warn.yaml")
	writeTestFile(t, p, `name: warn
update: {monitor: 1s}
task:
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports: [{name: http}]
  health: {http: {port: http}, interval: 5s}
`, 0o644)
	r := c.run("deploy", "-f", p)
	if r.code != 0 || r.stdout != "service warn created (version 1)\n" ||
		r.stderr != "berth: warning: service warn: update.monitor 1s is shorter than task.health.interval 5s: a task may count as updated before its health is checked again\n" {
		t.Fatalf("%+v", r)
	}
}

func TestProgressBar(t *testing.T) {
	for _, c := range []struct {
		done, total int
		want        string
	}{
		{0, 4, "[--------]"}, {2, 4, "[####----]"}, {4, 4, "[########]"}, {5, 4, "[########]"}, {1, 0, "[--------]"}, {-1, 3, "[--------]"},
	} {
		if got := progressBar(c.done, c.total, 8); got != c.want {
			t.Errorf("progressBar(%d, %d) = %q, want %q", c.done, c.total, got, c.want)
		}
	}
	var b strings.Builder
	w := &waiter{out: &b, bar: true}
	w.show("web", "updating", 1, 2, "updated")
	w.show("web", "updating", 1, 2, "updated")
	w.show("web", "updating", 2, 2, "updated")
	w.endLine()
	want := "\r\033[Kweb: [##########----------] 1/2 updated (updating)\r\033[Kweb: [####################] 2/2 updated (updating)\n"
	if b.String() != want {
		t.Fatalf("bar output %q, want %q", b.String(), want)
	}
}

// TestServiceRestart: a restart is a new version that changes only
// task.force_update, which starts a rolling update; deploying the spec file
// again afterwards changes nothing.
func TestServiceRestart(t *testing.T) {
	t.Parallel()
	c := newUpdCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	c.simulate(ctx, &wg)
	defer wg.Wait()
	defer cancel()
	file := c.spec("1", "labels: {sim: complete}\n")
	if r := c.run("deploy", file); r.code != 0 {
		t.Fatalf("deploy: %+v", r)
	}
	r := c.run("service", "restart", "hello", "--wait", "--poll-interval", "10ms")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "service hello restarting (version 2); update state: updating\n") ||
		!strings.Contains(r.stdout, "service hello: update to version 2 completed\n") {
		t.Fatalf("restart --wait: %+v", r)
	}
	svc, err := c.st.Services.Get(ctx, "hello")
	if err != nil || svc.Spec.Task.ForceUpdate != 1 || svc.UpdateStatus == nil || svc.UpdateStatus.FromVersion != 1 {
		t.Fatalf("after restart: %+v %v", svc, err)
	}
	if r := c.run("deploy", file); r.code != 0 || r.stdout != "service hello unchanged (version 2)\n" {
		t.Fatalf("deploy after restart: %+v", r)
	}
	if r := c.run("service", "history", "hello"); !strings.Contains(r.stdout, "restart: ") {
		t.Fatalf("history: %+v", r)
	}
	// An update in progress is not restarted over.
	c.setUpdate(func(s *api.UpdateStatus) { s.State = api.UpdatePaused })
	if r := c.run("service", "restart", "hello"); r.code != 1 || !strings.Contains(r.stderr, "has an update in progress (state paused)") {
		t.Fatalf("restart during an update: %+v", r)
	}
	if r := c.run("service", "restart", "helo"); r.code != 1 || r.stderr != "berth: no service named \"helo\" (did you mean \"hello\"?)\n" {
		t.Fatalf("restart of a misspelt name: %+v", r)
	}
}

// TestDeployDryRun: the API plans a deploy without storing it, and the CLI
// prints the plan.
func TestDeployDryRun(t *testing.T) {
	t.Parallel()
	c := newUpdCluster(t)
	ctx := context.Background()
	file := c.spec("1", "")
	r := c.run("deploy", "--dry-run", file)
	if r.code != 0 || r.stdout != "service hello: would be created (version 1), starting 2 tasks\n" {
		t.Fatalf("dry run of a new service: %+v", r)
	}
	if _, err := c.st.Services.Get(ctx, "hello"); err == nil {
		t.Fatal("a dry run stored the service")
	}
	if r := c.run("deploy", file); r.code != 0 {
		t.Fatalf("deploy: %+v", r)
	}
	svc, _ := c.st.Services.Get(ctx, "hello")
	for i := 1; i <= 2; i++ {
		task := api.Task{ID: fmt.Sprintf("task-%d-0123456789", i), ServiceID: svc.ID, ServiceName: "hello", Slot: i, SpecVersion: 1,
			Spec: svc.Spec.Task, DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskRunning}}
		if err := c.st.Tasks.Create(ctx, &task); err != nil {
			t.Fatal(err)
		}
	}
	if r := c.run("deploy", "--dry-run", file); r.code != 0 || r.stdout != "service hello: unchanged (version 1): nothing to do\n" {
		t.Fatalf("dry run of the same spec: %+v", r)
	}
	changed := filepath.Join(c.dir, "changed.yaml")
	writeTestFile(t, changed, "name: hello\nreplicas: 3\ntask:\n  command: [berth, whoami]\n  env: {V: \"2\"}\n", 0o644)
	r = c.run("deploy", "--dry-run", changed)
	want := `service hello: would be updated, version 1 → 2
  changes:  replicas 2 → 3, env ~V
  replace:  2 tasks by a rolling update: task-1-01234 (slot 1), task-2-01234 (slot 2)
  start:    1 task for new slots
`
	if r.code != 0 || r.stdout != want {
		t.Fatalf("dry run of a change:\n%s\nwant:\n%s\n(stderr %q)", r.stdout, want, r.stderr)
	}
	scaledDown := filepath.Join(c.dir, "down.yaml")
	writeTestFile(t, scaledDown, "name: hello\nreplicas: 1\ntask:\n  command: [berth, whoami]\n  env: {V: \"1\"}\n", 0o644)
	r = c.run("deploy", "--dry-run", scaledDown)
	want = `service hello: would be updated, version 1 → 2
  changes:  replicas 2 → 1
  replace:  none (the task template is unchanged)
  stop:     1 task: task-2-01234 (slot 2)
`
	if r.code != 0 || r.stdout != want {
		t.Fatalf("dry run of a scale-down:\n%s\nwant:\n%s", r.stdout, want)
	}
	if after, _ := c.st.Services.Get(ctx, "hello"); after.Version != 1 {
		t.Fatalf("a dry run changed the service: version %d", after.Version)
	}
	// A spec the API refuses is refused the same way, naming the file.
	bad := filepath.Join(c.dir, "bad.yaml")
	writeTestFile(t, bad, "name: hello\ntask:\n  command: [x]\n  ports: [{name: http, publish: 99999}]\n", 0o644)
	if r := c.run("deploy", "--dry-run", bad); r.code != 1 || !strings.Contains(r.stderr, "task.ports[0].publish") {
		t.Fatalf("dry run of a bad spec: %+v", r)
	}
	if r := c.run("deploy", "--dry-run", "--wait", file); r.code != 2 {
		t.Fatalf("--dry-run --wait: %+v", r)
	}
}
