package datadir_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-project/berth/internal/datadir"
)

func TestTakeTwice(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := datadir.Take(dir, datadir.Manager)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory: %v, %v; want mode 0700", fi, err)
	}
	// The other role of the same directory is free.
	a, err := datadir.Take(dir, datadir.Agent)
	if err != nil {
		t.Fatalf("agent lock beside the manager's: %v", err)
	}
	defer a.Release()

	_, err = datadir.Take(dir, datadir.Manager)
	var inUse *datadir.InUseError
	if !errors.As(err, &inUse) || !errors.Is(err, datadir.ErrInUse) {
		t.Fatalf("second Take = %v, want an InUseError", err)
	}
	if inUse.PID != os.Getpid() {
		t.Errorf("holder pid %d, want %d", inUse.PID, os.Getpid())
	}
	want := "data directory " + dir + " is in use by berth (pid " + strconv.Itoa(os.Getpid()) + ")"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("message %q does not say %q", err, want)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := datadir.Take(dir, datadir.Manager)
	if err != nil {
		t.Fatalf("Take after Release: %v", err)
	}
	l2.Release()
}

// TestLockDiesWithHolder: a holder killed with SIGKILL leaves no stale
// lock. The holder is a child process that inherits the locked file
// (flock locks belong to the open file, which the child shares).
func TestLockDiesWithHolder(t *testing.T) {
	dir := t.TempDir()
	l, err := datadir.Take(dir, datadir.Agent)
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sleep", "60")
	child.ExtraFiles = []*os.File{datadir.LockFileForTest(t, l)}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	l.Release() // the child still has the open file, and so the lock
	if _, err := datadir.Take(dir, datadir.Agent); !errors.Is(err, datadir.ErrInUse) {
		t.Fatalf("Take while the child holds the file = %v, want ErrInUse", err)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	l2, err := datadir.Take(dir, datadir.Agent)
	if err != nil {
		t.Fatalf("Take after the holder was killed: %v", err)
	}
	l2.Release()
}

// TestUnsafeDataDirectory: a data directory others may write to, or a
// lock file that is a symbolic link, is refused before anything is written
// (the lock file gets the pid: a planted link would redirect that write).
func TestUnsafeDataDirectory(t *testing.T) {
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	if _, err := datadir.Take(open, datadir.Manager); !errors.Is(err, datadir.ErrUnsafe) || !strings.Contains(err.Error(), "chmod 0700") {
		t.Errorf("a world-writable data directory: %v, want ErrUnsafe naming the fix", err)
	}

	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "agent.lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := datadir.Take(dir, datadir.Agent); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("a lock file that is a symlink: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me\n" {
		t.Errorf("the symlink's target was written: %q", b)
	}
}
