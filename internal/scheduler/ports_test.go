package scheduler

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/berth-project/berth/api"
)

// hostPortOpt adds a port published in host mode.
func hostPortOpt(name, proto string, publish int) func(*api.Task) {
	return func(t *api.Task) {
		t.Spec.Ports = append(t.Spec.Ports, api.PortSpec{Name: name, Protocol: proto, Publish: publish, Mode: api.PublishHost})
	}
}

// ingressPortOpt adds a port published through the routing mesh.
func ingressPortOpt(name, proto string, publish int) func(*api.Task) {
	return func(t *api.Task) {
		t.Spec.Ports = append(t.Spec.Ports, api.PortSpec{Name: name, Protocol: proto, Publish: publish, Mode: api.PublishIngress})
	}
}

// checkPlan runs every scheduler strategy and the reference on the same
// input and requires the placement want (task → node or "!" + reason) and,
// for each assignment listed in ports, exactly those host ports.
func checkPlan(t *testing.T, snap Snapshot, pending []api.Task, want map[string]string, ports map[string]map[string]int) {
	t.Helper()
	plans := map[string]Plan{"reference": referenceSchedule(snap, pending)}
	for _, o := range allOptions {
		plans[fmt.Sprintf("options %+v", o)] = schedule(snap, pending, o)
	}
	for name, plan := range plans {
		if got := placement(plan); !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", name, got, want)
		}
		for _, a := range plan.Assignments {
			if w, ok := ports[a.TaskID]; ok && !reflect.DeepEqual(a.Ports, w) {
				t.Errorf("%s: %s got ports %v, want %v", name, a.TaskID, a.Ports, w)
			}
		}
	}
}

func TestHostPortOneTaskPerNode(t *testing.T) {
	nodes := []api.Node{node("n1"), node("n2")}
	var pending []api.Task
	for _, id := range []string{"t1", "t2", "t3"} {
		pending = append(pending, task(id, "web", int(id[1]-'0'), hostPortOpt("http", "tcp", 18080), ports("admin")))
	}
	plan := Schedule(Snapshot{Nodes: nodes}, pending)
	checkPlan(t, Snapshot{Nodes: nodes}, pending, map[string]string{
		"t1": "n1", "t2": "n2",
		"t3": "!host port tcp/18080 is taken on every eligible node (2 nodes)",
	}, nil)
	for _, a := range plan.Assignments {
		if a.Ports["http"] != 18080 || a.Ports["admin"] < DefaultPortMin || a.Ports["admin"] > DefaultPortMax {
			t.Errorf("%s: ports %v, want http 18080 and admin from the range", a.TaskID, a.Ports)
		}
	}

	// One node: the second replica waits, whatever spreading would prefer.
	one := Snapshot{Nodes: []api.Node{node("n1")}}
	checkPlan(t, one, pending[:2], map[string]string{
		"t1": "n1",
		"t2": "!host port tcp/18080 is taken on every eligible node (1 node)",
	}, map[string]map[string]int{})
	// The replica that runs holds the port for the next round.
	run := running(pending[0], "n1", map[string]int{"http": 18080, "admin": 20001})
	checkPlan(t, Snapshot{Nodes: one.Nodes, Tasks: []api.Task{run}}, pending[1:2], map[string]string{
		"t2": "!host port tcp/18080 is taken on every eligible node (1 node)",
	}, nil)
	// Once it is gone the port is free again.
	run.Status.State = api.TaskShutdown
	checkPlan(t, Snapshot{Nodes: one.Nodes, Tasks: []api.Task{run}}, pending[1:2], map[string]string{"t2": "n1"},
		map[string]map[string]int{"t2": {"http": 18080, "admin": 20000 + int(hashID("t2")%12768)}})
}

func TestHostPortProtocols(t *testing.T) {
	nodes := []api.Node{node("n1")}
	// tcp/53 and udp/53 in one task are two ports of one number.
	dns := task("d1", "dns", 1, hostPortOpt("dns", "udp", 53), hostPortOpt("dns-tcp", "tcp", 53))
	checkPlan(t, Snapshot{Nodes: nodes}, []api.Task{dns}, map[string]string{"d1": "n1"},
		map[string]map[string]int{"d1": {"dns": 53, "dns-tcp": 53}})

	// Another service's udp/18080 leaves tcp/18080 free; its tcp/18080
	// does not.
	udp := running(task("u1", "u", 1, hostPortOpt("q", "udp", 18080)), "n1", map[string]int{"q": 18080})
	web := task("w1", "web", 1, hostPortOpt("http", "tcp", 18080))
	checkPlan(t, Snapshot{Nodes: nodes, Tasks: []api.Task{udp}}, []api.Task{web}, map[string]string{"w1": "n1"},
		map[string]map[string]int{"w1": {"http": 18080}})
	tcp := running(task("o1", "o", 1, hostPortOpt("x", "tcp", 18080)), "n1", map[string]int{"x": 18080})
	checkPlan(t, Snapshot{Nodes: nodes, Tasks: []api.Task{tcp}}, []api.Task{web}, map[string]string{
		"w1": "!host port tcp/18080 is taken on every eligible node (1 node)",
	}, nil)
}

func TestHostPortsAndAllocatedPorts(t *testing.T) {
	n := node("n1", portRangeOpt(30000, 30002))
	// An allocated port holds its number for every protocol: no host port
	// of either protocol may take it.
	other := running(task("o1", "o", 1, ports("p")), "n1", map[string]int{"p": 30001})
	for _, proto := range []string{"tcp", "udp"} {
		checkPlan(t, Snapshot{Nodes: []api.Node{n}, Tasks: []api.Task{other}},
			[]api.Task{task("h1", "h", 1, hostPortOpt("x", proto, 30001))},
			map[string]string{"h1": "!host port " + proto + "/30001 is taken on every eligible node (1 node)"}, nil)
	}
	// A host port inside the range is not allocated to anyone else: with
	// 30000 and 30002 held by host ports, the allocated port gets 30001,
	// and the next task finds the range full.
	hosts := running(task("h0", "h", 1, hostPortOpt("a", "tcp", 30000), hostPortOpt("b", "udp", 30002)), "n1",
		map[string]int{"a": 30000, "b": 30002})
	checkPlan(t, Snapshot{Nodes: []api.Node{n}, Tasks: []api.Task{hosts}},
		[]api.Task{task("d1", "d", 1, ports("p")), task("d2", "d", 2, ports("p"))},
		map[string]string{"d1": "n1", "d2": "!no suitable node (1 node: 1 lacks free ports (need 1, most free 0))"},
		map[string]map[string]int{"d1": {"p": 30001}})
	// A task's own host port inside the range counts against its
	// allocated ports: 3 numbers, 1 host port, so 2 allocated fit and 3 do
	// not.
	checkPlan(t, Snapshot{Nodes: []api.Node{n}},
		[]api.Task{
			task("a1", "a", 1, hostPortOpt("h", "tcp", 30001), ports("p", "q", "r")),
			task("b1", "b", 1, hostPortOpt("h", "tcp", 30001), ports("p", "q")),
		},
		map[string]string{"a1": "!no suitable node (1 node: 1 lacks free ports (need 3, most free 2))", "b1": "n1"}, nil)
	// A host port outside the range is tracked too, and does not use up
	// the range.
	out := running(task("x1", "x", 1, hostPortOpt("h", "tcp", 18080)), "n1", map[string]int{"h": 18080})
	checkPlan(t, Snapshot{Nodes: []api.Node{n}, Tasks: []api.Task{out}},
		[]api.Task{task("y1", "y", 1, hostPortOpt("h", "tcp", 18080)), task("z1", "z", 1, ports("p", "q", "r"))},
		map[string]string{"y1": "!host port tcp/18080 is taken on every eligible node (1 node)", "z1": "n1"}, nil)
	// A node whose range is invalid can still give a task its host ports.
	bad := node("n1", portRangeOpt(40000, 30000))
	checkPlan(t, Snapshot{Nodes: []api.Node{bad}}, []api.Task{task("h1", "h", 1, hostPortOpt("h", "udp", 5353))},
		map[string]string{"h1": "n1"}, map[string]map[string]int{"h1": {"h": 5353}})
}

func TestIngressPortsAreAllocated(t *testing.T) {
	// An ingress port's task port comes from the range, as before: the
	// published number belongs to the gateways.
	n := node("n1", portRangeOpt(30000, 30000))
	checkPlan(t, Snapshot{Nodes: []api.Node{n}},
		[]api.Task{task("i1", "i", 1, ingressPortOpt("http", "tcp", 18080)), task("i2", "i", 2, ingressPortOpt("http", "tcp", 18080))},
		map[string]string{"i1": "n1", "i2": "!no suitable node (1 node: 1 lacks free ports (need 1, most free 0))"},
		map[string]map[string]int{"i1": {"http": 30000}})
}

func TestHostPortReasons(t *testing.T) {
	nodes := []api.Node{node("n1"), node("n2"), node("n3", status(api.NodeDown))}
	snap := Snapshot{Nodes: nodes, Tasks: []api.Task{
		running(task("a", "a", 1, hostPortOpt("h", "tcp", 80)), "n1", map[string]int{"h": 80}),
		running(task("b", "b", 1, hostPortOpt("h", "udp", 53)), "n2", map[string]int{"h": 53}),
	}}
	both := func(id string, opts ...func(*api.Task)) api.Task {
		return task(id, "s", 1, append([]func(*api.Task){hostPortOpt("web", "tcp", 80), hostPortOpt("dns", "udp", 53)}, opts...)...)
	}
	checkPlan(t, snap, []api.Task{both("t1")}, map[string]string{
		"t1": "!no suitable node (3 nodes: 1 down, 1 has host port tcp/80 taken, 1 has host port udp/53 taken)",
	}, nil)
	snap.Nodes = nodes[:2]
	checkPlan(t, snap, []api.Task{both("t1")}, map[string]string{
		"t1": "!host ports are taken on every eligible node (2 nodes: 1 has host port tcp/80 taken, 1 has host port udp/53 taken)",
	}, nil)
	// A pinned (global) task names its node.
	checkPlan(t, snap, []api.Task{both("g1", onNode("n2")), both("g2", onNode("n1"))}, map[string]string{
		"g1": "!node n2 has host port udp/53 taken",
		"g2": "!node n1 has host port tcp/80 taken",
	}, nil)
	// Constraints are counted before host ports.
	checkPlan(t, snap, []api.Task{both("c1", constraints("node.id == n1"))}, map[string]string{
		"c1": "!no suitable node (2 nodes: 1 fails constraint node.id == n1, 1 has host port tcp/80 taken)",
	}, nil)
}

func TestGlobalHostPortOnEveryNode(t *testing.T) {
	nodes := []api.Node{node("n1"), node("n2"), node("n3")}
	var pending []api.Task
	for _, n := range nodes {
		pending = append(pending, task("g-"+n.ID, "g", 0, hostPortOpt("metrics", "tcp", 9100), onNode(n.ID)))
	}
	checkPlan(t, Snapshot{Nodes: nodes}, pending, map[string]string{"g-n1": "n1", "g-n2": "n2", "g-n3": "n3"},
		map[string]map[string]int{"g-n1": {"metrics": 9100}, "g-n2": {"metrics": 9100}, "g-n3": {"metrics": 9100}})
}
