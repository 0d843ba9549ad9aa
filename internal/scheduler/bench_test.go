package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// benchCluster builds a cluster of nNodes nodes already running 4 tasks
// each, and nTasks pending tasks in services of perService tasks. Nodes: 3
// of 4 are large (16 CPUs, 64GiB), 1 of 4 small (4 CPUs, 8GiB) and fill up;
// 1% are down and 1% drained; labels zone (a–e) and disk (ssd on a third);
// half offer docker. Services rotate through no constraint, a zone, "ssd and
// not a manager", and "not zone a"; a fifth use docker; a third publish a
// port; CPU and memory reservations vary.
func benchCluster(nNodes, nTasks, perService int) (Snapshot, []api.Task) {
	r := rand.New(rand.NewPCG(1, 2))
	var snap Snapshot
	zones := []string{"a", "b", "c", "d", "e"}
	for i := range nNodes {
		n := api.Node{
			ID:           fmt.Sprintf("node-%05d", i),
			Hostname:     fmt.Sprintf("host-%05d", i),
			Role:         "worker",
			Status:       api.NodeReady,
			Availability: api.AvailabilityActive,
			Drivers:      []string{api.DriverProcess},
			Resources:    api.NodeResources{CPUs: 16, Memory: 64 << 30},
			Labels:       map[string]string{"zone": zones[i%5], "disk": "hdd", "rack": fmt.Sprint(i / 40)},
		}
		if i < 3 {
			n.Role = "manager"
		}
		if i%4 == 3 {
			n.Resources = api.NodeResources{CPUs: 4, Memory: 8 << 30}
		}
		if i%3 == 0 {
			n.Labels["disk"] = "ssd"
		}
		if i%2 == 0 {
			n.Drivers = append(n.Drivers, api.DriverDocker)
		}
		switch i % 100 {
		case 17:
			n.Status = api.NodeDown
		case 42:
			n.Availability = api.AvailabilityDrain
		}
		snap.Nodes = append(snap.Nodes, n)
	}
	for i := range 4 * nNodes {
		snap.Tasks = append(snap.Tasks, api.Task{
			ID:        fmt.Sprintf("old-%07d", i),
			ServiceID: fmt.Sprintf("old-%03d", i%300),
			NodeID:    snap.Nodes[r.IntN(nNodes)].ID,
			Spec:      api.TaskSpec{Resources: api.Resources{CPUs: 0.5, Memory: 512 << 20}},
			Ports:     map[string]int{"http": 20000 + r.IntN(12768)},
			Status:    api.TaskStatus{State: api.TaskRunning},
		})
	}
	constraintSets := [][]string{
		nil,
		{"node.labels.zone == %s"},
		{"node.labels.disk == ssd", "node.role != manager"},
		{"node.labels.zone != a"},
	}
	cpus := []float64{0.1, 0.25, 0.5, 1}
	mems := []api.ByteSize{64 << 20, 128 << 20, 256 << 20, 512 << 20}
	pending := make([]api.Task, 0, nTasks)
	for s := 0; len(pending) < nTasks; s++ {
		spec := api.TaskSpec{
			Driver:    api.DriverProcess,
			Resources: api.Resources{CPUs: cpus[r.IntN(len(cpus))], Memory: mems[r.IntN(len(mems))]},
		}
		if s%5 == 4 {
			spec.Driver = api.DriverDocker
		}
		if s%3 == 0 {
			spec.Ports = []api.PortSpec{{Name: "http", Protocol: "tcp"}}
		}
		var cons []string
		for _, c := range constraintSets[s%len(constraintSets)] {
			if c == "node.labels.zone == %s" {
				c = fmt.Sprintf(c, zones[s/4%5])
			}
			cons = append(cons, c)
		}
		svc := fmt.Sprintf("svc-%05d", s)
		for slot := 1; slot <= perService && len(pending) < nTasks; slot++ {
			pending = append(pending, api.Task{
				ID:        fmt.Sprintf("%s-%d-%x", svc, slot, r.Uint32()),
				ServiceID: svc,
				Slot:      slot,
				Spec:      spec,
				Placement: api.Placement{Constraints: cons},
				Status:    api.TaskStatus{State: api.TaskPending},
			})
		}
	}
	// The store returns tasks in key order, not placement order.
	r.Shuffle(len(pending), func(i, j int) { pending[i], pending[j] = pending[j], pending[i] })
	return snap, pending
}

func benchSchedule(b *testing.B, nNodes, nTasks, perService int, opts options) {
	snap, pending := benchCluster(nNodes, nTasks, perService)
	b.ReportAllocs()
	var plan Plan
	var cpu time.Duration
	for b.Loop() {
		start := cpuTime()
		plan = schedule(snap, pending, opts)
		cpu += cpuTime() - start
	}
	b.ReportMetric(float64(len(plan.Assignments))*float64(b.N)/b.Elapsed().Seconds(), "placements/s")
	// With -cpu 1 this is the time of one core, and it does not count time
	// spent waiting while other processes hold the CPUs.
	if cpu > 0 {
		b.ReportMetric(float64(len(plan.Assignments))*float64(b.N)/cpu.Seconds(), "placements/cpu-s")
	}
	b.ReportMetric(float64(len(plan.Unplaced)), "unplaced")
}

// BenchmarkSchedule100kTasks5kNodes places 100,000 tasks (500 services of
// 200) on 5,000 nodes already running 20,000 tasks.
func BenchmarkSchedule100kTasks5kNodes(b *testing.B) {
	benchSchedule(b, 5000, 100000, 200, defaultOptions)
}

// BenchmarkSchedule20kTasks1kNodes is the same shape on 1,000 nodes.
func BenchmarkSchedule20kTasks1kNodes(b *testing.B) {
	benchSchedule(b, 1000, 20000, 200, defaultOptions)
}

// BenchmarkScheduleSmallServices places 100,000 tasks of 10,000 services of
// 10 on 5,000 nodes: the worst shape for per-group scans.
func BenchmarkScheduleSmallServices(b *testing.B) {
	benchSchedule(b, 5000, 100000, 10, defaultOptions)
}

// BenchmarkScheduleOneServiceLarge places one service of 100,000 replicas
// (more than one per node) on 5,000 nodes.
func BenchmarkScheduleOneServiceLarge(b *testing.B) {
	benchSchedule(b, 5000, 100000, 100000, defaultOptions)
}

// BenchmarkScheduleExclusive places 20,000 tasks that want exclusive CPUs
// (1, 2 or 4 each, a third of them require-single-numa) on 1,000 nodes of 2
// sockets × 2 NUMA nodes × 8 cores × 2 threads (64 CPUs), 500 of them
// already holding 16 pinned CPUs: the cost of the CPU-set path.
func BenchmarkScheduleExclusive(b *testing.B) {
	topo := machineTopo(2, 2, 8, 2)
	var snap Snapshot
	for i := range 1000 {
		n := node(fmt.Sprintf("node-%05d", i), withTopo(topo, "0-1"), func(n *api.Node) { n.Resources.Memory = 256 << 30 })
		snap.Nodes = append(snap.Nodes, n)
		if i%2 == 0 {
			snap.Tasks = append(snap.Tasks, running(task(fmt.Sprintf("old-%05d", i), "old", i, exclusive(16, ""),
				allocated("32-47", "2")), n.ID, nil))
		}
	}
	var pending []api.Task
	for i := range 20000 {
		policy := ""
		if i%3 == 0 {
			policy = api.TopologyRequireSingleNUMA
		}
		svc := fmt.Sprintf("svc-%03d", i/100)
		pending = append(pending, task(fmt.Sprintf("t-%06d", i), svc, i%100+1, exclusive(float64([]int{1, 2, 4}[i%3]), policy)))
	}
	b.ReportAllocs()
	var plan Plan
	for b.Loop() {
		plan = Schedule(snap, pending)
	}
	b.ReportMetric(float64(len(plan.Assignments))*float64(b.N)/b.Elapsed().Seconds(), "placements/s")
	b.ReportMetric(float64(len(plan.Unplaced)), "unplaced")
}
