// Package cgroups manages the control groups Berth puts tasks in, on cgroup
// v1 (one hierarchy per controller, possibly co-mounted) and v2 (the unified
// hierarchy): create a group with CPU, memory and CPU-set limits, add a
// process, list and kill its processes, read its usage and remove it.
//
// It finds hierarchies from /proc/self/mountinfo and never assumes paths. It
// only touches the groups it is asked to create or open; it must not move
// processes it was not given nor change limits of groups it did not create,
// except for enabling controllers in a v2 parent's cgroup.subtree_control
// and copying a v1 parent's cpuset into a new intermediate group, which the
// kernel requires.
package cgroups

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// createMu serialises Create within the process, so that two tasks starting
// together never see an intermediate group the other made but has not yet
// given a cpuset.
var createMu sync.Mutex

// Errors this package returns, wrapped with detail.
var (
	// ErrUnavailable means cgroups (or a controller a limit needs) are not
	// mounted or not writable here.
	ErrUnavailable = errors.New("cgroups: unavailable")
	// ErrInvalidName means a group name is not a clean relative path.
	ErrInvalidName = errors.New("cgroups: invalid group name")
	// ErrNotFound means a group does not exist.
	ErrNotFound = errors.New("cgroups: group not found")
)

// Version is a cgroup version.
type Version int

// Cgroup versions.
const (
	V1 Version = 1
	V2 Version = 2
)

// String returns "v1" or "v2".
func (v Version) String() string {
	switch v {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return "unknown"
}

// Controller names Berth uses.
const (
	CPU     = "cpu"
	CPUAcct = "cpuacct"
	CPUSet  = "cpuset"
	Memory  = "memory"
	Pids    = "pids"
)

// CFSPeriod is the CFS period Berth sets with a CPU quota.
const CFSPeriod = 100 * time.Millisecond

// minQuota is the smallest CFS quota the kernel accepts (1 ms).
const minQuota = 1000

// Limits are what a group may use. Zero values mean no limit.
type Limits struct {
	// CPUs is the CFS quota in CPUs (1.5 = 150 ms per 100 ms period).
	CPUs float64
	// MemoryBytes is the memory limit.
	MemoryBytes int64
	// CPUSet is the list of CPUs ("0-3,8"); empty means all of the parent's.
	CPUSet string
	// MemNodes is the list of memory nodes; empty means the parent's.
	MemNodes string
}

// Stats is a sample of a group's resource use.
type Stats struct {
	// CPUNanos is the CPU time used by the group's processes.
	CPUNanos uint64
	// MemoryBytes is the memory in use, not counting inactive page cache.
	MemoryBytes uint64
	// Pids is the number of tasks (threads) in the group.
	Pids uint64
	// OOMKills counts processes the OOM killer killed in the group.
	OOMKills uint64
}

// Hierarchy is the set of cgroup mounts on this machine that Berth uses.
type Hierarchy struct {
	version Version
	// v1 maps a controller to its mountpoint.
	v1 map[string]string
	// v2 is the unified mountpoint and v2ctl the controllers it offers.
	v2    string
	v2ctl map[string]bool
}

// Discover finds the cgroup hierarchies from /proc/self/mountinfo. It returns
// an error wrapping ErrUnavailable when no usable hierarchy is mounted.
func Discover() (*Hierarchy, error) {
	return Load("/proc/self/mountinfo")
}

// Load is Discover reading mountinfo from a file; tests point it at a fake one.
func Load(mountinfo string) (*Hierarchy, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer f.Close()
	mounts, err := ParseMountInfo(f)
	if err != nil {
		return nil, err
	}
	return FromMounts(mounts)
}

// FromMounts picks the hierarchy to use. cgroup v1 is used when the cpu or
// memory controller is mounted as v1 (this includes "hybrid" systems, where a
// cgroup2 mount exists without those controllers); otherwise the cgroup2
// mount is used, with the controllers its cgroup.controllers file lists.
func FromMounts(mounts []Mount) (*Hierarchy, error) {
	h := &Hierarchy{v1: map[string]string{}}
	unified := ""
	for _, m := range mounts {
		switch m.Version {
		case V1:
			for _, c := range m.Controllers {
				if _, dup := h.v1[c]; !dup {
					h.v1[c] = m.Mountpoint
				}
			}
		case V2:
			if unified == "" {
				unified = m.Mountpoint
			}
		}
	}
	if h.v1[CPU] != "" || h.v1[Memory] != "" {
		h.version = V1
		return h, nil
	}
	if unified == "" {
		return nil, fmt.Errorf("%w: no cgroup mount with cpu or memory", ErrUnavailable)
	}
	return NewV2(unified)
}

// NewV2 uses the cgroup2 hierarchy mounted at mountpoint, whatever else is
// mounted. Tests use it on hybrid machines, where the unified mount has no
// controllers but still groups processes.
func NewV2(mountpoint string) (*Hierarchy, error) {
	data, err := os.ReadFile(filepath.Join(mountpoint, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	h := &Hierarchy{version: V2, v2: mountpoint, v2ctl: map[string]bool{}}
	for _, c := range strings.Fields(string(data)) {
		h.v2ctl[c] = true
	}
	return h, nil
}

// Version returns the cgroup version in use.
func (h *Hierarchy) Version() Version { return h.version }

// Controllers returns the controllers available, sorted.
func (h *Hierarchy) Controllers() []string {
	var out []string
	if h.version == V2 {
		for c := range h.v2ctl {
			out = append(out, c)
		}
	} else {
		for c := range h.v1 {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// Mountpoint returns where controller is mounted (v1) or the unified
// mountpoint (v2, controller ignored); "" if it is not mounted.
func (h *Hierarchy) Mountpoint(controller string) string {
	if h.version == V2 {
		return h.v2
	}
	return h.v1[controller]
}

func (h *Hierarchy) has(controller string) bool {
	if h.version == V2 {
		return h.v2ctl[controller]
	}
	return h.v1[controller] != ""
}

// checkName accepts a clean relative path like "berth/task-1".
func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || path.Clean(name) != name || name == "." ||
		slices.Contains(strings.Split(name, "/"), "..") {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	return nil
}

// controllersFor lists the v1 controllers a group with these limits lives
// in: always cpu, cpuacct, memory and pids (for stats and for finding every
// process); cpuset only when a CPU set is given.
func (h *Hierarchy) controllersFor(lim Limits) ([]string, error) {
	need := map[string]bool{}
	if lim.CPUs > 0 {
		need[CPU] = true
	}
	if lim.MemoryBytes > 0 {
		need[Memory] = true
	}
	if lim.CPUSet != "" || lim.MemNodes != "" {
		need[CPUSet] = true
	}
	for c := range need {
		if !h.has(c) {
			return nil, fmt.Errorf("%w: controller %s is not available for the limits asked", ErrUnavailable, c)
		}
	}
	if h.version == V2 {
		return nil, nil
	}
	var out []string
	for _, c := range []string{CPU, CPUAcct, Memory, Pids, CPUSet} {
		if c == CPUSet && !need[CPUSet] {
			continue
		}
		if h.has(c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// Create makes the group name (a relative path such as "berth/<task>") in
// every hierarchy it needs, applies lim and returns it. Intermediate groups
// are created as needed. An existing group is reused and its limits are
// rewritten. On error nothing it created is left behind.
func (h *Hierarchy) Create(name string, lim Limits) (*Cgroup, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if lim.CPUs < 0 || lim.MemoryBytes < 0 || math.IsNaN(lim.CPUs) || math.IsInf(lim.CPUs, 0) {
		return nil, fmt.Errorf("cgroups: negative or invalid limits %+v", lim)
	}
	ctls, err := h.controllersFor(lim)
	if err != nil {
		return nil, err
	}
	createMu.Lock()
	defer createMu.Unlock()
	c := &Cgroup{h: h, name: name, dirs: map[string]string{}}
	var created []string // directories made, deepest last
	undo := func() {
		for i := len(created) - 1; i >= 0; i-- {
			_ = os.Remove(created[i])
		}
	}
	if h.version == V2 {
		mk, err := h.mkdirV2(name)
		created = append(created, mk...)
		if err != nil {
			undo()
			return nil, err
		}
		c.dirs[""] = filepath.Join(h.v2, name)
	} else {
		for _, ctl := range ctls {
			mnt := h.v1[ctl]
			dir := filepath.Join(mnt, name)
			if _, done := c.dirByPath(dir); done {
				c.dirs[ctl] = dir // co-mounted with one already made
				continue
			}
			mk, err := mkdirV1(mnt, name, ctl == CPUSet)
			created = append(created, mk...)
			if err != nil {
				undo()
				return nil, err
			}
			c.dirs[ctl] = dir
		}
	}
	if err := c.apply(lim); err != nil {
		undo()
		return nil, err
	}
	return c, nil
}

// mkdirV1 creates mnt/name level by level. For cpuset, each new level gets
// its parent's cpus and mems: a v1 cpuset group with empty cpus or mems
// refuses processes.
func mkdirV1(mnt, name string, cpuset bool) (created []string, err error) {
	dir := mnt
	for _, part := range strings.Split(name, "/") {
		parent := dir
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return created, mkErr(err)
		}
		created = append(created, dir)
		if cpuset {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := readString(filepath.Join(parent, f))
				if err != nil {
					return created, err
				}
				if err := writeFile(filepath.Join(dir, f), v); err != nil {
					return created, err
				}
			}
		}
	}
	return created, nil
}

// mkdirV2 creates v2/name level by level, enabling in each parent's
// cgroup.subtree_control the controllers Berth uses that the parent offers.
func (h *Hierarchy) mkdirV2(name string) (created []string, err error) {
	dir := h.v2
	for _, part := range strings.Split(name, "/") {
		if err := enableV2(dir); err != nil {
			return created, err
		}
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return created, mkErr(err)
		}
		created = append(created, dir)
	}
	return created, nil
}

// enableV2 turns on cpu, memory, pids and cpuset for the children of dir,
// each one that dir offers and has not yet enabled.
func enableV2(dir string) error {
	offered, err := readString(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	enabled, err := readString(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	for _, c := range []string{CPU, Memory, Pids, CPUSet} {
		if !slices.Contains(strings.Fields(offered), c) || slices.Contains(strings.Fields(enabled), c) {
			continue
		}
		if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), "+"+c); err != nil {
			return err
		}
	}
	return nil
}

func mkErr(err error) error {
	if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return fmt.Errorf("cgroups: %w", err)
}

// Open returns the existing group name, in every hierarchy where it exists.
// It returns an error wrapping ErrNotFound if it exists in none.
func (h *Hierarchy) Open(name string) (*Cgroup, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	c := &Cgroup{h: h, name: name, dirs: map[string]string{}}
	if h.version == V2 {
		dir := filepath.Join(h.v2, name)
		if isDir(dir) {
			c.dirs[""] = dir
		}
	} else {
		for _, ctl := range []string{CPU, CPUAcct, Memory, Pids, CPUSet} {
			if mnt := h.v1[ctl]; mnt != "" && isDir(filepath.Join(mnt, name)) {
				c.dirs[ctl] = filepath.Join(mnt, name)
			}
		}
	}
	if len(c.dirs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return c, nil
}

// RemoveTree removes the group name and every group below it, deepest
// first, in every hierarchy, retrying while the kernel reports them busy
// until ctx is done. Groups that still hold processes cannot be removed and
// make it fail; it never kills anything. A group that does not exist is not
// an error.
func (h *Hierarchy) RemoveTree(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	roots := map[string]bool{}
	if h.version == V2 {
		roots[h.v2] = true
	} else {
		for _, mnt := range h.v1 {
			roots[mnt] = true
		}
	}
	var errs []error
	for mnt := range roots {
		top := filepath.Join(mnt, name)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := rmdir(ctx, dirs[i]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Cgroup is one group, present in one directory per v1 hierarchy or in one
// v2 directory.
type Cgroup struct {
	h    *Hierarchy
	name string
	// dirs maps a v1 controller (or "" on v2) to the group's directory.
	dirs map[string]string
}

// Name returns the group's name relative to the hierarchy roots.
func (c *Cgroup) Name() string { return c.name }

// Version returns the cgroup version the group lives in.
func (c *Cgroup) Version() Version { return c.h.version }

// Path returns the group's directory for a v1 controller, or its only
// directory on v2 (controller ignored); "" if the group is not in that
// controller's hierarchy.
func (c *Cgroup) Path(controller string) string {
	if c.h.version == V2 {
		return c.dirs[""]
	}
	return c.dirs[controller]
}

// distinct returns the group's directories without duplicates (co-mounted
// v1 controllers share one), sorted.
func (c *Cgroup) distinct() []string {
	var out []string
	for _, d := range c.dirs {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

func (c *Cgroup) dirByPath(dir string) (string, bool) {
	for ctl, d := range c.dirs {
		if d == dir {
			return ctl, true
		}
	}
	return "", false
}

// apply writes lim into the group's control files.
func (c *Cgroup) apply(lim Limits) error {
	if c.h.version == V2 {
		dir := c.dirs[""]
		if lim.CPUs > 0 {
			if err := writeFile(filepath.Join(dir, "cpu.max"), fmt.Sprintf("%d %d", quota(lim.CPUs), CFSPeriod.Microseconds())); err != nil {
				return err
			}
		}
		if lim.MemoryBytes > 0 {
			if err := writeFile(filepath.Join(dir, "memory.max"), strconv.FormatInt(lim.MemoryBytes, 10)); err != nil {
				return err
			}
		}
		if lim.CPUSet != "" {
			if err := writeFile(filepath.Join(dir, "cpuset.cpus"), lim.CPUSet); err != nil {
				return err
			}
		}
		if lim.MemNodes != "" {
			if err := writeFile(filepath.Join(dir, "cpuset.mems"), lim.MemNodes); err != nil {
				return err
			}
		}
		return nil
	}
	if lim.CPUs > 0 {
		dir := c.dirs[CPU]
		if err := writeFile(filepath.Join(dir, "cpu.cfs_period_us"), strconv.FormatInt(CFSPeriod.Microseconds(), 10)); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, "cpu.cfs_quota_us"), strconv.FormatInt(quota(lim.CPUs), 10)); err != nil {
			return err
		}
	}
	if lim.MemoryBytes > 0 {
		if err := writeFile(filepath.Join(c.dirs[Memory], "memory.limit_in_bytes"), strconv.FormatInt(lim.MemoryBytes, 10)); err != nil {
			return err
		}
	}
	if dir := c.dirs[CPUSet]; dir != "" {
		mems := lim.MemNodes
		if mems == "" {
			var err error
			if mems, err = readString(filepath.Join(filepath.Dir(dir), "cpuset.mems")); err != nil {
				return err
			}
		}
		// mems first: cpus alone cannot make the group usable.
		if err := writeFile(filepath.Join(dir, "cpuset.mems"), mems); err != nil {
			return err
		}
		if lim.CPUSet != "" {
			if err := writeFile(filepath.Join(dir, "cpuset.cpus"), lim.CPUSet); err != nil {
				return err
			}
		}
	}
	return nil
}

// quota converts CPUs to a CFS quota in microseconds per CFSPeriod.
func quota(cpus float64) int64 {
	q := int64(math.Round(cpus * float64(CFSPeriod.Microseconds())))
	return max(q, minQuota)
}

// Limits reads back the limits set on the group; a zero field means no
// limit.
func (c *Cgroup) Limits() (Limits, error) {
	var lim Limits
	if c.h.version == V2 {
		dir := c.dirs[""]
		if s, err := readOptional(filepath.Join(dir, "cpu.max")); err != nil {
			return lim, err
		} else if f := strings.Fields(s); len(f) == 2 && f[0] != "max" {
			q, err1 := strconv.ParseFloat(f[0], 64)
			p, err2 := strconv.ParseFloat(f[1], 64)
			if err1 != nil || err2 != nil || p == 0 {
				return lim, fmt.Errorf("cgroups: bad cpu.max %q", s)
			}
			lim.CPUs = q / p
		}
		if s, err := readOptional(filepath.Join(dir, "memory.max")); err != nil {
			return lim, err
		} else if s != "" && s != "max" {
			if lim.MemoryBytes, err = strconv.ParseInt(s, 10, 64); err != nil {
				return lim, fmt.Errorf("cgroups: bad memory.max %q: %w", s, err)
			}
		}
		var err error
		if lim.CPUSet, err = readOptional(filepath.Join(dir, "cpuset.cpus")); err != nil {
			return lim, err
		}
		if lim.MemNodes, err = readOptional(filepath.Join(dir, "cpuset.mems")); err != nil {
			return lim, err
		}
		return lim, nil
	}
	if dir := c.dirs[CPU]; dir != "" {
		q, err := readInt(filepath.Join(dir, "cpu.cfs_quota_us"))
		if err != nil {
			return lim, err
		}
		p, err := readInt(filepath.Join(dir, "cpu.cfs_period_us"))
		if err != nil {
			return lim, err
		}
		if q > 0 && p > 0 {
			lim.CPUs = float64(q) / float64(p)
		}
	}
	if dir := c.dirs[Memory]; dir != "" {
		m, err := readInt(filepath.Join(dir, "memory.limit_in_bytes"))
		if err != nil {
			return lim, err
		}
		// The kernel reports "no limit" as a huge page-aligned number.
		if m < 1<<62 {
			lim.MemoryBytes = m
		}
	}
	if dir := c.dirs[CPUSet]; dir != "" {
		var err error
		if lim.CPUSet, err = readString(filepath.Join(dir, "cpuset.cpus")); err != nil {
			return lim, err
		}
		if lim.MemNodes, err = readString(filepath.Join(dir, "cpuset.mems")); err != nil {
			return lim, err
		}
	}
	return lim, nil
}

// SetCPUSet changes the CPUs (and, when mems is not empty, the memory
// nodes) of a group whose processes may be running: the kernel moves them
// at once. The group must have a CPU set already (created with one, or
// opened from one that was); otherwise the error wraps ErrUnavailable.
func (c *Cgroup) SetCPUSet(cpus, mems string) error {
	if cpus == "" {
		return fmt.Errorf("cgroups: SetCPUSet of %s: empty CPU list", c.name)
	}
	dir := c.dirs[CPUSet]
	if c.h.version == V2 {
		dir = ""
		if c.h.has(CPUSet) {
			dir = c.dirs[""]
		}
	}
	if dir == "" {
		return fmt.Errorf("%w: group %s has no CPU set to change", ErrUnavailable, c.name)
	}
	// mems first, as in apply: new CPUs may need new memory nodes.
	if mems != "" {
		if err := writeFile(filepath.Join(dir, "cpuset.mems"), mems); err != nil {
			return err
		}
	}
	return writeFile(filepath.Join(dir, "cpuset.cpus"), cpus)
}

// AddPID moves process pid (all its threads) into the group in every
// hierarchy.
func (c *Cgroup) AddPID(pid int) error {
	for _, dir := range c.distinct() {
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("cgroups: adding pid %d: %w", pid, err)
		}
	}
	return nil
}

// OpenDir opens the group's v2 directory, for clone3's CLONE_INTO_CGROUP
// (syscall.SysProcAttr.CgroupFD). The caller closes it.
func (c *Cgroup) OpenDir() (*os.File, error) {
	if c.h.version != V2 {
		return nil, fmt.Errorf("%w: a directory fd only places a process on cgroup v2", ErrUnavailable)
	}
	f, err := os.OpenFile(c.dirs[""], os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	return f, nil
}

// PIDs returns the processes in the group (in any of its hierarchies),
// sorted. A group that is gone has none.
func (c *Cgroup) PIDs() ([]int, error) {
	var out []int
	for _, dir := range c.distinct() {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		for _, f := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("cgroups: bad pid %q in %s", f, dir)
			}
			if !slices.Contains(out, pid) {
				out = append(out, pid)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// Kill sends SIGKILL to every process in the group, again and again (a
// process may fork while it is being killed), until the group is empty or
// ctx is done. On v2 it uses cgroup.kill when the kernel has it.
func (c *Cgroup) Kill(ctx context.Context) error {
	if c.h.version == V2 {
		killFile := filepath.Join(c.dirs[""], "cgroup.kill")
		if _, err := os.Stat(killFile); err == nil {
			if err := writeFile(killFile, "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	delay := time.Millisecond
	for {
		pids, err := c.PIDs()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("cgroups: killing pid %d: %w", pid, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroups: %d processes left in %s: %w", len(pids), c.name, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// Stats reads the group's CPU time, memory, task count and OOM kills. Values
// a hierarchy does not provide are left zero.
func (c *Cgroup) Stats() (Stats, error) {
	var s Stats
	var err error
	if c.h.version == V2 {
		dir := c.dirs[""]
		cpu, err := readKeyed(filepath.Join(dir, "cpu.stat"))
		if err != nil {
			return s, err
		}
		s.CPUNanos = cpu["usage_usec"] * 1000
		if c.h.v2ctl[Memory] {
			if s.MemoryBytes, err = memoryInUse(filepath.Join(dir, "memory.current"), filepath.Join(dir, "memory.stat"), "inactive_file"); err != nil {
				return s, err
			}
		}
		if c.h.v2ctl[Pids] {
			if s.Pids, err = readUint(filepath.Join(dir, "pids.current")); err != nil {
				return s, err
			}
		} else {
			pids, err := c.PIDs()
			if err != nil {
				return s, err
			}
			s.Pids = uint64(len(pids))
		}
		s.OOMKills, err = c.OOMKills()
		return s, err
	}
	if dir := c.dirs[CPUAcct]; dir != "" {
		if s.CPUNanos, err = readUint(filepath.Join(dir, "cpuacct.usage")); err != nil {
			return s, err
		}
	}
	if dir := c.dirs[Memory]; dir != "" {
		if s.MemoryBytes, err = memoryInUse(filepath.Join(dir, "memory.usage_in_bytes"), filepath.Join(dir, "memory.stat"), "total_inactive_file"); err != nil {
			return s, err
		}
	}
	if dir := c.dirs[Pids]; dir != "" {
		if s.Pids, err = readUint(filepath.Join(dir, "pids.current")); err != nil {
			return s, err
		}
	}
	s.OOMKills, err = c.OOMKills()
	return s, err
}

// OOMKills returns how many processes the OOM killer killed in the group
// (v1 memory.oom_control, v2 memory.events "oom_kill"); 0 when the memory
// controller is not in use.
func (c *Cgroup) OOMKills() (uint64, error) {
	var file string
	if c.h.version == V2 {
		file = filepath.Join(c.dirs[""], "memory.events")
	} else if dir := c.dirs[Memory]; dir != "" {
		file = filepath.Join(dir, "memory.oom_control")
	} else {
		return 0, nil
	}
	kv, err := readKeyed(file)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return kv["oom_kill"], nil
}

// Remove deletes the group from every hierarchy, retrying while the kernel
// reports it busy (normal just after its last process was killed) until ctx
// is done. A group already gone is not an error. It never kills anything:
// call Kill first.
func (c *Cgroup) Remove(ctx context.Context) error {
	var errs []error
	for _, dir := range c.distinct() {
		if err := rmdir(ctx, dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rmdir removes one cgroup directory, retrying on EBUSY until ctx is done.
func rmdir(ctx context.Context, dir string) error {
	delay := time.Millisecond
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("cgroups: removing %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroups: removing %s: %w (%w)", dir, err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

func memoryInUse(usageFile, statFile, inactiveKey string) (uint64, error) {
	usage, err := readUint(usageFile)
	if err != nil {
		return 0, err
	}
	st, err := readKeyed(statFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	if in := st[inactiveKey]; in < usage {
		usage -= in
	}
	return usage, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func writeFile(p, v string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cgroups: writing %q to %s: %w", v, p, err)
	}
	return nil
}

func readString(p string) (string, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("cgroups: %w", err)
	}
	return string(bytes.TrimSpace(data)), nil
}

func readOptional(p string) (string, error) {
	s, err := readString(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return s, err
}

func readInt(p string) (int64, error) {
	s, err := readString(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroups: %s: %w", p, err)
	}
	return v, nil
}

func readUint(p string) (uint64, error) {
	s, err := readString(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroups: %s: %w", p, err)
	}
	return v, nil
}

// readKeyed parses "key value" lines (cpu.stat, memory.stat, memory.events,
// memory.oom_control); values that are not unsigned integers are skipped.
func readKeyed(p string) (map[string]uint64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cgroups: %s: %w", p, err)
	}
	return out, nil
}
