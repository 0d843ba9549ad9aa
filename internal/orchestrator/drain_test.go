package orchestrator

import (
	"fmt"
	"sort"
	"testing"

	"github.com/berth-project/berth/api"
	"pgregory.net/rapid"
)

// spreadPlace is a scheduler for the simulation: the ready, active node
// with the fewest live tasks, lowest ID first; "" when there is none.
func spreadPlace(s *sim, t api.Task) string {
	ids := make([]string, 0, len(s.st.Nodes))
	for id, n := range s.st.Nodes {
		if n.Status == api.NodeReady && n.Availability == api.AvailabilityActive {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	load := map[string]int{}
	for _, o := range s.st.Tasks {
		if o.NodeID != "" && !o.Status.State.Terminal() && o.Status.State != api.TaskPending {
			load[o.NodeID]++
		}
	}
	best := ""
	for _, id := range ids {
		if best == "" || load[id] < load[best] {
			best = id
		}
	}
	return best
}

// nodesSim adds nodes n1..nN (ready, active) to a simulation that places
// with spreadPlace.
func nodesSim(s *sim, n int) {
	s.st.Nodes = map[string]api.Node{}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		s.st.Nodes[id] = api.Node{ID: id, Hostname: id, Status: api.NodeReady, Availability: api.AvailabilityActive, Drivers: []string{"process"}}
	}
	s.place = spreadPlace
}

func (s *sim) setAvailability(node, a string) {
	n := s.st.Nodes[node]
	n.Availability = a
	s.st.Nodes[node] = n
}

// liveOn counts the live tasks of service id on node.
func (s *sim) liveOn(id, node string) int {
	n := 0
	for _, t := range s.st.Tasks {
		if t.ServiceID == id && t.NodeID == node && !t.Status.State.Terminal() {
			n++
		}
	}
	return n
}

// drainSim is a settled service of n replicas on three nodes.
func drainSim(tb fataler, n int, mut ...func(*api.ServiceSpec)) (*sim, string) {
	svc := service("web", n, append([]func(*api.ServiceSpec){func(sp *api.ServiceSpec) {
		sp.Task.Env = map[string]string{"V": "1"}
		sp.Task.Health = healthCheck
	}}, mut...)...)
	s := newSim(tb, svc)
	nodesSim(s, 3)
	if !s.until(50, func(s *sim) bool { return s.settled(svc.ID, "1") }) {
		s.fatalf("did not settle:\n%s", s.describe(svc.ID))
	}
	return s, svc.ID
}

// TestDrainMovesTasksWithoutAGap: every task on a drained node is replaced
// on another node, start-first: at no step do fewer than the replica count
// serve, whatever the update order; the drained node ends up empty and the
// service has exactly its replicas.
func TestDrainMovesTasksWithoutAGap(t *testing.T) {
	for _, order := range []string{api.OrderStartFirst, api.OrderStopFirst} {
		t.Run(order, func(t *testing.T) {
			s, id := drainSim(t, 4, func(sp *api.ServiceSpec) { sp.Update = &api.UpdatePolicy{Order: order} })
			if s.liveOn(id, "n1") == 0 {
				t.Fatalf("nothing on n1 to drain:\n%s", s.describe(id))
			}
			s.check = func(s *sim, _ Result) {
				if n, _ := s.servingCount(id); n < 4 {
					s.fatalf("step %d: %d serving, want at least 4:\n%s", s.steps, n, s.describe(id))
				}
			}
			s.setAvailability("n1", api.AvailabilityDrain)
			if !s.until(60, func(s *sim) bool { return s.liveOn(id, "n1") == 0 && s.settled(id, "1") }) {
				t.Fatalf("drain did not finish:\n%s", s.describe(id))
			}
			// Steady afterwards: nothing comes back to n1, nothing churns.
			before := len(s.st.Tasks)
			for range 10 {
				if res := s.step(); len(res.Creates) > 0 {
					t.Fatalf("drained service still creates tasks: %+v", res.Creates)
				}
			}
			if s.liveOn(id, "n1") != 0 || len(s.st.Tasks) > before {
				t.Fatalf("after drain:\n%s", s.describe(id))
			}
		})
	}
}

// TestDrainWithNowhereToGoStopsTheTask: when the replacement cannot be
// placed, drain falls back to stopping the task (as stop-first), and the
// replacement waits pending.
func TestDrainWithNowhereToGoStopsTheTask(t *testing.T) {
	s, id := drainSim(t, 1)
	var on string
	for _, tk := range s.st.Tasks {
		on = tk.NodeID
	}
	for n := range s.st.Nodes {
		if n != on {
			s.setAvailability(n, api.AvailabilityPause)
		}
	}
	s.setAvailability(on, api.AvailabilityDrain)
	if !s.until(20, func(s *sim) bool { return s.liveOn(id, on) == 0 }) {
		t.Fatalf("task not stopped:\n%s", s.describe(id))
	}
	live := s.live(id)
	if len(live[1]) != 1 || live[1][0].Status.State != api.TaskPending || live[1][0].Status.Message != "no suitable node" {
		t.Fatalf("want one pending replacement:\n%s", s.describe(id))
	}
	// Activating a node lets it run again.
	s.setAvailability(on, api.AvailabilityActive)
	if !s.until(20, func(s *sim) bool { return s.settled(id, "1") }) {
		t.Fatalf("did not recover:\n%s", s.describe(id))
	}
}

// TestDrainDuringUpdate: a drain that lands in the middle of a rolling
// update moves the drained node's tasks at once (old or new template) and
// the update still completes, never below the replica count.
func TestDrainDuringUpdate(t *testing.T) {
	s, id := drainSim(t, 6, func(sp *api.ServiceSpec) { sp.Update = &api.UpdatePolicy{Monitor: api.Duration(2e9)} })
	s.deploy(id, setV("2"))
	s.step()
	s.step()
	s.check = func(s *sim, _ Result) {
		if n, _ := s.servingCount(id); n < 6 {
			s.fatalf("step %d: %d serving, want at least 6:\n%s", s.steps, n, s.describe(id))
		}
	}
	s.setAvailability("n2", api.AvailabilityDrain)
	if !s.until(200, func(s *sim) bool { return s.settled(id, "2") && s.state(id) == api.UpdateCompleted }) {
		t.Fatalf("update did not complete:\n%s", s.describe(id))
	}
	if s.liveOn(id, "n2") != 0 {
		t.Fatalf("tasks left on the drained node:\n%s", s.describe(id))
	}
}

// TestDrainReplacementFailsBacksOff: a replacement that crashes is restarted
// with the restart policy's back-off while the drained task keeps serving.
func TestDrainReplacementFailsBacksOff(t *testing.T) {
	s, id := drainSim(t, 1)
	var on string
	for _, tk := range s.st.Tasks {
		on = tk.NodeID
	}
	s.behave = func(t api.Task) behaviour {
		if t.NodeID != on {
			return behaviour{healthyAfter: 10e9, crashAfter: 1e9}
		}
		return behaviour{healthyAfter: 1e9}
	}
	s.setAvailability(on, api.AvailabilityDrain)
	for range 30 {
		s.step()
		if n, _ := s.servingCount(id); n != 1 || s.liveOn(id, on) != 1 {
			t.Fatalf("step %d: the drained task must serve until a replacement does:\n%s", s.steps, s.describe(id))
		}
	}
	attempts := 0
	for _, tk := range s.st.Tasks {
		attempts = max(attempts, tk.Attempt)
	}
	if attempts < 2 {
		t.Fatalf("replacements were not restarted with growing attempts:\n%s", s.describe(id))
	}
	if created := len(s.st.Tasks); created > 12 {
		t.Fatalf("%d tasks in 30s: no back-off", created)
	}
}

// TestPauseKeepsRunningTasks: pausing a node moves nothing; new replicas go
// elsewhere.
func TestPauseKeepsRunningTasks(t *testing.T) {
	s, id := drainSim(t, 3)
	onN1 := s.liveOn(id, "n1")
	s.setAvailability("n1", api.AvailabilityPause)
	for range 10 {
		if res := s.step(); len(res.Creates)+len(res.Updates) > 0 {
			t.Fatalf("pause changed tasks: %+v %+v", res.Creates, res.Updates)
		}
	}
	s.deploy(id, func(sp *api.ServiceSpec) { six := 6; sp.Replicas = &six })
	if !s.until(30, func(s *sim) bool { return s.settled(id, "1") }) {
		t.Fatalf("scale up did not settle:\n%s", s.describe(id))
	}
	if got := s.liveOn(id, "n1"); got != onN1 {
		t.Fatalf("paused n1 has %d tasks, had %d", got, onN1)
	}
}

// TestGlobalDrainAndPause: a global service's task on a drained node stops;
// on a paused node it stays, and a paused node gets no new one.
func TestGlobalDrainAndPause(t *testing.T) {
	svc := service("agent", 0, func(sp *api.ServiceSpec) { sp.Mode = api.ModeGlobal; sp.Replicas = nil })
	st := state([]api.Service{svc},
		func() api.Task { t := task(svc, "on1", 0, api.TaskRunning); t.NodeID = "n1"; return t }(),
		func() api.Task { t := task(svc, "on2", 0, api.TaskRunning); t.NodeID = "n2"; return t }())
	st.Nodes["n3"] = api.Node{ID: "n3", Status: api.NodeReady, Availability: api.AvailabilityPause, Drivers: []string{"process"}}
	n1 := st.Nodes["n1"]
	n1.Availability = api.AvailabilityDrain
	st.Nodes["n1"] = n1
	n2 := st.Nodes["n2"]
	n2.Availability = api.AvailabilityPause
	st.Nodes["n2"] = n2
	res := run(st)
	if len(res.Creates) != 0 {
		t.Fatalf("created on a paused node: %+v", res.Creates)
	}
	if len(res.Updates) != 1 || res.Updates[0].ID != "on1" || res.Updates[0].DesiredState != api.TaskShutdown {
		t.Fatalf("want only on1 stopped, got %+v", res.Updates)
	}
}

// TestDrainProperty: for random replica counts, node counts, drained nodes
// and update orders, a drain never drops the serving count below the
// replica count (when another active node exists) and always finishes.
func TestDrainProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		replicas := rapid.IntRange(2, 8).Draw(rt, "replicas")
		order := rapid.SampledFrom([]string{api.OrderStartFirst, api.OrderStopFirst}).Draw(rt, "order")
		svc := service("web", replicas, func(sp *api.ServiceSpec) {
			sp.Task.Env = map[string]string{"V": "1"}
			sp.Task.Health = healthCheck
			sp.Update = &api.UpdatePolicy{Order: order}
		})
		s := newSim(rt, svc)
		nodes := rapid.IntRange(2, 5).Draw(rt, "nodes")
		nodesSim(s, nodes)
		if !s.until(50, func(s *sim) bool { return s.settled(svc.ID, "1") }) {
			rt.Fatalf("did not settle:\n%s", s.describe(svc.ID))
		}
		drain := rapid.IntRange(1, nodes-1).Draw(rt, "drained nodes")
		s.check = func(s *sim, _ Result) {
			if n, _ := s.servingCount(svc.ID); n < replicas {
				s.fatalf("step %d: %d serving < %d:\n%s", s.steps, n, replicas, s.describe(svc.ID))
			}
		}
		for i := 1; i <= drain; i++ {
			s.setAvailability(fmt.Sprintf("n%d", i), api.AvailabilityDrain)
			s.step()
		}
		done := func(s *sim) bool {
			for i := 1; i <= drain; i++ {
				if s.liveOn(svc.ID, fmt.Sprintf("n%d", i)) > 0 {
					return false
				}
			}
			return s.settled(svc.ID, "1")
		}
		if !s.until(100, done) {
			rt.Fatalf("drain did not finish:\n%s", s.describe(svc.ID))
		}
	})
}
