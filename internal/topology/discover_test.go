package topology

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/berth-project/berth/api"
)

// discoverFixture discovers a recorded tree.
func discoverFixture(t testing.TB, name string) api.Topology {
	t.Helper()
	writeFixtures(t)
	topo, err := Discover(fixtureDir(name))
	if err != nil {
		t.Fatalf("Discover(%s): %v", name, err)
	}
	return topo
}

// golden compares got with testdata/golden/name, or writes it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; got:\n%s\nrun with -update if the change is intended", p, got)
	}
}

func TestDiscoverGolden(t *testing.T) {
	for _, f := range fixtures() {
		t.Run(f.name, func(t *testing.T) {
			topo := discoverFixture(t, f.name)
			js, err := json.MarshalIndent(topo, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, f.name+".json", append(js, '\n'))
		})
	}
}

// TestDiscoverFixtures checks by hand the facts each fixture was built to
// show, so that the golden files are not merely whatever the code wrote.
func TestDiscoverFixtures(t *testing.T) {
	type counts struct{ sockets, numa, l3, cores int }
	tests := []struct {
		name    string
		counts  counts
		online  string
		offline string
		check   func(t *testing.T, topo api.Topology)
	}{
		{"xeon-2s-snc2", counts{2, 4, 2, 64}, "0-127", "", func(t *testing.T, topo api.Topology) {
			eq(t, "core 3", topo.Cores[3], api.CPUCore{ID: 3, Socket: 0, NUMA: 0, L3: 0, CPUs: "3,67"})
			eq(t, "core 47", topo.Cores[47], api.CPUCore{ID: 47, Socket: 1, NUMA: 2, L3: 1, CPUs: "47,111"})
			eq(t, "numa 1", topo.NUMANodes[1], api.NUMANode{ID: 1, CPUs: "16-31,80-95", Memory: 98566304 << 10})
			eq(t, "l3 0", topo.L3Groups[0], api.CacheGroup{ID: 0, Level: 3, CPUs: "0-31,64-95"})
			eq(t, "socket 1", topo.Sockets[1], api.CPUSocket{ID: 1, CPUs: "32-63,96-127"})
		}},
		{"epyc-nps4", counts{1, 4, 8, 32}, "0-63", "", func(t *testing.T, topo api.Topology) {
			eq(t, "l3 1", topo.L3Groups[1], api.CacheGroup{ID: 1, Level: 3, CPUs: "4-7,36-39"})
			eq(t, "core 5", topo.Cores[5], api.CPUCore{ID: 5, Socket: 0, NUMA: 0, L3: 1, CPUs: "5,37"})
			eq(t, "core 31", topo.Cores[31], api.CPUCore{ID: 31, Socket: 0, NUMA: 3, L3: 7, CPUs: "31,63"})
			eq(t, "numa 2", topo.NUMANodes[2].CPUs, "16-23,48-55")
		}},
		{"offline-8", counts{1, 1, 1, 4}, "0-3,6-7", "4-5", func(t *testing.T, topo api.Topology) {
			var cores []string
			for _, c := range topo.Cores {
				cores = append(cores, c.CPUs)
			}
			eq(t, "cores", strings.Join(cores, " "), "0 1 2,6 3,7")
			eq(t, "numa 0 (offline CPUs dropped)", topo.NUMANodes[0].CPUs, "0-3,6-7")
		}},
		{"bare-2s", counts{2, 1, 2, 4}, "0-7", "", func(t *testing.T, topo api.Topology) {
			eq(t, "core 0", topo.Cores[0], api.CPUCore{ID: 0, Socket: 0, NUMA: 0, L3: 0, CPUs: "0,4"})
			eq(t, "core 1", topo.Cores[1], api.CPUCore{ID: 1, Socket: 1, NUMA: 0, L3: 1, CPUs: "1,5"})
			eq(t, "numa without sysfs", topo.NUMANodes[0], api.NUMANode{ID: 0, CPUs: "0-7"})
			eq(t, "l3 per socket", topo.L3Groups[1], api.CacheGroup{ID: 1, Level: 0, CPUs: "1,3,5,7"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo := discoverFixture(t, tt.name)
			got := counts{len(topo.Sockets), len(topo.NUMANodes), len(topo.L3Groups), len(topo.Cores)}
			eq(t, "counts", got, tt.counts)
			eq(t, "online", topo.Online, tt.online)
			eq(t, "offline", topo.Offline, tt.offline)
			if t.Failed() {
				return
			}
			tt.check(t, topo)
		})
	}
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %+v, want %+v", what, got, want)
	}
}

// TestDiscoverThisMachine reads the real /sys and checks it against what
// the kernel says elsewhere.
func TestDiscoverThisMachine(t *testing.T) {
	topo, err := Discover("/sys")
	if err != nil {
		t.Fatalf("Discover(/sys): %v", err)
	}
	m, err := NewMachine(topo)
	if err != nil {
		t.Fatalf("Discover(/sys) is not valid: %v", err)
	}
	raw, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		t.Fatal(err)
	}
	if want := MustParse(string(raw)); !m.Online().Equal(want) {
		t.Errorf("online = %s, the kernel says %s", m.Online(), want)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			if allowed := MustParse(v); !allowed.IsSubsetOf(m.Online()) {
				t.Errorf("this process may run on %s, not all online (%s)", allowed, m.Online())
			}
		}
	}
	for _, c := range topo.Cores {
		cpus := MustParse(c.CPUs)
		first, _ := cpus.Min()
		b, err := os.ReadFile(filepath.Join("/sys/devices/system/cpu", "cpu"+strconv.Itoa(first), "topology", "thread_siblings_list"))
		if err != nil {
			continue
		}
		if sib := MustParse(string(b)).Intersect(m.Online()); !sib.Equal(cpus) {
			t.Errorf("core %d has CPUs %s, the kernel says siblings %s", c.ID, cpus, sib)
		}
	}
	t.Logf("this machine:\n%s", m.Render(nil))
}

// base is a small valid tree for the edge cases below: 2 CPUs, one core
// each.
func base() fstest.MapFS {
	return fstest.MapFS{
		"devices/system/cpu/online":                             {Data: []byte("0-1\n")},
		"devices/system/cpu/cpu0/topology/physical_package_id":  {Data: []byte("0\n")},
		"devices/system/cpu/cpu0/topology/thread_siblings_list": {Data: []byte("0\n")},
		"devices/system/cpu/cpu1/topology/physical_package_id":  {Data: []byte("0\n")},
		"devices/system/cpu/cpu1/topology/thread_siblings_list": {Data: []byte("1\n")},
	}
}

func with(fs fstest.MapFS, kv ...string) fstest.MapFS {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<delete>" {
			delete(fs, kv[i])
			continue
		}
		fs[kv[i]] = &fstest.MapFile{Data: []byte(kv[i+1])}
	}
	return fs
}

func TestDiscoverEdgeCases(t *testing.T) {
	tests := []struct {
		name  string
		fs    fstest.MapFS
		check func(t *testing.T, topo api.Topology)
	}{
		{"no online list: cpu dirs and their online files", with(base(),
			"devices/system/cpu/online", "<delete>",
			"devices/system/cpu/cpu2/online", "0\n",
			"devices/system/cpu/cpu1/online", "1\n"),
			func(t *testing.T, topo api.Topology) {
				eq(t, "online", topo.Online, "0-1")
				eq(t, "offline", topo.Offline, "2")
			}},
		{"offline from possible", with(base(), "devices/system/cpu/possible", "0-3\n"),
			func(t *testing.T, topo api.Topology) { eq(t, "offline", topo.Offline, "2-3") }},
		{"memory-only NUMA node", with(base(),
			"devices/system/node/node0/cpulist", "0-1\n",
			"devices/system/node/node0/meminfo", "Node 0 MemTotal:  1024 kB\n",
			"devices/system/node/node1/cpulist", "\n",
			"devices/system/node/node1/meminfo", "Node 1 MemFree: 1 kB\nNode 1 MemTotal: 2048 kB\n",
			"devices/system/node/possible", "0-1\n"),
			func(t *testing.T, topo api.Topology) {
				eq(t, "nodes", len(topo.NUMANodes), 2)
				eq(t, "node 1", topo.NUMANodes[1], api.NUMANode{ID: 1, CPUs: "", Memory: 2 << 20})
				eq(t, "node 0 memory", topo.NUMANodes[0].Memory, api.ByteSize(1<<20))
			}},
		{"package id -1 and no sibling lists", with(base(),
			"devices/system/cpu/cpu0/topology/physical_package_id", "-1\n",
			"devices/system/cpu/cpu1/topology/physical_package_id", "-1\n",
			"devices/system/cpu/cpu0/topology/thread_siblings_list", "<delete>",
			"devices/system/cpu/cpu1/topology/thread_siblings_list", "<delete>"),
			func(t *testing.T, topo api.Topology) {
				eq(t, "sockets", len(topo.Sockets), 1)
				eq(t, "socket 0", topo.Sockets[0].CPUs, "0-1")
				eq(t, "cores (one per CPU)", len(topo.Cores), 2)
			}},
		{"no topology dirs at all", fstest.MapFS{"devices/system/cpu/online": {Data: []byte("0-3\n")}},
			func(t *testing.T, topo api.Topology) {
				eq(t, "cores", len(topo.Cores), 4)
				eq(t, "l3 groups", len(topo.L3Groups), 1)
			}},
		{"L1 data cache only is the LLC; instruction ignored", with(base(),
			"devices/system/cpu/cpu0/cache/index0/level", "1\n",
			"devices/system/cpu/cpu0/cache/index0/type", "Data\n",
			"devices/system/cpu/cpu0/cache/index0/shared_cpu_list", "0\n",
			"devices/system/cpu/cpu0/cache/index1/level", "1\n",
			"devices/system/cpu/cpu0/cache/index1/type", "Instruction\n",
			"devices/system/cpu/cpu0/cache/index1/shared_cpu_list", "0-1\n"),
			func(t *testing.T, topo api.Topology) {
				// cpu0 has its own L1; cpu1 has no cache files and falls
				// back to its socket.
				eq(t, "l3 0", topo.L3Groups[0], api.CacheGroup{ID: 0, Level: 1, CPUs: "0"})
				eq(t, "l3 1", topo.L3Groups[1], api.CacheGroup{ID: 1, Level: 0, CPUs: "1"})
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo, err := DiscoverFS(tt.fs)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, topo)
		})
	}
}

func TestDiscoverErrors(t *testing.T) {
	tests := []struct {
		name string
		fs   fstest.MapFS
		want error
		msg  string
	}{
		{"empty tree", fstest.MapFS{}, ErrNoCPUs, ""},
		{"empty online list", with(base(), "devices/system/cpu/online", "\n"), ErrNoCPUs, ""},
		{"bad online list", with(base(), "devices/system/cpu/online", "0-x\n"), ErrMalformed, "devices/system/cpu/online"},
		{"bad package id", with(base(), "devices/system/cpu/cpu1/topology/physical_package_id", "one\n"),
			ErrMalformed, "physical_package_id"},
		{"siblings disagree", with(base(), "devices/system/cpu/cpu0/topology/thread_siblings_list", "0-1\n"),
			ErrMalformed, "cpu0's core is 0-1 but cpu1's is 1"},
		{"caches disagree", with(base(),
			"devices/system/cpu/cpu0/cache/index3/level", "3\n",
			"devices/system/cpu/cpu0/cache/index3/type", "Unified\n",
			"devices/system/cpu/cpu0/cache/index3/shared_cpu_list", "0-1\n"),
			ErrMalformed, "last-level cache"},
		{"NUMA nodes overlap", with(base(),
			"devices/system/node/node0/cpulist", "0-1\n",
			"devices/system/node/node1/cpulist", "1\n"), ErrMalformed, "node1"},
		{"CPU in no NUMA node", with(base(), "devices/system/node/node0/cpulist", "0\n"),
			ErrMalformed, "online CPUs 1 are in no NUMA node"},
		{"bad MemTotal", with(base(),
			"devices/system/node/node0/cpulist", "0-1\n",
			"devices/system/node/node0/meminfo", "Node 0 MemTotal: lots kB\n"), ErrMalformed, "MemTotal"},
		{"core spans sockets", with(base(),
			"devices/system/cpu/cpu1/topology/physical_package_id", "1\n",
			"devices/system/cpu/cpu0/topology/thread_siblings_list", "0-1\n",
			"devices/system/cpu/cpu1/topology/thread_siblings_list", "0-1\n"), ErrMalformed, "not all in socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DiscoverFS(tt.fs)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.msg)
			}
		})
	}
}
