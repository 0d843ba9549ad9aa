package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const helloYAML = `name: hello
replicas: 2
task:
  command: [berth, whoami, --port, "${PORT}"]
  ports:
    - name: http
`

func TestDeploy(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	dir := t.TempDir()
	yamlFile := filepath.Join(dir, "hello.yaml")
	writeTestFile(t, yamlFile, helloYAML, 0o644)

	steps := []struct {
		name    string
		args    []string
		stdin   string
		write   string // if set, rewrite hello.yaml first
		wantOut string
		wantErr string
		code    int
	}{
		{name: "create", args: []string{"deploy", "-f", yamlFile}, wantOut: "service hello created (version 1)\n"},
		{name: "same again, the file as an argument", args: []string{"deploy", yamlFile}, wantOut: "service hello unchanged (version 1)\n"},
		{name: "change", write: strings.Replace(helloYAML, "replicas: 2", "replicas: 3", 1), args: []string{"deploy", "--file", yamlFile}, wantOut: "service hello updated (version 2)\n"},
		{
			name:    "JSON on stdin, a second service",
			args:    []string{"deploy", "-f", "-"},
			stdin:   `{"name": "api", "task": {"command": ["api"]}}`,
			wantOut: "service api created (version 1)\n",
		},
		{
			name:    "several files in order",
			args:    []string{"deploy", "-f", "-", "-f", yamlFile},
			stdin:   `{"name": "api", "task": {"command": ["api", "--v2"]}}`,
			wantOut: "service api updated (version 2)\nservice hello unchanged (version 2)\n",
		},
		{
			name:    "a validation error is caught before anything is sent, naming the field",
			args:    []string{"deploy", "-f", "-"},
			stdin:   "name: broken\ntask:\n  driver: process\n",
			wantErr: "berth: stdin: task.command: is required for driver process\n", code: 1,
		},
	}
	for _, st := range steps {
		if st.write != "" {
			writeTestFile(t, yamlFile, st.write, 0o644)
		}
		r := cliRun(context.Background(), map[string]string{envDataDir: f.dataDir}, st.stdin, st.args...)
		if r.stdout != st.wantOut || r.stderr != st.wantErr || r.code != st.code {
			t.Errorf("%s: got out %q err %q code %d\nwant out %q err %q code %d", st.name, r.stdout, r.stderr, r.code, st.wantOut, st.wantErr, st.code)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := f.services["hello"].Spec.ReplicaCount(); got != 3 {
		t.Errorf("hello has %d replicas, want 3", got)
	}
	if _, ok := f.services["broken"]; ok {
		t.Error("an invalid spec was stored")
	}
}

func TestDeployContentType(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	dir := t.TempDir()
	files := map[string]string{
		"a.json": `{"name": "a", "task": {"command": ["x"]}}`,
		"b.yml":  "name: b\ntask: {command: [x]}\n",
		"c.spec": `  {"name": "c", "task": {"command": ["x"]}}`,
		"d":      "name: d\ntask: {command: [x]}\n",
	}
	var args []string
	for name, content := range files {
		writeTestFile(t, filepath.Join(dir, name), content, 0o644)
		args = append(args, "-f", filepath.Join(dir, name))
	}
	r := f.run(append([]string{"deploy"}, args...)...)
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := map[string]string{"a": "application/json", "b": "application/yaml", "c": "application/json", "d": "application/yaml"}
	for _, req := range f.requests {
		if !strings.HasPrefix(req, "PUT ") {
			continue
		}
		name := strings.TrimPrefix(req, "PUT /api/v1/services/")
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected %s", req)
		}
		delete(want, name)
	}
	if len(want) != 0 {
		t.Errorf("not deployed: %v", want)
	}
	// The fake rejects other content types with 415, so success above
	// means each was sent as JSON or YAML; check the sniffing directly.
	for name, ct := range map[string]string{"a.json": "application/json", "b.yml": "application/yaml", "c.spec": "application/json", "d": "application/yaml"} {
		if got := specContentType(name, []byte(files[name])); got != ct {
			t.Errorf("%s: %s, want %s", name, got, ct)
		}
	}
}

func TestDeployLocalErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeTestFile(t, good, helloYAML, 0o644)
	typo := filepath.Join(dir, "typo.yaml")
	writeTestFile(t, typo, "name: x\ntask:\n  comand: [x]\n", 0o644)
	noName := filepath.Join(dir, "noname.yaml")
	writeTestFile(t, noName, "task: {command: [x]}\n", 0o644)
	wrongType := filepath.Join(dir, "type.json")
	writeTestFile(t, wrongType, `{"name": "x", "replicas": "three"}`, 0o644)
	dup := filepath.Join(dir, "dup.yaml")
	writeTestFile(t, dup, "name: hello\ntask: {command: [other]}\n", 0o644)
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("name: x\n#"+strings.Repeat("x", 1<<20)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.yaml")

	tests := []struct {
		name    string
		args    []string
		stdin   string
		wantErr string
		code    int
	}{
		{"no file", []string{"deploy"}, "", "berth: deploy needs at least one spec file: berth deploy FILE, or -f FILE\n", 2},
		{"unknown field, after a good file", []string{"deploy", "-f", good, "-f", typo}, "", "berth: " + typo + ": task.comand: unknown field \"comand\" (did you mean \"command\"?)\n", 1},
		{"unknown field, files as arguments", []string{"deploy", good, typo}, "", "berth: " + typo + ": task.comand: unknown field \"comand\" (did you mean \"command\"?)\n", 1},
		{"no name", []string{"deploy", "-f", noName}, "", "berth: " + noName + ": name: is required\n", 1},
		{"wrong type", []string{"deploy", "-f", wrongType}, "", "berth: " + wrongType + ": replicas: want a whole number, got string \"three\"\n", 1},
		{"same service twice", []string{"deploy", "-f", good, "-f", dup}, "", "berth: " + dup + ": service \"hello\" is also in " + good + "\n", 1},
		{"stdin twice", []string{"deploy", "-f", "-", "-f", "-"}, helloYAML, "berth: -f - (standard input) is given more than once\n", 2},
		{"empty stdin", []string{"deploy", "-f", "-"}, "", "berth: stdin: spec is empty\n", 1},
		{"missing file", []string{"deploy", "-f", missing}, "", "berth: open " + missing + ": no such file or directory\n", 1},
		{"too big", []string{"deploy", "-f", big}, "", "berth: " + big + ": larger than the limit of 1048576 bytes\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeCluster(t)
			r := cliRun(context.Background(), map[string]string{envDataDir: f.dataDir}, tt.stdin, tt.args...)
			if r.stderr != tt.wantErr || r.code != tt.code || r.stdout != "" {
				t.Errorf("got out %q err %q code %d\nwant err %q code %d", r.stdout, r.stderr, r.code, tt.wantErr, tt.code)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.requests) != 0 {
				t.Errorf("requests were sent for a bad command line: %v", f.requests)
			}
		})
	}
}
