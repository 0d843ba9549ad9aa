package main

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/berth-project/berth/api"
)

func TestJoinTokenCommand(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	toks := api.JoinTokens{Worker: "BERTH-1-aa-w-1", Manager: "BERTH-1-aa-m-1"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/cluster/join-tokens", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fakeWriteJSON(w, 200, toks)
	})
	mux.HandleFunc("POST /api/v1/cluster/join-tokens/{role}/rotate", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.PathValue("role") == "worker" {
			toks.Worker = "BERTH-1-aa-w-2"
		} else {
			toks.Manager = "BERTH-1-aa-m-2"
		}
		fakeWriteJSON(w, 200, toks)
	})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+goodToken {
			fakeWriteJSON(w, 401, api.Error{Code: api.CodeUnauthorized, Message: "invalid token"})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	defer srv.Close()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, addrFile), srv.URL+"\n", 0o644)
	writeTestFile(t, filepath.Join(dir, tokenFile), goodToken+"\n", 0o600)
	writeTestFile(t, filepath.Join(dir, caFile), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})), 0o644)
	run := func(args ...string) cliResult {
		return cliRun(context.Background(), map[string]string{envDataDir: dir}, "", args...)
	}

	r := run("join-token", "worker")
	if r.code != 0 || !strings.Contains(r.stdout, "berth agent --join "+srv.URL+" --token BERTH-1-aa-w-1 --mesh-bind 0.0.0.0 --log-listen 0.0.0.0:7445\n") {
		t.Fatalf("join-token worker: %+v", r)
	}
	r = run("join-token", "manager")
	if r.code != 0 || !strings.Contains(r.stdout, "berth server --join "+srv.URL+" --token BERTH-1-aa-m-1 --listen") {
		t.Fatalf("join-token manager: %+v", r)
	}
	r = run("join-token", "worker", "-q")
	if r.code != 0 || r.stdout != "BERTH-1-aa-w-1\n" {
		t.Fatalf("join-token worker -q: %+v", r)
	}
	r = run("join-token", "worker", "--rotate", "-q")
	if r.code != 0 || r.stdout != "BERTH-1-aa-w-2\n" {
		t.Fatalf("join-token worker --rotate -q: %+v", r)
	}
	r = run("join-token", "manager", "--rotate")
	if r.code != 0 || !strings.Contains(r.stdout, "rotated") || !strings.Contains(r.stdout, "BERTH-1-aa-m-2") {
		t.Fatalf("join-token manager --rotate: %+v", r)
	}
	if r = run("join-token", "admin"); r.code != 2 || !strings.Contains(r.stderr, "want worker or manager") {
		t.Fatalf("join-token admin: %+v", r)
	}
	if r = run("join-token"); r.code != 2 {
		t.Fatalf("join-token without a role: %+v", r)
	}
}

func TestAgentJoinNeedsAToken(t *testing.T) {
	t.Parallel()
	r := cliRun(context.Background(), map[string]string{envDataDir: t.TempDir()}, "", "agent", "--join", "https://127.0.0.1:1", "--mesh-bind", "off", "--dns", "off")
	if r.code != 2 || !strings.Contains(r.stderr, "--join needs the worker join token") {
		t.Fatalf("agent --join without a token: %+v", r)
	}
}

func TestAgentRefusesABadAddressOrHostname(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ flag, value string }{{"--address", "10.0.0.1:80"}, {"--hostname", "a b"}} {
		r := cliRun(context.Background(), map[string]string{envDataDir: t.TempDir()}, "", "agent", "--join", "https://127.0.0.1:1",
			"--token", "x", "--mesh-bind", "off", "--dns", "off", c.flag, c.value)
		if r.code != 2 || !strings.Contains(r.stderr, c.flag+" ") {
			t.Errorf("agent %s %q: %+v", c.flag, c.value, r)
		}
	}
}
