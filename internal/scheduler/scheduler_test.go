package scheduler

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

// node returns a ready, active node with the process driver, 4 CPUs and
// 4GiB; opts adjust it.
func node(id string, opts ...func(*api.Node)) api.Node {
	n := api.Node{
		ID:           id,
		Hostname:     "host-" + id,
		Status:       api.NodeReady,
		Availability: api.AvailabilityActive,
		Drivers:      []string{api.DriverProcess},
		Resources:    api.NodeResources{CPUs: 4, Memory: 4 << 30},
	}
	for _, o := range opts {
		o(&n)
	}
	return n
}

func labels(kv ...string) func(*api.Node) {
	return func(n *api.Node) {
		n.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			n.Labels[kv[i]] = kv[i+1]
		}
	}
}

func status(s string) func(*api.Node) { return func(n *api.Node) { n.Status = s } }
func avail(a string) func(*api.Node)  { return func(n *api.Node) { n.Availability = a } }
func role(r string) func(*api.Node)   { return func(n *api.Node) { n.Role = r } }
func drivers(d ...string) func(*api.Node) {
	return func(n *api.Node) { n.Drivers = d }
}
func capacity(cpus float64, mem api.ByteSize) func(*api.Node) {
	return func(n *api.Node) { n.Resources = api.NodeResources{CPUs: cpus, Memory: mem} }
}
func portRangeOpt(lo, hi int) func(*api.Node) {
	return func(n *api.Node) { n.PortRange = [2]int{lo, hi} }
}

// task returns a pending task of service svc; opts adjust it.
func task(id, svc string, slot int, opts ...func(*api.Task)) api.Task {
	t := api.Task{
		ID:           id,
		ServiceID:    svc,
		ServiceName:  svc,
		Slot:         slot,
		Spec:         api.TaskSpec{Driver: api.DriverProcess, Command: []string{"true"}},
		DesiredState: api.TaskRunning,
		Status:       api.TaskStatus{State: api.TaskPending},
	}
	for _, o := range opts {
		o(&t)
	}
	return t
}

func constraints(c ...string) func(*api.Task) {
	return func(t *api.Task) { t.Placement.Constraints = c }
}
func res(cpus float64, mem api.ByteSize) func(*api.Task) {
	return func(t *api.Task) { t.Spec.Resources = api.Resources{CPUs: cpus, Memory: mem} }
}
func onNode(id string) func(*api.Task) { return func(t *api.Task) { t.NodeID = id } }
func withDriver(d string) func(*api.Task) {
	return func(t *api.Task) { t.Spec.Driver = d }
}
func ports(names ...string) func(*api.Task) {
	return func(t *api.Task) {
		for _, n := range names {
			t.Spec.Ports = append(t.Spec.Ports, api.PortSpec{Name: n, Protocol: "tcp"})
		}
	}
}

// running turns a pending task into one holding resources on node.
func running(t api.Task, node string, hostPorts map[string]int) api.Task {
	t.NodeID = node
	t.Status.State = api.TaskRunning
	t.Ports = hostPorts
	return t
}

// placement flattens a plan for comparison: task → node or "!" + reason.
func placement(p Plan) map[string]string {
	m := map[string]string{}
	for _, a := range p.Assignments {
		m[a.TaskID] = a.NodeID
	}
	for _, u := range p.Unplaced {
		m[u.TaskID] = "!" + u.Reason
	}
	return m
}

func TestSchedule(t *testing.T) {
	zoned := []api.Node{
		node("n1", labels("zone", "a", "disk", "ssd"), role("manager")),
		node("n2", labels("zone", "b"), role("worker")),
		node("n3", role("worker")),
	}
	tests := []struct {
		name    string
		nodes   []api.Node
		running []api.Task
		pending []api.Task
		want    map[string]string
	}{
		{
			name:    "no nodes",
			pending: []api.Task{task("t1", "s", 1), task("t2", "s", 2, onNode("n1"))},
			want:    map[string]string{"t1": "!no nodes registered", "t2": "!no nodes registered"},
		},
		{
			name:    "label equal",
			nodes:   zoned,
			pending: []api.Task{task("t1", "s", 1, constraints("node.labels.zone == b"))},
			want:    map[string]string{"t1": "n2"},
		},
		{
			name:    "label not equal holds on missing label",
			nodes:   zoned,
			pending: []api.Task{task("t1", "s", 1, constraints("node.labels.zone != a")), task("t2", "s", 2, constraints("node.labels.zone != a"))},
			want:    map[string]string{"t1": "n2", "t2": "n3"},
		},
		{
			name:    "label equal fails on missing label",
			nodes:   zoned,
			pending: []api.Task{task("t1", "s", 1, constraints("node.labels.disk == ssd")), task("t2", "s", 2, constraints("node.labels.disk==ssd"))},
			want:    map[string]string{"t1": "n1", "t2": "n1"},
		},
		{
			name:    "hostname",
			nodes:   zoned,
			pending: []api.Task{task("t1", "s", 1, constraints("node.hostname == host-n3"))},
			want:    map[string]string{"t1": "n3"},
		},
		{
			name:    "hostname not equal",
			nodes:   zoned,
			pending: []api.Task{task("t1", "s", 1, constraints("node.hostname != host-n1", "node.hostname != host-n2"))},
			want:    map[string]string{"t1": "n3"},
		},
		{
			name:    "id",
			nodes:   zoned,
			pending: []api.Task{task("t1", "s", 1, constraints("node.id == n2"))},
			want:    map[string]string{"t1": "n2"},
		},
		{
			name:  "role",
			nodes: zoned,
			pending: []api.Task{
				task("t1", "s", 1, constraints("node.role == manager")),
				task("t2", "s", 2, constraints("node.role == manager")),
				task("t3", "w", 1, constraints("node.role != manager")),
			},
			want: map[string]string{"t1": "n1", "t2": "n1", "t3": "n2"},
		},
		{
			name:    "constraints fail",
			nodes:   zoned,
			pending: []api.Task{task("t1", "s", 1, constraints("node.labels.zone == a", "node.role == worker"))},
			want: map[string]string{
				"t1": "!no suitable node (3 nodes: 2 fail constraint node.labels.zone == a, 1 fails constraint node.role == worker)",
			},
		},
		{
			name:    "invalid constraint",
			nodes:   zoned,
			pending: []api.Task{task("t1", "s", 1, constraints("node.colour == red"))},
			want: map[string]string{
				"t1": `!invalid placement constraint: "node.colour == red": unknown key "node.colour": use node.id, node.hostname, node.role or node.labels.<key>`,
			},
		},
		{
			name: "down paused drained not ready",
			nodes: []api.Node{
				node("n1", status(api.NodeDown)),
				node("n2", avail(api.AvailabilityPause)),
				node("n3", avail(api.AvailabilityDrain)),
				node("n4", status("unknown")),
				node("n5"),
			},
			pending: []api.Task{task("t1", "s", 1), task("t2", "s", 2), task("t3", "s", 3, constraints("node.id != n5"))},
			want: map[string]string{
				"t1": "n5", "t2": "n5",
				"t3": "!no suitable node (5 nodes: 1 down, 1 not ready, 1 paused, 1 drained, 1 fails constraint node.id != n5)",
			},
		},
		{
			name:    "driver mismatch",
			nodes:   []api.Node{node("n1"), node("n2", drivers(api.DriverProcess, api.DriverDocker))},
			pending: []api.Task{task("t1", "s", 1, withDriver(api.DriverDocker)), task("t2", "s", 2, withDriver(api.DriverDocker))},
			want:    map[string]string{"t1": "n2", "t2": "n2"},
		},
		{
			name:    "empty driver means process",
			nodes:   []api.Node{node("n1", drivers(api.DriverDocker)), node("n2")},
			pending: []api.Task{task("t1", "s", 1, withDriver(""))},
			want:    map[string]string{"t1": "n2"},
		},
		{
			name:    "no node has the driver",
			nodes:   []api.Node{node("n1"), node("n2")},
			pending: []api.Task{task("t1", "s", 1, withDriver(api.DriverDocker))},
			want:    map[string]string{"t1": "!no suitable node (2 nodes: 2 lack driver docker)"},
		},
		{
			name:    "brief example",
			nodes:   []api.Node{node("n1", status(api.NodeDown)), node("n2", labels("zone", "a"), capacity(4, 96<<20)), node("n3", labels("zone", "b"))},
			running: []api.Task{running(task("r1", "other", 1, res(0, 64<<20)), "n2", nil)},
			pending: []api.Task{task("t1", "s", 1, res(0, 64<<20), constraints("node.labels.zone == a"))},
			want: map[string]string{
				"t1": "!no suitable node (3 nodes: 1 down, 1 lacks memory (need 64MiB, most free 32MiB), 1 fails constraint node.labels.zone == a)",
			},
		},
		{
			name:  "memory fit counts earlier placements",
			nodes: []api.Node{node("n1", capacity(0, 1<<30)), node("n2", capacity(0, 512<<20))},
			pending: []api.Task{
				task("t1", "s", 1, res(0, 512<<20)), task("t2", "s", 2, res(0, 512<<20)),
				task("t3", "s", 3, res(0, 512<<20)), task("t4", "s", 4, res(0, 512<<20)),
			},
			want: map[string]string{
				"t1": "n1", "t2": "n2", "t3": "n1",
				"t4": "!no suitable node (2 nodes: 2 lack memory (need 512MiB, most free 0B))",
			},
		},
		{
			name:    "cpu fit counts snapshot tasks",
			nodes:   []api.Node{node("n1", capacity(2, 0)), node("n2", capacity(1, 0))},
			running: []api.Task{running(task("r1", "other", 1, res(1.5, 0)), "n1", nil)},
			pending: []api.Task{task("t1", "s", 1, res(0.75, 0)), task("t2", "s", 2, res(0.75, 0)), task("t3", "s", 3, res(0.5, 0))},
			want: map[string]string{
				"t1": "n2",
				"t2": "!no suitable node (2 nodes: 2 lack cpu (need 0.75, most free 0.5))",
				"t3": "n1",
			},
		},
		{
			name:  "exact fit, no float drift",
			nodes: []api.Node{node("n1", capacity(0.3, 0))},
			pending: []api.Task{
				task("t1", "s", 1, res(0.1, 0)), task("t2", "s", 2, res(0.1, 0)),
				task("t3", "s", 3, res(0.1, 0)), task("t4", "s", 4, res(0.1, 0)),
			},
			want: map[string]string{
				"t1": "n1", "t2": "n1", "t3": "n1",
				"t4": "!no suitable node (1 node: 1 lacks cpu (need 0.1, most free 0))",
			},
		},
		{
			name:    "zero capacity means unknown, zero demand reserves nothing",
			nodes:   []api.Node{node("n1", capacity(0, 0)), node("n2", capacity(1, 64<<20))},
			running: []api.Task{running(task("r1", "other", 1, res(1, 64<<20)), "n2", nil), running(task("r2", "other", 2, res(1, 64<<20)), "n2", nil)},
			pending: []api.Task{task("t1", "s", 1, res(64, 1<<40)), task("t2", "z", 1, constraints("node.id == n2"))},
			want:    map[string]string{"t1": "n1", "t2": "n2"},
		},
		{
			name:  "terminal and unassigned snapshot tasks hold nothing",
			nodes: []api.Node{node("n1", capacity(1, 0))},
			running: []api.Task{func() api.Task {
				r := running(task("r1", "o", 1, res(1, 0)), "n1", nil)
				r.Status.State = api.TaskFailed
				return r
			}(), task("r2", "o", 2, res(1, 0))},
			pending: []api.Task{task("t1", "s", 1, res(1, 0))},
			want:    map[string]string{"t1": "n1"},
		},
		{
			name:    "global pinned node",
			nodes:   []api.Node{node("n1"), node("n2", capacity(1, 0)), node("n3", status(api.NodeDown)), node("n4", labels("zone", "b"))},
			running: []api.Task{running(task("r1", "o", 1, res(1, 0)), "n2", nil)},
			pending: []api.Task{
				task("g1", "g", 0, onNode("n1")),
				task("g2", "g", 0, onNode("n2"), res(0.5, 0)),
				task("g3", "g", 0, onNode("n3")),
				task("g4", "g", 0, onNode("n4"), constraints("node.labels.zone == a")),
				task("g5", "g", 0, onNode("n9")),
				task("g6", "g", 0, onNode("n1"), withDriver(api.DriverDocker)),
			},
			want: map[string]string{
				"g1": "n1",
				"g2": "!node n2 lacks cpu (need 0.5, free 0)",
				"g3": "!node n3 is down",
				"g4": "!node n4 fails constraint node.labels.zone == a",
				"g5": "!node n9 is not registered",
				"g6": "!node n1 lacks driver docker",
			},
		},
		{
			name:    "pinned pending task listed in the snapshot is not counted twice",
			nodes:   []api.Node{node("n1", capacity(1, 0))},
			running: []api.Task{func() api.Task { r := task("g1", "g", 0, onNode("n1"), res(1, 0)); return r }()},
			pending: []api.Task{task("g1", "g", 0, onNode("n1"), res(1, 0))},
			want:    map[string]string{"g1": "n1"},
		},
		{
			name:    "spread by service, then total, then cpu fraction, then id",
			nodes:   []api.Node{node("n1"), node("n2"), node("n3"), node("n4")},
			running: []api.Task{running(task("r1", "s", 1), "n1", nil), running(task("r2", "o", 1), "n2", nil), running(task("r3", "o", 2, res(1, 0)), "n3", nil), running(task("r4", "o", 3, res(2, 0)), "n4", nil)},
			pending: []api.Task{task("t2", "s", 2), task("t3", "s", 3), task("t4", "s", 4), task("t5", "s", 5), task("t6", "s", 6)},
			// n1 holds s; n2..n4 hold one task each with CPU fractions 0, 1/4, 2/4.
			want: map[string]string{"t2": "n2", "t3": "n3", "t4": "n4", "t5": "n1", "t6": "n2"},
		},
		{
			name:  "placement order is service, slot, id",
			nodes: []api.Node{node("n1", capacity(1, 0)), node("n2", capacity(0.5, 0))},
			pending: []api.Task{
				task("x", "b", 1, res(1, 0)),
				task("z", "a", 2, res(0.5, 0)),
				task("y", "a", 1, res(1, 0)),
			},
			want: map[string]string{
				"y": "n1", "z": "n2",
				"x": "!no suitable node (2 nodes: 2 lack cpu (need 1, most free 0))",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			snap := Snapshot{Nodes: tc.nodes, Tasks: tc.running}
			for _, opts := range allOptions {
				got := placement(schedule(snap, tc.pending, opts))
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%+v:\n got %v\nwant %v", opts, got, tc.want)
				}
			}
			if got := placement(referenceSchedule(snap, tc.pending)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("reference:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// allOptions cover the default and, with tiny candidate sets, rescans.
var allOptions = []options{defaultOptions, {maxCandidates: 1}, {maxCandidates: 2}}

func TestPorts(t *testing.T) {
	nodes := []api.Node{node("n1", portRangeOpt(30000, 30004)), node("n2", portRangeOpt(31000, 31001))}
	held := map[string]int{"a": 30001, "b": 30003, "c": 29999}
	snap := Snapshot{Nodes: nodes, Tasks: []api.Task{running(task("r1", "o", 1), "n1", held)}}
	pending := []api.Task{
		task("t1", "s", 1, ports("http", "admin")),
		task("t2", "s", 2, ports("http", "admin")),
		task("t3", "s", 3, ports("http", "admin")),
		task("t4", "s", 4, ports("http")),
	}
	for _, opts := range allOptions {
		plan := schedule(snap, pending, opts)
		// n1 holds r1 and has 3 free ports (30000, 30002, 30004); n2 is
		// empty and has 2, so t1 takes both of them.
		got := placement(plan)
		want := map[string]string{
			"t1": "n2", "t2": "n1",
			"t3": "!no suitable node (2 nodes: 2 lack free ports (need 2, most free 1))",
			"t4": "n1",
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%+v: got %v, want %v", opts, got, want)
		}
		used := map[string]map[int]bool{"n1": {30001: true, 30003: true}, "n2": {}}
		for _, a := range plan.Assignments {
			if len(a.Ports) != len(pending[a.TaskID[1]-'1'].Spec.Ports) {
				t.Errorf("%s got ports %v", a.TaskID, a.Ports)
			}
			r := nodes[0].PortRange
			if a.NodeID == "n2" {
				r = nodes[1].PortRange
			}
			for name, p := range a.Ports {
				if p < r[0] || p > r[1] {
					t.Errorf("%s port %s = %d outside %v", a.TaskID, name, p, r)
				}
				if used[a.NodeID][p] {
					t.Errorf("%s port %s = %d already used on %s", a.TaskID, name, p, a.NodeID)
				}
				used[a.NodeID][p] = true
			}
		}
	}
}

func TestPortsDefaultRangeAndHashStart(t *testing.T) {
	nodes := []api.Node{node("n1")}
	var pending []api.Task
	for i := range 50 {
		pending = append(pending, task(fmt.Sprintf("t%02d", i), "s", i, ports("p")))
	}
	plan := Schedule(Snapshot{Nodes: nodes}, pending)
	if len(plan.Assignments) != 50 {
		t.Fatalf("placed %d of 50: %v", len(plan.Assignments), plan.Unplaced)
	}
	seen := map[int]bool{}
	for _, a := range plan.Assignments {
		p := a.Ports["p"]
		if p < 20000 || p > 32767 {
			t.Fatalf("port %d outside the default range", p)
		}
		if seen[p] {
			t.Fatalf("port %d given twice", p)
		}
		seen[p] = true
		if want := 20000 + int(hashID(a.TaskID)%12768); p != want && !seen[want] {
			t.Errorf("%s got %d; its hash start %d was free", a.TaskID, p, want)
		}
	}
	// Hash-derived starts spread out: 50 tasks probing linearly from one
	// start would take 50 consecutive ports.
	lo, hi := 1<<30, 0
	for p := range seen {
		lo, hi = min(lo, p), max(hi, p)
	}
	if hi-lo < 1000 {
		t.Errorf("ports %d..%d are bunched; starts should spread over the range", lo, hi)
	}
}

func TestPortsWrapAround(t *testing.T) {
	// Range 100 ports; with every port held but one, the task must find it
	// wherever its hash start is.
	for free := 30000; free < 30100; free += 7 {
		held := map[string]int{}
		for p := 30000; p < 30100; p++ {
			if p != free {
				held[fmt.Sprint(p)] = p
			}
		}
		snap := Snapshot{
			Nodes: []api.Node{node("n1", portRangeOpt(30000, 30099))},
			Tasks: []api.Task{running(task("r", "o", 1), "n1", held)},
		}
		plan := Schedule(snap, []api.Task{task("t", "s", 1, ports("p"))})
		if len(plan.Assignments) != 1 || plan.Assignments[0].Ports["p"] != free {
			t.Fatalf("free port %d: got %+v", free, plan)
		}
	}
}

func TestInvalidPortRange(t *testing.T) {
	snap := Snapshot{Nodes: []api.Node{node("n1", portRangeOpt(40000, 30000)), node("n2", portRangeOpt(0, 70000))}}
	plan := Schedule(snap, []api.Task{task("t", "s", 1, ports("p")), task("u", "s", 2)})
	want := map[string]string{
		"t": "!no suitable node (2 nodes: 2 lack free ports (need 1, most free 0))",
		"u": "n1",
	}
	if got := placement(plan); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestDuplicateNodeIDs(t *testing.T) {
	snap := Snapshot{Nodes: []api.Node{node("n1", status(api.NodeDown)), node("n1"), node("n2", status(api.NodeDown))}}
	plan := Schedule(snap, []api.Task{task("t", "s", 1)})
	want := map[string]string{"t": "!no suitable node (2 nodes: 2 down)"}
	if got := placement(plan); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestReasonIsRecomputedAfterPlacements(t *testing.T) {
	// t1 and t3 share a demand; between them t2 (another service) fills
	// n2, so t3's reason must reflect n2's smaller free memory.
	nodes := []api.Node{node("n1", capacity(0, 100<<20)), node("n2", capacity(0, 100<<20))}
	pending := []api.Task{
		task("a1", "a", 1, res(0, 200<<20)),
		task("b1", "b", 1, res(0, 50<<20), constraints("node.id == n2")),
		task("c1", "c", 1, res(0, 200<<20)),
	}
	got := placement(Schedule(Snapshot{Nodes: nodes}, pending))
	want := map[string]string{
		"a1": "!no suitable node (2 nodes: 2 lack memory (need 200MiB, most free 100MiB))",
		"b1": "n2",
		"c1": "!no suitable node (2 nodes: 2 lack memory (need 200MiB, most free 100MiB))",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// Now make the larger node the one that fills up.
	pending[1].Placement.Constraints = []string{"node.id == n1"}
	nodes[0].Resources.Memory = 150 << 20
	got = placement(Schedule(Snapshot{Nodes: nodes}, pending))
	want["a1"] = "!no suitable node (2 nodes: 2 lack memory (need 200MiB, most free 150MiB))"
	want["b1"] = "n1"
	want["c1"] = "!no suitable node (2 nodes: 2 lack memory (need 200MiB, most free 100MiB))"
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestScheduleDoesNotModifyInput(t *testing.T) {
	snap := Snapshot{
		Nodes: []api.Node{node("n2", labels("zone", "a")), node("n1"), node("n3", status(api.NodeDown))},
		Tasks: []api.Task{running(task("r1", "s", 1, res(1, 1<<20)), "n1", map[string]int{"p": 20001})},
	}
	pending := []api.Task{
		task("t3", "s", 3, ports("p"), res(0.5, 1<<20)),
		task("t2", "s", 2, constraints("node.labels.zone == a")),
		task("g", "g", 0, onNode("n1")),
	}
	snapCopy := Snapshot{Nodes: deepCopy(snap.Nodes), Tasks: deepCopy(snap.Tasks)}
	pendingCopy := deepCopy(pending)
	Schedule(snap, pending)
	if !reflect.DeepEqual(snap, snapCopy) || !reflect.DeepEqual(pending, pendingCopy) {
		t.Fatal("Schedule modified its arguments")
	}
}

func deepCopy[T any](v []T) []T {
	out := make([]T, len(v))
	for i := range v {
		out[i] = v[i]
		rv := reflect.ValueOf(&out[i]).Elem()
		copyMaps(rv)
	}
	return out
}

// copyMaps replaces every map and slice reachable from v with a copy.
func copyMaps(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Field(i).CanSet() {
				copyMaps(v.Field(i))
			}
		}
	case reflect.Map:
		if v.IsNil() {
			return
		}
		m := reflect.MakeMap(v.Type())
		for _, k := range v.MapKeys() {
			m.SetMapIndex(k, v.MapIndex(k))
		}
		v.Set(m)
	case reflect.Slice:
		if v.IsNil() {
			return
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(s, v)
		for i := 0; i < s.Len(); i++ {
			copyMaps(s.Index(i))
		}
		v.Set(s)
	case reflect.Pointer:
		if !v.IsNil() && v.Elem().Kind() == reflect.Struct {
			p := reflect.New(v.Elem().Type())
			p.Elem().Set(v.Elem())
			copyMaps(p.Elem())
			v.Set(p)
		}
	}
}

func TestReasonsAreOneLine(t *testing.T) {
	nodes := []api.Node{node("n1", status("weird\nstatus"))}
	plan := Schedule(Snapshot{Nodes: nodes}, []api.Task{task("t", "s", 1, onNode("n1"))})
	if len(plan.Unplaced) != 1 || strings.Contains(plan.Unplaced[0].Reason, "\n") {
		t.Fatalf("got %+v", plan)
	}
}

func TestHugeReservationsDoNotWrap(t *testing.T) {
	// Three snapshot tasks of MaxInt64/2 bytes would wrap an int64 sum
	// around to a negative, "free" node.
	huge := api.ByteSize(math.MaxInt64 / 2)
	snap := Snapshot{
		Nodes: []api.Node{node("n1", capacity(1e300, 1<<30))},
		Tasks: []api.Task{
			running(task("r1", "o", 1, res(1e300, huge)), "n1", nil),
			running(task("r2", "o", 2, res(1e300, huge)), "n1", nil),
			running(task("r3", "o", 3, res(1e300, huge)), "n1", nil),
		},
	}
	got := placement(Schedule(snap, []api.Task{task("t", "s", 1, res(0, 64<<20)), task("u", "s", 2, res(1, 0))}))
	want := map[string]string{
		"t": "!no suitable node (1 node: 1 lacks memory (need 64MiB, most free 0B))",
		"u": "!no suitable node (1 node: 1 lacks cpu (need 1, most free 0))",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestConcurrentCalls(t *testing.T) {
	snap, pending := benchCluster(200, 2000, 50)
	want := Schedule(snap, pending)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			if got := Schedule(snap, pending); !reflect.DeepEqual(got, want) {
				errs <- fmt.Errorf("concurrent call made a different plan")
				return
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestBenchClusterMatchesReference cross-checks a mid-sized cluster of the
// benchmark's shape — constraints, two drivers, small nodes filling up,
// ports, tasks already running — against the naive scheduler.
func TestBenchClusterMatchesReference(t *testing.T) {
	for _, perService := range []int{3, 40, 2000} {
		snap, pending := benchCluster(60, 2000, perService)
		// Shrink the nodes so that some tasks stay unplaced.
		for i := range snap.Nodes {
			snap.Nodes[i].Resources.CPUs /= 2
		}
		want := referenceSchedule(snap, pending)
		if len(want.Unplaced) == 0 || len(want.Assignments) == 0 {
			t.Fatalf("perService %d: want both placed and unplaced tasks, got %d and %d", perService, len(want.Assignments), len(want.Unplaced))
		}
		for _, opts := range allOptions {
			if got := schedule(snap, pending, opts); !reflect.DeepEqual(got, want) {
				t.Errorf("perService %d, %+v: plans differ", perService, opts)
			}
		}
	}
}
