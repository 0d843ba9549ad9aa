package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/berth-project/berth/internal/driver"
)

// execOutputMax is how much of an exec's output is kept (its end).
const execOutputMax = 512

var _ driver.Execer = (*handle)(nil)

// Exec runs argv inside the task's container through the engine's exec API,
// as the container's user, with env added. If ctx ends first, the command is
// killed by the host pid the engine reports for it (the engine has no call
// to stop an exec), after checking it still runs.
func (h *handle) Exec(ctx context.Context, argv, env []string) (int, string, error) {
	if len(argv) == 0 || argv[0] == "" {
		return -1, "", fmt.Errorf("docker: exec in task %s: no command: %w", h.task, driver.ErrInvalid)
	}
	ex, err := h.d.cli.ContainerExecCreate(ctx, h.id, container.ExecOptions{
		Cmd: argv, Env: env, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return -1, "", h.d.engineErr("exec in the container of task "+h.task, err)
	}
	att, err := h.d.cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return -1, "", h.d.engineErr("attach to exec in the container of task "+h.task, err)
	}
	defer att.Close()
	out := &driver.TailWriter{Max: execOutputMax}
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(out, out, att.Reader)
		copied <- err
	}()
	select {
	case err = <-copied:
	case <-ctx.Done():
		h.killExec(ex.ID)
		return -1, out.String(), ctx.Err()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return -1, out.String(), fmt.Errorf("docker: read exec output in task %s: %w", h.task, err)
	}
	// The stream ends when the command does; the engine may take a moment to
	// record its exit code.
	for {
		st, err := h.d.cli.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			return -1, out.String(), h.d.engineErr("inspect exec in the container of task "+h.task, err)
		}
		if !st.Running {
			return st.ExitCode, out.String(), nil
		}
		select {
		case <-ctx.Done():
			h.killExec(ex.ID)
			return -1, out.String(), ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// killExec kills a still-running exec by its host pid.
func (h *handle) killExec(execID string) {
	ctx, cancel := context.WithTimeout(h.d.ctx, 5*time.Second)
	defer cancel()
	st, err := h.d.cli.ContainerExecInspect(ctx, execID)
	if err != nil || !st.Running || st.Pid <= 0 {
		return
	}
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		h.d.log.Warn("could not kill a timed-out exec", "task", h.task, "pid", st.Pid, "err", err)
	}
}
