package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func TestTaskListings(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()
	tests := []struct {
		name     string
		args     []string
		wantOut  string
		wantErr  string
		wantCode int
	}{
		{name: "ps across services", args: []string{"ps"},
			wantOut: `ID             SERVICE   SLOT   VERSION   NODE    STATE      DESIRED   HEALTH     PORTS                    CPUS      PID    ERROR
e1b2c3d4e5f6   db        1      2         -       pending    running   none       -                        -         -      no node can take it: 2 nodes have too little memory free
a1b2c3d4e5f6   hello     1      3         alpha   running    running   healthy    admin:20002,http:20001   shared    4242   -
b1b2c3d4e5f6   hello     2      3         beta    starting   running   starting   -                        shared    -      -
d1b2c3d4e5f6   web       -      1         alpha   running    running   none       -                        1 mem 0   99     -
`},
		{name: "ps -q", args: []string{"ps", "-q", "--filter", "service=hello"}, wantOut: "a1b2c3d4e5f6a7b8c9d0\nb1b2c3d4e5f6a7b8c9d0\n"},
		{name: "ps -a with filters on two keys", args: []string{"ps", "-a", "-q", "--filter", "node=alpha", "--filter", "state=failed", "--filter", "state=running"},
			wantOut: "a1b2c3d4e5f6a7b8c9d0\nc1b2c3d4e5f6a7b8c9d0\nd1b2c3d4e5f6a7b8c9d0\n"},
		{name: "ps filter desired", args: []string{"ps", "-a", "-q", "--filter", "desired=shutdown"}, wantOut: "c1b2c3d4e5f6a7b8c9d0\n"},
		{name: "node ps by host name", args: []string{"node", "ps", "beta"},
			wantOut: `ID             SERVICE   SLOT   VERSION   NODE   STATE      DESIRED   HEALTH     PORTS   CPUS     PID   ERROR
b1b2c3d4e5f6   hello     2      3         beta   starting   running   starting   -       shared   -     -
`},
		{name: "node ps -q", args: []string{"node", "ps", "node-alpha-0001", "-q"}, wantOut: "a1b2c3d4e5f6a7b8c9d0\nd1b2c3d4e5f6a7b8c9d0\n"},
		{name: "node ps unknown", args: []string{"node", "ps", "gamma"}, wantErr: "berth: node \"gamma\" not found\n", wantCode: 1},
		{name: "service ps filter", args: []string{"service", "ps", "hello", "-a", "--filter", "state=failed", "-q"}, wantOut: "c1b2c3d4e5f6a7b8c9d0\n"},
		{name: "service ls -q", args: []string{"service", "ls", "-q"}, wantOut: "db\nhello\nweb\n"},
		{name: "service ls filter", args: []string{"service", "ls", "-q", "--filter", "mode=global"}, wantOut: "web\n"},
		{name: "node ls -q filter", args: []string{"node", "ls", "-q", "--filter", "status=ready"}, wantOut: "node-alpha-0001\n"},
		{name: "unknown filter key", args: []string{"ps", "--filter", "stat=running"},
			wantErr: "berth: --filter \"stat=running\": unknown key \"stat\"; use desired, node, service, state (did you mean \"state\"?)\n", wantCode: 2},
		{name: "a misspelt service name", args: []string{"service", "ps", "helo"}, wantErr: "berth: service \"helo\" not found (did you mean \"hello\"?)\n", wantCode: 1},
		{name: "a misspelt node name", args: []string{"node", "inspect", "alpa"}, wantErr: "berth: node \"alpa\" not found (did you mean \"alpha\"?)\n", wantCode: 1},
		{name: "a misspelt name to scale", args: []string{"service", "scale", "hello=1", "wbe=2"}, wantOut: "service hello scaled to 1 (version 4)\n",
			wantErr: "berth: service \"wbe\" not found (did you mean \"web\"?)\n", wantCode: 1},
		{name: "-q with -o json", args: []string{"node", "ls", "-q", "-o", "json"}, wantErr: "berth: -q prints only ids; it does not go with -o json\n", wantCode: 2},
		{name: "node ls bad filter", args: []string{"node", "ls", "--filter", "x=y"}, wantErr: "berth: --filter \"x=y\": unknown key \"x\"; use availability, hostname, role, status\n", wantCode: 2},
		{name: "filter without =", args: []string{"ps", "--filter", "running"},
			wantErr: "berth: --filter \"running\": want KEY=VALUE, such as state=running\n", wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.run(tt.args...)
			if r.code != tt.wantCode || r.stderr != tt.wantErr {
				t.Fatalf("code %d stderr %q, want %d %q", r.code, r.stderr, tt.wantCode, tt.wantErr)
			}
			if r.stdout != tt.wantOut {
				t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, tt.wantOut)
			}
		})
	}
	var views []api.TaskView
	if r := f.run("ps", "-o", "json", "--filter", "service=db"); json.Unmarshal([]byte(r.stdout), &views) != nil || len(views) != 1 || views[0].Service != "db" {
		t.Fatalf("ps -o json: %+v", r)
	}
}

func TestColor(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()
	run := func(vars map[string]string, args ...string) cliResult {
		vars[envDataDir] = f.dataDir
		return cliRun(t.Context(), vars, "", args...)
	}
	// Piped (the tests' stdout is a buffer): no colour.
	if r := run(map[string]string{}, "service", "ps", "hello"); strings.Contains(r.stdout, "\x1b") {
		t.Fatalf("colour on a pipe: %q", r.stdout)
	}
	r := run(map[string]string{"CLICOLOR_FORCE": "1"}, "service", "ps", "hello")
	if !strings.Contains(r.stdout, ansiGreen+"running"+ansiReset) || !strings.Contains(r.stdout, ansiYellow+"starting"+ansiReset) {
		t.Fatalf("no colours with CLICOLOR_FORCE: %q", r.stdout)
	}
	// The columns still line up: each line, with the codes removed, is
	// what the plain table prints.
	plain := run(map[string]string{}, "service", "ps", "hello").stdout
	stripped := r.stdout
	for _, c := range []string{ansiGreen, ansiYellow, ansiRed, ansiGrey, ansiPlain, ansiReset} {
		stripped = strings.ReplaceAll(stripped, c, "")
	}
	if stripped != plain {
		t.Fatalf("coloured table differs:\n%s\nplain:\n%s", stripped, plain)
	}
	if r := run(map[string]string{"CLICOLOR_FORCE": "1", "NO_COLOR": "1"}, "node", "ls"); strings.Contains(r.stdout, "\x1b") {
		t.Fatalf("colour despite NO_COLOR: %q", r.stdout)
	}
}

func TestInspectPretty(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()
	r := f.run("service", "inspect", "--pretty", "hello")
	want := `Service:  hello
ID:       svc-hello
Version:  3, updated 5 minutes ago, created 24 hours ago
Mode:     replicated, 2 replicas
Tasks:    1/2 running
Spec:
  mode: replicated
  name: hello
`
	if r.code != 0 || !strings.HasPrefix(r.stdout, want) || !strings.Contains(r.stdout, "  task:\n    command:\n    - berth\n    - whoami\n") {
		t.Fatalf("service inspect --pretty:\n%s\nwant it to start with:\n%s", r.stdout, want)
	}
	r = f.run("node", "inspect", "alpha", "--pretty")
	if r.code != 0 || !strings.Contains(r.stdout, "Node:       alpha\n") || !strings.Contains(r.stdout, "Resources:  2 CPUs, 3.5GiB\n") || !strings.Contains(r.stdout, "Topology:   CPUs 0-1\n") {
		t.Fatalf("node inspect --pretty:\n%s", r.stdout)
	}
}

func TestServiceStats(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()
	r := f.run("service", "stats", "hello", "--interval", "10ms")
	want := `ID             SLOT   CPU %   CPU TIME   MEMORY   PIDS   NET RX/TX   BLOCK R/W   ERROR
a1b2c3d4e5f6   1      50.0%   100ms      10MiB    3      0B/0B       0B/0B       -
`
	if r.code != 0 || r.stdout != want {
		t.Fatalf("stats: %+v\nwant:\n%s", r, want)
	}
	// --watch prints a table per sample until interrupted (exit 0).
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan cliResult)
	go func() {
		done <- cliRun(ctx, map[string]string{envDataDir: f.dataDir}, "", "service", "stats", "hello", "--watch", "--interval", "10ms")
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		f.mu.Lock()
		n := f.statsCalls
		f.mu.Unlock()
		if n >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	r = <-done
	if r.code != 0 || strings.Count(r.stdout, "CPU %") < 2 || strings.Contains(r.stdout, "\x1b") {
		t.Fatalf("stats --watch: %+v", r)
	}
	if r := f.run("service", "stats", "hello", "--interval", "1ns"); r.code != 2 {
		t.Fatalf("bad interval: %+v", r)
	}
}
