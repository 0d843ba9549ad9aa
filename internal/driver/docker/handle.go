package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	errdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/berth-project/berth/internal/driver"
)

// handle is one task's container.
type handle struct {
	d      *Driver
	task   string
	id     string
	logDir string

	done chan struct{} // closed when the container has ended (or is lost)
	exit driver.Exit   // set before done is closed

	stopMu  sync.Mutex
	removed atomic.Bool
	killed  atomic.Bool // Stop sent SIGKILL: a 137 is Berth's doing
}

// newHandle makes the handle of container id, registers it and starts
// watching for the container's end.
func (d *Driver) newHandle(task, id, logDir string) *handle {
	h := &handle{d: d, task: task, id: id, logDir: logDir, done: make(chan struct{})}
	d.mu.Lock()
	d.handles[task] = h
	d.mu.Unlock()
	go h.watch()
	return h
}

func (h *handle) isRemoved() bool { return h.removed.Load() }

// State returns the task and container ids and the log directory.
func (h *handle) State() driver.State {
	st := driver.State{Driver: Name, TaskID: h.task, ContainerID: h.id}
	if h.logDir != "" {
		st.Extra, _ = json.Marshal(extra{LogDir: h.logDir})
	}
	return st
}

func (h *handle) watch() {
	h.exit = h.waitExit()
	close(h.done)
}

// waitExit waits for the container to stop running and returns how it
// ended. While the engine is unreachable it retries, for up to
// Config.EngineTimeout; then the task is lost.
func (h *handle) waitExit() driver.Exit {
	ctx := h.d.ctx
	var downSince time.Time
	backoff := 100 * time.Millisecond
	for {
		var waited *container.WaitResponse
		okC, errC := h.d.cli.ContainerWait(ctx, h.id, container.WaitConditionNotRunning)
		select {
		case r := <-okC:
			waited = &r
		case <-errC:
		}
		if ctx.Err() != nil {
			return driver.Exit{Code: -1, Err: errors.New("docker: the driver was closed")}
		}
		// Inspect for the truth: the exit code and whether the OOM killer
		// did it, or that the wait only broke with the connection.
		c, err := h.d.cli.ContainerInspect(ctx, h.id)
		switch {
		case err == nil:
			downSince, backoff = time.Time{}, 100*time.Millisecond
			if c.State != nil && (c.State.Running || c.State.Paused || c.State.Restarting) {
				continue
			}
			ex := driver.Exit{Code: -1}
			if c.State != nil {
				ex.Code, ex.OOMKilled = c.State.ExitCode, c.State.OOMKilled
				if !ex.OOMKilled && ex.Code == 137 && !h.killed.Load() && c.HostConfig != nil && c.HostConfig.Memory > 0 {
					ex.OOMKilled = h.oomEvent(ctx, c.State.StartedAt)
				}
			}
			return ex
		case errdefs.IsNotFound(err):
			if waited != nil {
				return driver.Exit{Code: int(waited.StatusCode)}
			}
			return driver.Exit{Code: -1, Err: fmt.Errorf("docker: container %s was removed behind Berth's back: %w", short(h.id), driver.ErrGone)}
		}
		now := time.Now()
		if downSince.IsZero() {
			downSince = now
		}
		if now.Sub(downSince) >= h.d.cfg.EngineTimeout {
			return driver.Exit{Code: -1, Err: fmt.Errorf("%w for %v, task %s given up: %v", ErrEngine, h.d.cfg.EngineTimeout, h.task, err)}
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// oomEventWait bounds how long a container killed by SIGKILL (exit code
// 137) under a memory limit is checked for the engine's "oom" event.
const oomEventWait = 2 * time.Second

// oomEvent reports whether the engine emitted an "oom" event for the
// container since it started. The engine records the OOM kill in the
// container's state when its OOM event is handled, and the exit may be
// handled first (Engine 20.10 under load): inspect then says OOMKilled
// false for a container the OOM killer ended. The event stream keeps it.
func (h *handle) oomEvent(ctx context.Context, startedAt string) bool {
	since := "0"
	if t, err := time.Parse(time.RFC3339Nano, startedAt); err == nil {
		since = strconv.FormatInt(t.Add(-time.Second).Unix(), 10)
	}
	ctx, cancel := context.WithTimeout(ctx, oomEventWait)
	defer cancel()
	msgs, errs := h.d.cli.Events(ctx, events.ListOptions{Since: since, Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("container", h.id),
		filters.Arg("event", string(events.ActionOOM)))})
	select {
	case <-msgs:
		return true
	case <-errs:
		return false
	case <-ctx.Done():
		return false
	}
}

// Wait blocks until the container ended or ctx is done.
func (h *handle) Wait(ctx context.Context) (driver.Exit, error) {
	select {
	case <-h.done:
		return h.exit, nil
	case <-ctx.Done():
		return driver.Exit{}, ctx.Err()
	}
}

// Stop sends the container's stop signal (its image's STOPSIGNAL, or
// SIGTERM) to its init process, which passes it on; after grace it kills the
// container. Once the container has ended it copies the logs to the log
// directory and removes the container.
func (h *handle) Stop(ctx context.Context, grace time.Duration) error {
	h.stopMu.Lock()
	defer h.stopMu.Unlock()
	if h.removed.Load() {
		return nil
	}
	if !h.ended() {
		if grace > 0 {
			if err := h.kill(ctx, h.stopSignal(ctx)); err != nil {
				return err
			}
			t := time.NewTimer(grace)
			select {
			case <-h.done:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		if !h.ended() {
			h.killed.Store(true)
			if err := h.kill(ctx, "SIGKILL"); err != nil {
				return err
			}
			select {
			case <-h.done:
			case <-ctx.Done():
				return fmt.Errorf("docker: stop task %s: the container did not end: %w", h.task, ctx.Err())
			}
		}
	}
	if err := h.d.saveLogs(ctx, h.task, h.id, h.logDir); err != nil && !errors.Is(err, driver.ErrGone) {
		h.d.log.Warn("cannot save the logs of a task", "task", h.task, "err", err)
	}
	err := h.d.cli.ContainerRemove(ctx, h.id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !errdefs.IsNotFound(err) {
		return h.d.engineErr("remove container of task "+h.task, err)
	}
	h.removed.Store(true)
	h.d.mu.Lock()
	if h.d.handles[h.task] == h {
		delete(h.d.handles, h.task)
	}
	h.d.mu.Unlock()
	return nil
}

func (h *handle) ended() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// kill signals the container; one that no longer runs is not an error.
func (h *handle) kill(ctx context.Context, sig string) error {
	err := h.d.cli.ContainerKill(ctx, h.id, sig)
	if err == nil || errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
		return nil
	}
	return h.d.engineErr("signal the container of task "+h.task, err)
}

// stopSignal is the container's configured stop signal, or SIGTERM.
func (h *handle) stopSignal(ctx context.Context) string {
	c, err := h.d.cli.ContainerInspect(ctx, h.id)
	if err == nil && c.Config != nil && c.Config.StopSignal != "" {
		return c.Config.StopSignal
	}
	return "SIGTERM"
}

// Stats samples the container's resource use from the engine's stats API.
func (h *handle) Stats(ctx context.Context) (driver.Stats, error) {
	r, err := h.d.cli.ContainerStatsOneShot(ctx, h.id)
	if errdefs.IsNotFound(err) {
		return driver.Stats{}, fmt.Errorf("docker: stats of task %s: %w", h.task, driver.ErrGone)
	}
	if err != nil {
		return driver.Stats{}, h.d.engineErr("stats of task "+h.task, err)
	}
	defer r.Body.Close()
	var s container.StatsResponse
	if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
		return driver.Stats{}, fmt.Errorf("docker: stats of task %s: %w", h.task, err)
	}
	return statsOf(s, h.d.cfg.Now()), nil
}

// statsOf converts the engine's stats. Memory in use leaves out the
// inactive page cache, as `docker stats` does.
func statsOf(s container.StatsResponse, now time.Time) driver.Stats {
	out := driver.Stats{
		Time:     now,
		CPUNanos: s.CPUStats.CPUUsage.TotalUsage,
		Pids:     s.PidsStats.Current,
	}
	mem := s.MemoryStats.Usage
	for _, k := range []string{"total_inactive_file", "inactive_file"} {
		if v, ok := s.MemoryStats.Stats[k]; ok && v < mem {
			mem -= v
			break
		}
	}
	out.MemoryBytes = mem
	for _, n := range s.Networks {
		out.NetRxBytes += n.RxBytes
		out.NetTxBytes += n.TxBytes
	}
	for _, e := range s.BlkioStats.IoServiceBytesRecursive {
		switch strings.ToLower(e.Op) {
		case "read":
			out.BlkReadBytes += e.Value
		case "write":
			out.BlkWriteBytes += e.Value
		}
	}
	return out
}

// UpdateCPUSet re-pins the running container.
func (h *handle) UpdateCPUSet(cpus, mems string) error {
	if h.removed.Load() || h.ended() {
		return fmt.Errorf("docker: re-pin task %s: %w", h.task, driver.ErrGone)
	}
	ctx, cancel := context.WithTimeout(h.d.ctx, 10*time.Second)
	defer cancel()
	_, err := h.d.cli.ContainerUpdate(ctx, h.id, container.UpdateConfig{Resources: container.Resources{CpusetCpus: cpus, CpusetMems: mems}})
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("docker: re-pin task %s: %w", h.task, driver.ErrGone)
	}
	if err != nil {
		return h.d.engineErr("re-pin task "+h.task, err)
	}
	return nil
}

// engineLogs streams a container's stdout and stderr, demultiplexed into
// one stream in the order written.
func (d *Driver) engineLogs(ctx context.Context, id string, tail int, follow bool) (io.ReadCloser, error) {
	if tail == 0 && !follow {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	t := "all"
	if tail >= 0 {
		t = strconv.Itoa(tail)
	}
	return d.engineLogsWith(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow, Tail: t})
}

// engineLogsWith streams a container's demultiplexed output as opts says.
func (d *Driver) engineLogsWith(ctx context.Context, id string, opts container.LogsOptions) (io.ReadCloser, error) {
	rc, err := d.cli.ContainerLogs(ctx, id, opts)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("docker: logs of container %s: %w", short(id), driver.ErrGone)
	}
	if err != nil {
		return nil, d.engineErr("logs of container "+short(id), err)
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, rc)
		rc.Close()
		if ctx.Err() != nil {
			err = nil // the reader asked for the end
		}
		pw.CloseWithError(err)
	}()
	return &logReader{PipeReader: pr, body: rc}, nil
}

// logReader is the read end of a demultiplexed log stream.
type logReader struct {
	*io.PipeReader
	body io.Closer
}

// Close ends the stream.
func (r *logReader) Close() error {
	r.body.Close()
	return r.PipeReader.Close()
}

// readSaved reads the logs saved when a task's container was removed.
func readSaved(dir, task string, tail int) (io.ReadCloser, error) {
	b, err := os.ReadFile(filepath.Join(dir, task+".log"))
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(driver.LastLines(b, tail))), nil
}

var (
	_ driver.Handle        = (*handle)(nil)
	_ driver.Statser       = (*handle)(nil)
	_ driver.CPUSetUpdater = (*handle)(nil)
)
