package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
)

func TestNodeCommands(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()

	r := f.run("node", "ls")
	want := `ID             HOSTNAME   STATUS   AVAILABILITY   CPUS   MEMORY   ADDRESS
node-alpha-0   alpha      ready    active         2      3.5GiB   10.0.0.1
node-beta-00   beta       down     drain          0.5    512MiB   10.0.0.2
`
	if r.code != 0 || r.stdout != want {
		t.Errorf("node ls: code %d stderr %q\n%s\nwant\n%s", r.code, r.stderr, r.stdout, want)
	}

	r = f.run("node", "ls", "-o", "json")
	var nodes []api.Node
	if err := json.Unmarshal([]byte(r.stdout), &nodes); err != nil || len(nodes) != 2 || nodes[0].Hostname != "alpha" {
		t.Errorf("node ls -o json: %v %+v", err, nodes)
	}

	for _, arg := range []string{"beta", "node-beta-00002"} {
		r = f.run("nodes", "inspect", arg)
		var n api.Node
		if err := json.Unmarshal([]byte(r.stdout), &n); err != nil || n.ID != "node-beta-00002" || n.Resources.Memory != 512<<20 {
			t.Errorf("node inspect %s: %v %+v (stderr %q)", arg, err, n, r.stderr)
		}
	}

	r = f.run("node", "inspect", "alpha")
	if n := (api.Node{}); json.Unmarshal([]byte(r.stdout), &n) != nil || n.Topology == nil || n.Topology.Online != "0-1" {
		t.Errorf("node inspect alpha shows no topology: %s", r.stdout)
	}
	r = f.run("node", "topology", "alpha")
	if r.code != 0 || r.stdout != "node alpha\ncpus 0-1\n" {
		t.Errorf("node topology alpha: %+v", r)
	}
	r = f.run("node", "topology", "beta")
	if r.code != 1 || r.stderr != "berth: node beta reported no CPU topology\n" {
		t.Errorf("node topology beta: %+v", r)
	}
	r = f.run("node", "topology")
	if r.code != 2 {
		t.Errorf("node topology without a node: %+v", r)
	}
	r = f.run("node", "inspect", "gamma")
	if r.code != 1 || r.stderr != "berth: node \"gamma\" not found\n" {
		t.Errorf("node inspect gamma: %+v", r)
	}
	r = f.run("node", "inspect", "a", "b")
	if r.code != 2 || r.stderr != "berth: node inspect takes 1 argument, got 2; usage: berth node inspect NODE\n" {
		t.Errorf("node inspect a b: %+v", r)
	}
}

// nodeAPI is a minimal API for node update and rm: it records each request
// and answers with canned bodies.
type nodeAPI struct {
	mu       sync.Mutex
	requests []string
	bodies   []string
}

func newNodeAPI(t *testing.T) (*nodeAPI, string) {
	t.Helper()
	a := &nodeAPI{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.requests = append(a.requests, r.Method+" "+r.URL.RequestURI())
		a.bodies = append(a.bodies, string(b))
		a.mu.Unlock()
		switch {
		case r.Header.Get("Authorization") != "Bearer "+goodToken:
			fakeWriteJSON(w, 401, api.Error{Code: api.CodeUnauthorized, Message: "wrong token"})
		case r.Method == "PATCH" && r.URL.Path == "/api/v1/nodes/web1":
			var u api.NodeUpdate
			_ = json.Unmarshal(b, &u)
			if u.Availability == "off" {
				fakeWriteJSON(w, 400, api.Error{Code: api.CodeInvalid, Field: "availability", Message: `unknown availability "off": use active, pause or drain`})
				return
			}
			fakeWriteJSON(w, 200, api.Node{ID: "abcdef0123456789", Hostname: "web1", Availability: u.Availability, Labels: u.LabelsAdd})
		case r.Method == "DELETE" && r.URL.Path == "/api/v1/nodes/web1":
			if r.URL.Query().Get("force") != "true" {
				fakeWriteJSON(w, 409, api.Error{Code: api.CodeConflict, Field: "force", Message: "node web1 is ready: stop its agent first, or force the removal with --force"})
				return
			}
			w.WriteHeader(204)
		default:
			fakeWriteJSON(w, 404, api.Error{Code: api.CodeNotFound, Message: "no node"})
		}
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, addrFile), srv.URL+"\n", 0o644)
	writeTestFile(t, filepath.Join(dir, tokenFile), goodToken+"\n", 0o600)
	writeTestFile(t, filepath.Join(dir, caFile), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})), 0o644)
	return a, dir
}

func TestNodeUpdateAndRm(t *testing.T) {
	t.Parallel()
	a, dir := newNodeAPI(t)
	run := func(args ...string) cliResult {
		return cliRun(context.Background(), map[string]string{envDataDir: dir}, "", args...)
	}
	r := run("node", "update", "web1", "--availability", "drain", "--label-add", "zone=a", "--label-add", "rack=r1", "--label-rm", "old")
	if r.code != 0 || r.stdout != "abcdef012345 web1: drain, labels rack=r1,zone=a\n" {
		t.Fatalf("node update: %+v", r)
	}
	var u api.NodeUpdate
	if err := json.Unmarshal([]byte(a.bodies[slices.Index(a.requests, "PATCH /api/v1/nodes/web1")]), &u); err != nil ||
		u.Availability != "drain" || u.LabelsAdd["zone"] != "a" || u.LabelsAdd["rack"] != "r1" || len(u.LabelsRm) != 1 || u.LabelsRm[0] != "old" {
		t.Fatalf("sent %v (%v)", a.bodies, err)
	}
	if !slices.Contains(a.requests, "PATCH /api/v1/nodes/web1") {
		t.Fatalf("requests %v", a.requests)
	}

	r = run("node", "update", "web1", "--availability", "off")
	if r.code != 1 || !strings.Contains(r.stderr, "availability") || !strings.Contains(r.stderr, "use active, pause or drain") {
		t.Fatalf("bad availability: %+v", r)
	}
	n := len(a.requests)
	for _, bad := range [][]string{
		{"node", "update", "web1"},
		{"node", "update", "web1", "--label-add", "novalue"},
		{"node", "update", "web1", "--label-add", "=v"},
		{"node", "update"},
		{"node", "rm"},
	} {
		if r := run(bad...); r.code != 2 || r.stderr == "" {
			t.Errorf("%v: %+v, want a usage error", bad, r)
		}
	}
	if len(a.requests) != n {
		t.Fatalf("usage errors sent requests: %v", a.requests[n:])
	}

	r = run("node", "rm", "web1")
	if r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("rm of a ready node: %+v", r)
	}
	r = run("node", "rm", "--force", "web1")
	if r.code != 0 || r.stdout != "web1\n" {
		t.Fatalf("rm --force: %+v", r)
	}
	if got := a.requests[len(a.requests)-1]; got != "DELETE /api/v1/nodes/web1?force=true" {
		t.Fatalf("request %s", got)
	}
}

// TestHeartbeatTimeoutFlag: the manager flag defaults to 3s and refuses
// values that would let nodes flap between ready and down.
func TestHeartbeatTimeoutFlag(t *testing.T) {
	t.Parallel()
	var mf managerFlags
	cmd := &cobra.Command{}
	mf.add(cmd)
	if err := cmd.Flags().Parse(nil); err != nil || mf.heartbeatTimeout != 3*time.Second || mf.check() != nil {
		t.Fatalf("default %s, check %v, parse %v", mf.heartbeatTimeout, mf.check(), err)
	}
	if err := cmd.Flags().Parse([]string{"--heartbeat-timeout", "1s"}); err != nil {
		t.Fatal(err)
	}
	if err := mf.check(); err == nil || !strings.Contains(err.Error(), "--heartbeat-timeout 1s: at least 2s") {
		t.Fatalf("1s accepted: %v", err)
	}
}

// TestNodeDrainWarns: draining the only node that is ready and active
// takes every service on it to no running task: the command says which.
func TestNodeDrainWarns(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()
	r := f.run("node", "update", "alpha", "--availability", "drain")
	want := "berth: warning: no other node is ready and active: services hello, web lose every running task; their tasks stay pending until a node can take them (undo: berth node update alpha --availability active)\n"
	if r.code != 0 || r.stdout != "node-alpha-0 alpha: drain, labels none\n" || r.stderr != want {
		t.Fatalf("drain of the only node: %+v\nwant stderr %q", r, want)
	}
	// With another node ready and active, replicas can move: no warning.
	f.mu.Lock()
	f.nodes[0].Status, f.nodes[0].Availability = api.NodeReady, api.AvailabilityActive
	f.mu.Unlock()
	r = f.run("node", "update", "alpha", "--availability", "drain")
	if r.code != 0 || strings.Contains(r.stderr, "hello") {
		t.Fatalf("drain with another node: %+v", r)
	}
	if !strings.Contains(r.stderr, "service web runs only on alpha and has placement rules") {
		t.Errorf("a global service on one node only: %q", r.stderr)
	}
	// Pausing warns of nothing: the tasks stay.
	if r := f.run("node", "update", "alpha", "--availability", "pause"); r.code != 0 || r.stderr != "" {
		t.Fatalf("pause: %+v", r)
	}
}

func TestNodeAddressFlagsUnreachable(t *testing.T) {
	for _, c := range []struct {
		n    api.Node
		want string
	}{
		{api.Node{Address: "10.0.0.1"}, "10.0.0.1"},
		{api.Node{Address: "127.0.0.1", AddressIssue: api.AddressLoopback}, "127.0.0.1 (unreachable: loopback; restart its agent with --address)"},
		{api.Node{AddressIssue: api.AddressMissing}, "- (unreachable: missing; restart its agent with --address)"},
	} {
		if got := nodeAddress(c.n); got != c.want {
			t.Errorf("nodeAddress(%+v) = %q, want %q", c.n, got, c.want)
		}
	}
}
