package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWorkerAssignsAndExplains(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	node := &api.Node{ID: "n1", Hostname: "h", Status: api.NodeReady, Availability: api.AvailabilityActive,
		Drivers: []string{"process"}, Resources: api.NodeResources{CPUs: 2, Memory: 1 << 30}, PortRange: [2]int{30000, 30100}}
	if err := st.Nodes.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 1; i <= 150; i++ { // more than one commit batch
		tk := &api.Task{ID: fmt.Sprintf("t%03d", i), ServiceID: "s", ServiceName: "s", Slot: i, DesiredState: api.TaskRunning,
			Spec:   api.TaskSpec{Driver: "process", Ports: []api.PortSpec{{Name: "http", Protocol: "tcp"}}},
			Status: api.TaskStatus{State: api.TaskPending}}
		if i > 100 {
			tk.Spec.Ports = nil
		}
		if err := st.Tasks.Create(ctx, tk); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tk.ID)
	}
	huge := &api.Task{ID: "huge", ServiceID: "h", ServiceName: "h", Slot: 1, DesiredState: api.TaskRunning,
		Spec: api.TaskSpec{Driver: "process", Resources: api.Resources{Memory: 8 << 30}}, Status: api.TaskStatus{State: api.TaskPending}}
	if err := st.Tasks.Create(ctx, huge); err != nil {
		t.Fatal(err)
	}
	go New(Config{Store: st}).Run(ctx)
	eventually(t, 10*time.Second, func() error {
		ports := map[int]bool{}
		for _, id := range ids {
			tk, err := st.Tasks.Get(ctx, id)
			if err != nil {
				return err
			}
			if tk.Status.State != api.TaskAssigned || tk.NodeID != "n1" {
				return fmt.Errorf("task %s: %s on %q", id, tk.Status.State, tk.NodeID)
			}
			if p := tk.Ports["http"]; len(tk.Spec.Ports) > 0 && (p < 30000 || p > 30100 || ports[p]) {
				return fmt.Errorf("task %s: bad or duplicate port %d", id, p)
			} else {
				ports[p] = true
			}
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		tk, err := st.Tasks.Get(ctx, "huge")
		if err != nil {
			return err
		}
		if tk.Status.State != api.TaskPending || !strings.Contains(tk.Status.Message, "memory") {
			return fmt.Errorf("huge task: %s %q", tk.Status.State, tk.Status.Message)
		}
		return nil
	})
}

// TestWorkerStoresAllocations: the CPU set of an exclusive task lands on the
// stored task, and a task that cannot get its CPUs stays pending with a
// reason that says so.
func TestWorkerStoresAllocations(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	topo := &api.Topology{
		Online:    "0-1",
		Sockets:   []api.CPUSocket{{ID: 0, CPUs: "0-1"}},
		NUMANodes: []api.NUMANode{{ID: 0, CPUs: "0-1"}},
		L3Groups:  []api.CacheGroup{{ID: 0, Level: 3, CPUs: "0-1"}},
		Cores:     []api.CPUCore{{ID: 0, CPUs: "0"}, {ID: 1, CPUs: "1"}},
	}
	node := &api.Node{ID: "n1", Hostname: "h", Status: api.NodeReady, Availability: api.AvailabilityActive,
		Drivers: []string{"process"}, Resources: api.NodeResources{CPUs: 2, Memory: 1 << 30}, Topology: topo, ReservedCPUs: "0"}
	if err := st.Nodes.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	for _, tk := range []*api.Task{
		{ID: "ex", ServiceID: "a", ServiceName: "a", Slot: 1, DesiredState: api.TaskRunning,
			Spec:   api.TaskSpec{Driver: "process", Resources: api.Resources{CPUs: 1, CPUPolicy: api.CPUPolicyExclusive}},
			Status: api.TaskStatus{State: api.TaskPending}},
		{ID: "ex2", ServiceID: "b", ServiceName: "b", Slot: 1, DesiredState: api.TaskRunning,
			Spec:   api.TaskSpec{Driver: "process", Resources: api.Resources{CPUs: 1, CPUPolicy: api.CPUPolicyExclusive}},
			Status: api.TaskStatus{State: api.TaskPending}},
	} {
		if err := st.Tasks.Create(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	go New(Config{Store: st}).Run(ctx)
	eventually(t, 10*time.Second, func() error {
		tk, err := st.Tasks.Get(ctx, "ex")
		if err != nil {
			return err
		}
		if tk.Status.State != api.TaskAssigned || tk.Allocation == nil || *tk.Allocation != (api.CPUAllocation{CPUs: "1", MemNodes: "0"}) {
			return fmt.Errorf("ex: %s, allocation %+v", tk.Status.State, tk.Allocation)
		}
		tk, err = st.Tasks.Get(ctx, "ex2")
		if err != nil {
			return err
		}
		if want := "lacks exclusive CPUs (want 1, most free 0)"; tk.Status.State != api.TaskPending || !strings.Contains(tk.Status.Message, want) {
			return fmt.Errorf("ex2: %s %q, want pending with %q", tk.Status.State, tk.Status.Message, want)
		}
		return nil
	})
}
