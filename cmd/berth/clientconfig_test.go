package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

func TestDefaultDataDir(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		vars map[string]string
		euid int
		want string
	}{
		{"env wins for root", map[string]string{envDataDir: "/srv/berth", "HOME": "/root"}, 0, "/srv/berth"},
		{"env wins for a user", map[string]string{envDataDir: "/srv/berth", "XDG_DATA_HOME": "/x"}, 1000, "/srv/berth"},
		{"root", map[string]string{"HOME": "/root", "XDG_DATA_HOME": "/x"}, 0, "/var/lib/berth"},
		{"user with XDG", map[string]string{"HOME": "/home/u", "XDG_DATA_HOME": "/home/u/data"}, 1000, "/home/u/data/berth"},
		{"user with a relative XDG (ignored)", map[string]string{"HOME": "/home/u", "XDG_DATA_HOME": "data"}, 1000, "/home/u/.local/share/berth"},
		{"user", map[string]string{"HOME": "/home/u"}, 1000, "/home/u/.local/share/berth"},
	}
	for _, tt := range tests {
		if got := defaultDataDir(func(k string) string { return tt.vars[k] }, tt.euid); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if DefaultDataDir() == "" {
		t.Error("DefaultDataDir is empty")
	}
}

func TestClientConfigPrecedence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, addrFile), "https://file:1\nignored second line\n", 0o644)
	writeTestFile(t, filepath.Join(dir, tokenFile), "  file-token\n", 0o600)
	writeTestFile(t, filepath.Join(dir, caFile), "file-ca", 0o644)
	flagCA := filepath.Join(t.TempDir(), "flag-ca.pem")
	writeTestFile(t, flagCA, "flag-ca", 0o644)
	envCAFile := filepath.Join(t.TempDir(), "env-ca.pem")
	writeTestFile(t, envCAFile, "env-ca", 0o644)
	emptyDir := t.TempDir()
	emptyCA := filepath.Join(t.TempDir(), "empty.pem")
	writeTestFile(t, emptyCA, "\n", 0o644)

	tests := []struct {
		name    string
		flags   globalFlags
		vars    map[string]string
		want    api.ClientConfig
		wantErr string
	}{
		{
			name: "data dir only",
			vars: map[string]string{envDataDir: dir},
			want: api.ClientConfig{Addr: "https://file:1", Token: "file-token", CACertPEM: []byte("file-ca")},
		},
		{
			name:  "--data-dir beats BERTH_DATA_DIR",
			flags: globalFlags{dataDir: dir},
			vars:  map[string]string{envDataDir: emptyDir},
			want:  api.ClientConfig{Addr: "https://file:1", Token: "file-token", CACertPEM: []byte("file-ca")},
		},
		{
			name: "env beats the data dir",
			vars: map[string]string{envDataDir: dir, envAddr: "https://env:2", envToken: "env-token", envCA: envCAFile},
			want: api.ClientConfig{Addr: "https://env:2", Token: "env-token", CACertPEM: []byte("env-ca")},
		},
		{
			name:  "flags beat env",
			flags: globalFlags{addr: "https://flag:3", token: "flag-token", ca: flagCA},
			vars:  map[string]string{envDataDir: dir, envAddr: "https://env:2", envToken: "env-token", envCA: envCAFile},
			want:  api.ClientConfig{Addr: "https://flag:3", Token: "flag-token", CACertPEM: []byte("flag-ca")},
		},
		{
			name: "each setting on its own: env address, data dir token and CA",
			vars: map[string]string{envDataDir: dir, envAddr: "https://env:2"},
			want: api.ClientConfig{Addr: "https://env:2", Token: "file-token", CACertPEM: []byte("file-ca")},
		},
		{
			name:    "nothing anywhere",
			vars:    map[string]string{envDataDir: emptyDir},
			wantErr: "no API address: start 'berth up', or set BERTH_ADDR (or --addr)",
		},
		{
			name:    "address but no token",
			vars:    map[string]string{envDataDir: emptyDir, envAddr: "https://env:2"},
			wantErr: "no API token for https://env:2: set BERTH_TOKEN (or --token), or let this user read " + filepath.Join(emptyDir, tokenFile),
		},
		{
			name:    "https without a CA",
			vars:    map[string]string{envDataDir: emptyDir, envAddr: "https://env:2", envToken: "t"},
			wantErr: "no CA certificate to check https://env:2: set BERTH_CA (or --ca) to the cluster's ca.pem",
		},
		{
			name: "loopback http needs no CA",
			vars: map[string]string{envDataDir: emptyDir, envAddr: "http://127.0.0.1:8080", envToken: "t"},
			want: api.ClientConfig{Addr: "http://127.0.0.1:8080", Token: "t"},
		},
		{
			name:    "an empty CA file",
			vars:    map[string]string{envDataDir: dir, envCA: emptyCA},
			wantErr: "the CA certificate file " + emptyCA + " is empty",
		},
		{
			name:    "a CA path that does not exist",
			vars:    map[string]string{envDataDir: dir, envCA: "/nonexistent/ca.pem"},
			wantErr: "reading the CA certificate: open /nonexistent/ca.pem: no such file or directory",
		},
	}
	for _, tt := range tests {
		e := &env{getenv: func(k string) string { return tt.vars[k] }, euid: 1000, flags: tt.flags}
		got, err := e.clientConfig()
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s: error %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got.Addr != tt.want.Addr || got.Token != tt.want.Token || string(got.CACertPEM) != string(tt.want.CACertPEM) {
			t.Errorf("%s: got %s %s %q, want %s %s %q", tt.name, got.Addr, got.Token, got.CACertPEM, tt.want.Addr, tt.want.Token, tt.want.CACertPEM)
		}
	}
}

// TestClientConfigPrecedenceEndToEnd checks precedence against a real TLS
// server: the lower layers hold a wrong token and a wrong CA, so a call only
// succeeds if the higher layer was used.
func TestClientConfigPrecedenceEndToEnd(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	f.seed()
	other := newFakeCluster(t) // a second server: must not be asked
	other.token = "tok-other"

	badDir := t.TempDir()
	writeTestFile(t, filepath.Join(badDir, addrFile), other.srv.URL, 0o644)
	writeTestFile(t, filepath.Join(badDir, tokenFile), "tok-bad-file", 0o600)
	writeTestFile(t, filepath.Join(badDir, caFile), string(otherCA(t)), 0o644)
	goodCA := filepath.Join(t.TempDir(), "ca.pem")
	writeTestFile(t, goodCA, string(f.caPEM()), 0o644)
	wrongCA := filepath.Join(t.TempDir(), "wrong.pem")
	writeTestFile(t, wrongCA, string(otherCA(t)), 0o644)

	tests := []struct {
		name     string
		vars     map[string]string
		flags    []string
		wantCode int
		wantErr  string
	}{
		{name: "data dir", vars: map[string]string{envDataDir: f.dataDir}},
		{name: "--data-dir over BERTH_DATA_DIR", vars: map[string]string{envDataDir: badDir}, flags: []string{"--data-dir", f.dataDir}},
		{name: "env over data dir", vars: map[string]string{envDataDir: badDir, envAddr: f.srv.URL, envToken: goodToken, envCA: goodCA}},
		{name: "flags over env", vars: map[string]string{envDataDir: badDir, envAddr: other.srv.URL, envToken: "tok-bad-env", envCA: wrongCA},
			flags: []string{"--addr", f.srv.URL, "--token", goodToken, "--ca", goodCA}},
		{name: "wrong token", vars: map[string]string{envDataDir: f.dataDir, envToken: "tok-bad-env"},
			wantCode: 1, wantErr: "berth: missing or wrong bearer token\n"},
		{name: "wrong CA", vars: map[string]string{envDataDir: f.dataDir, envCA: wrongCA},
			wantCode: 1, wantErr: "certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		args := append([]string{"service", "ls", "-o", "json"}, tt.flags...)
		r := cliRun(context.Background(), tt.vars, "", args...)
		if r.code != tt.wantCode {
			t.Errorf("%s: code %d, want %d; stderr %q", tt.name, r.code, tt.wantCode, r.stderr)
		}
		if tt.wantErr == "" && (r.stderr != "" || !strings.Contains(r.stdout, `"hello"`)) {
			t.Errorf("%s: stdout %q stderr %q", tt.name, r.stdout, r.stderr)
		}
		if tt.wantErr != "" && !strings.Contains(r.stderr, tt.wantErr) {
			t.Errorf("%s: stderr %q, want %q", tt.name, r.stderr, tt.wantErr)
		}
		if strings.Count(r.stderr, "\n") > 1 {
			t.Errorf("%s: error is not one line: %q", tt.name, r.stderr)
		}
	}
	other.mu.Lock()
	defer other.mu.Unlock()
	if len(other.requests) != 0 {
		t.Errorf("the lower-precedence server was asked: %v", other.requests)
	}
}

func TestNoAddressMessage(t *testing.T) {
	t.Parallel()
	r := cliRun(context.Background(), map[string]string{envDataDir: t.TempDir()}, "", "service", "ls")
	want := "berth: no API address: start 'berth up', or set BERTH_ADDR (or --addr)\n"
	if r.code != 1 || r.stderr != want || r.stdout != "" {
		t.Errorf("got %+v, want code 1 and %q", r, want)
	}
}

// TestClientFailsOverBetweenManagers gives BERTH_ADDR (and --addr) two
// managers, the first of them down: the command is answered by the second.
// An answer (a 4xx) from the first is final.
func TestClientFailsOverBetweenManagers(t *testing.T) {
	t.Parallel()
	up := newFakeCluster(t)
	up.seed()
	down := newFakeCluster(t)
	down.srv.Close() // connection refused from now on
	refusing := newFakeCluster(t)
	refusing.token = "tok-other" // answers 401 to goodToken
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeTestFile(t, ca, string(down.caPEM())+string(up.caPEM())+string(refusing.caPEM()), 0o644)
	vars := func(addr string) map[string]string {
		return map[string]string{envDataDir: t.TempDir(), envAddr: addr, envToken: goodToken, envCA: ca}
	}
	for _, addr := range []string{down.srv.URL + "," + up.srv.URL, " " + down.srv.URL + ", " + up.srv.URL + " ,"} {
		r := cliRun(context.Background(), vars(addr), "", "service", "ls")
		if r.code != 0 || !strings.Contains(r.stdout, "hello") || r.stderr != "" {
			t.Errorf("BERTH_ADDR=%q: %+v", addr, r)
		}
	}
	r := cliRun(context.Background(), vars(""), "", "--addr", down.srv.URL+","+up.srv.URL, "node", "ls")
	if r.code != 0 || !strings.Contains(r.stdout, "alpha") {
		t.Errorf("--addr with two managers: %+v", r)
	}
	// A refusal is an answer: the next manager is not asked.
	r = cliRun(context.Background(), vars(refusing.srv.URL+","+up.srv.URL), "", "service", "ls")
	if r.code != 1 || r.stderr != "berth: missing or wrong bearer token\n" {
		t.Errorf("a 401 from the first manager: %+v", r)
	}
	// Every manager down: one line naming each.
	r = cliRun(context.Background(), vars(down.srv.URL+","+down.srv.URL+"/x"), "", "service", "ls")
	if r.code != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "no manager answered") {
		t.Errorf("all down: %+v", r)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.requests) == 0 {
		t.Error("the manager that is up was never asked")
	}
}
