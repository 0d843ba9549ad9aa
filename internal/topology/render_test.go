package topology

import (
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

// TestRenderGolden draws each fixture with the system's reserved core and a
// few tasks placed by the allocator.
func TestRenderGolden(t *testing.T) {
	tasks := []struct {
		name  string
		req   Request
		small int // CPUs on machines of 8 CPUs or fewer
	}{
		{"web.1", Request{CPUs: 1}, 1},
		{"web.2", Request{CPUs: 1}, 1},
		{"db.1", Request{CPUs: 4, Policy: api.TopologyRequireSingleNUMA}, 2},
		{"batch.1", Request{CPUs: 3}, 1},
	}
	for _, f := range fixtures() {
		t.Run(f.name, func(t *testing.T) {
			m, err := NewMachine(discoverFixture(t, f.name))
			if err != nil {
				t.Fatal(err)
			}
			holders := map[int]string{}
			reserved := m.cores[0].set
			for _, id := range reserved.List() {
				holders[id] = HolderReserved
			}
			var taken CPUSet
			for _, task := range tasks {
				if m.Online().Len() <= 8 {
					task.req.CPUs = task.small
				}
				a, err := m.Allocate(reserved, taken, task.req)
				if err != nil {
					t.Fatalf("%s: %v", task.name, err)
				}
				taken = taken.Union(a.CPUs)
				for _, id := range a.CPUs.List() {
					holders[id] = task.name
				}
			}
			golden(t, f.name+".render.txt", []byte(m.Render(holders)))
		})
	}
}

func TestRenderDetails(t *testing.T) {
	topo := synth(1, 1, 1, 2, 2) // cores {0,2} {1,3}
	topo.NUMANodes = append(topo.NUMANodes, api.NUMANode{ID: 1, Memory: 512 << 20})
	topo.Offline = "4-5"
	got := Render(topo, map[int]string{0: "a b\tc", 3: "long-task-name", 9: "not a CPU"})
	want := `1 socket, 2 NUMA nodes, 1 L3 group, 2 cores, 4 CPUs online (0-3)
offline CPUs: 4-5
socket 0: cpus 0-3
  numa 0: cpus 0-3, memory 1.0GiB
    l3 0: cpus 0-3
      core 0  cpu 0 a_b_c          cpu 2 -
      core 1  cpu 1 -              cpu 3 long-task-name
numa 1: no CPUs, memory 512MiB
`
	if got != want {
		t.Errorf("Render =\n%s\nwant\n%s", got, want)
	}
	if got := Render(api.Topology{Online: "0-"}, nil); !strings.HasPrefix(got, "cannot draw the topology: topology: invalid topology: online") {
		t.Errorf("Render of an invalid topology = %q", got)
	}
}
