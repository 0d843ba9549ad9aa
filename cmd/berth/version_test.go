package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t)
	r := f.run("version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "berth ") || !strings.Contains(r.stdout, "go       "+runtime.Version()) ||
		!strings.Contains(r.stdout, "server   test at "+f.srv.URL+" (leader)\n") {
		t.Fatalf("version: %+v", r)
	}
	r = f.run("version", "--client", "-o", "json")
	var got struct {
		Client map[string]any `json:"client"`
		Server any            `json:"server"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil || got.Client["go"] != runtime.Version() || got.Client["version"] == "" || got.Server != nil {
		t.Fatalf("version --client -o json: %+v", r)
	}
	// No API is not an error for version: it says so on its server line.
	r = cliRun(t.Context(), map[string]string{envDataDir: t.TempDir()}, "", "version")
	if r.code != 0 || !strings.Contains(r.stdout, "server   unknown: no API address") {
		t.Fatalf("version without an API: %+v", r)
	}
}
