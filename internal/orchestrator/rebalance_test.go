package orchestrator

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/scheduler"
	"pgregory.net/rapid"
)

// moveFits reports whether a fake scheduler may put t on node: a rebalance
// move only goes to a node holding fewer than Move.Below live tasks of its
// service, as the real scheduler does (scheduler.capMoves).
func moveFits(st State, t api.Task, node string) bool {
	if t.Move == nil {
		return true
	}
	n := 0
	for _, o := range st.Tasks {
		if o.ServiceID == t.ServiceID && o.NodeID == node && !o.Status.State.Terminal() {
			n++
		}
	}
	return n < t.Move.Below
}

// settledTask is a task of svc that has served on node for an hour.
func settledTask(svc api.Service, id string, slot int, node string) api.Task {
	t := task(svc, id, slot, api.TaskRunning)
	t.NodeID = node
	t.CreatedAt = t0.Add(-2 * time.Hour)
	t.Status.StartedAt = t0.Add(-time.Hour)
	t.Status.HealthySince = t0.Add(-time.Hour)
	t.Status.Timestamp = t0.Add(-time.Hour)
	return t
}

// spread makes settled tasks of svc, slot 1 up: n[0] on n1, n[1] on n2...
func spread(svc api.Service, n ...int) []api.Task {
	var out []api.Task
	slot := 1
	for i, c := range n {
		for range c {
			out = append(out, settledTask(svc, fmt.Sprintf("old%d", slot), slot, fmt.Sprintf("n%d", i+1)))
			slot++
		}
	}
	return out
}

func withNode(st State, id, availability string, labels map[string]string) State {
	st.Nodes[id] = api.Node{ID: id, Hostname: id, Status: api.NodeReady, Availability: availability, Drivers: []string{"process"}, Labels: labels}
	return st
}

// TestRebalanceDecisions: which moves one reconcile makes, service by
// service state.
func TestRebalanceDecisions(t *testing.T) {
	par := func(n int) func(*api.ServiceSpec) {
		return func(sp *api.ServiceSpec) { sp.Update = &api.UpdatePolicy{Parallelism: &n} }
	}
	off := func(sp *api.ServiceSpec) { no := false; sp.Rebalance = &no }
	type move struct {
		slot    int
		from    string
		below   int
		request uint64
	}
	cases := []struct {
		name string
		svc  api.Service
		mut  func(svc *api.Service, st *State)
		want []move
		wake bool
		done string // the request's message, when it is finished
	}{
		{name: "node returned: one move per batch", svc: service("web", 4),
			want: []move{{slot: 4, from: "n1", below: 3}}},
		{name: "parallelism 2 moves two", svc: service("web", 4, par(2)),
			want: []move{{slot: 4, from: "n1", below: 2}, {slot: 3, from: "n1", below: 2}}},
		{name: "parallelism 0 moves all it takes", svc: service("web", 6, par(0)),
			mut:  func(_ *api.Service, st *State) { *st = withNode(*st, "n3", api.AvailabilityActive, nil) },
			want: []move{{slot: 6, from: "n1", below: 2}, {slot: 5, from: "n1", below: 2}, {slot: 4, from: "n1", below: 2}, {slot: 3, from: "n1", below: 2}}},
		{name: "two sources in one batch", svc: service("web", 10, par(0)),
			mut: func(svc *api.Service, st *State) {
				*st = withNode(*st, "n3", api.AvailabilityActive, nil)
				setTasks(st, spread(*svc, 5, 5))
			},
			want: []move{{slot: 5, from: "n1", below: 3}, {slot: 10, from: "n2", below: 4}, {slot: 4, from: "n1", below: 3}}},
		{name: "balanced", svc: service("web", 4), mut: func(svc *api.Service, st *State) { setTasks(st, spread(*svc, 2, 2)) }},
		{name: "off by one is balanced", svc: service("web", 5), mut: func(svc *api.Service, st *State) { setTasks(st, spread(*svc, 3, 2)) }},
		{name: "opted out", svc: service("web", 4, off)},
		{name: "opted out but asked", svc: service("web", 4, off),
			mut:  func(svc *api.Service, _ *State) { svc.RebalanceStatus = &api.RebalanceStatus{Requested: 3, Done: 2} },
			want: []move{{slot: 4, from: "n1", below: 3, request: 3}}},
		{name: "asked and balanced: request done", svc: service("web", 4, off),
			mut: func(svc *api.Service, st *State) {
				svc.RebalanceStatus = &api.RebalanceStatus{Requested: 1}
				setTasks(st, spread(*svc, 2, 2))
			},
			done: "balanced: 2 nodes hold 2 tasks each"},
		{name: "update in flight", svc: service("web", 4),
			mut: func(svc *api.Service, _ *State) {
				svc.UpdateStatus = &api.UpdateStatus{State: api.UpdatePaused, FromVersion: 1, ToVersion: 1}
			}},
		{name: "update completed", svc: service("web", 4),
			mut: func(svc *api.Service, _ *State) {
				svc.UpdateStatus = &api.UpdateStatus{State: api.UpdateCompleted, FromVersion: 1, ToVersion: 1}
			},
			want: []move{{slot: 4, from: "n1", below: 3}}},
		{name: "global", svc: service("web", 0, func(sp *api.ServiceSpec) { sp.Mode, sp.Replicas = api.ModeGlobal, nil }),
			mut: func(svc *api.Service, st *State) {
				a, b := settledTask(*svc, "g1", 0, "n1"), settledTask(*svc, "g2", 0, "n2")
				setTasks(st, []api.Task{a, b})
			}},
		{name: "constraints pin the tasks", svc: service("web", 4, func(sp *api.ServiceSpec) {
			sp.Placement.Constraints = []string{"node.labels.zone == a"}
		})},
		{name: "placement preferences", svc: service("web", 4, func(sp *api.ServiceSpec) {
			sp.Placement.Preferences = []api.PlacementPreference{{Spread: "node.labels.zone"}}
		})},
		{name: "placement preferences, asked", svc: service("web", 4, func(sp *api.ServiceSpec) {
			sp.Placement.Preferences = []api.PlacementPreference{{Spread: "node.labels.zone"}}
		}), mut: func(svc *api.Service, _ *State) { svc.RebalanceStatus = &api.RebalanceStatus{Requested: 1} },
			done: "not rebalanced: the service spreads by placement.preferences"},
		{name: "other node paused", svc: service("web", 4),
			mut: func(_ *api.Service, st *State) { *st = withNode(*st, "n2", api.AvailabilityPause, nil) }},
		{name: "other node drained", svc: service("web", 4),
			mut: func(_ *api.Service, st *State) { *st = withNode(*st, "n2", api.AvailabilityDrain, nil) }},
		{name: "other node down", svc: service("web", 4),
			mut: func(_ *api.Service, st *State) {
				n := st.Nodes["n2"]
				n.Status = api.NodeDown
				st.Nodes["n2"] = n
			}},
		{name: "a slot does not serve", svc: service("web", 4),
			mut: func(_ *api.Service, st *State) {
				tk := st.Tasks["old2"]
				tk.Status.State = api.TaskStarting
				st.Tasks["old2"] = tk
			}},
		{name: "a task still in its monitor window", svc: service("web", 4),
			mut: func(_ *api.Service, st *State) {
				tk := st.Tasks["old2"]
				tk.Status.HealthySince = t0.Add(-time.Second)
				st.Tasks["old2"] = tk
			},
			wake: true},
		{name: "a slot mid-move", svc: service("web", 4, par(3)),
			mut: func(svc *api.Service, st *State) {
				mv := settledTask(*svc, "mv", 4, "n2")
				mv.Status = api.TaskStatus{State: api.TaskStarting, Timestamp: t0}
				mv.Move = &api.TaskMove{From: "n1", Below: 3}
				mv.CreatedAt = t0
				st.Tasks["mv"] = mv
			}},
		{name: "a recent move failed: back off", svc: service("web", 4),
			mut: func(svc *api.Service, st *State) {
				mv := settledTask(*svc, "mv", 4, "")
				mv.DesiredState = api.TaskShutdown
				mv.Status = api.TaskStatus{State: api.TaskShutdown, Message: "no node", Timestamp: t0.Add(-time.Minute)}
				mv.Move = &api.TaskMove{From: "n1", Below: 3}
				mv.CreatedAt = t0.Add(-time.Minute)
				st.Tasks["mv"] = mv
			},
			wake: true},
		{name: "an old failed move", svc: service("web", 4),
			mut: func(svc *api.Service, st *State) {
				mv := settledTask(*svc, "mv", 4, "")
				mv.DesiredState = api.TaskShutdown
				mv.Status = api.TaskStatus{State: api.TaskShutdown, Message: "no node", Timestamp: t0.Add(-time.Hour)}
				mv.Move = &api.TaskMove{From: "n1", Below: 3}
				mv.CreatedAt = t0.Add(-time.Hour)
				st.Tasks["mv"] = mv
			},
			want: []move{{slot: 4, from: "n1", below: 3}}},
		{name: "a recent move that served is no failure", svc: service("web", 4),
			mut: func(svc *api.Service, st *State) {
				mv := settledTask(*svc, "mv", 4, "n2")
				mv.DesiredState = api.TaskShutdown
				mv.Status.State, mv.Status.Timestamp = api.TaskShutdown, t0.Add(-time.Second)
				mv.Move = &api.TaskMove{From: "n1", Below: 3}
				st.Tasks["mv"] = mv
			},
			want: []move{{slot: 4, from: "n1", below: 3}}},
		{name: "the asked move failed: request done", svc: service("web", 4),
			mut: func(svc *api.Service, st *State) {
				svc.RebalanceStatus = &api.RebalanceStatus{Requested: 1}
				mv := settledTask(*svc, "mv", 4, "")
				mv.DesiredState = api.TaskShutdown
				mv.Status = api.TaskStatus{State: api.TaskShutdown, Message: "no node", Timestamp: t0}
				mv.Move = &api.TaskMove{From: "n1", Below: 3, Request: 1}
				st.Tasks["mv"] = mv
			},
			done: "task mv could not move off node n1: no node"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			svc := c.svc
			st := state([]api.Service{svc}, spread(svc, svc.Spec.ReplicaCount())...)
			if c.mut != nil {
				c.mut(&svc, &st)
				st.Services[svc.ID] = svc
			}
			res := Reconcile(t0, st, Options{NewID: idGen()})
			var got []move
			for _, tk := range res.Creates {
				if tk.Move == nil {
					t.Fatalf("created a task that is not a move: %+v", tk)
				}
				if tk.Slot == 0 || tk.NodeID != "" || tk.DesiredState != api.TaskRunning || tk.Status.Message != pendingMessage {
					t.Fatalf("bad move task: %+v", tk)
				}
				got = append(got, move{slot: tk.Slot, from: tk.Move.From, below: tk.Move.Below, request: tk.Move.Request})
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("moves %+v, want %+v", got, c.want)
			}
			for _, u := range res.Updates {
				if u.ID != "mv" {
					t.Fatalf("touched a running task: %+v", u)
				}
			}
			if c.wake != !res.Wake.IsZero() {
				t.Fatalf("wake %v, want one: %v", res.Wake, c.wake)
			}
			var msg string
			for _, w := range res.Services {
				rs := w.Service.RebalanceStatus
				if rs == nil && w.Service.UpdateStatus != nil {
					continue // the update's progress
				}
				if rs == nil || rs.Done != rs.Requested || !rs.CompletedAt.Equal(t0) {
					t.Fatalf("bad service write: %+v", rs)
				}
				msg = rs.Message
			}
			if msg != c.done {
				t.Fatalf("request finished with %q, want %q", msg, c.done)
			}
		})
	}
}

func setTasks(st *State, ts []api.Task) {
	st.Tasks = map[string]api.Task{}
	for _, t := range ts {
		st.Tasks[t.ID] = t
	}
}

// TestRebalanceMoveInFlight: the old task serves until its replacement
// does; a replacement no node takes is dropped and the old task stays.
func TestRebalanceMoveInFlight(t *testing.T) {
	svc := service("web", 4)
	base := func(mv api.TaskStatus, node string) State {
		st := state([]api.Service{svc}, spread(svc, 4)...)
		m := settledTask(svc, "mv", 4, node)
		m.CreatedAt, m.Status, m.Move = t0, mv, &api.TaskMove{From: "n1", Below: 3}
		st.Tasks["mv"] = m
		return st
	}
	changed := func(res Result) string {
		var out []string
		for _, u := range res.Updates {
			out = append(out, u.ID+":"+string(u.DesiredState))
		}
		sort.Strings(out)
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		name   string
		status api.TaskStatus
		node   string
		want   string
	}{
		{"waiting for the scheduler", api.TaskStatus{State: api.TaskPending, Message: pendingMessage}, "", ""},
		{"starting", api.TaskStatus{State: api.TaskStarting}, "n2", ""},
		{"health check starting", api.TaskStatus{State: api.TaskRunning, Health: api.HealthStarting}, "n2", ""},
		{"serves", api.TaskStatus{State: api.TaskRunning, Health: api.HealthHealthy, HealthySince: t0}, "n2", "old4:shutdown"},
		{"no node", api.TaskStatus{State: api.TaskPending, Message: "at max_replicas_per_node 3"}, "", "mv:shutdown"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := run(base(c.status, c.node))
			if got := changed(res); got != c.want {
				t.Fatalf("changed %q, want %q", got, c.want)
			}
			if len(res.Creates) != 0 {
				t.Fatalf("created %+v", res.Creates)
			}
		})
	}
}

// TestRebalanceMoveLeftAlone: when the task a move was to replace ends
// before the move is placed, the move is the slot's only task: its cap is
// dropped, so that the slot is not left waiting for a better spread.
func TestRebalanceMoveLeftAlone(t *testing.T) {
	svc := service("web", 2)
	st := state([]api.Service{svc}, spread(svc, 2)...)
	old := st.Tasks["old2"]
	old.Status.State, old.Status.FinishedAt = api.TaskFailed, t0
	st.Tasks["old2"] = old
	m := task(svc, "mv", 2, api.TaskPending)
	m.NodeID, m.CreatedAt = "", t0
	m.Status.Message = "no suitable node (2 nodes: 2 at max_replicas_per_node 1)"
	m.Move = &api.TaskMove{From: "n1", Below: 1}
	st.Tasks["mv"] = m
	res := run(st)
	var got []string
	for _, u := range res.Updates {
		got = append(got, fmt.Sprintf("%s:%s:move=%v", u.ID, u.DesiredState, u.Move != nil))
	}
	sort.Strings(got)
	if want := "mv:running:move=false old2:shutdown:move=false"; strings.Join(got, " ") != want {
		t.Fatalf("updates %v, want %s", got, want)
	}
	if len(res.Creates) != 0 {
		t.Fatalf("created %+v", res.Creates)
	}
}

// schedulerPlace is the real scheduler as the simulation's: it places one
// pending task with everything else the simulation holds.
func schedulerPlace(s *sim, t api.Task) string {
	t.NodeID = "" // the simulation's default, not a pin
	nodes := make([]api.Node, 0, len(s.st.Nodes))
	for _, n := range s.st.Nodes {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	var held []api.Task
	for _, o := range s.st.Tasks {
		if o.NodeID != "" && !o.Status.State.Terminal() && o.ID != t.ID {
			held = append(held, o)
		}
	}
	plan := scheduler.Schedule(scheduler.Snapshot{Nodes: nodes, Tasks: held}, []api.Task{t})
	if len(plan.Assignments) == 1 {
		return plan.Assignments[0].NodeID
	}
	return ""
}

// counts is how many live tasks of id each node holds.
func (s *sim) counts(id string) map[string]int {
	out := map[string]int{}
	for n := range s.st.Nodes {
		out[n] = s.liveOn(id, n)
	}
	return out
}

// moves counts the rebalance moves of id created so far, and those that
// took over (their old task was shut down).
func (s *sim) moves(id string) (created int) {
	for _, t := range s.st.Tasks {
		if t.ServiceID == id && t.Move != nil {
			created++
		}
	}
	return created
}

// TestRebalanceAfterDrainReactivateAndJoin is the story with the
// real scheduler: 4 replicas on two nodes, one drained (all 4 on the
// other), reactivated, then a third node joins. The replicas spread back
// with the fewest moves, start-first (never fewer than 4 serve), and stay.
func TestRebalanceAfterDrainReactivateAndJoin(t *testing.T) {
	svc := service("web", 4, func(sp *api.ServiceSpec) {
		sp.Task.Env = map[string]string{"V": "1"}
		sp.Task.Health = healthCheck
	})
	s := newSim(t, svc)
	nodesSim(s, 2)
	s.place = schedulerPlace
	id := svc.ID
	if !s.until(50, func(s *sim) bool { return s.settled(id, "1") }) {
		t.Fatalf("did not settle:\n%s", s.describe(id))
	}
	if c := s.counts(id); c["n1"] != 2 || c["n2"] != 2 {
		t.Fatalf("not spread at first: %v", c)
	}
	s.check = func(s *sim, _ Result) {
		if n, _ := s.servingCount(id); n < 4 {
			s.fatalf("step %d: %d serving, want at least 4:\n%s", s.steps, n, s.describe(id))
		}
	}
	s.setAvailability("n2", api.AvailabilityDrain)
	if !s.until(100, func(s *sim) bool { return s.liveOn(id, "n2") == 0 && s.settled(id, "1") }) {
		t.Fatalf("drain did not finish:\n%s", s.describe(id))
	}
	s.setAvailability("n2", api.AvailabilityActive)
	if !s.until(200, func(s *sim) bool {
		c := s.counts(id)
		return c["n1"] == 2 && c["n2"] == 2 && s.settled(id, "1")
	}) {
		t.Fatalf("did not spread back after the reactivation: %v\n%s", s.counts(id), s.describe(id))
	}
	if m := s.moves(id); m != 2 {
		t.Fatalf("%d moves, want 2", m)
	}
	s.st.Nodes["n3"] = api.Node{ID: "n3", Hostname: "n3", Status: api.NodeReady, Availability: api.AvailabilityActive, Drivers: []string{"process"}}
	if !s.until(200, func(s *sim) bool {
		c := s.counts(id)
		return c["n3"] == 1 && s.settled(id, "1")
	}) {
		t.Fatalf("did not spread to the new node: %v\n%s", s.counts(id), s.describe(id))
	}
	if m := s.moves(id); m != 3 {
		t.Fatalf("%d moves, want 3", m)
	}
	for range 30 {
		if res := s.step(); len(res.Creates) > 0 {
			t.Fatalf("balanced service still moves: %+v", res.Creates)
		}
	}
}

// TestRebalanceConverges: with the real scheduler, whatever the nodes
// (count, constraints, capacity, per-node cap), replicas and parallelism,
// tasks piled up on one node by drains spread back once every node is
// active again: each move that takes over makes the sum of the squares of
// the per-node counts smaller by at least 2, the service never serves fewer
// than its replicas, the spread ends balanced over the nodes that can take
// the tasks, and then nothing moves.
func TestRebalanceConverges(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		nNodes := rapid.IntRange(1, 5).Draw(rt, "nodes")
		// Most draws have room for every task on n1, so that moves are
		// needed; some leave nodes too small or capped.
		replicas := rapid.IntRange(0, 10).Draw(rt, "replicas")
		par := rapid.IntRange(0, 3).Draw(rt, "parallelism")
		constrained := rapid.Bool().Draw(rt, "constrained")
		capped := rapid.SampledFrom([]int{0, 0, 0, 0, 3, 5}).Draw(rt, "max per node")
		cpus := rapid.SampledFrom([]int{0, 0, 0, 1, 2}).Draw(rt, "task cpus")
		svc := service("web", replicas, func(sp *api.ServiceSpec) {
			sp.Task.Env = map[string]string{"V": "1"}
			sp.Update = &api.UpdatePolicy{Parallelism: &par}
			if constrained {
				sp.Placement.Constraints = []string{"node.labels.ok == yes"}
			}
			sp.Placement.MaxReplicasPerNode = capped
			sp.Task.Resources.CPUs = float64(cpus)
		})
		s := newSim(rt, svc)
		s.backoff = 30 * time.Second
		s.st.Nodes = map[string]api.Node{}
		for i := 1; i <= nNodes; i++ {
			id := fmt.Sprintf("n%d", i)
			n := api.Node{ID: id, Hostname: id, Status: api.NodeReady, Availability: api.AvailabilityActive, Drivers: []string{"process"},
				Labels: map[string]string{"ok": "yes"}}
			if i > 1 && rapid.Bool().Draw(rt, "no label "+id) {
				n.Labels = nil
			}
			n.Resources.CPUs = float64(rapid.SampledFrom([]int{0, 0, 2, 3, 8, 40}).Draw(rt, "cpus "+id))
			if i > 1 {
				n.Availability = api.AvailabilityDrain
			}
			s.st.Nodes[id] = n
		}
		s.place = schedulerPlace
		id := svc.ID
		// Everything starts on n1, as much as fits.
		for range 40 {
			s.step()
		}
		start := s.servingNow(id)
		before := -1
		s.check = func(s *sim, res Result) {
			if n, _ := s.servingCount(id); n < start {
				s.fatalf("step %d: %d serving, want at least %d:\n%s", s.steps, n, start, s.describe(id))
			}
			for _, c := range res.Creates {
				if c.Move != nil && before < 0 {
					before = squares(s.counts(id)) // before the first move lands
				}
				if c.Move == nil && before >= 0 {
					s.fatalf("step %d: a slot was recreated after rebalancing began: %+v", s.steps, c)
				}
			}
		}
		for i := 2; i <= nNodes; i++ {
			s.setAvailability(fmt.Sprintf("n%d", i), api.AvailabilityActive)
		}
		quiet := 0
		for step := 0; step < 400 && quiet < 60; step++ {
			res := s.step()
			quiet++
			if len(res.Creates) > 0 || len(res.Updates) > 0 {
				quiet = 0
			}
		}
		if quiet < 60 {
			rt.Fatalf("still moving after 400 steps: %v\n%s", s.counts(id), s.describe(id))
		}
		took := 0
		for _, tk := range s.st.Tasks {
			if tk.ServiceID == id && tk.Move != nil && tk.DesiredState == api.TaskRunning {
				took++
			}
		}
		after := squares(s.counts(id))
		if took > 0 && (before < 0 || before-after < 2*took) {
			rt.Fatalf("%d moves took over, but the squares went %d → %d", took, before, after)
		}
		if cpus == 0 && capped == 0 {
			// Nothing keeps a node from taking a task: balanced.
			lo, hi := -1, 0
			for nid, c := range s.counts(id) {
				n := s.st.Nodes[nid]
				if constrained && n.Labels["ok"] != "yes" {
					if c != 0 {
						rt.Fatalf("%d tasks on %s, which fails the constraint", c, nid)
					}
					continue
				}
				if lo < 0 || c < lo {
					lo = c
				}
				hi = max(hi, c)
			}
			if hi-lo > 1 {
				rt.Fatalf("not balanced: %v\n%s", s.counts(id), s.describe(id))
			}
		}
	})
}

// servingNow counts the tasks of id that serve.
func (s *sim) servingNow(id string) int {
	n, _ := s.servingCount(id)
	return n
}

func squares(c map[string]int) int {
	n := 0
	for _, v := range c {
		n += v * v
	}
	return n
}

func TestBalancedMessage(t *testing.T) {
	for _, c := range []struct {
		counts map[string]int
		want   string
	}{
		{map[string]int{"a": 5}, "balanced: 1 node holds all 5 tasks"},
		{map[string]int{"a": 2, "b": 2}, "balanced: 2 nodes hold 2 tasks each"},
		{map[string]int{"a": 2, "b": 3, "c": 2}, "balanced: 3 nodes hold 2 to 3 tasks"},
		{nil, "nothing to move: no node can run the service"},
	} {
		if got := balancedMessage(c.counts); got != c.want {
			t.Errorf("balancedMessage(%v) = %q, want %q", c.counts, got, c.want)
		}
	}
}
