// Package procfs reads the few facts about a process that Berth needs from
// /proc: its start time, whether it is a zombie, and whether a pid still names
// the same process it named earlier. It only reads; it must not signal,
// wait for or otherwise change any process.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// ErrNoProcess means no process has the pid asked for.
var ErrNoProcess = errors.New("procfs: no such process")

// ErrMalformed means a /proc file did not have the expected layout.
var ErrMalformed = errors.New("procfs: malformed stat")

// Stat is the part of /proc/PID/stat that Berth uses.
type Stat struct {
	// PID is field 1.
	PID int
	// Comm is field 2 without its parentheses. It may hold spaces and
	// parentheses itself.
	Comm string
	// State is field 3: R, S, D, Z, T, t, X, I...
	State byte
	// PPID is field 4, the parent's pid.
	PPID int
	// PGRP is field 5, the process group id.
	PGRP int
	// UTime and STime are fields 14 and 15: CPU time in user and kernel
	// mode, in clock ticks.
	UTime, STime uint64
	// NumThreads is field 20.
	NumThreads int
	// StartTime is field 22: the start time in clock ticks after boot.
	StartTime uint64
	// RSSPages is field 24: resident set size in pages.
	RSSPages int64
}

// Zombie reports whether the process has exited and is waiting to be reaped
// (state Z) or is being torn down (state X).
func (s Stat) Zombie() bool { return s.State == 'Z' || s.State == 'X' }

// ParseStat parses the contents of a /proc/PID/stat file. The command name is
// found between the first '(' and the last ')', so names containing spaces or
// parentheses parse correctly.
func ParseStat(data []byte) (Stat, error) {
	var s Stat
	open := bytes.IndexByte(data, '(')
	closing := bytes.LastIndexByte(data, ')')
	if open < 0 || closing < open {
		return s, fmt.Errorf("%w: no (comm)", ErrMalformed)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(data[:open])))
	if err != nil {
		return s, fmt.Errorf("%w: pid: %v", ErrMalformed, err)
	}
	s.PID = pid
	s.Comm = string(data[open+1 : closing])
	// Fields after the comm start at field 3 (state).
	rest := bytes.Fields(data[closing+1:])
	const (
		fState      = 3
		fPPID       = 4
		fPGRP       = 5
		fUTime      = 14
		fSTime      = 15
		fNumThreads = 20
		fStartTime  = 22
		fRSS        = 24
	)
	field := func(n int) ([]byte, error) {
		i := n - fState
		if i >= len(rest) {
			return nil, fmt.Errorf("%w: %d fields after comm, need field %d", ErrMalformed, len(rest), n)
		}
		return rest[i], nil
	}
	st, err := field(fState)
	if err != nil {
		return s, err
	}
	if len(st) != 1 {
		return s, fmt.Errorf("%w: state %q", ErrMalformed, st)
	}
	s.State = st[0]
	for _, f := range []struct {
		n   int
		dst *int
	}{{fPPID, &s.PPID}, {fPGRP, &s.PGRP}, {fNumThreads, &s.NumThreads}} {
		b, err := field(f.n)
		if err != nil {
			return s, err
		}
		v, err := strconv.Atoi(string(b))
		if err != nil {
			return s, fmt.Errorf("%w: field %d: %v", ErrMalformed, f.n, err)
		}
		*f.dst = v
	}
	for _, f := range []struct {
		n   int
		dst *uint64
	}{{fUTime, &s.UTime}, {fSTime, &s.STime}, {fStartTime, &s.StartTime}} {
		b, err := field(f.n)
		if err != nil {
			return s, err
		}
		if *f.dst, err = strconv.ParseUint(string(b), 10, 64); err != nil {
			return s, fmt.Errorf("%w: field %d: %v", ErrMalformed, f.n, err)
		}
	}
	// RSS is the last field Berth needs; kernels always have it.
	b, err := field(fRSS)
	if err != nil {
		return s, err
	}
	if s.RSSPages, err = strconv.ParseInt(string(b), 10, 64); err != nil {
		return s, fmt.Errorf("%w: rss: %v", ErrMalformed, err)
	}
	return s, nil
}

// FS reads a proc filesystem mounted at a directory. The zero value is not
// useful; use Default or FS("/some/dir") in tests.
type FS string

// Default is the proc filesystem at /proc.
const Default FS = "/proc"

// Stat reads and parses /proc/PID/stat. It returns an error wrapping
// ErrNoProcess when the process does not exist.
func (fs FS) Stat(pid int) (Stat, error) {
	if pid <= 0 {
		return Stat{}, fmt.Errorf("%w: pid %d", ErrNoProcess, pid)
	}
	data, err := os.ReadFile(filepath.Join(string(fs), strconv.Itoa(pid), "stat"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return Stat{}, fmt.Errorf("%w: pid %d", ErrNoProcess, pid)
		}
		return Stat{}, fmt.Errorf("procfs: pid %d: %w", pid, err)
	}
	s, err := ParseStat(data)
	if err != nil {
		return Stat{}, fmt.Errorf("procfs: pid %d: %w", pid, err)
	}
	return s, nil
}

// StartTime returns the process's start time in clock ticks after boot.
func (fs FS) StartTime(pid int) (uint64, error) {
	s, err := fs.Stat(pid)
	if err != nil {
		return 0, err
	}
	return s.StartTime, nil
}

// IsZombie reports whether the process has exited but not been reaped.
func (fs FS) IsZombie(pid int) (bool, error) {
	s, err := fs.Stat(pid)
	if err != nil {
		return false, err
	}
	return s.Zombie(), nil
}

// Alive reports whether pid names a live (not zombie) process that started at
// start. A missing process, a zombie and a recycled pid (another start time)
// are all not alive. Errors other than a missing process are returned.
func (fs FS) Alive(pid int, start uint64) (bool, error) {
	s, err := fs.Stat(pid)
	if errors.Is(err, ErrNoProcess) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return s.StartTime == start && !s.Zombie(), nil
}

// StartTime reads the start time of pid from /proc.
func StartTime(pid int) (uint64, error) { return Default.StartTime(pid) }

// IsZombie reports from /proc whether pid is a zombie.
func IsZombie(pid int) (bool, error) { return Default.IsZombie(pid) }

// Alive reports from /proc whether pid is a live process started at start.
func Alive(pid int, start uint64) (bool, error) { return Default.Alive(pid, start) }

// GroupMembers returns the live (not zombie) processes whose process group
// is pgid, sorted by pid.
func (fs FS) GroupMembers(pgid int) ([]int, error) {
	entries, err := os.ReadDir(string(fs))
	if err != nil {
		return nil, fmt.Errorf("procfs: %w", err)
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		s, err := fs.Stat(pid)
		if err != nil {
			continue // gone meanwhile, or unreadable
		}
		if s.PGRP == pgid && !s.Zombie() {
			out = append(out, pid)
		}
	}
	return out, nil
}
