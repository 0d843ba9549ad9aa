package topology

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-project/berth/api"
)

// ErrMalformed is wrapped by Discover's errors for sysfs files that do not
// parse or contradict each other.
var ErrMalformed = errors.New("topology: malformed sysfs")

// ErrNoCPUs is returned by Discover when sysfs lists no online CPU.
var ErrNoCPUs = errors.New("topology: no online CPUs in sysfs")

const (
	cpuDir  = "devices/system/cpu"
	nodeDir = "devices/system/node"
)

// Discover reads the topology of the machine whose sysfs is mounted at
// sysfsRoot (normally "/sys"). See DiscoverFS.
func Discover(sysfsRoot string) (api.Topology, error) {
	return DiscoverFS(os.DirFS(sysfsRoot))
}

// DiscoverFS reads a topology from a sysfs tree: the online, offline and
// possible CPU lists; each online CPU's package, core siblings and caches;
// and each NUMA node's CPUs and MemTotal. Offline CPUs have no topology and
// appear only in Offline.
//
// Missing files are not errors: without the online list, every cpuN
// directory whose own online file does not say 0 is online; without the
// offline list, offline CPUs are the possible ones not online; without NUMA
// nodes all CPUs are in node 0
// (memory 0: unknown); without cache information each socket is one L3
// group (level 0); without core_cpus_list or thread_siblings_list, CPUs
// with the same package and core_id are one core, and without those each
// CPU is its own core in package 0. Files that do not parse, or lists that
// contradict each other, are errors wrapping ErrMalformed. The result is
// valid for NewMachine.
func DiscoverFS(fsys fs.FS) (api.Topology, error) {
	d := &discovery{fsys: fsys}
	t, err := d.run()
	if err != nil {
		return api.Topology{}, err
	}
	if _, err := NewMachine(t); err != nil {
		return api.Topology{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return t, nil
}

type discovery struct {
	fsys    fs.FS
	online  CPUSet
	listed  CPUSet      // CPU directories, when the online list was missing
	cpus    []int       // online, ascending
	pkg     map[int]int // cpu → package id
	coreOf  map[int]CPUSet
	llcOf   map[int]CPUSet
	llcLvl  map[int]int
	numaIDs []int
	numaCPU map[int]CPUSet
	numaMem map[int]api.ByteSize
}

// read returns the trimmed content of a file, or ok false if it does not
// exist.
func (d *discovery) read(name string) (s string, ok bool, err error) {
	b, err := fs.ReadFile(d.fsys, name)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("topology: %w", err)
	}
	return strings.TrimSpace(string(b)), true, nil
}

// readList reads a CPU list file; ok false if it does not exist.
func (d *discovery) readList(name string) (CPUSet, bool, error) {
	s, ok, err := d.read(name)
	if err != nil || !ok {
		return CPUSet{}, ok, err
	}
	c, err := Parse(s)
	if err != nil {
		return CPUSet{}, false, fmt.Errorf("%w: %s: %w", ErrMalformed, name, err)
	}
	return c, true, nil
}

// readInt reads an integer file; ok false if it does not exist.
func (d *discovery) readInt(name string) (int, bool, error) {
	s, ok, err := d.read(name)
	if err != nil || !ok {
		return 0, ok, err
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, false, fmt.Errorf("%w: %s: %q is not an integer", ErrMalformed, name, clip(s))
	}
	return n, true, nil
}

// numbered lists the entries of dir named prefix followed by a number, by
// number; nil if dir does not exist.
func (d *discovery) numbered(dir, prefix string) ([]int, error) {
	ents, err := fs.ReadDir(d.fsys, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	var ids []int
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || rest == "" {
			continue
		}
		if n, err := strconv.Atoi(rest); err == nil && n >= 0 && n <= MaxCPUID && strconv.Itoa(n) == rest {
			ids = append(ids, n)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

func (d *discovery) run() (api.Topology, error) {
	if err := d.readOnline(); err != nil {
		return api.Topology{}, err
	}
	offline, err := d.readOffline()
	if err != nil {
		return api.Topology{}, err
	}
	if err := d.readCores(); err != nil {
		return api.Topology{}, err
	}
	if err := d.readCaches(); err != nil {
		return api.Topology{}, err
	}
	if err := d.readNUMA(); err != nil {
		return api.Topology{}, err
	}
	return d.build(offline)
}

func (d *discovery) readOnline() error {
	online, ok, err := d.readList(cpuDir + "/online")
	if err != nil {
		return err
	}
	if !ok {
		// Without the list, a CPU directory is online unless its own
		// online file says 0 (cpu0 often has no such file).
		ids, err := d.numbered(cpuDir, "cpu")
		if err != nil {
			return err
		}
		var on []int
		for _, id := range ids {
			v, ok, err := d.readInt(fmt.Sprintf("%s/cpu%d/online", cpuDir, id))
			if err != nil {
				return err
			}
			if !ok || v != 0 {
				on = append(on, id)
			}
		}
		online = NewCPUSet(on...)
		d.listed = NewCPUSet(ids...)
	}
	if online.IsEmpty() {
		return ErrNoCPUs
	}
	d.online = online
	d.cpus = online.List()
	return nil
}

func (d *discovery) readOffline() (CPUSet, error) {
	offline, ok, err := d.readList(cpuDir + "/offline")
	if err != nil {
		return CPUSet{}, err
	}
	if !ok {
		possible, ok, err := d.readList(cpuDir + "/possible")
		if err != nil {
			return CPUSet{}, err
		}
		offline = possible
		if !ok {
			offline = d.listed
		}
	}
	return offline.Difference(d.online), nil
}

// readCores reads each online CPU's package and core siblings.
func (d *discovery) readCores() error {
	d.pkg = map[int]int{}
	d.coreOf = map[int]CPUSet{}
	type key struct{ pkg, core int }
	byKey := map[key][]int{}
	for _, cpu := range d.cpus {
		dir := fmt.Sprintf("%s/cpu%d/topology", cpuDir, cpu)
		pkg, ok, err := d.readInt(dir + "/physical_package_id")
		if err != nil {
			return err
		}
		if !ok || pkg < 0 {
			pkg = 0 // some platforms say -1: unknown
		}
		d.pkg[cpu] = pkg
		var sib CPUSet
		found := false
		for _, f := range []string{"core_cpus_list", "thread_siblings_list"} {
			if sib, found, err = d.readList(dir + "/" + f); err != nil {
				return err
			}
			if found {
				break
			}
		}
		if found {
			d.coreOf[cpu] = sib.Intersect(d.online).Union(NewCPUSet(cpu))
			continue
		}
		coreID, ok, err := d.readInt(dir + "/core_id")
		if err != nil {
			return err
		}
		if !ok {
			d.coreOf[cpu] = NewCPUSet(cpu)
			continue
		}
		k := key{pkg, coreID}
		byKey[k] = append(byKey[k], cpu)
	}
	for _, cpus := range byKey {
		set := NewCPUSet(cpus...)
		for _, cpu := range cpus {
			d.coreOf[cpu] = set
		}
	}
	return d.consistent("core", d.coreOf)
}

// consistent checks that every CPU's group (core or cache) is the group of
// each of its members, so the groups partition the CPUs.
func (d *discovery) consistent(what string, groupOf map[int]CPUSet) error {
	for _, cpu := range d.cpus {
		g, ok := groupOf[cpu]
		if !ok {
			continue
		}
		for _, other := range g.List() {
			if og, ok := groupOf[other]; !ok || !og.Equal(g) {
				return fmt.Errorf("%w: cpu%d's %s is %s but cpu%d's is %s", ErrMalformed, cpu, what, g, other, og)
			}
		}
	}
	return nil
}

// readCaches finds each online CPU's last-level cache: the highest-level
// data or unified cache, unified winning a tie.
func (d *discovery) readCaches() error {
	d.llcOf = map[int]CPUSet{}
	d.llcLvl = map[int]int{}
	for _, cpu := range d.cpus {
		dir := fmt.Sprintf("%s/cpu%d/cache", cpuDir, cpu)
		idx, err := d.numbered(dir, "index")
		if err != nil {
			return err
		}
		bestLvl, bestUnified := 0, false
		var best CPUSet
		for _, i := range idx {
			sub := fmt.Sprintf("%s/index%d", dir, i)
			lvl, ok, err := d.readInt(sub + "/level")
			if err != nil {
				return err
			}
			if !ok || lvl <= 0 {
				continue
			}
			typ, _, err := d.read(sub + "/type")
			if err != nil {
				return err
			}
			if typ == "Instruction" {
				continue
			}
			shared, ok, err := d.readList(sub + "/shared_cpu_list")
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			unified := typ == "Unified"
			if lvl > bestLvl || lvl == bestLvl && unified && !bestUnified {
				bestLvl, bestUnified, best = lvl, unified, shared
			}
		}
		if bestLvl > 0 {
			d.llcOf[cpu] = best.Intersect(d.online).Union(NewCPUSet(cpu))
			d.llcLvl[cpu] = bestLvl
		}
	}
	return d.consistent("last-level cache", d.llcOf)
}

func (d *discovery) readNUMA() error {
	ids, err := d.numbered(nodeDir, "node")
	if err != nil {
		return err
	}
	d.numaCPU = map[int]CPUSet{}
	d.numaMem = map[int]api.ByteSize{}
	if len(ids) == 0 {
		d.numaIDs = []int{0}
		d.numaCPU[0] = d.online
		return nil
	}
	d.numaIDs = ids
	var all CPUSet
	for _, id := range ids {
		dir := fmt.Sprintf("%s/node%d", nodeDir, id)
		cpus, _, err := d.readList(dir + "/cpulist")
		if err != nil {
			return err
		}
		cpus = cpus.Intersect(d.online)
		if both := cpus.Intersect(all); !both.IsEmpty() {
			return fmt.Errorf("%w: CPUs %s are in node%d and another node", ErrMalformed, both, id)
		}
		all = all.Union(cpus)
		d.numaCPU[id] = cpus
		mem, err := d.memTotal(dir + "/meminfo")
		if err != nil {
			return err
		}
		d.numaMem[id] = mem
	}
	if missing := d.online.Difference(all); !missing.IsEmpty() {
		return fmt.Errorf("%w: online CPUs %s are in no NUMA node", ErrMalformed, missing)
	}
	return nil
}

// memTotal reads "Node 0 MemTotal:  6645976 kB" from a node's meminfo; 0 if
// the file or the line is missing.
func (d *discovery) memTotal(name string) (api.ByteSize, error) {
	s, ok, err := d.read(name)
	if err != nil || !ok {
		return 0, err
	}
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		if len(f) != 5 || f[2] != "MemTotal:" {
			continue
		}
		n, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil || n < 0 || n > 1<<50 || f[4] != "kB" {
			return 0, fmt.Errorf("%w: %s: bad MemTotal line %q", ErrMalformed, name, clip(strings.TrimSpace(line)))
		}
		return api.ByteSize(n << 10), nil
	}
	return 0, nil
}

func (d *discovery) build(offline CPUSet) (api.Topology, error) {
	t := api.Topology{Online: d.online.String(), Offline: offline.String()}

	// Sockets, by package id.
	byPkg := map[int][]int{}
	for _, cpu := range d.cpus {
		byPkg[d.pkg[cpu]] = append(byPkg[d.pkg[cpu]], cpu)
	}
	for _, id := range sortedKeys(byPkg) {
		t.Sockets = append(t.Sockets, api.CPUSocket{ID: id, CPUs: NewCPUSet(byPkg[id]...).String()})
	}

	for _, id := range d.numaIDs {
		t.NUMANodes = append(t.NUMANodes, api.NUMANode{ID: id, CPUs: d.numaCPU[id].String(), Memory: d.numaMem[id]})
	}

	// L3 groups in order of their lowest CPU; CPUs without cache
	// information are grouped by socket.
	type llc struct {
		level int
		cpus  CPUSet
	}
	var groups []llc
	seen := map[int]bool{}
	uncovered := map[int][]int{} // package → CPUs
	for _, cpu := range d.cpus {
		g, ok := d.llcOf[cpu]
		switch {
		case !ok:
			uncovered[d.pkg[cpu]] = append(uncovered[d.pkg[cpu]], cpu)
		case !seen[cpu]:
			groups = append(groups, llc{d.llcLvl[cpu], g})
			for _, c := range g.List() {
				seen[c] = true
			}
		}
	}
	for _, pkg := range sortedKeys(uncovered) {
		groups = append(groups, llc{0, NewCPUSet(uncovered[pkg]...)})
	}
	slices.SortStableFunc(groups, func(a, b llc) int {
		ma, _ := a.cpus.Min()
		mb, _ := b.cpus.Min()
		return ma - mb
	})
	l3Of := map[int]int{}
	for id, g := range groups {
		t.L3Groups = append(t.L3Groups, api.CacheGroup{ID: id, Level: g.level, CPUs: g.cpus.String()})
		for _, c := range g.cpus.List() {
			l3Of[c] = id
		}
	}

	numaOf := map[int]int{}
	for _, id := range d.numaIDs {
		for _, c := range d.numaCPU[id].List() {
			numaOf[c] = id
		}
	}
	done := map[int]bool{}
	for _, cpu := range d.cpus {
		if done[cpu] {
			continue
		}
		set := d.coreOf[cpu]
		for _, c := range set.List() {
			done[c] = true
		}
		t.Cores = append(t.Cores, api.CPUCore{
			ID: len(t.Cores), Socket: d.pkg[cpu], NUMA: numaOf[cpu], L3: l3Of[cpu], CPUs: set.String(),
		})
	}
	return t, nil
}

func sortedKeys[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
