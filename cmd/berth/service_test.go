package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func TestServiceCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantOut    string // exact, if wantOutHas is empty
		wantOutHas []string
		wantErr    string // exact stderr
		wantCode   int
	}{
		{
			name: "ls",
			args: []string{"service", "ls"},
			wantOut: `NAME    MODE         REPLICAS   VERSION   PORTS                              UPDATED         STATUS
db      replicated   0/1        2         15432->pg,8125->stats/udp (host)   1 hour ago      1 pending: no node can take it: 2 nodes have too little memory free
hello   replicated   1/2        3         -                                  5 minutes ago   -
web     global       1/1        1         -                                  2 hours ago     -
`,
		},
		{
			name: "ps shows current tasks by slot, node hostnames, sorted ports",
			args: []string{"service", "ps", "hello"},
			wantOut: `ID             SLOT   VERSION   NODE    STATE      DESIRED   HEALTH     PORTS                    CPUS     PID    ERROR
a1b2c3d4e5f6   1      3         alpha   running    running   healthy    admin:20002,http:20001   shared   4242   -
b1b2c3d4e5f6   2      3         beta    starting   running   starting   -                        shared   -      -
`,
		},
		{
			name: "ps --all adds ended tasks, newest first within a slot, errors on one line",
			args: []string{"service", "ps", "--all", "hello"},
			wantOut: `ID             SLOT   VERSION   NODE    STATE      DESIRED    HEALTH     PORTS                    CPUS     PID    ERROR
a1b2c3d4e5f6   1      3         alpha   running    running    healthy    admin:20002,http:20001   shared   4242   -
c1b2c3d4e5f6   1      2         alpha   failed     shutdown   none       -                        shared   -      exit status 1 with a second line
b1b2c3d4e5f6   2      3         beta    starting   running    starting   -                        shared   -      -
`,
		},
		{
			name: "ps of a global service",
			args: []string{"service", "ps", "web"},
			wantOut: `ID             SLOT   VERSION   NODE    STATE     DESIRED   HEALTH   PORTS   CPUS      PID   ERROR
d1b2c3d4e5f6   -      1         alpha   running   running   none     -       1 mem 0   99    -
`,
		},
		{
			name: "ps shows why a task is pending",
			args: []string{"service", "ps", "db"},
			wantOut: `ID             SLOT   VERSION   NODE   STATE     DESIRED   HEALTH   PORTS   CPUS   PID   ERROR
e1b2c3d4e5f6   1      2         -      pending   running   none     -       -      -     no node can take it: 2 nodes have too little memory free
`,
		},
		{name: "inspect", args: []string{"service", "inspect", "hello"}, wantOutHas: []string{`"name": "hello"`, `"version": 3`}},
		{name: "inspect unknown", args: []string{"service", "inspect", "nope"}, wantErr: "berth: service \"nope\" not found\n", wantCode: 1},
		{name: "inspect needs a name", args: []string{"service", "inspect"}, wantErr: "berth: service inspect takes 1 argument, got 0; usage: berth service inspect NAME\n", wantCode: 2},
		{name: "ps unknown", args: []string{"service", "ps", "nope"}, wantErr: "berth: service \"nope\" not found\n", wantCode: 1},
		{name: "scale", args: []string{"service", "scale", "hello=5"}, wantOut: "service hello scaled to 5 (version 4)\n"},
		{name: "scale to zero", args: []string{"service", "scale", "hello=0", "web=0"}, wantOut: "service hello scaled to 0 (version 4)\nservice web scaled to 0 (version 2)\n"},
		{name: "scale not a number", args: []string{"service", "scale", "hello=abc"}, wantErr: "berth: invalid argument \"hello=abc\": replicas must be a whole number\n", wantCode: 2},
		{name: "scale negative", args: []string{"service", "scale", "hello=-1"}, wantErr: "berth: invalid argument \"hello=-1\": replicas must not be negative\n", wantCode: 2},
		{name: "scale without =", args: []string{"service", "scale", "hello"}, wantErr: "berth: invalid argument \"hello\": want NAME=REPLICAS, such as web=3\n", wantCode: 2},
		{name: "scale without a name", args: []string{"service", "scale", "=3"}, wantErr: "berth: invalid argument \"=3\": want NAME=REPLICAS, such as web=3\n", wantCode: 2},
		{name: "scale twice", args: []string{"service", "scale", "hello=1", "hello=2"}, wantErr: "berth: service \"hello\" is given more than once\n", wantCode: 2},
		{name: "scale huge", args: []string{"service", "scale", "hello=99999999999999999999"}, wantErr: "berth: invalid argument \"hello=99999999999999999999\": replicas must be a whole number\n", wantCode: 2},
		{name: "scale nothing", args: []string{"service", "scale"}, wantErr: "berth: service scale needs at least 1 argument; usage: berth service scale NAME=REPLICAS [NAME=REPLICAS...]\n", wantCode: 2},
		{name: "scale a bad one checks all first", args: []string{"service", "scale", "hello=1", "web=x"}, wantErr: "berth: invalid argument \"web=x\": replicas must be a whole number\n", wantCode: 2},
		{name: "scale unknown stops there", args: []string{"service", "scale", "hello=1", "nope=2", "web=3"}, wantOut: "service hello scaled to 1 (version 4)\n", wantErr: "berth: service \"nope\" not found\n", wantCode: 1},
		{name: "rm", args: []string{"service", "rm", "web", "hello"}, wantOut: "web\nhello\n"},
		{name: "rm unknown", args: []string{"service", "rm", "nope"}, wantErr: "berth: service \"nope\" not found\n", wantCode: 1},
		{name: "rm goes on after a failure", args: []string{"service", "rm", "nope", "web", "gone"}, wantOut: "web\n", wantErr: "berth: 2 services not removed: nope: service \"nope\" not found; gone: service \"gone\" not found\n", wantCode: 1},
		{name: "logs", args: []string{"service", "logs", "hello"}, wantOut: "hello.1 | line one\nhello.2 | line two\n"},
		{name: "logs bad tail", args: []string{"service", "logs", "--tail", "-5", "hello"}, wantErr: "berth: --tail -5: want a number of lines, or -1 for all\n", wantCode: 2},
		{name: "logs unknown", args: []string{"service", "logs", "nope"}, wantErr: "berth: service \"nope\" not found\n", wantCode: 1},
		{name: "unknown subcommand", args: []string{"service", "lss"}, wantErr: "berth: unknown command \"lss\" for \"berth service\" (did you mean \"ls\"?); run 'berth service --help'\n", wantCode: 2},
		{name: "unknown command", args: []string{"deplyo"}, wantErr: "berth: unknown command \"deplyo\" for \"berth\" (did you mean \"deploy\"?); run 'berth --help'\n", wantCode: 2},
		{name: "unknown flag", args: []string{"service", "ls", "--bogus"}, wantErr: "berth: unknown flag: --bogus\n", wantCode: 2},
		{name: "bad output format", args: []string{"service", "ls", "-o", "yaml"}, wantErr: "berth: unknown output format \"yaml\": use table or json\n", wantCode: 2},
		{name: "ls takes no arguments", args: []string{"service", "ls", "x"}, wantErr: "berth: service ls takes no arguments, got \"x\"; usage: berth service ls\n", wantCode: 2},
		{name: "alias", args: []string{"services", "list"}, wantOutHas: []string{"hello   replicated"}},
		{name: "group without a subcommand shows help", args: []string{"service"}, wantOutHas: []string{"Available Commands:", "scale"}},
		{name: "help", args: []string{"--help"}, wantOutHas: []string{"deploy", "service", "node", "whoami", "--data-dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeCluster(t)
			f.seed()
			r := f.run(tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, tt.wantCode, r.stderr)
			}
			if r.stderr != tt.wantErr {
				t.Errorf("stderr:\n%q\nwant:\n%q", r.stderr, tt.wantErr)
			}
			if len(tt.wantOutHas) == 0 && r.stdout != tt.wantOut {
				t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, tt.wantOut)
			}
			for _, s := range tt.wantOutHas {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
				}
			}
		})
	}
}

func TestServiceRmRemoves(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()
	if r := f.run("service", "rm", "web"); r.code != 0 {
		t.Fatalf("rm: %+v", r)
	}
	r := f.run("service", "ls", "-o", "json")
	var svcs []api.Service
	if err := json.Unmarshal([]byte(r.stdout), &svcs); err != nil {
		t.Fatalf("ls -o json: %v\n%s", err, r.stdout)
	}
	if len(svcs) != 2 || svcs[0].Spec.Name == "web" || svcs[1].Spec.Name == "web" {
		t.Fatalf("services after rm: %+v", svcs)
	}
}

func TestJSONListings(t *testing.T) {
	t.Parallel()
	listings := [][]string{
		{"service", "ls", "-o", "json"},
		{"service", "ps", "hello", "-o", "json"},
		{"service", "ps", "hello", "--all", "--output=json"},
		{"node", "ls", "-o", "json"},
	}
	seeded := newFakeCluster(t)
	seeded.seed()
	empty := newFakeCluster(t)
	// ps needs the service to exist; it has no tasks.
	emptyService := newFakeCluster(t)
	emptyService.services["hello"] = api.Service{ID: "svc-hello", Spec: api.ServiceSpec{Name: "hello"}}

	check := func(f *fakeCluster, args []string, wantEmpty bool) {
		t.Helper()
		r := f.run(args...)
		if r.code != 0 {
			t.Errorf("%v: %+v", args, r)
			return
		}
		var items []json.RawMessage
		if err := json.Unmarshal([]byte(r.stdout), &items); err != nil || items == nil {
			t.Errorf("%v: not a JSON array: %v\n%s", args, err, r.stdout)
			return
		}
		if wantEmpty && strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("%v on an empty cluster: %q, want []", args, r.stdout)
		}
		if !wantEmpty && len(items) == 0 {
			t.Errorf("%v: empty array from a seeded cluster", args)
		}
	}
	for _, args := range listings {
		check(seeded, args, false)
		if args[1] == "ps" {
			check(emptyService, args, true)
		} else {
			check(empty, args, true)
		}
	}
}

func TestServicePsJSONIsTaskViews(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()
	r := f.run("service", "ps", "hello", "--all", "-o", "json")
	var views []api.TaskView
	if err := json.Unmarshal([]byte(r.stdout), &views); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if len(views) != 3 {
		t.Fatalf("got %d views, want 3", len(views))
	}
	// Same order as the table: slot 1 newest first, then slot 2.
	if views[0].ID != "a1b2c3d4e5f6a7b8c9d0" || views[1].ID != "c1b2c3d4e5f6a7b8c9d0" || views[2].ID != "b1b2c3d4e5f6a7b8c9d0" {
		t.Errorf("order %s %s %s", views[0].ID, views[1].ID, views[2].ID)
	}
	v := views[1]
	if v.State != api.TaskFailed || v.DesiredState != api.TaskShutdown || v.Health != "none" || v.ExitCode == nil || *v.ExitCode != 1 || v.Node != "node-alpha-0001" {
		t.Errorf("failed task view %+v", v)
	}
	if views[0].Ports["http"] != 20001 || views[0].PID != 4242 || views[0].Health != "healthy" {
		t.Errorf("running task view %+v", views[0])
	}
}

// lineWatcher is a stdout that tells when a string has been written.
type lineWatcher struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestServiceLogsFollowEndsCleanlyOnInterrupt(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()
	f.follow = true
	out := &lineWatcher{want: "line two\n", seen: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var errb strings.Builder
	e := &env{
		stdin: strings.NewReader(""), stdout: out, stderr: &errb,
		getenv: func(k string) string { return map[string]string{envDataDir: f.dataDir}[k] },
		euid:   1000, now: func() time.Time { return testNow },
	}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"service", "logs", "-f", "--tail", "10", "hello"}, e) }()

	select {
	case <-out.seen:
	case code := <-done:
		t.Fatalf("logs -f returned %d before being interrupted; stderr %q", code, errb.String())
	case <-time.After(10 * time.Second):
		t.Fatal("no log lines within 10s")
	}
	select {
	case code := <-done:
		t.Fatalf("logs -f returned %d while the stream was open", code)
	default:
	}
	cancel() // Ctrl-C
	select {
	case code := <-done:
		if code != 0 || errb.String() != "" {
			t.Errorf("after interrupt: code %d, stderr %q; want 0 and nothing", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("logs -f did not end within 10s of the interrupt")
	}
	if out.String() != "hello.1 | line one\nhello.2 | line two\n" {
		t.Errorf("stdout %q", out.String())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if last := f.requests[len(f.requests)-1]; last != "GET /api/v1/services/hello/logs?follow=true&tail=10" {
		t.Errorf("request %q", last)
	}
}

func TestInterruptedCommand(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := cliRun(ctx, map[string]string{envDataDir: f.dataDir}, "", "service", "ls")
	if r.code != 130 || r.stderr != "berth: interrupted\n" {
		t.Errorf("got %+v, want code 130 and 'berth: interrupted'", r)
	}
}

var _ io.Writer = (*lineWatcher)(nil)

// TestServiceStatusCountsUnstoredPending: a service stores only some of its
// waiting replicas as tasks; STATUS counts them all, from the service.
func TestServiceStatusCountsUnstoredPending(t *testing.T) {
	pending := []api.Task{{Status: api.TaskStatus{State: api.TaskPending, Message: "no node fits"}}}
	s := api.Service{Pending: &api.PendingReplicas{Count: 100000, Stored: 100, Reason: "no node fits"}}
	if got := serviceStatus(s, pending); got != "100000 pending: no node fits" {
		t.Errorf("with a pending count: %q", got)
	}
	if got := serviceStatus(api.Service{}, pending); got != "1 pending: no node fits" {
		t.Errorf("without: %q", got)
	}
}
