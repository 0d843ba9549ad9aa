// Package datadir guards a Berth data directory against a second process.
//
// A manager's embedded etcd and an agent's task records are each written by
// one process at a time. A second `berth up` on the same directory used to
// wait forever on etcd's database lock, silently and deaf to signals; now
// each role takes a lock file in the directory first and a second process
// fails at once, naming the holder. The lock is an advisory flock(2) on an
// open file: the kernel drops it when the holder exits however it exits
// (kill -9 included), so a crash never leaves a stale lock behind.
//
// The package must not import anything of Berth's: every daemon command
// takes its locks before it starts anything else.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrInUse is returned by Lock when another process holds the lock.
var ErrInUse = errors.New("datadir: in use")

// Role names a lock within a data directory: the manager and the agent of
// one machine may share a directory (`berth up` runs both), but each role
// runs once.
type Role string

// The roles that lock a data directory.
const (
	Manager Role = "manager"
	Agent   Role = "agent"
)

// Lock is a held lock. Its zero value is not usable; Release it when done
// (or let the process end).
type Lock struct {
	f *os.File
}

// InUseError says who holds a lock.
type InUseError struct {
	Dir  string
	Role Role
	PID  int // 0 when the holder did not say
}

func (e *InUseError) Error() string {
	holder := "another berth process"
	if e.PID > 0 {
		holder = "berth (pid " + strconv.Itoa(e.PID) + ")"
	}
	return fmt.Sprintf("data directory %s is in use by %s as %s; stop it first, or give this one another --data-dir", e.Dir, holder, e.Role)
}

func (e *InUseError) Unwrap() error { return ErrInUse }

// fileName is the lock file of a role in dir.
func fileName(dir string, r Role) string { return filepath.Join(dir, string(r)+".lock") }

// Take locks role r of the data directory dir, creating dir (mode 0700)
// if it is missing. It never waits: a held lock is an *InUseError at once.
func Take(dir string, r Role) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	if err := checkOwner(dir); err != nil {
		return nil, err
	}
	path := fileName(dir, r)
	// O_NOFOLLOW: the lock file is written (the pid), so a symlink planted
	// in its place must not redirect the write.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("datadir: %s is a symbolic link; remove it", path)
		}
		return nil, fmt.Errorf("datadir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &InUseError{Dir: dir, Role: r, PID: holder(path)}
		}
		return nil, fmt.Errorf("datadir: lock %s: %w", path, err)
	}
	// Say who holds it, for the next one's message. A failure here leaves
	// the lock held and only the message poorer.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// ErrUnsafe is returned by Take for a data directory that another user
// could change: it holds the cluster's keys and tokens.
var ErrUnsafe = errors.New("datadir: unsafe data directory")

// checkOwner refuses a data directory owned by another user or writable by
// group or others (a directory made by Take is 0700; one made beforehand by
// hand may not be). A symlinked directory is judged by its target.
func checkOwner(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrUnsafe, dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: %s belongs to uid %d, not to this user (uid %d)", ErrUnsafe, dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%w: %s is writable by group or others (mode %04o): chmod 0700 %s", ErrUnsafe, dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// holder reads the pid the holder of the lock file at path wrote.
func holder(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Release gives the lock up. The file stays: removing it would race with
// a process that has just opened it.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
