package orchestrator

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
)

// behaviour is how the simulated cluster runs a task of one template.
type behaviour struct {
	// healthyAfter is how long after its start a task turns healthy.
	healthyAfter time.Duration
	// neverHealthy: the health check never passes; the task turns
	// unhealthy (and is stopped by its agent) after unhealthyAfter.
	neverHealthy bool
	// unhealthyAfter, with a healthy task, is how long after turning
	// healthy it turns unhealthy (0: never).
	unhealthyAfter time.Duration
	// crashAfter is how long after its start the task exits with an error
	// (0: never).
	crashAfter time.Duration
}

// sim is a simulated cluster around Reconcile: a store that applies results
// (with revisions), a scheduler that places every task on a ready node, and
// agents that start, health-check, stop and fail tasks as their template's
// behaviour says. The clock moves by tick per step.
type sim struct {
	tb       fataler
	now      time.Time
	tick     time.Duration
	st       State
	seen     map[string]time.Time
	ids      func() string
	rev      int64
	behave   func(api.Task) behaviour
	stopTime time.Duration
	stopAt   map[string]time.Time
	versions []api.ServiceVersion
	// healthyAt records when each task turned healthy.
	healthyAt map[string]time.Time
	// check runs after every applied result, before the cluster moves.
	check func(s *sim, res Result)
	steps int
	// place is the scheduler: the node for a pending task, or "" to leave
	// it pending with a reason. Nil places every task on n1.
	place func(s *sim, t api.Task) string
	// legacyAgents: the agents are older than TaskStatus.HealthySince and
	// leave it zero.
	legacyAgents bool
	// backoff is Options.RebalanceBackoff (0: the default).
	backoff time.Duration
}

// fataler is *testing.T or *rapid.T.
type fataler interface {
	Fatalf(format string, args ...any)
}

func (s *sim) fatalf(format string, args ...any) { s.tb.Fatalf(format, args...) }

func newSim(tb fataler, svcs ...api.Service) *sim {
	s := &sim{tb: tb, now: t0, tick: time.Second, st: state(svcs), seen: map[string]time.Time{}, ids: idGen(), rev: 10,
		stopTime: time.Second, stopAt: map[string]time.Time{}, healthyAt: map[string]time.Time{},
		behave: func(api.Task) behaviour { return behaviour{healthyAfter: time.Second} }}
	return s
}

// byEnv is a behaviour per value of the task's env V (the version).
func byEnv(m map[string]behaviour) func(api.Task) behaviour {
	return func(t api.Task) behaviour {
		if b, ok := m[t.Spec.Env["V"]]; ok {
			return b
		}
		return behaviour{healthyAfter: time.Second}
	}
}

// svcOf is the one service of the simulation.
func (s *sim) svcOf(id string) api.Service { return s.st.Services[id] }

// failover is a change of leader: the new orchestrator starts without the
// old one's memory. For gap it does not run at all (the election) while the
// cluster moves on.
func (s *sim) failover(gap time.Duration) {
	s.seen = map[string]time.Time{}
	for end := s.now.Add(gap); s.now.Before(end); s.now = s.now.Add(s.tick) {
		s.move()
	}
}

// step reconciles once, applies the result, checks, and moves the cluster.
func (s *sim) step() Result {
	s.steps++
	ObserveServing(s.seen, s.st.Tasks)
	st := s.st
	st.ServingSince = s.seen
	res := Reconcile(s.now, st, Options{NewID: s.ids, RebalanceBackoff: s.backoff})
	s.apply(res)
	if s.check != nil {
		s.check(s, res)
	}
	s.move()
	s.now = s.now.Add(s.tick)
	return res
}

func (s *sim) apply(res Result) {
	for _, w := range res.Services {
		cur, ok := s.st.Services[w.Service.ID]
		if !ok || cur.Revision != w.Service.Revision {
			continue // conflict: the next step reconciles again
		}
		s.rev++
		w.Service.Revision = s.rev
		s.st.Services[w.Service.ID] = w.Service
		if w.Version != nil {
			s.versions = append(s.versions, *w.Version)
		}
	}
	for _, c := range res.Creates {
		s.rev++
		c.Revision = s.rev
		s.st.Tasks[c.ID] = c
	}
	for _, u := range res.Updates {
		if cur, ok := s.st.Tasks[u.ID]; !ok || cur.Revision != u.Revision {
			s.fatalf("update of %s at a stale revision", u.ID)
		}
		s.rev++
		u.Revision = s.rev
		s.st.Tasks[u.ID] = u
	}
	for _, d := range res.Deletes {
		delete(s.st.Tasks, d.ID)
	}
}

// move is the scheduler and the agents: one step of every task.
func (s *sim) move() {
	ids := make([]string, 0, len(s.st.Tasks))
	for id := range s.st.Tasks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		tk := s.st.Tasks[id]
		b := s.behave(tk)
		st := &tk.Status
		set := func(state api.TaskState) {
			st.State, st.Timestamp = state, s.now
			if state.Terminal() {
				st.FinishedAt = s.now
			}
		}
		switch {
		case st.State.Terminal():
			continue
		case tk.DesiredState == api.TaskShutdown:
			if st.State == api.TaskPending {
				set(api.TaskShutdown)
				break
			}
			at, ok := s.stopAt[id]
			if !ok {
				s.stopAt[id] = s.now
				at = s.now
			}
			if !s.now.Before(at.Add(s.stopTime)) {
				set(api.TaskShutdown)
			}
		case st.State == api.TaskPending:
			if s.now.Before(tk.NotBefore) {
				break
			}
			if tk.NodeID == "" {
				tk.NodeID = "n1"
				if s.place != nil {
					tk.NodeID = s.place(s, tk)
				}
				if m := tk.Move; m != nil && tk.NodeID != "" && s.liveOn(tk.ServiceID, tk.NodeID) >= m.Below {
					// As the scheduler does: a rebalance move only goes
					// where it spreads the service better.
					tk.NodeID = ""
				}
			}
			if tk.NodeID == "" {
				st.Message = "no suitable node"
				break
			}
			st.Message = ""
			set(api.TaskAssigned)
		case st.State == api.TaskAssigned:
			set(api.TaskRunning)
			st.StartedAt = s.now
			st.Health = api.HealthNone
			if !s.legacyAgents {
				st.HealthySince = s.now
			}
			if tk.Spec.Health != nil {
				st.Health, st.HealthySince = api.HealthStarting, time.Time{}
			}
		case st.State == api.TaskRunning:
			up := s.now.Sub(st.StartedAt)
			switch {
			case b.crashAfter > 0 && up >= b.crashAfter:
				code := 1
				st.ExitCode, st.Err = &code, "exit status 1"
				set(api.TaskFailed)
			case st.Health == api.HealthUnhealthy:
				st.Err = "health check failed: connection refused"
				set(api.TaskFailed)
			case st.Health == api.HealthStarting && b.neverHealthy && up >= b.healthyAfter:
				st.Health = api.HealthUnhealthy
				st.Timestamp = s.now
			case st.Health == api.HealthStarting && !b.neverHealthy && up >= b.healthyAfter:
				st.Health = api.HealthHealthy
				st.Timestamp = s.now
				if !s.legacyAgents {
					st.HealthySince = s.now
				}
				s.healthyAt[id] = s.now
			case st.Health == api.HealthHealthy && b.unhealthyAfter > 0 && s.now.Sub(s.healthyAt[id]) >= b.unhealthyAfter:
				st.Health = api.HealthUnhealthy
				st.Timestamp = s.now
			}
		}
		s.rev++
		tk.Revision = s.rev
		s.st.Tasks[id] = tk
	}
}

// deploy writes a new spec the way the API does: previous spec kept, version
// bumped, an update started.
func (s *sim) deploy(id string, mut func(*api.ServiceSpec)) {
	svc := s.st.Services[id]
	prev := svc.Spec
	spec := cloneSpec(svc.Spec)
	mut(&spec)
	spec.Normalize()
	svc.PreviousSpec = &prev
	svc.Spec = spec
	svc.Version++
	svc.UpdateStatus = &api.UpdateStatus{State: api.UpdateUpdating, FromVersion: svc.Version - 1, ToVersion: svc.Version,
		StartedAt: s.now, Total: spec.ReplicaCount()}
	s.rev++
	svc.Revision = s.rev
	s.st.Services[id] = svc
}

// setStatus changes the update status of a service as the API does.
func (s *sim) setStatus(id string, change func(svc api.Service, st *api.UpdateStatus)) {
	svc := s.st.Services[id]
	st := *svc.UpdateStatus
	change(svc, &st)
	svc.UpdateStatus = &st
	s.rev++
	svc.Revision = s.rev
	s.st.Services[id] = svc
}

// promote is what the API's promote writes.
func (s *sim) promote(id string) {
	s.setStatus(id, func(_ api.Service, st *api.UpdateStatus) {
		st.State, st.Message, st.Promoted = api.UpdateUpdating, "", true
	})
}

// resume is what the API's resume writes: a rollback resumes as one, an
// update with canaries not promoted holds at them again.
func (s *sim) resume(id string) {
	s.setStatus(id, func(svc api.Service, st *api.UpdateStatus) {
		st.Message, st.CompletedAt = "", time.Time{}
		switch {
		case st.Rollback:
			st.State = api.UpdateRollingBack
		case !st.Promoted && svc.Spec.Update != nil && svc.Spec.Update.Canary > 0:
			st.State = api.UpdateCanary
		default:
			st.State = api.UpdateUpdating
		}
	})
}

// manualRollback swaps the spec back as the API's rollback does.
func (s *sim) manualRollback(id string) {
	svc := s.st.Services[id]
	cur := svc.Spec
	svc.Spec, svc.PreviousSpec = *svc.PreviousSpec, &cur
	svc.Version++
	svc.UpdateStatus = &api.UpdateStatus{State: api.UpdateRollingBack, FromVersion: svc.Version - 1, ToVersion: svc.Version,
		StartedAt: s.now, Total: svc.Spec.ReplicaCount(), Rollback: true}
	s.rev++
	svc.Revision = s.rev
	s.st.Services[id] = svc
}

func cloneSpec(sp api.ServiceSpec) api.ServiceSpec {
	env := map[string]string{}
	for k, v := range sp.Task.Env {
		env[k] = v
	}
	sp.Task.Env = env
	return sp
}

// until steps until cond holds, at most n steps; it reports whether it held.
func (s *sim) until(n int, cond func(*sim) bool) bool {
	for range n {
		if cond(s) {
			return true
		}
		s.step()
	}
	return cond(s)
}

func (s *sim) state(id string) string {
	if u := s.st.Services[id].UpdateStatus; u != nil {
		return u.State
	}
	return ""
}

// live is the tasks of service id meant to run and not ended, by slot.
func (s *sim) live(id string) map[int][]api.Task {
	out := map[int][]api.Task{}
	for _, t := range s.st.Tasks {
		if t.ServiceID == id && t.DesiredState == api.TaskRunning && !t.Status.State.Terminal() {
			out[t.Slot] = append(out[t.Slot], t)
		}
	}
	return out
}

// servingCount counts the tasks of id that serve, by env V.
func (s *sim) servingCount(id string) (n int, byV map[string]int) {
	byV = map[string]int{}
	for _, t := range s.st.Tasks {
		if t.ServiceID == id && serving(t) {
			n++
			byV[t.Spec.Env["V"]]++
		}
	}
	return n, byV
}

// settled reports whether every wanted replica slot of id serves exactly one
// task of env V = v, and nothing else of the service runs.
func (s *sim) settled(id, v string) bool {
	svc := s.st.Services[id]
	n := 0
	for _, t := range s.st.Tasks {
		if t.ServiceID != id || t.Status.State.Terminal() {
			continue
		}
		if t.Spec.Env["V"] != v || !serving(t) || t.DesiredState != api.TaskRunning {
			return false
		}
		n++
	}
	return n == svc.Spec.ReplicaCount()
}

func (s *sim) describe(id string) string {
	var lines []string
	for _, t := range s.st.Tasks {
		if t.ServiceID == id {
			lines = append(lines, fmt.Sprintf("%s slot=%d v=%s desired=%s state=%s health=%s", t.ID, t.Slot, t.Spec.Env["V"], t.DesiredState, t.Status.State, t.Status.Health))
		}
	}
	sort.Strings(lines)
	st := s.st.Services[id].UpdateStatus
	return fmt.Sprintf("status %+v\n%s", st, strings.Join(lines, "\n"))
}

// healthCheck is a health check for test specs (the simulator does not run it).
var healthCheck = &api.HealthCheck{Exec: []string{"true"}}

// v1Service is a replicated service of n replicas at env V=1 with a health
// check, brought to a steady state in a new simulation.
func v1Service(tb fataler, n int, mut ...func(*api.ServiceSpec)) (*sim, string) {
	svc := service("web", n, append([]func(*api.ServiceSpec){func(sp *api.ServiceSpec) {
		sp.Task.Env = map[string]string{"V": "1"}
		sp.Task.Health = healthCheck
	}}, mut...)...)
	s := newSim(tb, svc)
	if !s.until(50, func(s *sim) bool { return s.settled(svc.ID, "1") }) {
		s.fatalf("v1 did not settle:\n%s", s.describe(svc.ID))
	}
	// Let every v1 task serve well past any monitor window.
	for range 10 {
		s.step()
	}
	return s, svc.ID
}

func setV(v string) func(*api.ServiceSpec) {
	return func(sp *api.ServiceSpec) { sp.Task.Env["V"] = v }
}
