// Package scheduler decides where tasks run. Schedule is a pure function from
// a snapshot of the cluster (nodes and the tasks holding resources on them)
// and the pending tasks to a plan: the node, host ports and (for exclusive
// and per-unit tasks) CPU set of each task, or a readable reason why it
// cannot be placed yet.
//
// The package must not read or write the store, start goroutines, read the
// clock or log: watching the store, committing plans with compare-and-swap and
// re-planning on conflict belong to the worker that calls Schedule. Keeping
// placement pure makes it deterministic, testable without a store and safe to
// call from any goroutine. It never modifies its arguments.
package scheduler

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/topology"
)

// The host port range used on a node whose PortRange is [0, 0].
const (
	DefaultPortMin = 20000
	DefaultPortMax = 32767
)

// Snapshot is what placement needs to know about the cluster.
type Snapshot struct {
	// Nodes are all registered nodes, in any order. A node ID that appears
	// twice is counted once (its first occurrence).
	Nodes []api.Node
	// Tasks are the tasks currently holding resources: NodeID set and status
	// not terminal. Tasks without a NodeID, with a terminal status, on an
	// unknown node, or that are also in the pending list are ignored.
	Tasks []api.Task
}

// Assignment places one task on one node.
type Assignment struct {
	TaskID string
	NodeID string
	// Ports maps each of the task's port names to its host port; nil when the
	// task has no ports.
	Ports map[string]int
	// Allocation is the CPU set the task is pinned to: its exclusive CPUs or
	// its unit's; nil for a task that runs on the node's shared pool.
	Allocation *api.CPUAllocation
}

// Unplaced is a pending task that fits no node now.
type Unplaced struct {
	TaskID string
	// Reason says why, for a person: it becomes the task's status message.
	Reason string
}

// Plan is the result of Schedule. Every pending task appears exactly once, in
// Assignments or in Unplaced, each list in placement order.
type Plan struct {
	Assignments []Assignment
	Unplaced    []Unplaced
}

// Schedule places the pending tasks on the snapshot's nodes.
//
// A node is eligible for a task when it is ready and active, offers the
// task's driver, satisfies every placement constraint, has room for the
// task's CPU and memory reservation (a node capacity of 0 means unknown and
// admits anything) and has a free host port for each of the task's ports. A
// task whose NodeID is already set (global mode) may only go to that node.
//
// Host ports: a port published in host mode (api.PublishHost) gets exactly
// its published number, which may lie outside the node's range, and needs a
// node where no task holds that number for its protocol; every other port
// is allocated from the node's range and holds its number for both
// protocols. So a node runs at most one task per host-mode port, and the
// extra tasks of a service with more replicas than eligible nodes stay
// unplaced ("host port tcp/18080 is taken on every eligible node").
//
// Tasks are placed in order of service ID, slot and task ID. Among eligible
// nodes Schedule picks the one with the fewest tasks of the same service,
// then the fewest tasks overall, then the lowest reserved CPU fraction, then
// the lowest node ID. Tasks placed earlier in the same call count for later
// ones.
//
// Placement.MaxReplicasPerNode (unpinned tasks) makes a node that holds that
// many tasks of the service (live in the snapshot or placed by this plan)
// ineligible; a rebalance move (Task.Move) is capped at Move.Below the same
// way, so it only goes where it improves the spread. Placement.Preferences (unpinned tasks) come before the spread
// order above: each "spread: node.labels.K" groups the statically eligible
// nodes (ready, active, with the driver, meeting the constraints) by their
// value of K, nodes without K forming one more group, and the task goes to
// the group holding the fewest tasks of the service; a second preference
// splits each group again, and so on. Only then do the node's own counts
// decide. A group whose nodes cannot take the task (resources, ports, the
// per-node cap) is skipped. Host ports are probed from a position derived from a hash of the task
// ID, so that separate Berth instances sharing a machine rarely collide.
//
// CPU sets: a task with cpu_policy exclusive also needs a node with a
// topology on which topology.Machine.Allocate finds it whole CPUs that are
// online, not reserved (Node.ReservedCPUs) and not pinned by any other task
// of the snapshot or of this plan; the assignment carries those CPUs. A
// per-unit task (Unit set, with its NodeID) is pinned to its unit's CPUs
// minus reserved ones, which must not be held by an exclusive task — nor by
// any pinned task when it is exclusive itself. A node that cannot give a
// task its CPUs is ineligible for it, and the reason says how many are
// free. Tasks without either never look at a topology.
//
// Pending task IDs must be unique. The result depends only on the arguments.
//
// Cost: tasks sharing service, driver, constraints and demand form a group;
// each group scans the nodes once and keeps its best candidates in a heap,
// so a call costs about O(groups × nodes + tasks × log nodes).
func Schedule(snap Snapshot, pending []api.Task) Plan {
	return schedule(snap, pending, defaultOptions)
}

// options are tuning knobs that do not change the plan, only how it is
// computed; tests vary them to cover every code path.
type options struct {
	// maxCandidates caps the nodes a group keeps from one scan (0: no cap).
	// A small cap forces rescans.
	maxCandidates int
}

var defaultOptions = options{}

// nodeState is what placement tracks about one node during a call, in one
// cache line. The parts of the spread key a scan compares first (total and
// CPU fraction) live in the scheduler's dense arrays instead.
type nodeState struct {
	ver       uint32 // bumped on every placement, to detect stale heap entries
	freePorts int32  // free host ports; -1 until the port set is built
	cpu       int64  // reserved milli-CPUs
	cpuCap    int64  // capacity in milli-CPUs; 0 = unknown
	mem       int64  // reserved bytes
	memCap    int64  // capacity in bytes; 0 = unknown
	ports     *portSet
}

// lacksCPU reports whether the node has less than need milli-CPUs free.
// A zero need always fits, and so does any need on a node of unknown
// capacity.
func (st *nodeState) lacksCPU(need int64) bool {
	return need > 0 && st.cpuCap > 0 && need > st.cpuCap-st.cpu
}

// lacksMem is lacksCPU for memory.
func (st *nodeState) lacksMem(need int64) bool {
	return need > 0 && st.memCap > 0 && need > st.memCap-st.mem
}

// satAdd adds non-negative a and b, saturating instead of overflowing, so
// absurd reservations cannot wrap around into free capacity.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// service tracks the tasks of one service that has pending tasks.
type service struct {
	counts map[int32]int32 // node → tasks of this service on it
	left   int             // pending tasks of the service not yet processed
}

func (s *service) count(n int32) int32 { return s.counts[n] }

// demand is what one task needs: a filter (static eligibility) plus the
// resources that change as tasks are placed. Tasks with the same demand share
// a filter and an explanation cache.
type demand struct {
	filter *filter
	cpu    int64 // milli-CPUs
	mem    int64 // bytes
	nports int   // ports allocated from the node's range
	// host are the host-mode ports: their numbers exactly, in spec order.
	host []hostPort

	// exclusive is set for cpu_policy exclusive; excl is then the number of
	// CPUs an unpinned (or global) task gets, and policy its topology.
	exclusive bool
	excl      int
	policy    string

	// maxPer is Placement.MaxReplicasPerNode (0: no cap); prefs are the
	// label keys of the spread preferences, in order.
	maxPer int32
	prefs  []string

	reason      string
	reasonStamp uint64
	reasonSet   bool
}

// group is the pending tasks sharing service, driver, constraints and
// demand: they scan the nodes once and are placed from one heap.
type group struct {
	svc    *service
	demand *demand
	err    error // constraints do not parse
	left   int   // unpinned tasks not yet processed

	// heap holds the best candidates found by the last scan. bound is the
	// best fitting node the scan left out (if bounded): a candidate that is
	// still better than bound is the best node overall, because keys only
	// grow during a call.
	scanned bool
	heap    []entry
	bound   entry
	bounded bool
}

type scheduler struct {
	opts      options
	nodes     []nodeState // sorted by node ID: index order is ID order
	api       []*api.Node // the node of each nodeState
	ids       []string    // the ID of each node
	total     []int32     // tasks on each node
	frac      []float64   // reserved CPU fraction of each node; 0 if its capacity is unknown
	byID      map[string]int32
	services  map[string]*service
	filters   map[string]*filter
	demands   map[string]*demand
	snapPorts [][]heldPort // host ports held per node; only when a pending task has ports
	placed    uint64       // placements so far in this call
	svcCount  []int32      // scratch for scan: the scanned service's tasks per node
	spare     []entry      // a finished group's heap, for reuse
	// topo is each node's CPU state; nil unless a pending task needs CPU
	// sets (see cpus.go).
	topo     []*nodeTopo
	machines map[string]machineEntry
}

func schedule(snap Snapshot, pending []api.Task, opts options) Plan {
	plan := Plan{}
	if len(pending) == 0 {
		return plan
	}
	s := &scheduler{
		opts:     opts,
		services: map[string]*service{},
		filters:  map[string]*filter{},
		demands:  map[string]*demand{},
	}
	s.loadNodes(snap.Nodes)
	pending = capMoves(pending)

	items := s.groupTasks(pending, placementOrder(pending))
	s.loadTasks(snap.Tasks, pending)

	plan.Assignments = make([]Assignment, 0, len(pending))
	for k := range items {
		it := &items[k]
		g := it.group
		g.svc.left--
		var n int32
		var reason string
		var alloc *api.CPUAllocation
		if it.node != "" {
			n, reason, alloc = s.pinned(it, g)
		} else {
			n, reason = s.pick(g)
			if g.left--; g.left == 0 && cap(g.heap) > cap(s.spare) {
				s.spare, g.heap = g.heap, nil
			}
		}
		if n < 0 {
			plan.Unplaced = append(plan.Unplaced, Unplaced{TaskID: it.id, Reason: reason})
			continue
		}
		if it.node == "" && g.demand.excl > 0 {
			a, err := s.allocate(n, g.demand)
			if err != nil {
				// Counting said it fits; only a request Allocate refuses
				// outright (an unknown topology policy) gets here.
				plan.Unplaced = append(plan.Unplaced, Unplaced{TaskID: it.id, Reason: "cannot allocate exclusive CPUs: " + err.Error()})
				continue
			}
			alloc = apiAllocation(a)
		}
		plan.Assignments = append(plan.Assignments, Assignment{
			TaskID:     it.id,
			NodeID:     s.ids[n],
			Ports:      s.place(n, it, g, alloc),
			Allocation: alloc,
		})
	}
	return plan
}

// placementOrder returns the indexes of pending in placement order: by
// service ID, slot, task ID (and index, for duplicates). It buckets the
// tasks by service rank first, so the comparison sort runs on one service
// at a time and compares small keys rather than the tasks themselves.
func placementOrder(pending []api.Task) []int32 {
	rank := map[string]int32{}
	var names []string
	svc := make([]int32, len(pending))
	for i := range pending {
		id := pending[i].ServiceID
		r, ok := rank[id]
		if !ok {
			r = int32(len(names))
			rank[id] = r
			names = append(names, id)
		}
		svc[i] = r
	}
	byName := make([]int32, len(names))
	for i := range byName {
		byName[i] = int32(i)
	}
	slices.SortFunc(byName, func(a, b int32) int { return strings.Compare(names[a], names[b]) })
	// start[r] is where the service of rank r begins in the order.
	start := make([]int, len(names)+1)
	sorted := make([]int32, len(names))
	for pos, r := range byName {
		sorted[r] = int32(pos)
	}
	for i := range svc {
		svc[i] = sorted[svc[i]]
		start[svc[i]+1]++
	}
	for r := range names {
		start[r+1] += start[r]
	}
	type key struct {
		slot int
		id   string
		idx  int32
	}
	keys := make([]key, len(pending))
	next := slices.Clone(start[:len(names)])
	for i := range pending {
		r := svc[i]
		keys[next[r]] = key{slot: pending[i].Slot, id: pending[i].ID, idx: int32(i)}
		next[r]++
	}
	for r := range names {
		slices.SortFunc(keys[start[r]:start[r+1]], func(a, b key) int {
			if a.slot != b.slot {
				return cmp.Compare(a.slot, b.slot)
			}
			if c := strings.Compare(a.id, b.id); c != 0 {
				return c
			}
			return cmp.Compare(a.idx, b.idx)
		})
	}
	order := make([]int32, len(keys))
	for i := range keys {
		order[i] = keys[i].idx
	}
	return order
}

// loadNodes indexes the nodes by ID, in ID order.
func (s *scheduler) loadNodes(nodes []api.Node) {
	idx := make([]int, len(nodes))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return strings.Compare(nodes[a].ID, nodes[b].ID) })
	s.nodes = make([]nodeState, 0, len(nodes))
	s.api = make([]*api.Node, 0, len(nodes))
	s.ids = make([]string, 0, len(nodes))
	s.total = make([]int32, 0, len(nodes))
	s.frac = make([]float64, 0, len(nodes))
	s.byID = make(map[string]int32, len(nodes))
	for _, i := range idx {
		n := &nodes[i]
		if _, dup := s.byID[n.ID]; dup {
			continue
		}
		s.byID[n.ID] = int32(len(s.nodes))
		s.api = append(s.api, n)
		s.ids = append(s.ids, n.ID)
		s.total = append(s.total, 0)
		s.frac = append(s.frac, 0)
		s.nodes = append(s.nodes, nodeState{
			freePorts: -1,
			cpuCap:    milliCPUs(n.Resources.CPUs),
			memCap:    max(int64(n.Resources.Memory), 0),
		})
	}
}

// item is what placement needs of one pending task, copied out of the task
// (in placement order, while it is in cache) so that the main loop does not
// touch the large api.Task again.
type item struct {
	group *group
	id    string
	node  string // pinned node, or ""
	unit  string // per-unit task's unit, or ""
	ports []api.PortSpec
}

// groupTasks assigns each pending task (in placement order) to its group and
// counts what is left to place per service and group.
func (s *scheduler) groupTasks(pending []api.Task, order []int32) []item {
	items := make([]item, len(order))
	byKey := map[string]*group{}
	var prev *api.Task
	var g *group
	var key strings.Builder
	for k, i := range order {
		t := &pending[i]
		if prev == nil || !sameGroup(prev, t) {
			key.Reset()
			key.WriteString(t.ServiceID)
			key.WriteByte(0)
			writeDemandKey(&key, t)
			var ok bool
			if g, ok = byKey[key.String()]; !ok {
				g = s.newGroup(t)
				byKey[key.String()] = g
			}
		}
		prev = t
		items[k] = item{group: g, id: t.ID, node: t.NodeID, unit: t.Unit, ports: t.Spec.Ports}
		g.svc.left++
		if t.NodeID == "" {
			g.left++
		}
	}
	return items
}

func (s *scheduler) newGroup(t *api.Task) *group {
	svc := s.services[t.ServiceID]
	if svc == nil {
		svc = &service{counts: map[int32]int32{}}
		s.services[t.ServiceID] = svc
	}
	g := &group{svc: svc}
	cons := make([]api.Constraint, 0, len(t.Placement.Constraints))
	for _, text := range t.Placement.Constraints {
		c, err := api.ParseConstraint(text)
		if err != nil {
			g.err = err
			return g
		}
		cons = append(cons, c)
	}
	driver := driverOf(t)
	var key strings.Builder
	key.WriteString(driver)
	for _, c := range cons {
		key.WriteByte(0)
		key.WriteString(c.String())
	}
	f := s.filters[key.String()]
	if f == nil {
		f = newFilter(driver, cons)
		s.filters[key.String()] = f
	}
	cpu, mem, nports := needs(t)
	key.WriteByte(1)
	key.WriteString(strconv.FormatInt(cpu, 10))
	key.WriteByte(0)
	key.WriteString(strconv.FormatInt(mem, 10))
	key.WriteByte(0)
	key.WriteString(strconv.Itoa(nports))
	writeHostPortsKey(&key, t)
	writeCPUPolicyKey(&key, t)
	writePlacementKey(&key, t)
	if t.Placement.MaxReplicasPerNode > 0 {
		// The explanation counts this service's tasks: not shared.
		key.WriteByte(0)
		key.WriteString(t.ServiceID)
	}
	d := s.demands[key.String()]
	if d == nil {
		d = &demand{filter: f, cpu: cpu, mem: mem, nports: nports, host: hostPorts(t)}
		if t.NodeID == "" {
			d.maxPer, d.prefs = maxPerNode(t), spreadKeys(t)
		}
		if r := t.Spec.Resources; r.Exclusive() {
			d.exclusive, d.policy = true, r.Topology
			if t.Unit == "" {
				d.excl = exclusiveCPUs(r)
			}
		}
		s.demands[key.String()] = d
	}
	g.demand = d
	return g
}

// sameGroup reports whether b belongs to a's group.
func sameGroup(a, b *api.Task) bool {
	if a.ServiceID != b.ServiceID || driverOf(a) != driverOf(b) ||
		!samePorts(a.Spec.Ports, b.Spec.Ports) ||
		a.Spec.Resources != b.Spec.Resources || (a.Unit == "") != (b.Unit == "") {
		return false
	}
	return slices.Equal(a.Placement.Constraints, b.Placement.Constraints) &&
		a.Placement.MaxReplicasPerNode == b.Placement.MaxReplicasPerNode &&
		slices.Equal(a.Placement.Preferences, b.Placement.Preferences) &&
		(a.NodeID == "") == (b.NodeID == "")
}

// writePlacementKey separates demands by per-node cap and preferences, and
// pinned tasks (which ignore both) from unpinned ones.
func writePlacementKey(b *strings.Builder, t *api.Task) {
	p := t.Placement
	if p.MaxReplicasPerNode == 0 && len(p.Preferences) == 0 {
		return
	}
	b.WriteByte(3)
	b.WriteString(strconv.Itoa(p.MaxReplicasPerNode))
	for _, pref := range p.Preferences {
		b.WriteByte(0)
		b.WriteString(pref.Spread)
	}
	if t.NodeID != "" {
		b.WriteString("\x00pinned")
	}
}

// maxPerNode is a task's per-node cap; a negative one counts as none.
func maxPerNode(t *api.Task) int32 {
	return int32(min(max(t.Placement.MaxReplicasPerNode, 0), math.MaxInt32))
}

// spreadKeys are the label keys of a task's spread preferences. One that
// does not parse spreads over a label no node has: every node is then in
// the one group of nodes without it.
func spreadKeys(t *api.Task) []string {
	var keys []string
	for _, p := range t.Placement.Preferences {
		k, err := api.ParseSpread(p.Spread)
		if err != nil {
			k = "\x00invalid"
		}
		keys = append(keys, k)
	}
	return keys
}

func writeDemandKey(b *strings.Builder, t *api.Task) {
	b.WriteString(driverOf(t))
	for _, c := range t.Placement.Constraints {
		b.WriteByte(0)
		b.WriteString(c)
	}
	cpu, mem, nports := needs(t)
	b.WriteByte(1)
	b.WriteString(strconv.FormatInt(cpu, 10))
	b.WriteByte(0)
	b.WriteString(strconv.FormatInt(mem, 10))
	b.WriteByte(0)
	b.WriteString(strconv.Itoa(nports))
	writeHostPortsKey(b, t)
	writeCPUPolicyKey(b, t)
	writePlacementKey(b, t)
}

// writeCPUPolicyKey separates demands by CPU policy, and per-unit tasks
// (whose exclusive CPUs come from their unit) from the others.
func writeCPUPolicyKey(b *strings.Builder, t *api.Task) {
	r := t.Spec.Resources
	if !r.Exclusive() && t.Unit == "" {
		return
	}
	b.WriteByte(2)
	b.WriteString(r.CPUPolicy)
	b.WriteByte(0)
	b.WriteString(r.Topology)
	if t.Unit != "" {
		b.WriteString("\x00unit")
	}
}

// loadTasks charges the snapshot's tasks to their nodes.
func (s *scheduler) loadTasks(tasks []api.Task, pending []api.Task) {
	// A pinned pending task has a NodeID and a live status, so a caller may
	// also list it among the snapshot's tasks: do not count it twice.
	var pendingPinned map[string]bool
	anyPorts, anyCPUSet := false, false
	for i := range pending {
		if needsCPUSet(&pending[i]) {
			anyCPUSet = true
		}
		if pending[i].NodeID != "" {
			if pendingPinned == nil {
				pendingPinned = map[string]bool{}
			}
			pendingPinned[pending[i].ID] = true
		}
		if len(pending[i].Spec.Ports) > 0 {
			anyPorts = true
		}
	}
	if anyPorts {
		s.snapPorts = make([][]heldPort, len(s.nodes))
	}
	var lastSvcID string
	var lastSvc *service
	for i := range tasks {
		t := &tasks[i]
		if t.NodeID == "" || t.Status.State.Terminal() || pendingPinned[t.ID] {
			continue
		}
		n, ok := s.byID[t.NodeID]
		if !ok {
			continue
		}
		st := &s.nodes[n]
		cpu, mem, _ := needs(t)
		s.total[n]++
		st.cpu = satAdd(st.cpu, cpu)
		st.mem = satAdd(st.mem, mem)
		if lastSvc == nil || t.ServiceID != lastSvcID {
			lastSvcID, lastSvc = t.ServiceID, s.services[t.ServiceID]
		}
		if lastSvc != nil {
			lastSvc.counts[n]++
		}
		if anyPorts && len(t.Ports) > 0 {
			s.snapPorts[n] = heldPorts(s.snapPorts[n], t)
		}
		if anyCPUSet && t.Allocation != nil {
			s.hold(n, t)
		}
	}
	for i := range s.nodes {
		s.setFrac(int32(i))
	}
}

// pick chooses a node for the next unpinned task of g, or returns -1 and the
// reason there is none.
func (s *scheduler) pick(g *group) (int32, string) {
	if g.err != nil {
		return -1, "invalid placement constraint: " + g.err.Error()
	}
	if len(s.nodes) == 0 {
		return -1, "no nodes registered"
	}
	if len(g.demand.prefs) > 0 {
		return s.pickSpread(g)
	}
	for rescanned := false; ; rescanned = true {
		if !g.scanned {
			s.scan(g)
		}
		n := s.top(g)
		switch {
		case n >= 0 && (!g.bounded || g.heap[0].less(&g.bound) || rescanned):
			return n, ""
		case n < 0 && (!g.bounded || rescanned):
			return -1, s.explain(g)
		}
		// The best candidate is no better than a node the scan left out:
		// other placements raised the candidates' keys. Look again. A fresh
		// scan's best candidate beats every node it leaves out, so this
		// happens at most once per pick.
		g.scanned = false
	}
}

// scan fills g's heap with the best fitting nodes for its demand, as many as
// its service has tasks left to place. Each placement raises the key of one
// node, so however the service's groups interleave, a candidate set that
// large stays ahead of the nodes left out and g never needs another scan.
func (s *scheduler) scan(g *group) {
	d := g.demand
	f := s.filter(d.filter)
	k := g.svc.left + 1 // the service's tasks still to place, this one included
	if s.opts.maxCandidates > 0 {
		k = min(k, s.opts.maxCandidates)
	}
	if s.svcCount == nil {
		s.svcCount = make([]int32, len(s.nodes))
	}
	counts, total, frac := s.svcCount, s.total, s.frac
	for n, c := range g.svc.counts {
		counts[n] = c
	}
	h := g.heap[:0]
	if h == nil {
		h, s.spare = s.spare[:0], nil
	}
	if want := min(k, len(f.eligible)); cap(h) < want {
		h = make([]entry, 0, want)
	}
	g.bounded = false
	for _, n := range f.eligible {
		// Most nodes lose to the bound: skip them before the fit check.
		// (The bound is never better than h[0], so such a node would be
		// left out either way.)
		e := entry{svc: counts[n], total: total[n], node: n, frac: frac[n]}
		if g.bounded && !e.less(&g.bound) {
			continue
		}
		if d.maxPer > 0 && counts[n] >= d.maxPer {
			continue // only grows: it never fits again in this call
		}
		if !s.fits(d, n) {
			continue
		}
		e.ver = s.nodes[n].ver
		if len(h) < k {
			h = append(h, e)
			upMax(h, len(h)-1)
			continue
		}
		// h is full and h[0] is its worst: e or h[0] is left out.
		if e.less(&h[0]) {
			e, h[0] = h[0], e
			downMax(h, 0)
		}
		if !g.bounded || e.less(&g.bound) {
			g.bound, g.bounded = e, true
		}
	}
	for n := range g.svc.counts {
		counts[n] = 0
	}
	heapify(h)
	g.heap, g.scanned = h, true
}

// top returns the best candidate in g's heap, or -1 if it is empty. Stale
// entries (their node took a task since they were keyed) are re-keyed, or
// dropped if the node no longer fits; placements only ever add load, so a
// re-keyed entry only moves down and a dropped node never fits again.
func (s *scheduler) top(g *group) int32 {
	for len(g.heap) > 0 {
		e := &g.heap[0]
		if e.ver == s.nodes[e.node].ver {
			return e.node
		}
		if !s.fits(g.demand, e.node) || s.atMax(g, e.node) {
			pop(&g.heap)
			continue
		}
		*e = s.entryCount(e.node, g.svc.count(e.node))
		down(g.heap, 0)
	}
	return -1
}

// atMax reports whether node n holds as many tasks of g's service as its
// per-node cap allows.
func (s *scheduler) atMax(g *group, n int32) bool {
	return g.demand.maxPer > 0 && g.svc.count(n) >= g.demand.maxPer
}

// pickSpread chooses a node for a task with spread preferences. Group counts
// change with every placement on any node of a group, which the heap's
// per-node versions cannot track, so it scans every eligible node: first to
// count the service's tasks per group, then to find the least loaded group
// path and, within it, the best node by the usual order.
func (s *scheduler) pickSpread(g *group) (int32, string) {
	d := g.demand
	f := s.filter(d.filter)
	levels := len(d.prefs)
	// path[i] identifies node i's group at every level: the label values
	// down to that level.
	groupOf := func(n int32, level int) string {
		var b strings.Builder
		for l := 0; l <= level; l++ {
			v, ok := s.api[n].Labels[d.prefs[l]]
			if ok {
				b.WriteByte(1)
				b.WriteString(v)
			} else {
				b.WriteByte(0)
			}
			b.WriteByte(0)
		}
		return b.String()
	}
	counts := make([]map[string]int32, levels)
	for l := range counts {
		counts[l] = map[string]int32{}
	}
	paths := make([][]string, len(f.eligible))
	for i, n := range f.eligible {
		paths[i] = make([]string, levels)
		c := g.svc.count(n)
		for l := 0; l < levels; l++ {
			p := groupOf(n, l)
			paths[i][l] = p
			counts[l][p] += c
		}
	}
	best, bestI := int32(-1), -1
	var bestE entry
	for i, n := range f.eligible {
		if !s.fits(d, n) || s.atMax(g, n) {
			continue
		}
		e := s.entryCount(n, g.svc.count(n))
		if best >= 0 {
			better, decided := false, false
			for l := 0; l < levels && !decided; l++ {
				a, b := counts[l][paths[i][l]], counts[l][paths[bestI][l]]
				if a != b {
					better, decided = a < b, true
				}
			}
			if !decided {
				better = e.less(&bestE)
			}
			if !better {
				continue
			}
		}
		best, bestI, bestE = n, i, e
	}
	if best < 0 {
		return -1, s.explain(g)
	}
	return best, ""
}

// entryCount keys node n by the spread order, given the number of tasks of
// the service being placed that it holds.
func (s *scheduler) entryCount(n int32, svcCount int32) entry {
	return entry{svc: svcCount, total: s.total[n], node: n, ver: s.nodes[n].ver, frac: s.frac[n]}
}

// setFrac updates node n's reserved CPU fraction.
func (s *scheduler) setFrac(n int32) {
	if st := &s.nodes[n]; st.cpuCap > 0 {
		s.frac[n] = float64(st.cpu) / float64(st.cpuCap)
	}
}

// fits reports whether node n has room for a task of demand d. It does not
// check the filter.
func (s *scheduler) fits(d *demand, n int32) bool {
	st := &s.nodes[n]
	if st.lacksCPU(d.cpu) {
		return false
	}
	if d.excl > 0 && s.lacksExclusive(d, n) {
		return false
	}
	if st.lacksMem(d.mem) {
		return false
	}
	ok, inRange, _ := s.hostFit(d, n)
	return ok && (d.nports == 0 || s.freePorts(n)-inRange >= d.nports)
}

// place charges the task to node n, records its CPU allocation (if any)
// and allocates its host ports.
func (s *scheduler) place(n int32, it *item, g *group, alloc *api.CPUAllocation) map[string]int {
	if alloc != nil {
		cpus, _ := topology.Parse(alloc.CPUs) // made by topology: valid
		s.takeCPUs(n, topology.Allocation{CPUs: cpus}, g.demand.exclusive)
	}
	st := &s.nodes[n]
	s.total[n]++
	st.ver++
	st.cpu = satAdd(st.cpu, g.demand.cpu)
	st.mem = satAdd(st.mem, g.demand.mem)
	s.setFrac(n)
	g.svc.counts[n]++
	s.placed++
	if len(it.ports) == 0 {
		return nil
	}
	ps := s.portSet(n)
	ports := make(map[string]int, len(it.ports))
	// Host-mode ports first: the allocated ones must not take their
	// numbers.
	for i := range it.ports {
		if p := &it.ports[i]; isHostPort(p) {
			if ps.hold(int32(p.Publish), protoBit(p.Protocol)) {
				st.freePorts--
			}
			ports[p.Name] = p.Publish
		}
	}
	if g.demand.nports == 0 {
		return ports
	}
	pos := int(hashID(it.id) % uint64(ps.size))
	for i := range it.ports {
		if p := &it.ports[i]; !isHostPort(p) {
			i := ps.take(pos)
			ports[p.Name] = ps.lo + i
			pos = i + 1
		}
	}
	st.freePorts -= int32(g.demand.nports)
	return ports
}

// pinned checks the one node a pinned task may go to, and chooses its CPU
// allocation when it needs one.
func (s *scheduler) pinned(it *item, g *group) (int32, string, *api.CPUAllocation) {
	if g.err != nil {
		return -1, "invalid placement constraint: " + g.err.Error(), nil
	}
	if len(s.nodes) == 0 {
		return -1, "no nodes registered", nil
	}
	node := it.node
	n, ok := s.byID[node]
	if !ok {
		return -1, "node " + node + " is not registered", nil
	}
	d := g.demand
	st := &s.nodes[n]
	code := d.filter.check(s.api[n])
	prefix := "node " + node + " "
	var why string
	switch {
	case code != codeOK && code < codeConstraint:
		return -1, prefix + staticReason(code, s.api[n], d.filter, true), nil
	case it.unit == "" && d.excl > 0:
		why = s.pinnedExclusiveReason(d, n)
	}
	switch {
	case why != "":
		return -1, prefix + why, nil
	case st.lacksCPU(d.cpu):
		return -1, prefix + "lacks cpu (need " + formatCPU(d.cpu) + ", free " + formatCPU(max(st.cpuCap-st.cpu, 0)) + ")", nil
	case st.lacksMem(d.mem):
		return -1, prefix + "lacks memory (need " + api.ByteSize(d.mem).String() + ", free " + api.ByteSize(max(st.memCap-st.mem, 0)).String() + ")", nil
	case code >= codeConstraint:
		return -1, prefix + "fails constraint " + d.filter.cons[code-codeConstraint].String(), nil
	}
	ok, inRange, taken := s.hostFit(d, n)
	switch free := s.freePorts(n) - inRange; {
	case !ok:
		return -1, prefix + "has host port " + taken.String() + " taken", nil
	case d.nports > 0 && free < d.nports:
		return -1, prefix + "lacks free ports (need " + strconv.Itoa(d.nports) + ", free " + strconv.Itoa(max(free, 0)) + ")", nil
	}
	switch {
	case it.unit != "":
		a, why := s.unitAllocation(n, it.unit, d)
		if why != "" {
			return -1, prefix + why, nil
		}
		return n, "", apiAllocation(a)
	case d.excl > 0:
		a, _ := s.allocate(n, d) // pinnedExclusiveReason checked it
		return n, "", apiAllocation(a)
	}
	return n, "", nil
}

// driverOf is the task's driver, defaulting as api.ServiceSpec.Normalize does.
func driverOf(t *api.Task) string {
	if t.Spec.Driver == "" {
		return api.DriverProcess
	}
	return t.Spec.Driver
}

// needs returns what a task reserves: milli-CPUs, bytes and host ports to
// allocate from the node's range (its host-mode ports are not counted).
func needs(t *api.Task) (cpu, mem int64, nports int) {
	nports = len(t.Spec.Ports)
	for i := range t.Spec.Ports {
		if isHostPort(&t.Spec.Ports[i]) {
			nports--
		}
	}
	return milliCPUs(t.Spec.Resources.CPUs), max(int64(t.Spec.Resources.Memory), 0), nports
}

// milliCPUs converts CPUs to whole milli-CPUs so that sums are exact.
// Negative and NaN values count as 0.
func milliCPUs(c float64) int64 {
	if !(c > 0) {
		return 0
	}
	if c > 1e12 {
		return 1e15 // far beyond any node; keeps the conversion defined
	}
	return int64(c*1000 + 0.5)
}

func formatCPU(milli int64) string {
	return strconv.FormatFloat(float64(milli)/1000, 'f', -1, 64)
}

// hashID is FNV-1a: stable across processes and releases, unlike maphash.
func hashID(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
