package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// errNoSamples is returned by the statistics of an empty sample.
var errNoSamples = errors.New("convergence: no samples")

// percentile returns the p-th percentile (0 < p <= 100) of ds by the
// nearest-rank method: the smallest sample such that at least p% of the
// samples are less than or equal to it. With 50 samples p99 is the largest.
func percentile(ds []time.Duration, p float64) (time.Duration, error) {
	if len(ds) == 0 {
		return 0, errNoSamples
	}
	if p <= 0 || p > 100 || math.IsNaN(p) {
		return 0, fmt.Errorf("convergence: percentile %g out of (0, 100]", p)
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank, 1)-1], nil
}

// median returns the middle sample of ds, or the mean of the two middle
// samples when their number is even.
func median(ds []time.Duration) (time.Duration, error) {
	if len(ds) == 0 {
		return 0, errNoSamples
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], nil
	}
	return (s[n/2-1] + s[n/2]) / 2, nil
}

// summary is the distribution of one measured quantity.
type summary struct {
	N             int
	Min, P50, P99 time.Duration
	Max           time.Duration
}

func summarize(ds []time.Duration) (summary, error) {
	if len(ds) == 0 {
		return summary{}, errNoSamples
	}
	p50, err := percentile(ds, 50)
	if err != nil {
		return summary{}, err
	}
	p99, err := percentile(ds, 99)
	if err != nil {
		return summary{}, err
	}
	return summary{N: len(ds), Min: slices.Min(ds), P50: p50, P99: p99, Max: slices.Max(ds)}, nil
}

// ms formats d in milliseconds with one decimal.
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

// secs formats d in seconds with two decimals.
func secs(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64)
}

// ratio formats a/b with two decimals, or "n/a" when b is zero.
func ratio(a, b time.Duration) string {
	if b == 0 {
		return "n/a"
	}
	return strconv.FormatFloat(float64(a)/float64(b), 'f', 2, 64)
}

// statusKB reads a "Key:   N kB" line of /proc/PID/status.
func statusKB(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("convergence: reading status of pid %d: %w", pid, err)
	}
	return parseStatusKB(b, key)
}

// parseStatusKB finds key in the text of /proc/PID/status and returns its
// value in KiB.
func parseStatusKB(status []byte, key string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("convergence: %s: unexpected value %q", key, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("convergence: %s: %w", key, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("convergence: no %s in status", key)
}

// clockTick is USER_HZ, the unit of the CPU times in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports.
const clockTick = 100

// cpuTime returns the user+system CPU time of a process (all its threads,
// not its children).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("convergence: reading stat of pid %d: %w", pid, err)
	}
	return parseStatCPU(b)
}

// parseStatCPU returns utime+stime from the text of /proc/PID/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("convergence: malformed stat: no ')'")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("convergence: malformed stat: %d fields after the name", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("convergence: malformed stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTick, nil
}

// processAlive reports whether pid names a live (not zombie) process.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// machine describes where the benchmark ran.
type machine struct {
	NumCPU      int
	CPUModel    string
	MemTotalKB  int64
	Kernel      string
	GoVersion   string
	Date        time.Time
	LoadBefore  string
	LoadAfter   string
	CgroupsInfo string
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	return parseCPUModel(b)
}

// parseCPUModel returns the first "model name" of /proc/cpuinfo.
func parseCPUModel(cpuinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func describeMachine() machine {
	m := machine{
		NumCPU:     runtime.NumCPU(),
		CPUModel:   cpuModel(),
		GoVersion:  runtime.Version(),
		Date:       time.Now().UTC(),
		LoadBefore: loadavg(),
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if n, err := parseStatusKB(b, "MemTotal"); err == nil {
			m.MemTotalKB = n
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		m.CgroupsInfo = "v2"
	} else if _, err := os.Stat("/sys/fs/cgroup/cpuacct"); err == nil {
		m.CgroupsInfo = "v1 (hybrid)"
	} else {
		m.CgroupsInfo = "unknown"
	}
	return m
}
