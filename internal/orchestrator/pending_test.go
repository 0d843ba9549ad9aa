package orchestrator

import (
	"fmt"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// TestPendingTasksAreBounded: a replicated service stores at most MaxPending
// tasks that wait for a node; the other replicas are counted in the
// service's Pending with the scheduler's reason, and created as earlier ones
// are placed (issue 12 item 6: 100,000 unplaceable replicas grew Berth to
// 3–4 GB).
func TestPendingTasksAreBounded(t *testing.T) {
	svc := service("big", 100000)
	st := state([]api.Service{svc})
	start := time.Now()
	res := run(st)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("a reconcile of 100,000 replicas took %v", took)
	}
	if len(res.Creates) != DefaultMaxPending {
		t.Fatalf("created %d tasks, want %d", len(res.Creates), DefaultMaxPending)
	}
	if got := slots(res.Creates); got[0] != 1 || got[len(got)-1] != DefaultMaxPending {
		t.Errorf("created slots %d..%d, want the lowest", got[0], got[len(got)-1])
	}
	if len(res.Services) != 1 || res.Services[0].Service.Pending == nil {
		t.Fatalf("service writes %+v, want one with Pending", res.Services)
	}
	want := api.PendingReplicas{Count: 100000, Stored: DefaultMaxPending, Reason: pendingMessage}
	if got := *res.Services[0].Service.Pending; got != want {
		t.Errorf("pending %+v, want %+v", got, want)
	}

	// The scheduler cannot place them and says why; 30 are placed after all.
	svc = res.Services[0].Service
	st.Services[svc.ID] = svc
	for i, tk := range res.Creates {
		tk.Revision = 1
		tk.Status.Message = "no node satisfies node.labels.zone == mars"
		if i < 30 {
			tk.NodeID, tk.Status.State = "n1", api.TaskAssigned
		}
		st.Tasks[tk.ID] = tk
	}
	n := 0
	res = Reconcile(t0, st, Options{NewID: func() string { n++; return fmt.Sprintf("x%04d", n) }})
	if len(res.Creates) != 30 {
		t.Fatalf("created %d tasks after 30 were placed, want 30", len(res.Creates))
	}
	if got := slots(res.Creates); got[0] != DefaultMaxPending+1 {
		t.Errorf("created slots from %d, want from %d", got[0], DefaultMaxPending+1)
	}
	want = api.PendingReplicas{Count: 100000 - 30, Stored: DefaultMaxPending, Reason: "no node satisfies node.labels.zone == mars"}
	if len(res.Services) != 1 || res.Services[0].Service.Pending == nil || *res.Services[0].Service.Pending != want {
		t.Fatalf("service writes %+v, want Pending %+v", res.Services, want)
	}

	// Unchanged state: no write.
	st.Services[svc.ID] = res.Services[0].Service
	for _, tk := range res.Creates {
		tk.Revision = 1
		tk.Status.Message = "no node satisfies node.labels.zone == mars"
		st.Tasks[tk.ID] = tk
	}
	res = Reconcile(t0, st, Options{NewID: idGen()})
	if len(res.Creates) != 0 || len(res.Services) != 0 {
		t.Errorf("a settled service changed: %d creates, %+v", len(res.Creates), res.Services)
	}

	// Scaled down to what is stored: Pending is cleared.
	svc = st.Services[svc.ID]
	fifty := 50
	svc.Spec.Replicas = &fifty
	st.Services[svc.ID] = svc
	res = Reconcile(t0, st, Options{NewID: idGen()})
	if len(res.Services) != 1 || res.Services[0].Service.Pending != nil {
		t.Errorf("service writes %+v, want Pending cleared", res.Services)
	}
}

// TestSmallServicesHaveNoPendingRecord: below the bound nothing changes: no
// service write, every replica a task.
func TestSmallServicesHaveNoPendingRecord(t *testing.T) {
	res := run(state([]api.Service{service("web", DefaultMaxPending)}))
	if len(res.Creates) != DefaultMaxPending || len(res.Services) != 0 {
		t.Errorf("%d creates, %d service writes; want %d and none", len(res.Creates), len(res.Services), DefaultMaxPending)
	}
}

// TestLargeServiceConvergesInWaves: in the simulated cluster a service of
// 1,000 replicas gets all its tasks, never more than MaxPending of them
// pending at once, and then rolls an update over all of them; its pending
// record is gone at the end.
func TestLargeServiceConvergesInWaves(t *testing.T) {
	svc := service("big", 1000, func(sp *api.ServiceSpec) {
		sp.Task.Env = map[string]string{"V": "1"}
		p := 200
		sp.Update = &api.UpdatePolicy{Parallelism: &p}
	})
	s := newSim(t, svc)
	maxPending := 0
	s.check = func(s *sim, _ Result) {
		n := 0
		for _, tk := range s.st.Tasks {
			if waiting(tk) {
				n++
			}
		}
		maxPending = max(maxPending, n)
	}
	if !s.until(200, func(s *sim) bool { return s.settled(svc.ID, "1") }) {
		t.Fatalf("1,000 replicas did not settle: %d live", len(s.live(svc.ID)))
	}
	if maxPending > DefaultMaxPending {
		t.Errorf("%d tasks pending at once, want at most %d", maxPending, DefaultMaxPending)
	}
	if p := s.svcOf(svc.ID).Pending; p != nil {
		t.Errorf("pending record left: %+v", p)
	}
	s.deploy(svc.ID, func(sp *api.ServiceSpec) { sp.Task.Env["V"] = "2" })
	if !s.until(400, func(s *sim) bool { return s.settled(svc.ID, "2") && s.state(svc.ID) == api.UpdateCompleted }) {
		t.Fatalf("the update did not finish: state %s", s.state(svc.ID))
	}
	if maxPending > DefaultMaxPending {
		t.Errorf("%d tasks pending at once during the update, want at most %d", maxPending, DefaultMaxPending)
	}
}
