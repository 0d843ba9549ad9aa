package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
)

// fourCPUs is a one-socket, one-NUMA-node topology of 4 single-thread
// cores.
func fourCPUs() api.Topology {
	return api.Topology{
		Online:    "0-3",
		Sockets:   []api.CPUSocket{{ID: 0, CPUs: "0-3"}},
		NUMANodes: []api.NUMANode{{ID: 0, CPUs: "0-3", Memory: 1 << 30}},
		L3Groups:  []api.CacheGroup{{ID: 0, Level: 3, CPUs: "0-3"}},
		Cores: []api.CPUCore{
			{ID: 0, CPUs: "0"}, {ID: 1, CPUs: "1"}, {ID: 2, CPUs: "2"}, {ID: 3, CPUs: "3"},
		},
	}
}

func withTopology(h *harness, reserved string) {
	h.cfg.Topology = func() (api.Topology, error) { return fourCPUs(), nil }
	h.cfg.ReservedCPUs = reserved
}

func envOf(spec driver.StartSpec, key string) (string, bool) {
	for _, kv := range spec.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

func exclusiveTask(id, cpus string) api.Task {
	t := newTask(id)
	t.Spec.Resources = api.Resources{CPUs: float64(cpuCount(cpus)), CPUPolicy: api.CPUPolicyExclusive}
	t.Allocation = &api.CPUAllocation{CPUs: cpus, MemNodes: "0"}
	return t
}

func TestRegistrationCarriesTopology(t *testing.T) {
	h := newHarness(t)
	withTopology(h, "0")
	h.start()
	eventually(t, func() bool { return len(h.m.Registrations()) > 0 }, "registration")
	reg := h.m.Registrations()[0]
	if reg.Topology == nil || reg.Topology.Online != "0-3" || reg.ReservedCPUs != "0" || reg.Resources.CPUs != 4 {
		t.Fatalf("registration topology %+v, reserved %q, cpus %g", reg.Topology, reg.ReservedCPUs, reg.Resources.CPUs)
	}

	// Without a topology the node registers all the same.
	h2 := newHarness(t)
	h2.start()
	eventually(t, func() bool { return len(h2.m.Registrations()) > 0 }, "registration")
	if reg := h2.m.Registrations()[0]; reg.Topology != nil || reg.ReservedCPUs != "" || reg.Resources.CPUs <= 0 {
		t.Fatalf("registration without topology: %+v", reg)
	}
}

func TestReservedCPUsAreChecked(t *testing.T) {
	for reserved, want := range map[string]string{
		"4-5": "reserved CPUs 4-5 (the node has 0-3)",
		"x":   "reserved CPUs",
		"0-3": "leave no CPU for tasks",
	} {
		h := newHarness(t)
		withTopology(h, reserved)
		_, err := New(h.cfg, h.m)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("reserved %q: err %v, want ErrConfig saying %q", reserved, err, want)
		}
	}
	// Reserved CPUs cannot be checked without a topology.
	h := newHarness(t)
	h.cfg.ReservedCPUs = "0"
	if _, err := New(h.cfg, h.m); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "without the node's CPU topology") {
		t.Errorf("reserved without topology: %v", err)
	}
}

func TestTasksArePinnedWithGOMAXPROCS(t *testing.T) {
	h := newHarness(t)
	withTopology(h, "0")
	h.start()
	shared := newTask("shared")
	excl := exclusiveTask("excl", "2-3")
	own := exclusiveTask("own", "1")
	own.Spec.Env = map[string]string{"GOMAXPROCS": "8"}
	unit := newTask("unit")
	unit.Unit = "core:1"
	unit.Allocation = &api.CPUAllocation{CPUs: "1", MemNodes: "0"}
	bad := newTask("bad")
	bad.Unit = "core:2" // no allocation
	h.m.Assign(shared, excl, own, unit, bad)
	for _, id := range []string{"shared", "excl", "own", "unit"} {
		h.waitStatus(id, api.TaskRunning)
	}
	for id, want := range map[string][3]string{
		"excl": {"2-3", "0", "2"},
		"own":  {"1", "0", "8"},
		"unit": {"1", "0", "1"},
	} {
		spec := h.d.Task(id).Spec
		procs, _ := envOf(spec, "GOMAXPROCS")
		if spec.CPUSet != want[0] || spec.MemNodes != want[1] || procs != want[2] {
			t.Errorf("%s: cpus %q mems %q GOMAXPROCS %q, want %v", id, spec.CPUSet, spec.MemNodes, procs, want)
		}
	}
	// The shared task runs on the pool: online − reserved − exclusive,
	// which is empty here (0 reserved, 1-3 exclusive), so it falls back to
	// the reserved CPUs.
	eventually(t, func() bool {
		cpus, _ := h.d.Task("shared").CPUSet()
		return cpus == "0"
	}, "shared task on the reserved CPUs")
	if st := h.waitStatus("bad", api.TaskRejected); !strings.Contains(st.Err, "needs a CPU allocation") {
		t.Errorf("per-unit task without allocation: %+v", st)
	}
}

// TestSharedPoolFollowsExclusiveTasks: shared tasks leave the CPUs of an
// exclusive task before it starts, and get them back when it ends.
func TestSharedPoolFollowsExclusiveTasks(t *testing.T) {
	h := newHarness(t)
	withTopology(h, "")
	var mu sync.Mutex
	var sharedAtExclusiveStart string
	h.d.StartFunc = func(ctx context.Context, spec driver.StartSpec) error {
		if spec.TaskID == "excl" {
			cpus, _ := h.d.Task("shared").CPUSet()
			mu.Lock()
			sharedAtExclusiveStart = cpus
			mu.Unlock()
		}
		return nil
	}
	h.start()
	shared := newTask("shared")
	h.m.Assign(shared)
	h.waitStatus("shared", api.TaskRunning)
	if cpus, _ := h.d.Task("shared").CPUSet(); cpus != "0-3" {
		t.Fatalf("shared task started on %q, want 0-3", cpus)
	}
	if procs, _ := envOf(h.d.Task("shared").Spec, "GOMAXPROCS"); procs != "4" {
		t.Fatalf("shared GOMAXPROCS %q, want the pool size 4", procs)
	}

	excl := exclusiveTask("excl", "2-3")
	h.m.Assign(shared, excl)
	h.waitStatus("excl", api.TaskRunning)
	mu.Lock()
	got := sharedAtExclusiveStart
	mu.Unlock()
	if got != "0-1" {
		t.Fatalf("when the exclusive task started the shared one ran on %q, want 0-1", got)
	}

	// The exclusive task ends: its CPUs return to the pool.
	h.d.Task("excl").Exit(driver.Exit{Code: 0})
	h.waitStatus("excl", api.TaskComplete)
	eventually(t, func() bool {
		cpus, _ := h.d.Task("shared").CPUSet()
		return cpus == "0-3"
	}, "shared task back on all CPUs")

	// Exclusive tasks on every CPU: shared tasks fall back to all of them
	// rather than to an empty set.
	all := exclusiveTask("all", "0-3")
	h.m.Assign(shared, all)
	h.waitStatus("all", api.TaskRunning)
	if cpus, _ := h.d.Task("shared").CPUSet(); cpus != "0-3" {
		t.Fatalf("with no shared CPU left the shared task runs on %q", cpus)
	}

	// A task removed from the set releases its CPUs too.
	excl2 := exclusiveTask("excl2", "0")
	h.m.Assign(shared, excl2)
	h.waitStatus("excl2", api.TaskRunning)
	eventually(t, func() bool {
		cpus, _ := h.d.Task("shared").CPUSet()
		return cpus == "1-3"
	}, "shared task off CPU 0")
	h.m.Assign(shared)
	eventually(t, func() bool {
		cpus, _ := h.d.Task("shared").CPUSet()
		return cpus == "0-3" && !slices.Contains(h.d.Running(), "excl2")
	}, "shared task back on all CPUs after excl2 left")
}
