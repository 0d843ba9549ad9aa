package agent

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/berth-project/berth/api"
	"golang.org/x/sys/unix"
)

// NobodyUser is the user a process task runs as when Berth runs as root and
// the task's spec names no user and does not set run_as_root: nobody and
// nogroup, as docker tasks whose image would run as root.
const NobodyUser = "65534:65534"

// nobodyUID and nobodyGID are NobodyUser's ids.
const nobodyUID, nobodyGID = 65534, 65534

// taskUser returns the user a task runs as: its spec's user; else, for a
// process task of an agent running as root, nobody unless the spec sets
// run_as_root; else "", the agent's own user. A root agent's tasks would
// otherwise hold every capability, read the agent's data directory (the
// admin token, the cluster CA key) and signal Berth. A docker task's user
// is its driver's business (the image's, or nobody).
func taskUser(spec api.TaskSpec, root bool) string {
	switch {
	case spec.Driver == api.DriverDocker || spec.User != "":
		return spec.User
	case root && !spec.RunAsRoot:
		return NobodyUser
	}
	return ""
}

// reachable reports whether a process of uid and gid (and no supplementary
// groups) may execute path: search permission on every directory above it
// and execute permission on the file itself, by their mode bits (ACLs are
// not read). Symbolic links are followed.
func reachable(path string, uid, gid uint32) bool {
	ok := func(p string) bool {
		fi, err := os.Stat(p)
		if err != nil {
			return false
		}
		st, isSys := fi.Sys().(*syscall.Stat_t)
		if !isSys {
			return false
		}
		mode := uint32(fi.Mode().Perm())
		switch {
		case st.Uid == uid:
			return mode&0o100 != 0
		case st.Gid == gid:
			return mode&0o010 != 0
		}
		return mode&0o001 != 0
	}
	paths := []string{path}
	if real, err := filepath.EvalSymlinks(path); err == nil && real != path {
		paths = append(paths, real)
	}
	for _, p := range paths {
		for d := p; ; d = filepath.Dir(d) {
			if !ok(d) {
				return false
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return true
}

// exposeBinary returns a path of the Berth binary bin that nobody can
// execute, and a function that removes what it made. When nobody can run
// bin where it is, it is hard-linked (or, across file systems, copied) into
// a new directory of mode 0755 under the system's temporary directory: `go
// run` builds Berth in a directory of mode 0700, and `go install` as root
// puts it under /root, where tasks running as nobody could not run `berth
// whoami`. The copy is removed when the agent stops (a task running it
// keeps running). The agent holds a lock on the directory while it runs, so
// that one left by a killed agent is removed by the next agent that starts
// (see removeStaleBinDirs).
func exposeBinary(bin string, log *slog.Logger) (string, func(), error) {
	nothing := func() {}
	if reachable(bin, nobodyUID, nobodyGID) {
		return bin, nothing, nil
	}
	removeStaleBinDirs(os.TempDir(), time.Now(), log)
	dir, err := os.MkdirTemp("", binDirPrefix)
	if err != nil {
		return bin, nothing, fmt.Errorf("agent: a directory for the berth binary: %w", err)
	}
	lock, lockErr := os.Open(dir) // O_CLOEXEC: tasks do not inherit the lock
	if lockErr == nil {
		lockErr = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	cleanup := func() {
		_ = os.RemoveAll(dir)
		if lock != nil {
			_ = lock.Close()
		}
	}
	fail := func(err error) (string, func(), error) {
		cleanup()
		return bin, nothing, fmt.Errorf("agent: exposing the berth binary %s to tasks: %w", bin, err)
	}
	if lockErr != nil {
		return fail(lockErr)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	dst := filepath.Join(dir, filepath.Base(bin))
	linked := os.Link(bin, dst) == nil
	if linked && !reachable(dst, nobodyUID, nobodyGID) {
		// The file itself is not executable by others: a link shares its
		// mode, and changing it would change bin's.
		if err := os.Remove(dst); err != nil {
			return fail(err)
		}
		linked = false
	}
	if !linked {
		if err := copyFile(bin, dst, 0o755); err != nil {
			return fail(err)
		}
	}
	log.Info("tasks run as nobody, who cannot run the berth binary where it is: they run a link or copy of it", "binary", bin, "tasks_run", dst, "linked", linked)
	return dst, cleanup, nil
}

// binDirPrefix starts the name of the directories exposeBinary makes.
const binDirPrefix = "berth-bin-"

// binDirGrace is how old a directory of exposeBinary must be before another
// agent may remove it: one made a moment ago may not be locked yet.
const binDirGrace = time.Minute

// removeStaleBinDirs removes the directories of exposeBinary under tmp that
// no running agent holds (their agent was killed): owned by this user, not
// modified within binDirGrace, and not locked.
func removeStaleBinDirs(tmp string, now time.Time, log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, binDirPrefix+"*"))
	for _, d := range dirs {
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() || now.Sub(fi.ModTime()) < binDirGrace {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
			continue
		}
		f, err := os.Open(d)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			if err := os.RemoveAll(d); err == nil {
				log.Info("removed the berth binary link of an agent that did not stop", "dir", d)
			}
		}
		_ = f.Close()
	}
}

// copyFile copies src to a new file dst of the given mode.
func copyFile(src, dst string, mode os.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Chmod(mode) // past the umask
}
