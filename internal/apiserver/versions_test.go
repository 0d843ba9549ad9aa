package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

// newFixtureWith is newFixture with a changed server config.
func newFixtureWith(t *testing.T, change func(*Config)) *fixture {
	t.Helper()
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := Config{Store: st, Token: testToken, Version: "test"}
	change(&cfg)
	srv := httptest.NewServer(New(cfg).Handler())
	t.Cleanup(srv.Close)
	return &fixture{t: t, st: st, srv: srv}
}

// call sends a request with the test token and decodes a 2xx answer into
// out (if not nil) or a non-2xx one into the returned error body.
func (f *fixture) call(method, path, ctype, body string, out any) (int, api.Error) {
	f.t.Helper()
	resp, b := f.do(method, path, ctype, testToken, []byte(body))
	var e api.Error
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &e); err != nil {
			f.t.Fatalf("%s %s: %d, body not an error: %s", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode, e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, e
}

// deploy puts goodSpec with replace applied and returns the service.
func (f *fixture) deploy(replace ...string) api.Service {
	f.t.Helper()
	doc := goodSpec
	for i := 0; i+1 < len(replace); i += 2 {
		if !strings.Contains(doc, replace[i]) {
			f.t.Fatalf("goodSpec has no %q", replace[i])
		}
		doc = strings.Replace(doc, replace[i], replace[i+1], 1)
	}
	var svc api.Service
	if code, e := f.call("PUT", "/api/v1/services/hello", "application/yaml", doc, &svc); code >= 300 {
		f.t.Fatalf("deploy: %d %+v", code, e)
	}
	return svc
}

func (f *fixture) versions(name string) []api.ServiceVersion {
	f.t.Helper()
	var vs []api.ServiceVersion
	if code, e := f.call("GET", "/api/v1/services/"+name+"/versions", "", "", &vs); code != 200 {
		f.t.Fatalf("versions: %d %+v", code, e)
	}
	return vs
}

func versionNumbers(vs []api.ServiceVersion) string {
	var s []string
	for _, v := range vs {
		s = append(s, fmt.Sprint(v.Version))
	}
	return strings.Join(s, ",")
}

func TestVersionsAreRecordedAndPruned(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	f := newFixtureWith(t, func(c *Config) {
		c.VersionHistory = 3
		c.Now = func() time.Time { return now }
	})
	v1 := f.deploy()
	if v1.Version != 1 || v1.UpdateStatus != nil || v1.PreviousSpec != nil {
		t.Fatalf("created: %+v", v1)
	}
	if vs := f.versions("hello"); len(vs) != 1 || vs[0].Summary != "created" || vs[0].Author != "admin" || !vs[0].CreatedAt.Equal(now) {
		t.Fatalf("after create: %+v", vs)
	}

	// A change of the task template starts an update.
	v2 := f.deploy("  driver: process", "  driver: process\n  env: {FOO: a}")
	st := v2.UpdateStatus
	if v2.Version != 2 || st == nil || st.State != api.UpdateUpdating || st.FromVersion != 1 || st.ToVersion != 2 ||
		st.Total != 3 || !st.StartedAt.Equal(now) || v2.PreviousSpec == nil || v2.PreviousSpec.Task.Env != nil {
		t.Fatalf("update: %+v %+v", v2, st)
	}
	// A change that replaces no task is a version but no update.
	v3 := f.deploy("  driver: process", "  driver: process\n  env: {FOO: a}", "replicas: 3", "replicas: 4")
	if v3.Version != 3 || v3.UpdateStatus == nil || v3.UpdateStatus.ToVersion != 2 {
		t.Fatalf("scale by deploy started an update: %+v", v3.UpdateStatus)
	}
	// ... and during an update it keeps PreviousSpec, the rollback target.
	if v3.PreviousSpec == nil || v3.PreviousSpec.Task.Env != nil {
		t.Fatalf("PreviousSpec moved during an update: %+v", v3.PreviousSpec)
	}
	vs := f.versions("hello")
	if versionNumbers(vs) != "3,2,1" || vs[0].Summary != "replicas 3 → 4" || vs[1].Summary != "env +FOO" {
		t.Fatalf("history %s: %+v", versionNumbers(vs), vs)
	}
	if vs[1].Spec.Task.Env["FOO"] != "a" || vs[2].Spec.Task.Env != nil {
		t.Fatalf("versions do not keep their specs: %+v", vs)
	}

	// Scale is a version too; the fourth version prunes the first.
	var scaled api.Service
	if code, e := f.call("POST", "/api/v1/services/hello/scale", "application/json", `{"replicas":2}`, &scaled); code != 200 {
		t.Fatalf("scale: %d %+v", code, e)
	}
	if vs := f.versions("hello"); versionNumbers(vs) != "4,3,2" || vs[0].Summary != "replicas 4 → 2" {
		t.Fatalf("after scale %s: %+v", versionNumbers(vs), vs)
	}
	v5 := f.deploy("task:\n", "labels: {team: a}\ntask:\n", "  command: [berth, whoami", "  workdir: /tmp\n  command: [berth, whoami")
	if v5.Version != 5 {
		t.Fatalf("v5: %+v", v5)
	}
	vs = f.versions("hello")
	if versionNumbers(vs) != "5,4,3" {
		t.Fatalf("after v5: %s", versionNumbers(vs))
	}
	if s := vs[0].Summary; s != "replicas 2 → 3, env -FOO, labels +team, workdir changed" {
		t.Fatalf("summary %q", s)
	}
	kept, _, err := f.st.Versions.ListPrefix(context.Background(), store.VersionPrefix("hello"))
	if err != nil || len(kept) != 3 {
		t.Fatalf("store keeps %d versions (%v), want 3", len(kept), err)
	}

	// Removing the service removes its history; a new one starts afresh.
	if code, e := f.call("DELETE", "/api/v1/services/hello", "", "", nil); code != 204 {
		t.Fatalf("delete: %d %+v", code, e)
	}
	if kept, _, _ := f.st.Versions.ListPrefix(context.Background(), store.VersionPrefix("hello")); len(kept) != 0 {
		t.Fatalf("versions outlived their service: %+v", kept)
	}
	if again := f.deploy(); again.Version != 1 {
		t.Fatalf("re-created: %+v", again)
	}
	if vs := f.versions("hello"); versionNumbers(vs) != "1" {
		t.Fatalf("history of the new service: %s", versionNumbers(vs))
	}
	if code, _ := f.call("GET", "/api/v1/services/nope/versions", "", "", nil); code != 404 {
		t.Fatalf("versions of an unknown service: %d", code)
	}
}

func TestSummarize(t *testing.T) {
	three, four := 3, 4
	a := api.ServiceSpec{Name: "x", Replicas: &three, Task: api.TaskSpec{Image: "nginx:1", Env: map[string]string{"A": "1", "B": "2"},
		Resources: api.Resources{CPUs: 1}}}
	b := api.ServiceSpec{Name: "x", Replicas: &four, Task: api.TaskSpec{Image: "nginx:2", Env: map[string]string{"B": "3", "C": "4"},
		Resources: api.Resources{CPUs: 2}}, Placement: api.Placement{Constraints: []string{"node.labels.a == b"}},
		Update: &api.UpdatePolicy{Order: api.OrderStopFirst}}
	want := "image nginx:1 → nginx:2, replicas 3 → 4, env -A ~B +C, resources changed, placement changed, update changed"
	if got := summarize(a, b); got != want {
		t.Fatalf("summary\n got %q\nwant %q", got, want)
	}
	if got := summarize(a, a); got != "no change" {
		t.Fatalf("same spec: %q", got)
	}
	long := a
	long.Task.Command = []string{strings.Repeat("x", 100)}
	if got := summarize(a, long); len([]rune(got)) > 100 || !strings.HasSuffix(got, "…") {
		t.Fatalf("long command not cut short: %q", got)
	}
	v1, v2 := a, a
	v1.Task.Command = []string{"berth", "whoami", "--port", "${PORT_HTTP}", "--version-label", "v1", "--shutdown-timeout", "5s"}
	v2.Task.Command = []string{"berth", "whoami", "--port", "${PORT_HTTP}", "--version-label", "v2", "--shutdown-timeout", "5s"}
	if got, want := summarize(v1, v2), "command …--version-label v1 → v2"; got != want {
		t.Fatalf("a changed word in a long command: %q, want %q", got, want)
	}
	v2.Task.Command = append(v2.Task.Command, "--extra")
	if got, want := summarize(v1, v2), "command …--version-label v1 --shutdown-timeout 5s → v2 --shutdown-timeout 5s --extra"; got != want {
		t.Fatalf("two changes: %q, want %q", got, want)
	}
}

func TestRollback(t *testing.T) {
	f := newFixtureWith(t, func(c *Config) { c.VersionHistory = 3 })
	f.deploy()
	// A fresh service has nothing to roll back to.
	before := f.snapshot()
	if code, e := f.call("POST", "/api/v1/services/hello/rollback", "application/json", "", nil); code != 409 || !strings.Contains(e.Message, "no previous version") {
		t.Fatalf("rollback of v1: %d %+v", code, e)
	}
	if f.snapshot() != before {
		t.Fatal("refused rollback changed the store")
	}
	for i := 2; i <= 4; i++ {
		f.deploy("  driver: process", fmt.Sprintf("  driver: process\n  env: {V: \"%d\"}", i))
	}
	// Default: back to the previous spec, as a new version.
	var svc api.Service
	if code, e := f.call("POST", "/api/v1/services/hello/rollback", "", "", &svc); code != 200 {
		t.Fatalf("rollback: %d %+v", code, e)
	}
	st := svc.UpdateStatus
	if svc.Version != 5 || svc.Spec.Task.Env["V"] != "3" || svc.PreviousSpec.Task.Env["V"] != "4" ||
		st == nil || st.State != api.UpdateRollingBack || st.FromVersion != 4 || st.ToVersion != 5 || st.Total != 3 {
		t.Fatalf("rolled back: %+v %+v", svc, st)
	}
	vs := f.versions("hello")
	if versionNumbers(vs) != "5,4,3" || vs[0].Summary != "rollback to v3: env ~V" {
		t.Fatalf("history %s: %q", versionNumbers(vs), vs[0].Summary)
	}

	// To a version that is kept.
	if code, e := f.call("POST", "/api/v1/services/hello/rollback", "application/json", `{"to": 4}`, &svc); code != 200 {
		t.Fatalf("rollback to 4: %d %+v", code, e)
	}
	if svc.Version != 6 || svc.Spec.Task.Env["V"] != "4" || svc.UpdateStatus.State != api.UpdateRollingBack {
		t.Fatalf("rolled back to 4: %+v", svc)
	}
	// Refusals change nothing and say why.
	before = f.snapshot()
	for _, c := range []struct {
		body   string
		status int
		field  string
		text   string
	}{
		{`{"to": 2}`, 404, "to", "versions you can roll back to: 4, 5"},
		{`{"to": 99}`, 404, "to", "has no version 99"},
		{`{"to": 6}`, 400, "to", "is the current version"},
		{`{"to": -1}`, 400, "to", ""},
		{`{"to": "3"}`, 400, "to", ""},
		{`{"version": 3}`, 400, "version", ""},
		{`[`, 400, "", ""},
	} {
		code, e := f.call("POST", "/api/v1/services/hello/rollback", "application/json", c.body, nil)
		if code != c.status || e.Field != c.field || !strings.Contains(e.Message, c.text) {
			t.Errorf("%s: %d %+v, want %d on %q with %q", c.body, code, e, c.status, c.field, c.text)
		}
	}
	if code, _ := f.call("POST", "/api/v1/services/nope/rollback", "", "", nil); code != 404 {
		t.Errorf("rollback of an unknown service: %d", code)
	}
	if f.snapshot() != before {
		t.Fatal("a refused rollback changed the store")
	}
}

func TestRollbackDropsCanariesAndReclaimsNoTakenPort(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.deploy("    - name: http", "    - name: http\n      publish: 18555")
	// v2 gives the port up; another service takes it.
	f.deploy("    - name: http", "    - name: http", "  driver: process", "  driver: process\n  env: {V: \"2\"}")
	other := "task:\n  command: [x]\n  ports: [{name: a, publish: 18555}]\n"
	if code, e := f.call("PUT", "/api/v1/services/other", "application/yaml", other, nil); code != 201 {
		t.Fatalf("other: %d %+v", code, e)
	}
	before := f.snapshot()
	code, e := f.call("POST", "/api/v1/services/hello/rollback", "", "", nil)
	if code != 409 || e.Field != "task.ports[0].publish" {
		t.Fatalf("rollback onto a taken port: %d %+v", code, e)
	}
	if f.snapshot() != before {
		t.Fatal("refused rollback changed the store")
	}
	if code, _ := f.call("DELETE", "/api/v1/services/other", "", "", nil); code != 204 {
		t.Fatal("delete other")
	}
	// Canaries waiting: rollback is how they are dropped.
	svc, err := f.st.Services.Get(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	svc.UpdateStatus.State = api.UpdateCanary
	if err := f.st.Services.Update(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	var out api.Service
	if code, e := f.call("POST", "/api/v1/services/hello/rollback", "", "", &out); code != 200 {
		t.Fatalf("rollback of canaries: %d %+v", code, e)
	}
	if out.UpdateStatus.State != api.UpdateRollingBack || out.Spec.Task.Ports[0].Publish != 18555 || out.Version != 3 {
		t.Fatalf("after dropping canaries: %+v", out)
	}
}

func TestPromoteAndResume(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	setState := func(state, msg string) {
		t.Helper()
		svc, err := f.st.Services.Get(ctx, "hello")
		if err != nil {
			t.Fatal(err)
		}
		svc.UpdateStatus.State, svc.UpdateStatus.Message = state, msg
		svc.UpdateStatus.CompletedAt = time.Now()
		if err := f.st.Services.Update(ctx, &svc); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(path, want string) {
		t.Helper()
		before := f.snapshot()
		code, e := f.call("POST", "/api/v1/services/hello/"+path, "", "", nil)
		if code != 409 || e.Code != api.CodeConflict || !strings.Contains(e.Message, want) {
			t.Fatalf("%s: %d %+v, want 409 with %q", path, code, e, want)
		}
		if f.snapshot() != before {
			t.Fatalf("refused %s changed the store", path)
		}
	}
	f.deploy()
	refused("promote", "service hello has no canaries waiting (update state: no update yet)")
	refused("resume", "has no paused update to resume (update state: no update yet)")
	f.deploy("  driver: process", "  driver: process\n  env: {V: \"2\"}")
	refused("promote", "(update state: updating)")
	refused("resume", "(update state: updating)")

	setState(api.UpdateCanary, "")
	var svc api.Service
	if code, e := f.call("POST", "/api/v1/services/hello/promote", "", "", &svc); code != 200 || svc.UpdateStatus.State != api.UpdateUpdating || svc.Version != 2 {
		t.Fatalf("promote: %d %+v %+v", code, e, svc.UpdateStatus)
	}
	refused("promote", "(update state: updating)")

	setState(api.UpdatePaused, "task abc failed: exit 1")
	svc = api.Service{}
	if code, e := f.call("POST", "/api/v1/services/hello/resume", "", "", &svc); code != 200 {
		t.Fatalf("resume: %d %+v", code, e)
	}
	if st := svc.UpdateStatus; st.State != api.UpdateUpdating || st.Message != "" || !st.CompletedAt.IsZero() {
		t.Fatalf("resumed: %+v", st)
	}
	// A paused rollback resumes as a rollback.
	if code, e := f.call("POST", "/api/v1/services/hello/rollback", "", "", &svc); code != 200 {
		t.Fatalf("rollback: %d %+v", code, e)
	}
	setState(api.UpdatePaused, "rollback failed")
	if code, e := f.call("POST", "/api/v1/services/hello/resume", "", "", &svc); code != 200 || svc.UpdateStatus.State != api.UpdateRollingBack {
		t.Fatalf("resume rollback: %d %+v %+v", code, e, svc.UpdateStatus)
	}
	// So does the orchestrator's automatic rollback, known by its record.
	svc, _ = f.st.Services.Get(ctx, "hello")
	auto := api.ServiceVersion{Service: "hello", Version: svc.Version + 1, Spec: svc.Spec, Summary: "automatic rollback of v3: task x unhealthy"}
	svc.Version++
	svc.UpdateStatus = &api.UpdateStatus{State: api.UpdatePaused, FromVersion: svc.Version - 1, ToVersion: svc.Version}
	txn := f.st.Txn()
	f.st.Services.TxnUpdate(txn, &svc)
	f.st.Versions.TxnPut(txn, &auto)
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if code, e := f.call("POST", "/api/v1/services/hello/resume", "", "", &svc); code != 200 || svc.UpdateStatus.State != api.UpdateRollingBack {
		t.Fatalf("resume automatic rollback: %d %+v %+v", code, e, svc.UpdateStatus)
	}
	for _, p := range []string{"promote", "resume"} {
		if code, _ := f.call("POST", "/api/v1/services/nope/"+p, "", "", nil); code != 404 {
			t.Errorf("%s of an unknown service: %d", p, code)
		}
	}
}

func TestDeployWarnsOfAShortMonitor(t *testing.T) {
	f := newFixture(t)
	doc := strings.Replace(goodSpec, "restart:", "update: {monitor: 500ms}\nrestart:", 1)
	resp, body := f.do("PUT", "/api/v1/services/hello", "application/yaml", testToken, []byte(doc))
	if resp.StatusCode != 201 {
		t.Fatalf("deploy: %d %s", resp.StatusCode, body)
	}
	var res api.DeployResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "update.monitor 500ms is shorter than task.health.interval 1s") ||
		res.Version != 1 || res.Spec.Name != "hello" {
		t.Fatalf("result: %+v", res)
	}
	if h := resp.Header.Values("Warning"); len(h) != 1 || !strings.HasPrefix(h[0], `299 berth "update.monitor 500ms`) {
		t.Fatalf("Warning header %q", h)
	}
	// A spec without advice has neither.
	resp, body = f.do("PUT", "/api/v1/services/hello", "application/yaml", testToken, []byte(goodSpec))
	if resp.StatusCode != 200 || strings.Contains(string(body), "warnings") || resp.Header.Get("Warning") != "" {
		t.Fatalf("no warning expected: %d %s", resp.StatusCode, body)
	}
}

func TestWarningHeader(t *testing.T) {
	if got := warningHeader("a \"b\" \\ c\nd é"); got != `299 berth "a \"b\" \\ c d  "` {
		t.Fatalf("%q", got)
	}
}

// TestConcurrentDeploysClaimOnePortOnce races many deploys of different
// services that publish the same port (and others that route the same
// host and path): exactly one of each wins, the rest get 409 naming the
// field.
func TestConcurrentDeploysClaimOnePortOnce(t *testing.T) {
	f := newFixture(t)
	const n = 12
	for round, c := range []struct {
		doc, field string
	}{
		{"task:\n  command: [x]\n  ports: [{name: a, publish: 18777}]\n", "task.ports[0].publish"},
		{"task:\n  command: [x]\n  ports: [{name: a}]\nroutes: [{host: race.test, path: /, port: a}]\n", "routes[0]"},
	} {
		var wg sync.WaitGroup
		start := make(chan struct{})
		codes := make([]int, n)
		errs := make([]api.Error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				name := fmt.Sprintf("r%d-%d", round, i)
				resp, body := f.do("PUT", "/api/v1/services/"+name, "application/yaml", testToken, []byte(c.doc))
				codes[i] = resp.StatusCode
				if resp.StatusCode >= 300 {
					_ = json.Unmarshal(body, &errs[i])
				}
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for i := range n {
			switch {
			case codes[i] == 201:
				won++
			case codes[i] == 409 && errs[i].Field == c.field && errs[i].Code == api.CodeConflict:
			default:
				t.Errorf("round %d deploy %d: %d %+v", round, i, codes[i], errs[i])
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d deploys won the same claim, want 1 (codes %v)", round, won, codes)
		}
		svcs, _, err := f.st.Services.ListPrefix(context.Background(), fmt.Sprintf("r%d-", round))
		if err != nil || len(svcs) != 1 {
			t.Fatalf("round %d: %d services stored (%v), want 1", round, len(svcs), err)
		}
	}
}

// TestUpdateFlags: the API marks a rollback and a promotion in the update
// status, and resume goes by the flags: a flagged rollback resumes as one
// whatever its version record says, an update paused at canaries not yet
// promoted holds at them again, a promoted one rolls on.
func TestUpdateFlags(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	withCanary := func(v string) []string {
		return []string{"restart:", "update: {canary: 1, failure_action: pause}\nrestart:",
			"  driver: process", "  driver: process\n  env: {V: \"" + v + "\"}"}
	}
	// pause sets the stored update status to paused, as the orchestrator
	// does on a failure.
	pause := func() {
		t.Helper()
		svc, err := f.st.Services.Get(ctx, "hello")
		if err != nil {
			t.Fatal(err)
		}
		svc.UpdateStatus.State, svc.UpdateStatus.Message = api.UpdatePaused, "paused: task x failed"
		svc.UpdateStatus.CompletedAt = time.Now()
		if err := f.st.Services.Update(ctx, &svc); err != nil {
			t.Fatal(err)
		}
	}
	resume := func() *api.UpdateStatus {
		t.Helper()
		var svc api.Service
		if code, e := f.call("POST", "/api/v1/services/hello/resume", "", "", &svc); code != 200 {
			t.Fatalf("resume: %d %+v", code, e)
		}
		stored, err := f.st.Services.Get(ctx, "hello")
		if err != nil || stored.UpdateStatus.State != svc.UpdateStatus.State {
			t.Fatalf("stored %+v (%v), answered %+v", stored.UpdateStatus, err, svc.UpdateStatus)
		}
		return svc.UpdateStatus
	}

	f.deploy(withCanary("1")...)
	if st := f.deploy(withCanary("2")...).UpdateStatus; st.State != api.UpdateUpdating || st.Rollback || st.Promoted {
		t.Fatalf("deploy: %+v", st)
	}
	// Paused in the canary phase (the orchestrator moved it to canary,
	// then a canary failed): resume holds at the canaries again.
	pause()
	if st := resume(); st.State != api.UpdateCanary || st.Promoted || st.Message != "" || !st.CompletedAt.IsZero() {
		t.Fatalf("resume before a promotion: %+v", st)
	}
	var svc api.Service
	if code, e := f.call("POST", "/api/v1/services/hello/promote", "", "", &svc); code != 200 ||
		svc.UpdateStatus.State != api.UpdateUpdating || !svc.UpdateStatus.Promoted {
		t.Fatalf("promote: %d %+v %+v", code, e, svc.UpdateStatus)
	}
	// Paused after the promotion: resume rolls on.
	pause()
	if st := resume(); st.State != api.UpdateUpdating || !st.Promoted {
		t.Fatalf("resume after a promotion: %+v", st)
	}

	// A rollback is flagged; paused, it resumes as a rollback even when
	// its version record does not read like one.
	svc = api.Service{}
	if code, e := f.call("POST", "/api/v1/services/hello/rollback", "", "", &svc); code != 200 ||
		svc.UpdateStatus.State != api.UpdateRollingBack || !svc.UpdateStatus.Rollback || svc.UpdateStatus.Promoted {
		t.Fatalf("rollback: %d %+v %+v", code, e, svc.UpdateStatus)
	}
	rec, err := f.st.Versions.Get(ctx, store.VersionKey("hello", svc.Version))
	if err != nil {
		t.Fatal(err)
	}
	rec.Summary = "env ~V"
	if err := f.st.Versions.Update(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	pause()
	if st := resume(); st.State != api.UpdateRollingBack || !st.Rollback {
		t.Fatalf("resume of a flagged rollback: %+v", st)
	}
	// An update of a spec with canaries that is paused and not flagged as
	// a rollback or promoted, the target spec has canaries: canary.
	f.deploy(withCanary("3")...)
	pause()
	if st := resume(); st.State != api.UpdateCanary || st.Rollback {
		t.Fatalf("resume of a new update's canary phase: %+v", st)
	}
}
