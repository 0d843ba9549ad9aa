package process

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/berth-project/berth/internal/cgroups"
	"github.com/berth-project/berth/internal/driver"
)

// spawn starts the task's program in its own process group with exactly
// spec.Env, stdout and stderr on out and stdin on /dev/null, inside cg (if
// not nil) before its first instruction. It returns the pid of a child the
// caller must reap.
func spawn(spec driver.StartSpec, cred *syscall.Credential, out *os.File, cg *cgroups.Cgroup) (int, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, fmt.Errorf("process: %w", err)
	}
	defer devnull.Close()
	env := spec.Env
	if env == nil {
		env = []string{} // nil would inherit the agent's environment
	}
	dir := spec.Workdir
	if dir == "" {
		dir = "/" // never the agent's working directory
	}
	sys := &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	attr := &os.ProcAttr{Dir: dir, Env: env, Files: []*os.File{devnull, out, out}, Sys: sys}
	name := spec.Command[0]

	switch {
	case cg == nil:
		return startPlain(name, spec.Command, attr)
	case cg.Version() == cgroups.V2:
		f, err := cg.OpenDir()
		if err != nil {
			return 0, err
		}
		defer f.Close()
		sys.UseCgroupFD = true
		sys.CgroupFD = int(f.Fd())
		return startPlain(name, spec.Command, attr)
	default:
		return startTraced(name, spec.Command, attr, cg)
	}
}

func startPlain(name string, argv []string, attr *os.ProcAttr) (int, error) {
	p, err := os.StartProcess(name, argv, attr)
	if err != nil {
		return 0, startErr(name, err)
	}
	pid := p.Pid
	// We reap with wait4 ourselves; drop the os.Process (and its pidfd).
	_ = p.Release()
	return pid, nil
}

// startTraced starts the program under ptrace so that it stops right after
// execve, puts it in every v1 hierarchy of cg, and lets it go. ptrace
// requests must come from the thread that started the child, hence the
// locked OS thread.
func startTraced(name string, argv []string, attr *os.ProcAttr, cg *cgroups.Cgroup) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	attr.Sys.Ptrace = true
	p, err := os.StartProcess(name, argv, attr)
	if err != nil {
		return 0, startErr(name, err)
	}
	pid := p.Pid
	_ = p.Release()

	abandon := func(cause error) (int, error) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_ = ptrace(syscall.PTRACE_DETACH, pid, 0)
		for {
			var ws syscall.WaitStatus
			if _, err := wait4(pid, &ws, 0); err != nil || ws.Exited() || ws.Signaled() {
				break
			}
		}
		return 0, cause
	}
	for {
		var ws syscall.WaitStatus
		if _, err := wait4(pid, &ws, 0); err != nil {
			return abandon(fmt.Errorf("process: waiting for %s to exec: %w", name, err))
		}
		if ws.Exited() || ws.Signaled() {
			return 0, fmt.Errorf("process: %s ended before it joined its cgroups (status %#x)", name, uint32(ws))
		}
		if !ws.Stopped() {
			continue
		}
		if ws.StopSignal() == syscall.SIGTRAP {
			break // the stop after execve
		}
		// Another signal got there first: deliver it and keep waiting.
		if err := ptrace(syscall.PTRACE_CONT, pid, ws.StopSignal()); err != nil {
			return abandon(fmt.Errorf("process: resuming %s: %w", name, err))
		}
	}
	if err := cg.AddPID(pid); err != nil {
		return abandon(err)
	}
	if err := ptrace(syscall.PTRACE_DETACH, pid, 0); err != nil {
		return abandon(fmt.Errorf("process: detaching from %s: %w", name, err))
	}
	return pid, nil
}

// ptrace issues a request that takes a signal to deliver (PTRACE_CONT,
// PTRACE_DETACH).
func ptrace(req int, pid int, sig syscall.Signal) error {
	_, _, e := syscall.Syscall6(syscall.SYS_PTRACE, uintptr(req), uintptr(pid), 0, uintptr(sig), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// wait4 is syscall.Wait4 retried on EINTR.
func wait4(pid int, ws *syscall.WaitStatus, options int) (int, error) {
	for {
		wpid, err := syscall.Wait4(pid, ws, options, nil)
		if !errors.Is(err, syscall.EINTR) {
			return wpid, err
		}
	}
}

// startErr sorts a failed exec: errors that retrying cannot fix (no such
// program or workdir, permissions, bad binary, bad user) are ErrInvalid.
func startErr(name string, err error) error {
	for _, errno := range []syscall.Errno{
		syscall.ENOENT, syscall.EACCES, syscall.ENOEXEC, syscall.ENOTDIR, syscall.EPERM,
		syscall.ELOOP, syscall.ENAMETOOLONG, syscall.EISDIR, syscall.E2BIG, syscall.EINVAL,
	} {
		if errors.Is(err, errno) {
			return fmt.Errorf("%w: starting %s: %w", driver.ErrInvalid, name, err)
		}
	}
	return fmt.Errorf("process: starting %s: %w", name, err)
}
