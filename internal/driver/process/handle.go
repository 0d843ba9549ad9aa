package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/berth-project/berth/internal/cgroups"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/procfs"
)

// killTimeout bounds how long Stop keeps killing a cgroup's processes and
// waiting for the group to become removable.
const killTimeout = 10 * time.Second

// handle is one task. Its process group id is its pid (Setpgid).
type handle struct {
	d     *Driver
	log   *slog.Logger
	st    driver.State
	cg    *cgroups.Cgroup // nil without cgroups
	logf  logFile
	child bool // the agent's child (reap) or recovered (poll)

	done chan struct{} // closed once exit is set
	exit driver.Exit

	stopMu     sync.Mutex
	released   bool
	releasedCh chan struct{} // closed when released
	capDone    chan struct{} // closed when capLogs has made its last pass; nil without a log
}

// State returns what to save to recover the task.
func (h *handle) State() driver.State { return h.st }

// Wait blocks until the task ends or ctx is done.
func (h *handle) Wait(ctx context.Context) (driver.Exit, error) {
	select {
	case <-h.done:
		return h.exit, nil
	case <-ctx.Done():
		return driver.Exit{}, ctx.Err()
	}
}

func (h *handle) ended() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

func (h *handle) isReleased() bool {
	h.stopMu.Lock()
	defer h.stopMu.Unlock()
	return h.released
}

// finish records how the task ended.
func (h *handle) finish(ex driver.Exit) {
	if h.cg != nil {
		if n, err := h.cg.OOMKills(); err == nil && n > 0 {
			ex.OOMKilled = true
		}
	}
	h.exit = ex
	h.log.Info("task ended", "code", ex.Code, "signal", ex.Signal, "oom_killed", ex.OOMKilled)
	close(h.done)
}

// reap waits for the agent's own child.
func (h *handle) reap() {
	var ws syscall.WaitStatus
	_, err := wait4(h.st.PID, &ws, 0)
	switch {
	case err != nil:
		h.finish(driver.Exit{Code: -1, Err: fmt.Errorf("process: waiting for pid %d: %w", h.st.PID, err)})
	case ws.Signaled():
		h.finish(driver.Exit{Code: -1, Signal: int(ws.Signal())})
	default:
		h.finish(driver.Exit{Code: ws.ExitStatus()})
	}
}

// poll watches a recovered task, which is not our child: a missing process,
// a zombie or a recycled pid means it ended, with an unknown code.
func (h *handle) poll() {
	t := time.NewTicker(h.d.cfg.PollInterval)
	defer t.Stop()
	failures := 0
	for range t.C {
		alive, err := procfs.Alive(h.st.PID, h.st.StartTime)
		if err != nil {
			// Unreadable /proc is not an exit; give up only if it persists.
			if failures++; failures < 50 {
				continue
			}
			h.finish(driver.Exit{Code: -1, Err: fmt.Errorf("process: lost track of pid %d: %w", h.st.PID, err)})
			return
		}
		failures = 0
		if !alive {
			h.finish(driver.Exit{Code: -1})
			return
		}
	}
}

// leaderAlive reports whether the task's first process still runs, checked
// by pid and start time so that a recycled pid is never signalled.
func (h *handle) leaderAlive() bool {
	if h.ended() {
		return false
	}
	ok, err := procfs.Alive(h.st.PID, h.st.StartTime)
	return err == nil && ok
}

// signalGroup signals the task's process group while its leader lives (the
// group id cannot be reused then).
func (h *handle) signalGroup(sig syscall.Signal) {
	if !h.leaderAlive() {
		return
	}
	if err := syscall.Kill(-h.st.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		h.log.Warn("signalling process group", "signal", sig, "err", err)
	}
}

// Stop stops the task: SIGTERM to its process group, up to grace to exit,
// then SIGKILL to the group and to every process left in its cgroups, then
// removes the cgroups. It is idempotent and safe to call concurrently; if
// ctx ends first it returns ctx's error and a later Stop carries on.
func (h *handle) Stop(ctx context.Context, grace time.Duration) error {
	h.stopMu.Lock()
	defer h.stopMu.Unlock()
	if h.released {
		return nil
	}
	if !h.ended() {
		h.signalGroup(syscall.SIGTERM)
		timer := time.NewTimer(grace)
		select {
		case <-h.done:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("process: stopping task %s: %w", h.st.TaskID, ctx.Err())
		}
		timer.Stop()
		h.signalGroup(syscall.SIGKILL)
	}
	// Children may outlive the leader, in its group or outside it.
	if h.cg != nil {
		kctx, cancel := context.WithTimeout(ctx, killTimeout)
		err := h.cg.Kill(kctx)
		cancel()
		if err != nil {
			return fmt.Errorf("process: stopping task %s: %w", h.st.TaskID, err)
		}
	} else if err := h.killGroup(ctx); err != nil {
		return fmt.Errorf("process: stopping task %s: %w", h.st.TaskID, err)
	}
	select {
	case <-h.done:
	case <-ctx.Done():
		return fmt.Errorf("process: stopping task %s: %w", h.st.TaskID, ctx.Err())
	}
	if h.cg != nil {
		rctx, cancel := context.WithTimeout(ctx, killTimeout)
		err := h.cg.Remove(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("process: stopping task %s: %w", h.st.TaskID, err)
		}
	}
	h.released = true
	close(h.releasedCh)
	if h.capDone != nil {
		// The last pass stamps and caps what the task wrote last; wait for
		// it, so no index file appears after Stop returned.
		select {
		case <-h.capDone:
		case <-ctx.Done():
		}
	}
	return nil
}

// killGroup is how Stop reaches a task's leftovers without cgroups: SIGKILL
// its process group until no live member remains. The group id outlives
// its leader while any member lives, so it is not reused meanwhile; a group
// led by a new process with the leader's pid (a reuse after the group died
// out) is left alone.
func (h *handle) killGroup(ctx context.Context) error {
	kctx, cancel := context.WithTimeout(ctx, killTimeout)
	defer cancel()
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		members, err := procfs.Default.GroupMembers(h.st.PID)
		if err != nil {
			return err
		}
		if i := slices.Index(members, h.st.PID); i >= 0 && !h.leaderAlive() {
			members = slices.Delete(members, i, i+1) // not ours: see above
		}
		if len(members) == 0 {
			return nil
		}
		if err := syscall.Kill(-h.st.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("killing process group %d: %w", h.st.PID, err)
		}
		select {
		case <-kctx.Done():
			return fmt.Errorf("%d processes left in group %d: %w", len(members), h.st.PID, kctx.Err())
		case <-time.After(delay):
		}
	}
}

// UpdateCPUSet moves the running task to other CPUs by rewriting its
// cpuset cgroup. A task started without cgroups, or whose group has no CPU
// set, cannot be moved: the error wraps driver.ErrInvalid.
func (h *handle) UpdateCPUSet(cpus, mems string) error {
	if h.cg == nil {
		return fmt.Errorf("%w: task %s runs without cgroups", driver.ErrInvalid, h.st.TaskID)
	}
	if h.isReleased() {
		return fmt.Errorf("%w: task %s has ended", driver.ErrGone, h.st.TaskID)
	}
	err := h.cg.SetCPUSet(cpus, mems)
	if errors.Is(err, cgroups.ErrUnavailable) {
		return fmt.Errorf("%w: task %s: %w", driver.ErrInvalid, h.st.TaskID, err)
	}
	if err != nil {
		return fmt.Errorf("process: task %s: %w", h.st.TaskID, err)
	}
	return nil
}

// Stats returns the task's resource use: from its cgroups, or without
// cgroups from /proc for its first process only.
func (h *handle) Stats(ctx context.Context) (driver.Stats, error) {
	if err := ctx.Err(); err != nil {
		return driver.Stats{}, err
	}
	now := h.d.cfg.Now()
	if h.cg != nil {
		s, err := h.cg.Stats()
		if err != nil {
			return driver.Stats{}, fmt.Errorf("process: stats of task %s: %w", h.st.TaskID, err)
		}
		out := driver.Stats{Time: now, CPUNanos: s.CPUNanos, MemoryBytes: s.MemoryBytes, Pids: s.Pids}
		if !slices.Contains(h.d.cg.Controllers(), cgroups.Memory) {
			// No memory controller (a v2 tree without it): the first
			// process's resident set is the best estimate.
			if ps, err := procfs.Default.Stat(h.st.PID); err == nil && h.leaderAlive() {
				out.MemoryBytes = uint64(max(ps.RSSPages, 0)) * uint64(pageSize)
			}
		}
		return out, nil
	}
	if !h.leaderAlive() {
		return driver.Stats{}, fmt.Errorf("%w: task %s has ended", driver.ErrGone, h.st.TaskID)
	}
	s, err := procfs.Default.Stat(h.st.PID)
	if err != nil {
		return driver.Stats{}, fmt.Errorf("process: stats of task %s: %w", h.st.TaskID, err)
	}
	return driver.Stats{
		Time:        now,
		CPUNanos:    (s.UTime + s.STime) * uint64(time.Second) / clockTicks,
		MemoryBytes: uint64(max(s.RSSPages, 0)) * uint64(pageSize),
		Pids:        uint64(max(s.NumThreads, 0)),
	}, nil
}

// clockTicks is USER_HZ, which Linux fixes at 100 on every architecture
// Berth runs on.
const clockTicks = 100

var pageSize = syscall.Getpagesize()
