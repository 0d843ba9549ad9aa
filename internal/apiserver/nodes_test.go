package apiserver

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/berth-project/berth/api"
)

// registerNode registers a node with labels and returns it.
func (f *fixture) registerNode(id, hostname string, labels map[string]string) api.Node {
	f.t.Helper()
	code, body := f.register(api.NodeRegistration{NodeID: id, Hostname: hostname, Drivers: []string{"process"}, Labels: labels})
	if code != 200 {
		f.t.Fatalf("register %s: %d %s", hostname, code, body)
	}
	var n api.Node
	if err := json.Unmarshal(body, &n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func TestNodeUpdate(t *testing.T) {
	f := newFixture(t)
	n := f.registerNode("", "h1", map[string]string{"zone": "a", "disk": "hdd"})

	var got api.Node
	code, e := f.call("PATCH", "/api/v1/nodes/h1", "application/json",
		`{"availability":"drain","labels_add":{"rack":"r1","disk":"ssd"},"labels_rm":["zone"]}`, &got)
	if code != 200 {
		t.Fatalf("patch: %d %+v", code, e)
	}
	want := map[string]string{"rack": "r1", "disk": "ssd"}
	if got.Availability != api.AvailabilityDrain || !reflect.DeepEqual(got.Labels, want) {
		t.Fatalf("after patch: availability %s labels %v, want drain %v", got.Availability, got.Labels, want)
	}

	// The agent registers again with its own labels: the admin's changes
	// stay (disk stays ssd, zone stays removed), a new agent label appears,
	// and availability is kept.
	again := f.registerNode(n.ID, "h1", map[string]string{"zone": "a", "disk": "hdd", "gpu": "yes"})
	want = map[string]string{"rack": "r1", "disk": "ssd", "gpu": "yes"}
	if !reflect.DeepEqual(again.Labels, want) || again.Availability != api.AvailabilityDrain {
		t.Fatalf("after re-registration: %v %s, want %v drain", again.Labels, again.Availability, want)
	}
	// Adding a removed agent label back restores it, by id prefix this time.
	got = api.Node{} // Unmarshal would merge into the old map
	code, e = f.call("PATCH", "/api/v1/nodes/"+n.ID[:8], "application/json", `{"availability":"active","labels_add":{"zone":"b"},"labels_rm":["rack","nothing"]}`, &got)
	want = map[string]string{"zone": "b", "disk": "ssd", "gpu": "yes"}
	if code != 200 || got.Availability != api.AvailabilityActive || !reflect.DeepEqual(got.Labels, want) {
		t.Fatalf("second patch: %d %+v: %v %s", code, e, got.Labels, got.Availability)
	}
	stored, err := f.st.Nodes.Get(context.Background(), n.ID)
	if err != nil || !reflect.DeepEqual(stored.Labels, want) {
		t.Fatalf("stored %v %v", stored.Labels, err)
	}
}

func TestNodeUpdateRejectsBadInput(t *testing.T) {
	f := newFixture(t)
	f.registerNode("", "h1", map[string]string{"zone": "a"})
	f.registerNode("", "dup", nil)
	// Registration refuses a taken hostname (ADR 0029); a store written
	// before that may still hold two nodes of one name.
	if err := f.st.Nodes.Create(context.Background(), &api.Node{ID: "dup2", Hostname: "dup"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path, body string
		code             int
		field            string
	}{
		{"unknown availability", "/api/v1/nodes/h1", `{"availability":"off"}`, 400, "availability"},
		{"bad label key", "/api/v1/nodes/h1", `{"labels_add":{"-bad":"x"}}`, 400, "labels_add.-bad"},
		{"bad rm key", "/api/v1/nodes/h1", `{"labels_rm":["ok","a b"]}`, 400, "labels_rm[1]"},
		{"add and remove", "/api/v1/nodes/h1", `{"labels_add":{"k":"v"},"labels_rm":["k"]}`, 400, "labels_rm[0]"},
		{"unknown field", "/api/v1/nodes/h1", `{"labels":{"k":"v"}}`, 400, "labels"},
		{"wrong type", "/api/v1/nodes/h1", `{"availability":1}`, 400, "availability"},
		{"nothing", "/api/v1/nodes/h1", `{}`, 400, ""},
		{"unknown node", "/api/v1/nodes/nosuch", `{"availability":"drain"}`, 404, ""},
		{"ambiguous hostname", "/api/v1/nodes/dup", `{"availability":"drain"}`, 400, "node"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := f.snapshot()
			code, e := f.call("PATCH", c.path, "application/json", c.body, nil)
			if code != c.code || e.Field != c.field || e.Message == "" {
				t.Fatalf("got %d %+v, want %d with field %q", code, e, c.code, c.field)
			}
			if f.snapshot() != before {
				t.Fatal("a rejected update changed the store")
			}
		})
	}
}

func TestNodeRemove(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ready := f.registerNode("", "ready", nil)
	down := f.registerNode("", "gone", nil)
	tk := &api.Task{ID: "t1", ServiceID: "s", NodeID: ready.ID, DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskRunning}}
	if err := f.st.Tasks.Create(ctx, tk); err != nil {
		t.Fatal(err)
	}

	// A ready node is not removed without force; nothing changes.
	before := f.snapshot()
	code, e := f.call("DELETE", "/api/v1/nodes/ready", "", "", nil)
	if code != 409 || e.Field != "force" {
		t.Fatalf("rm of a ready node: %d %+v", code, e)
	}
	if code, e := f.call("DELETE", "/api/v1/nodes/ready?force=maybe", "", "", nil); code != 400 || e.Field != "force" {
		t.Fatalf("bad force: %d %+v", code, e)
	}
	if f.snapshot() != before {
		t.Fatal("a refused removal changed the store")
	}

	// A down node goes without force.
	n, _ := f.st.Nodes.Get(ctx, down.ID)
	n.Status = api.NodeDown
	if err := f.st.Nodes.Update(ctx, &n); err != nil {
		t.Fatal(err)
	}
	if code, e := f.call("DELETE", "/api/v1/nodes/gone", "", "", nil); code != 204 {
		t.Fatalf("rm of a down node: %d %+v", code, e)
	}
	if _, err := f.st.Nodes.Get(ctx, down.ID); err == nil {
		t.Fatal("down node still stored")
	}
	if _, err := f.st.Agents.Get(ctx, down.ID); err == nil {
		t.Fatal("agent record of the removed node still stored")
	}

	// Force removes a ready node and its tasks are lost, to be replaced.
	if code, e := f.call("DELETE", "/api/v1/nodes/"+ready.ID+"?force=true", "", "", nil); code != 204 {
		t.Fatalf("forced rm: %d %+v", code, e)
	}
	got, err := f.st.Tasks.Get(ctx, "t1")
	if err != nil || got.Status.State != api.TaskLost || got.Status.Err == "" {
		t.Fatalf("task of the removed node: %+v %v", got.Status, err)
	}
	if code, _ := f.call("DELETE", "/api/v1/nodes/"+ready.ID, "", "", nil); code != 404 {
		t.Fatalf("second rm: %d, want 404", code)
	}
}

func TestRegistrationRejectsBadLabels(t *testing.T) {
	f := newFixture(t)
	code, body := f.register(api.NodeRegistration{Hostname: "h", Drivers: []string{"process"}, Labels: map[string]string{"a b": "x"}})
	var e api.Error
	_ = json.Unmarshal(body, &e)
	if code != 400 || e.Field != "labels.a b" {
		t.Fatalf("got %d %s", code, body)
	}
}
