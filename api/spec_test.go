package api

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const helloSpec = `name: hello
replicas: 3
task:
  driver: process
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports:
    - name: http
  health:
    http: {port: http, path: /healthz}
    interval: 1s
  resources: {cpus: 0.25, memory: 64MiB}
restart: {condition: any, delay: 1s}
`

func TestHelloSpecParsesAsWritten(t *testing.T) {
	s, err := ParseServiceSpec([]byte(helloSpec))
	if err != nil {
		t.Fatal(err)
	}
	s.Normalize()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.ReplicaCount() != 3 || s.Task.Resources.Memory != 64<<20 || s.Task.Resources.CPUs != 0.25 ||
		s.Task.Health.Interval.D() != time.Second || s.Task.Health.Retries != DefaultHealthRetries ||
		s.Task.Ports[0].Protocol != "tcp" || s.Restart.MaxDelay.D() != DefaultRestartMaxDelay {
		t.Fatalf("parsed %+v", s)
	}
}

func TestMultipleDocumentsAreRejected(t *testing.T) {
	two := "name: a\ntask: {command: [x]}\n---\nname: b\ntask: {command: [y]}\n"
	if _, err := ParseServiceSpec([]byte(two)); err == nil || !strings.Contains(err.Error(), "2 YAML documents") {
		t.Fatalf("two documents: %v", err)
	}
	for _, ok := range []string{
		"---\nname: a\ntask: {command: [x]}\n",
		"# header\n---\nname: a\ntask: {command: [x]}\n---\n# trailing comment\n",
		"name: a\ntask: {command: [x]}\n...\n",
	} {
		if _, err := ParseServiceSpec([]byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"64MiB": 64 << 20, "1G": 1 << 30, "1GB": 1e9, "512": 512, "1.5KiB": 1536, " 2 mib ": 2 << 20} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "12 parsecs", "-1", "1e400"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if ByteSize(64<<20).String() != "64MiB" || ByteSize(1000).String() != "1000B" {
		t.Fatal("String")
	}
}

func TestConstraints(t *testing.T) {
	n := &Node{ID: "id1", Hostname: "h1", Role: "worker", Labels: map[string]string{"zone": "a"}}
	for expr, want := range map[string]bool{
		"node.labels.zone == a": true, "node.labels.zone==b": false, "node.labels.zone != b": true,
		"node.labels.disk == ssd": false, "node.labels.disk != ssd": true, "node.hostname == h1": true,
		"node.id != id1": false, "node.role == worker": true,
	} {
		c, err := ParseConstraint(expr)
		if err != nil {
			t.Fatalf("%q: %v", expr, err)
		}
		if c.Matches(n) != want {
			t.Errorf("%q on node: %v, want %v", expr, !want, want)
		}
	}
	for _, bad := range []string{"zone == a", "node.labels.zone = a", "node.labels.zone ==", "node.labels. == a", "node.hostname == a b"} {
		if _, err := ParseConstraint(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestExpandVars(t *testing.T) {
	got := ExpandVars("--port=${PORT_HTTP} ${UNKNOWN} $HOME", map[string]string{"PORT_HTTP": "8080"})
	if got != "--port=8080 ${UNKNOWN} $HOME" {
		t.Fatal(got)
	}
	if PortEnv("admin-api") != "PORT_ADMIN_API" {
		t.Fatal(PortEnv("admin-api"))
	}
}

// FuzzParseServiceSpec checks that no input panics the parser or validator,
// that every error names a field or says what is wrong, and that an accepted
// spec survives a JSON round trip unchanged.
func FuzzParseServiceSpec(f *testing.F) {
	f.Add([]byte(helloSpec))
	f.Add([]byte(`{"name":"x","task":{"command":["a"]},"replicas":2}`))
	f.Add([]byte("name: a\nmode: global\ntask: {command: [a], health: {exec: [true]}}\nplacement: {constraints: ['node.labels.a != b']}"))
	f.Add([]byte("name: a\ntask: {command: [a], resources: {memory: 1e3}}"))
	f.Add([]byte("- 1\n- 2"))
	f.Add([]byte("name: &a x\nlabels: {y: *a}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseServiceSpec(data)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("empty error")
			}
			return
		}
		s.Normalize()
		if err := s.Validate(); err != nil {
			return
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal accepted spec: %v", err)
		}
		again, err := ParseServiceSpec(b)
		if err != nil {
			t.Fatalf("re-parse of accepted spec: %v\n%s", err, b)
		}
		again.Normalize()
		if !reflect.DeepEqual(normalizeEmpty(s), normalizeEmpty(again)) {
			t.Fatalf("round trip changed the spec:\n%+v\n%+v", s, again)
		}
	})
}

func normalizeEmpty(s ServiceSpec) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestTaskViewHealthOfEndedTask(t *testing.T) {
	for _, c := range []struct {
		state        TaskState
		health, want string
	}{
		{TaskRunning, HealthHealthy, HealthHealthy},
		{TaskRunning, "", HealthNone},
		{TaskFailed, HealthHealthy, HealthNone},
		{TaskFailed, HealthUnhealthy, HealthUnhealthy},
		{TaskShutdown, HealthStarting, HealthNone},
	} {
		v := NewTaskView(Task{Status: TaskStatus{State: c.state, Health: c.health}})
		if v.Health != c.want {
			t.Errorf("%s/%q: health %q, want %q", c.state, c.health, v.Health, c.want)
		}
	}
}

// TestStopGracePeriodCap: up to MaxStopGracePeriod is accepted; more (a
// typo of units, or the 292 years of the largest duration) names the field.
func TestStopGracePeriodCap(t *testing.T) {
	for _, c := range []struct {
		value string
		ok    bool
	}{{"1h", true}, {"59m59s", true}, {"3601s", false}, {"2562047h", false}} {
		s, err := ParseServiceSpec([]byte(strings.Replace(helloSpec, "  driver: process", "  driver: process\n  stop_grace_period: "+c.value, 1)))
		if err != nil {
			t.Fatal(err)
		}
		s.Normalize()
		err = s.Validate()
		var ve ValidationErrors
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v", c.value, err)
		case !c.ok && (!errors.As(err, &ve) || len(ve) != 1 || ve[0].Field != "task.stop_grace_period"):
			t.Errorf("%s: %v, want one error on task.stop_grace_period", c.value, err)
		}
	}
}

// TestRunAsRootForProcessTasks: run_as_root is for both drivers (a process
// task under a root Berth runs as nobody without it); the other
// relaxations stay docker-only.
func TestRunAsRootForProcessTasks(t *testing.T) {
	for spec, wantErr := range map[string]string{
		"name: a\ntask: {command: [x], run_as_root: true}\n":                  "",
		"name: a\ntask: {command: [x], user: \"65534:65534\"}\n":              "",
		"name: a\ntask: {command: [x], cap_add: [NET_ADMIN]}\n":               "task.cap_add",
		"name: a\ntask: {image: alpine, driver: docker, run_as_root: true}\n": "",
	} {
		s, err := ParseServiceSpec([]byte(spec))
		if err != nil {
			t.Fatalf("%q: %v", spec, err)
		}
		s.Normalize()
		err = s.Validate()
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%q: %v", spec, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("%q: err = %v, want one naming %s", spec, err, wantErr)
		}
	}
}

func TestSuggest(t *testing.T) {
	for _, c := range []struct {
		s    string
		in   []string
		want string
	}{
		{"helo", []string{"web", "hello"}, "hello"},
		{"wbe", []string{"db", "hello", "web"}, "web"},
		{"nope", []string{"db", "hello", "web"}, ""},
		{"comand", []string{"command", "env"}, "command"},
		{"x", nil, ""},
	} {
		if got := Suggest(c.s, c.in); got != c.want {
			t.Errorf("Suggest(%q, %v) = %q, want %q", c.s, c.in, got, c.want)
		}
	}
}
