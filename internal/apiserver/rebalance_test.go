package apiserver

import (
	"context"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

// TestRebalanceEndpoint: POST /services/{name}/rebalance counts a request
// up (also for a service that opted out), and refuses unknown services and
// services whose tasks are never moved, changing nothing.
func TestRebalanceEndpoint(t *testing.T) {
	f := newFixture(t)
	f.deploy("replicas: 3", "replicas: 3\nrebalance: false")
	for want := uint64(1); want <= 2; want++ {
		var svc api.Service
		if code, e := f.call("POST", "/api/v1/services/hello/rebalance", "", "", &svc); code != 200 {
			t.Fatalf("rebalance: %d %+v", code, e)
		}
		st := svc.RebalanceStatus
		if st == nil || st.Requested != want || st.Done != 0 || st.RequestedAt.IsZero() || !st.Pending() {
			t.Fatalf("request %d: %+v", want, st)
		}
		stored, err := f.st.Services.Get(context.Background(), "hello")
		if err != nil || stored.RebalanceStatus == nil || stored.RebalanceStatus.Requested != want {
			t.Fatalf("stored: %+v %v", stored.RebalanceStatus, err)
		}
		if stored.Version != 1 {
			t.Fatalf("a rebalance request made a new version: %d", stored.Version)
		}
	}
	// A deploy keeps the request.
	svc := f.deploy("replicas: 3", "replicas: 4\nrebalance: false")
	if svc.RebalanceStatus == nil || svc.RebalanceStatus.Requested != 2 {
		t.Fatalf("deploy dropped the rebalance status: %+v", svc.RebalanceStatus)
	}

	refused := func(path string, code int, want string) {
		t.Helper()
		before := f.snapshot()
		got, e := f.call("POST", path, "", "", nil)
		if got != code || !strings.Contains(e.Message, want) {
			t.Fatalf("%s: %d %+v, want %d with %q", path, got, e, code, want)
		}
		if f.snapshot() != before {
			t.Fatalf("refused %s changed the store", path)
		}
	}
	refused("/api/v1/services/nope/rebalance", 404, `no service named "nope"`)
	global := strings.Replace(strings.Replace(goodSpec, "name: hello", "name: everywhere", 1), "replicas: 3", "mode: global", 1)
	if code, e := f.call("PUT", "/api/v1/services/everywhere", "application/yaml", global, nil); code >= 300 {
		t.Fatalf("deploy global: %d %+v", code, e)
	}
	refused("/api/v1/services/everywhere/rebalance", 409, "service everywhere is global: each of its tasks belongs to its node")
	pref := strings.Replace(strings.Replace(goodSpec, "name: hello", "name: zoned", 1), "replicas: 3", "replicas: 3\nplacement: {preferences: [{spread: node.labels.zone}]}", 1)
	if code, e := f.call("PUT", "/api/v1/services/zoned", "application/yaml", pref, nil); code >= 300 {
		t.Fatalf("deploy zoned: %d %+v", code, e)
	}
	refused("/api/v1/services/zoned/rebalance", 409, "placement.preferences")

	// The spec field is only for replicated services.
	bad := strings.Replace(global, "mode: global", "mode: global\nrebalance: true", 1)
	code, e := f.call("PUT", "/api/v1/services/everywhere", "application/yaml", bad, nil)
	if code != 400 || !strings.Contains(e.Error(), "rebalance") {
		t.Fatalf("rebalance with mode global: %d %+v", code, e)
	}
}
