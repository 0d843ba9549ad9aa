package scheduler

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/berth-project/berth/api"
	"pgregory.net/rapid"
)

// genCluster draws a small random cluster: nodes (some duplicate IDs, down,
// paused, drained, without a driver, with tight capacity or a tiny port
// range), tasks already running on them, and pending tasks with
// constraints, resources, ports and sometimes a pinned node.
func genCluster(t *rapid.T) (Snapshot, []api.Task) {
	var snap Snapshot
	nNodes := rapid.IntRange(0, 10).Draw(t, "nodes")
	for i := range nNodes {
		n := api.Node{
			ID:           fmt.Sprintf("n%d", rapid.IntRange(0, 12).Draw(t, "id")),
			Hostname:     fmt.Sprintf("h%d", i%4),
			Role:         rapid.SampledFrom([]string{"", "manager", "worker"}).Draw(t, "role"),
			Status:       rapid.SampledFrom([]string{api.NodeReady, api.NodeReady, api.NodeReady, api.NodeDown, "unknown"}).Draw(t, "status"),
			Availability: rapid.SampledFrom([]string{api.AvailabilityActive, api.AvailabilityActive, api.AvailabilityActive, api.AvailabilityPause, api.AvailabilityDrain}).Draw(t, "avail"),
			Drivers:      rapid.SampledFrom([][]string{{"process"}, {"process", "docker"}, {"docker"}, nil}).Draw(t, "drivers"),
			Resources: api.NodeResources{
				CPUs:   rapid.SampledFrom([]float64{0, 0.5, 1, 2, 4}).Draw(t, "cpus"),
				Memory: rapid.SampledFrom([]api.ByteSize{0, 256 << 20, 1 << 30}).Draw(t, "mem"),
			},
		}
		if rapid.Bool().Draw(t, "has zone") {
			n.Labels = map[string]string{"zone": rapid.SampledFrom([]string{"a", "b"}).Draw(t, "zone")}
		}
		if rapid.IntRange(0, 2).Draw(t, "has rack") > 0 {
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels["rack"] = rapid.SampledFrom([]string{"r1", "r2", "r3"}).Draw(t, "rack")
		}
		switch rapid.IntRange(0, 3).Draw(t, "ports") {
		case 0: // default range
		case 3:
			n.PortRange = [2]int{30010, 30000} // invalid
		default:
			lo := 30000 + 10*i
			n.PortRange = [2]int{lo, lo + rapid.IntRange(0, 6).Draw(t, "port span")}
		}
		snap.Nodes = append(snap.Nodes, n)
	}
	resources := func(label string) api.Resources {
		return api.Resources{
			CPUs:   rapid.SampledFrom([]float64{0, 0.1, 0.25, 0.5, 1, 3}).Draw(t, label+" cpus"),
			Memory: rapid.SampledFrom([]api.ByteSize{0, 64 << 20, 128 << 20, 512 << 20}).Draw(t, label+" mem"),
		}
	}
	services := []string{"s0", "s1", "s2", "s3"}
	for i := range rapid.IntRange(0, 12).Draw(t, "running") {
		tk := api.Task{
			ID:        fmt.Sprintf("r%d", i),
			ServiceID: rapid.SampledFrom(services).Draw(t, "svc"),
			Slot:      i,
			Spec:      api.TaskSpec{Resources: resources("running")},
			Status:    api.TaskStatus{State: rapid.SampledFrom([]api.TaskState{api.TaskRunning, api.TaskAssigned, api.TaskFailed}).Draw(t, "state")},
		}
		if len(snap.Nodes) > 0 && rapid.IntRange(0, 5).Draw(t, "on node") > 0 {
			tk.NodeID = snap.Nodes[rapid.IntRange(0, len(snap.Nodes)-1).Draw(t, "node")].ID
		}
		for k := range rapid.IntRange(0, 2).Draw(t, "held ports") {
			if tk.Ports == nil {
				tk.Ports = map[string]int{}
			}
			tk.Ports[fmt.Sprint(k)] = 30000 + rapid.IntRange(0, 99).Draw(t, "held port")
		}
		if rapid.IntRange(0, 3).Draw(t, "holds a host port") == 0 {
			hp := genHostPort(t, "h")
			tk.Spec.Ports = append(tk.Spec.Ports, hp)
			if tk.Ports == nil {
				tk.Ports = map[string]int{}
			}
			tk.Ports["h"] = hp.Publish
			if rapid.IntRange(0, 4).Draw(t, "held elsewhere") == 0 {
				tk.Ports["h"]++ // not its published number: an allocated port
			}
		}
		snap.Tasks = append(snap.Tasks, tk)
	}
	// Constraint sets shared between tasks, so groups repeat.
	consPool := [][]string{
		nil, nil,
		{"node.labels.zone == a"},
		{"node.labels.zone != a"},
		{"node.role == worker", "node.labels.zone != b"},
		{"node.hostname != h1"},
		{"node.id != n3"},
		{"node.role = worker"}, // invalid
	}
	prefPool := [][]api.PlacementPreference{
		nil, nil, nil,
		{{Spread: "node.labels.zone"}},
		{{Spread: "node.labels.zone"}, {Spread: "node.labels.rack"}},
		{{Spread: "node.labels.rack"}},
		{{Spread: "node.hostname"}}, // invalid: one group
	}
	var pending []api.Task
	for i := range rapid.IntRange(0, 30).Draw(t, "pending") {
		tk := api.Task{
			ID:        fmt.Sprintf("t%02d", rapid.IntRange(0, 99).Draw(t, "id")*100+i), // unique, unordered
			ServiceID: rapid.SampledFrom(services).Draw(t, "svc"),
			Slot:      rapid.IntRange(0, 5).Draw(t, "slot"),
			Spec: api.TaskSpec{
				Driver:    rapid.SampledFrom([]string{"", "process", "process", "docker"}).Draw(t, "driver"),
				Resources: resources("pending"),
			},
			Placement: api.Placement{Constraints: rapid.SampledFrom(consPool).Draw(t, "constraints"),
				MaxReplicasPerNode: rapid.SampledFrom([]int{0, 0, 0, 1, 2}).Draw(t, "max per node"),
				Preferences:        rapid.SampledFrom(prefPool).Draw(t, "preferences")},
			Status: api.TaskStatus{State: api.TaskPending},
		}
		for k := range rapid.IntRange(0, 2).Draw(t, "port count") {
			p := api.PortSpec{Name: fmt.Sprintf("p%d", k), Protocol: "tcp"}
			if rapid.IntRange(0, 2).Draw(t, "host mode") == 0 {
				p = genHostPort(t, p.Name)
				for _, q := range tk.Spec.Ports {
					if q.Mode == api.PublishHost && q.Publish == p.Publish && q.Protocol == p.Protocol {
						p.Protocol = "udp" // validation allows each once
						if q.Protocol == "udp" {
							p.Protocol = "tcp"
						}
					}
				}
			}
			tk.Spec.Ports = append(tk.Spec.Ports, p)
		}
		if rapid.IntRange(0, 6).Draw(t, "pinned") == 0 {
			if len(snap.Nodes) > 0 && rapid.Bool().Draw(t, "known node") {
				tk.NodeID = snap.Nodes[rapid.IntRange(0, len(snap.Nodes)-1).Draw(t, "node")].ID
			} else {
				tk.NodeID = "n99"
			}
			if rapid.Bool().Draw(t, "also in snapshot") {
				snap.Tasks = append(snap.Tasks, tk)
			}
		}
		pending = append(pending, tk)
	}
	return snap, pending
}

// genHostPort draws a port published in host mode: a number in some nodes'
// port ranges or outside all of them, over tcp or udp.
func genHostPort(t *rapid.T, name string) api.PortSpec {
	return api.PortSpec{
		Name:     name,
		Protocol: rapid.SampledFrom([]string{"tcp", "tcp", "udp"}).Draw(t, "host proto"),
		Publish:  rapid.SampledFrom([]int{30000, 30002, 30011, 30050, 18080, 53}).Draw(t, "host port"),
		Mode:     api.PublishHost,
	}
}

// TestScheduleMatchesReference: the optimized scheduler, with every heap
// strategy, makes exactly the plan of the naive one, reasons included.
func TestScheduleMatchesReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		snap, pending := genCluster(t)
		want := referenceSchedule(snap, pending)
		for _, opts := range allOptions {
			got := schedule(snap, pending, opts)
			if !reflect.DeepEqual(normalize(got), normalize(want)) {
				t.Fatalf("%+v:\n got %+v\nwant %+v", opts, got, want)
			}
		}
	})
}

// normalize makes empty and nil lists compare equal.
func normalize(p Plan) Plan {
	if len(p.Assignments) == 0 {
		p.Assignments = nil
	}
	if len(p.Unplaced) == 0 {
		p.Unplaced = nil
	}
	return p
}

// TestScheduleInvariants checks the plan against the rules directly.
func TestScheduleInvariants(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		snap, pending := genCluster(t)
		plan := Schedule(snap, pending)

		if again := Schedule(snap, pending); !reflect.DeepEqual(plan, again) {
			t.Fatalf("not deterministic:\n%+v\n%+v", plan, again)
		}

		// Every pending task appears exactly once.
		seen := map[string]int{}
		for _, a := range plan.Assignments {
			seen[a.TaskID]++
		}
		for _, u := range plan.Unplaced {
			seen[u.TaskID]++
			if u.Reason == "" {
				t.Fatalf("task %s unplaced without a reason", u.TaskID)
			}
		}
		for _, tk := range pending {
			if seen[tk.ID] != 1 {
				t.Fatalf("task %s appears %d times", tk.ID, seen[tk.ID])
			}
		}
		if len(seen) != len(pending) {
			t.Fatalf("plan has %d tasks, %d pending", len(seen), len(pending))
		}

		nodes := map[string]*api.Node{}
		for i := range snap.Nodes {
			if nodes[snap.Nodes[i].ID] == nil {
				nodes[snap.Nodes[i].ID] = &snap.Nodes[i]
			}
		}
		byID := map[string]*api.Task{}
		for i := range pending {
			byID[pending[i].ID] = &pending[i]
		}
		type hostKey struct {
			proto string
			port  int
		}
		type load struct {
			cpu float64
			mem api.ByteSize
			// A task reserving cpu (memory) was placed here.
			chargedCPU, chargedMem bool
			ports                  map[int]string     // allocated: the number for every protocol
			host                   map[hostKey]string // host mode: the number for one protocol
		}
		loads := map[string]*load{}
		for id := range nodes {
			loads[id] = &load{ports: map[int]string{}, host: map[hostKey]string{}}
		}
		hostSpec := func(tk *api.Task, name string) (api.PortSpec, bool) {
			for _, p := range tk.Spec.Ports {
				if p.Name == name && p.Mode == api.PublishHost && p.Publish > 0 {
					return p, true
				}
			}
			return api.PortSpec{}, false
		}
		holder := func(l *load, p int) (string, bool) {
			for _, k := range []hostKey{{"tcp", p}, {"udp", p}} {
				if id, ok := l.host[k]; ok {
					return id, true
				}
			}
			id, ok := l.ports[p]
			return id, ok
		}
		for _, tk := range snap.Tasks {
			l := loads[tk.NodeID]
			if l == nil || tk.Status.State.Terminal() || byID[tk.ID] != nil {
				continue
			}
			l.cpu += tk.Spec.Resources.CPUs
			l.mem += tk.Spec.Resources.Memory
			for name, p := range tk.Ports {
				if hs, ok := hostSpec(&tk, name); ok && hs.Publish == p {
					l.host[hostKey{hs.Protocol, p}] = tk.ID
				} else {
					l.ports[p] = tk.ID
				}
			}
		}
		for _, a := range plan.Assignments {
			tk, n := byID[a.TaskID], nodes[a.NodeID]
			if n == nil {
				t.Fatalf("task %s assigned to unknown node %s", a.TaskID, a.NodeID)
			}
			if tk.NodeID != "" && tk.NodeID != a.NodeID {
				t.Fatalf("task %s pinned to %s assigned to %s", tk.ID, tk.NodeID, a.NodeID)
			}
			// The node is eligible.
			driver := tk.Spec.Driver
			if driver == "" {
				driver = api.DriverProcess
			}
			if n.Status != api.NodeReady || n.Availability != api.AvailabilityActive || !slices.Contains(n.Drivers, driver) {
				t.Fatalf("task %s assigned to ineligible node %+v", tk.ID, n)
			}
			for _, s := range tk.Placement.Constraints {
				c, err := api.ParseConstraint(s)
				if err != nil {
					t.Fatalf("task %s with invalid constraint %q placed", tk.ID, s)
				}
				var v string
				ok := true
				switch c.Key {
				case "node.id":
					v = n.ID
				case "node.hostname":
					v = n.Hostname
				case "node.role":
					v = n.Role
				default:
					v, ok = n.Labels[c.Key[len("node.labels."):]]
				}
				if c.Equal != (ok && v == c.Value) {
					t.Fatalf("task %s on %s breaks constraint %s", tk.ID, n.ID, s)
				}
			}
			l := loads[a.NodeID]
			l.cpu += tk.Spec.Resources.CPUs
			l.mem += tk.Spec.Resources.Memory
			l.chargedCPU = l.chargedCPU || tk.Spec.Resources.CPUs > 0
			l.chargedMem = l.chargedMem || tk.Spec.Resources.Memory > 0
			// Ports: one per spec port, within range, unique on the node.
			if len(a.Ports) != len(tk.Spec.Ports) {
				t.Fatalf("task %s has ports %v for spec %v", tk.ID, a.Ports, tk.Spec.Ports)
			}
			lo, hi := n.PortRange[0], n.PortRange[1]
			if n.PortRange == [2]int{} {
				lo, hi = 20000, 32767
			}
			// Host-mode ports: exactly the published number, held by
			// nothing else for that protocol.
			for name, p := range a.Ports {
				hs, ok := hostSpec(tk, name)
				if !ok {
					continue
				}
				k := hostKey{hs.Protocol, hs.Publish}
				if p != hs.Publish {
					t.Fatalf("task %s host port %s=%d, published %d", tk.ID, name, p, hs.Publish)
				}
				if other, dup := l.host[k]; dup {
					t.Fatalf("host port %v on %s given to %s and %s", k, n.ID, other, tk.ID)
				}
				if other, dup := l.ports[p]; dup {
					t.Fatalf("host port %v on %s given to %s, which %s holds", k, n.ID, tk.ID, other)
				}
				l.host[k] = tk.ID
			}
			for name, p := range a.Ports {
				if _, ok := hostSpec(tk, name); ok {
					continue
				}
				if p < lo || p > hi {
					t.Fatalf("task %s port %s=%d outside %d-%d", tk.ID, name, p, lo, hi)
				}
				if other, dup := holder(l, p); dup {
					t.Fatalf("port %d on %s given to %s and %s", p, n.ID, other, tk.ID)
				}
				l.ports[p] = tk.ID
			}
		}
		// No node that took a reserving task is over capacity (the
		// snapshot alone may already be).
		for id, l := range loads {
			n := nodes[id]
			if l.chargedCPU && n.Resources.CPUs > 0 && l.cpu > n.Resources.CPUs+1e-9 {
				t.Fatalf("node %s over cpu: %g > %g", id, l.cpu, n.Resources.CPUs)
			}
			if l.chargedMem && n.Resources.Memory > 0 && l.mem > n.Resources.Memory {
				t.Fatalf("node %s over memory: %d > %d", id, l.mem, n.Resources.Memory)
			}
		}
	})
}

// TestSpreadProperty: one service on identical nodes ends up with at most
// one task more on any node than on any other, whatever else runs there.
func TestSpreadProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nNodes := rapid.IntRange(1, 20).Draw(t, "nodes")
		var snap Snapshot
		for i := range nNodes {
			snap.Nodes = append(snap.Nodes, node(fmt.Sprintf("n%02d", i), capacity(0, 0)))
		}
		for i := range rapid.IntRange(0, 30).Draw(t, "others") {
			n := rapid.IntRange(0, nNodes-1).Draw(t, "other node")
			snap.Tasks = append(snap.Tasks, running(task(fmt.Sprintf("o%d", i), "other", i), snap.Nodes[n].ID, nil))
		}
		var pending []api.Task
		for i := range rapid.IntRange(0, 100).Draw(t, "tasks") {
			pending = append(pending, task(fmt.Sprintf("t%03d", i), "web", i+1))
		}
		maxCandidates := rapid.SampledFrom([]int{0, 1, 3}).Draw(t, "maxCandidates")
		plan := schedule(snap, pending, options{maxCandidates: maxCandidates})
		if len(plan.Unplaced) > 0 {
			t.Fatalf("unplaced: %v", plan.Unplaced)
		}
		per := map[string]int{}
		for _, n := range snap.Nodes {
			per[n.ID] = 0
		}
		for _, a := range plan.Assignments {
			per[a.NodeID]++
		}
		lo, hi := len(pending), 0
		for _, c := range per {
			lo, hi = min(lo, c), max(hi, c)
		}
		if len(pending) > 0 && hi-lo > 1 {
			t.Fatalf("spread %d..%d over %d nodes: %v", lo, hi, nNodes, per)
		}
	})
}

// TestManyServicesMatchReference: many small services, some with two
// demands whose groups interleave by slot, filling small nodes.
func TestManyServicesMatchReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var snap Snapshot
		nNodes := rapid.IntRange(1, 15).Draw(t, "nodes")
		for i := range nNodes {
			snap.Nodes = append(snap.Nodes, node(fmt.Sprintf("n%02d", i),
				capacity(rapid.SampledFrom([]float64{1, 2, 3}).Draw(t, "cpus"), 0),
				labels("zone", rapid.SampledFrom([]string{"a", "b"}).Draw(t, "zone"))))
		}
		var pending []api.Task
		for i := range rapid.IntRange(0, 80).Draw(t, "tasks") {
			svc := fmt.Sprintf("s%02d", rapid.IntRange(0, 20).Draw(t, "svc"))
			opts := []func(*api.Task){res(rapid.SampledFrom([]float64{0.25, 0.5}).Draw(t, "cpu"), 0)}
			if rapid.Bool().Draw(t, "zoned") {
				opts = append(opts, constraints("node.labels.zone == a"))
			}
			pending = append(pending, task(fmt.Sprintf("t%03d", i), svc, i, opts...))
		}
		want := referenceSchedule(snap, pending)
		for _, maxCandidates := range []int{0, 1, 2, 5} {
			got := schedule(snap, pending, options{maxCandidates: maxCandidates})
			if !reflect.DeepEqual(normalize(got), normalize(want)) {
				t.Fatalf("maxCandidates %d:\n got %+v\nwant %+v", maxCandidates, got, want)
			}
		}
	})
}
