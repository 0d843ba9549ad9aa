package main

import (
	"encoding/json"
	"testing"

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
